//! Memory-mapped safetensors checkpoints (single files and sharded), and writing them.
//!
//! Format (huggingface/safetensors): an 8-byte little-endian header length `N`, `N` bytes of JSON
//! mapping each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to
//! the data section that follows the header) plus an optional `__metadata__` string map, then the
//! data.
//!
//! The `safetensors` crate parses and validates headers ([`SafeTensors::read_metadata`]: header
//! size limit, UTF-8, JSON, dtypes, offsets that tile the data section exactly, shape arithmetic
//! without overflow) and its types serialise the headers written here. This module keeps what the
//! crate does not do: memory maps shared with the tensor engine (zero copy), the sharded index,
//! streaming writes and error messages that name the file and the tensor. When the crate rejects a
//! header, [`explain`] looks at the header again to say which tensor is at fault; the crate stays
//! the only judge of what is accepted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata, SafeTensorError, TensorInfo};
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::error::IoResultExt;
use crate::io::{map_model_file, write_atomically};
use crate::tensor::{Bytes, DType, Owner, RawTensor, TensorSource};
use crate::{Error, Result};

/// Largest header the `safetensors` crate accepts (its `MAX_HEADER_SIZE`), for error messages.
const MAX_HEADER: u64 = 100_000_000;

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    /// The dtype as written in the header.
    stored: Dtype,
    dtype: Option<DType>,
    shape: Vec<usize>,
    /// Offset inside the file's bytes.
    start: usize,
    len: usize,
}

/// One parsed, mapped safetensors file.
struct SafeFile {
    path: PathBuf,
    data: Bytes,
    entries: Vec<Entry>,
    metadata: BTreeMap<String, String>,
}

/// The dtypes a [`RawTensor`] can carry, by their safetensors name.
fn float_dtype(stored: Dtype) -> Option<DType> {
    match stored {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// The safetensors dtype of a [`DType`].
fn stored_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    }
}

/// The header's spelling of `dtype`, as a static string.
fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::BOOL => "BOOL",
        Dtype::F4 => "F4",
        Dtype::F6_E2M3 => "F6_E2M3",
        Dtype::F6_E3M2 => "F6_E3M2",
        Dtype::U8 => "U8",
        Dtype::I8 => "I8",
        Dtype::F8_E5M2 => "F8_E5M2",
        Dtype::F8_E4M3 => "F8_E4M3",
        Dtype::F8_E8M0 => "F8_E8M0",
        Dtype::I16 => "I16",
        Dtype::U16 => "U16",
        Dtype::F16 => "F16",
        Dtype::BF16 => "BF16",
        Dtype::I32 => "I32",
        Dtype::U32 => "U32",
        Dtype::F32 => "F32",
        Dtype::F64 => "F64",
        Dtype::I64 => "I64",
        Dtype::U64 => "U64",
        // `Dtype` is non-exhaustive: a dtype added by a later version of the crate.
        _ => "(a dtype unknown to this version)",
    }
}

impl SafeFile {
    fn parse(path: &Path, data: Bytes) -> Result<SafeFile> {
        let bytes: &[u8] = &data;
        let (header_len, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| explain(path, bytes, e))?;
        let header_end = 8 + header_len;
        let mut entries: Vec<Entry> = header
            .tensors()
            .into_iter()
            .map(|(name, info)| Entry {
                name,
                stored: info.dtype,
                dtype: float_dtype(info.dtype),
                shape: info.shape.clone(),
                start: header_end + info.data_offsets.0,
                len: info.data_offsets.1 - info.data_offsets.0,
            })
            .collect();
        entries.sort_by(|a, b| (a.start, a.len, &a.name).cmp(&(b.start, b.len, &b.name)));
        let metadata = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(SafeFile {
            path: path.to_path_buf(),
            data,
            entries,
            metadata,
        })
    }

    fn open(path: &Path) -> Result<SafeFile> {
        let mmap = map_model_file(path)?;
        let len = mmap.len();
        let owner: Owner = mmap;
        SafeFile::parse(path, Bytes::slice(owner, 0, len))
    }
}

/// Turns the `safetensors` crate's rejection of `bytes` into an error that names `path` and, where
/// the fault lies in one tensor's entry, that tensor. Falls back to the crate's own message.
fn explain(path: &Path, bytes: &[u8], error: SafeTensorError) -> Error {
    let total = bytes.len();
    let claimed = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    match (&error, claimed) {
        (SafeTensorError::HeaderTooSmall, _) | (_, None) => {
            return Error::malformed(
                path,
                format!("truncated: {total} bytes, but a safetensors file starts with an 8-byte header length"),
            )
        }
        (SafeTensorError::HeaderTooLarge, Some(n)) => {
            return Error::malformed(
                path,
                format!("header length {n} exceeds the limit of {MAX_HEADER} bytes"),
            )
        }
        (SafeTensorError::InvalidHeaderLength, Some(n)) => {
            return Error::malformed(
                path,
                format!("header length {n} goes beyond the end of the file ({total} bytes): truncated or not safetensors"),
            )
        }
        (SafeTensorError::InvalidHeader(e), _) => {
            return Error::malformed(path, format!("header is not UTF-8: {e}"))
        }
        _ => {}
    }
    // The length prefix was accepted, so the header text lies within the file.
    let header_len = claimed.unwrap_or(0) as usize;
    let text = bytes
        .get(8..8 + header_len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("");
    let fallback = || Error::malformed(path, format!("invalid safetensors header: {error}"));
    let json: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
        Ok(json) => json,
        Err(e) => return Error::malformed(path, format!("header is not a JSON object: {e}")),
    };
    let mut infos = Vec::with_capacity(json.len());
    for (name, value) in json {
        if name == "__metadata__" {
            if let Err(e) = serde_json::from_value::<HashMap<String, String>>(value) {
                return Error::malformed(
                    path,
                    format!("`__metadata__` is not a map of strings to strings: {e}"),
                );
            }
            continue;
        }
        if let Some(dtype) = value.get("dtype").and_then(|d| d.as_str()) {
            if serde_json::from_value::<Dtype>(dtype.into()).is_err() {
                return Error::bad_tensor(path, &name, format!("unknown dtype `{dtype}`"));
            }
        }
        match serde_json::from_value::<TensorInfo>(value) {
            Ok(info) => infos.push((name, info)),
            Err(e) => return Error::bad_tensor(path, &name, format!("invalid header entry: {e}")),
        }
    }
    let data_len = total - 8 - header_len;
    for (name, info) in &infos {
        let (begin, end) = info.data_offsets;
        if begin > end || end > data_len {
            return Error::bad_tensor(
                path,
                name,
                format!("data_offsets [{begin}, {end}] out of range: the data section has {data_len} bytes"),
            );
        }
        let bits = info
            .shape
            .iter()
            .try_fold(info.dtype.bitsize(), |acc, &d| acc.checked_mul(d));
        let Some(bits) = bits else {
            return Error::bad_tensor(path, name, format!("shape {:?} overflows", info.shape));
        };
        if bits % 8 != 0 {
            return Error::bad_tensor(
                path,
                name,
                format!(
                    "shape {:?} of {} needs {bits} bits, not a whole number of bytes",
                    info.shape, info.dtype
                ),
            );
        }
        if bits / 8 != end - begin {
            return Error::bad_tensor(
                path,
                name,
                format!(
                    "shape {:?} of {} needs {} bytes but data_offsets [{begin}, {end}] span {}",
                    info.shape,
                    info.dtype,
                    bits / 8,
                    end - begin
                ),
            );
        }
    }
    infos.sort_by(|a, b| (a.1.data_offsets, &a.0).cmp(&(b.1.data_offsets, &b.0)));
    let mut covered = 0;
    let mut previous: Option<&str> = None;
    for (name, info) in &infos {
        let (begin, end) = info.data_offsets;
        if begin < covered {
            let other = previous.unwrap_or("?");
            return Error::bad_tensor(path, name, format!("data overlaps tensor `{other}`"));
        }
        if begin > covered {
            return Error::bad_tensor(
                path,
                name,
                format!("data starts at {begin}, leaving bytes {covered}..{begin} of the data section to no tensor"),
            );
        }
        covered = end;
        previous = Some(name);
    }
    if covered != data_len {
        return Error::malformed(
            path,
            format!("the tensors cover {covered} bytes of a {data_len}-byte data section: truncated, padded or not safetensors"),
        );
    }
    fallback()
}

/// A safetensors checkpoint, memory-mapped: one file, or shards routed by
/// `model.safetensors.index.json`. Tensors are handed out as zero-copy views of the map.
pub struct SafetensorsStore {
    origin: PathBuf,
    files: Vec<SafeFile>,
    /// name → (file, entry)
    index: HashMap<String, (usize, usize)>,
    order: Vec<String>,
    index_metadata: BTreeMap<String, String>,
}

impl SafetensorsStore {
    /// Opens `path`: a `.safetensors` file; a directory holding `model.safetensors.index.json`
    /// (sharded), `model.safetensors`, or the weights file of one of finercut's own layouts
    /// ([`crate::own_types::OwnLayout::weights_file`]); or a `*.safetensors.index.json` file.
    ///
    /// Each shard is mapped once. Files must not change while the store is alive (see
    /// [`crate::io::map_file`]).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            let single = path.join("model.safetensors");
            let own: Vec<PathBuf> = crate::own_types::OwnLayout::ALL
                .iter()
                .map(|l| path.join(l.weights_file()))
                .filter(|p| p.is_file())
                .collect();
            if index.is_file() {
                Self::open_index(&index)
            } else if single.is_file() {
                Self::open_single(&single)
            } else {
                match own.as_slice() {
                    [one] => Self::open_single(one),
                    [] => Err(Error::malformed(
                        path,
                        format!(
                            "no model.safetensors or model.safetensors.index.json (nor {}) in this directory",
                            crate::own_types::OwnLayout::ALL.map(|l| l.weights_file()).join(", ")
                        ),
                    )),
                    _ => Err(Error::malformed(
                        path,
                        "holds the weights of several finercut layouts; keep the one its config.json describes",
                    )),
                }
            }
        } else if path.extension().is_some_and(|e| e == "json") {
            Self::open_index(path)
        } else {
            Self::open_single(path)
        }
    }

    fn open_single(path: &Path) -> Result<Self> {
        let file = SafeFile::open(path)?;
        Ok(Self::from_files(
            path.to_path_buf(),
            vec![file],
            BTreeMap::new(),
        ))
    }

    fn open_index(index_path: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Index {
            #[serde(default)]
            metadata: Option<serde_json::Map<String, serde_json::Value>>,
            weight_map: BTreeMap<String, String>,
        }
        let text = std::fs::read_to_string(index_path).with_path(index_path)?;
        let index: Index = serde_json::from_str(&text)
            .map_err(|e| Error::malformed(index_path, format!("not a safetensors index: {e}")))?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let shard_names: BTreeSet<&String> = index.weight_map.values().collect();
        let mut files = Vec::with_capacity(shard_names.len());
        let mut shard_of = HashMap::new();
        for shard in shard_names {
            let p = Path::new(shard);
            if p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(Error::malformed(
                    index_path,
                    format!("shard `{shard}` is not a file next to the index"),
                ));
            }
            shard_of.insert(shard.clone(), files.len());
            files.push(SafeFile::open(&dir.join(p))?);
        }
        // Route every name of the weight map to its shard, checking that the shard holds it.
        let mut index_map = HashMap::with_capacity(index.weight_map.len());
        for (name, shard) in &index.weight_map {
            let fi = shard_of[shard];
            let ei = files[fi].entries.iter().position(|e| &e.name == name).ok_or_else(|| {
                Error::malformed(index_path, format!("weight_map routes tensor `{name}` to `{shard}`, which does not hold it"))
            })?;
            index_map.insert(name.clone(), (fi, ei));
        }
        let mut order: Vec<(usize, usize, String)> = index_map
            .iter()
            .map(|(n, &(f, e))| (f, files[f].entries[e].start, n.clone()))
            .collect();
        order.sort();
        let metadata = index
            .metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect();
        Ok(SafetensorsStore {
            origin: index_path.to_path_buf(),
            files,
            index: index_map,
            order: order.into_iter().map(|(_, _, n)| n).collect(),
            index_metadata: metadata,
        })
    }

    fn from_files(
        origin: PathBuf,
        files: Vec<SafeFile>,
        index_metadata: BTreeMap<String, String>,
    ) -> Self {
        let mut index = HashMap::new();
        let mut order = Vec::new();
        for (fi, f) in files.iter().enumerate() {
            for (ei, e) in f.entries.iter().enumerate() {
                index.insert(e.name.clone(), (fi, ei));
                order.push(e.name.clone());
            }
        }
        SafetensorsStore {
            origin,
            files,
            index,
            order,
            index_metadata,
        }
    }

    /// Parses safetensors bytes already in memory; `origin` names them in errors.
    pub fn from_bytes(origin: impl Into<PathBuf>, data: Bytes) -> Result<Self> {
        let origin = origin.into();
        let file = SafeFile::parse(&origin, data)?;
        Ok(Self::from_files(origin, vec![file], BTreeMap::new()))
    }

    /// The file or index the store was opened from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The files mapped (one per shard), in shard-name order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// The `__metadata__` of the first file, merged with the index's `metadata` (index wins).
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let mut m = self
            .files
            .first()
            .map(|f| f.metadata.clone())
            .unwrap_or_default();
        m.extend(self.index_metadata.clone());
        m
    }

    /// Shape of tensor `name` without touching its data.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index
            .get(name)
            .map(|&(f, e)| self.files[f].entries[e].shape.as_slice())
    }

    /// The dtype of tensor `name` as the header spells it (`F32`, `I64`, …).
    pub fn stored_dtype(&self, name: &str) -> Option<&'static str> {
        self.index
            .get(name)
            .map(|&(f, e)| dtype_name(self.files[f].entries[e].stored))
    }
}

impl TensorSource for SafetensorsStore {
    fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<RawTensor> {
        let &(fi, ei) = self.index.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            origin: self.origin.display().to_string(),
        })?;
        let file = &self.files[fi];
        let e = &file.entries[ei];
        let dtype = e.dtype.ok_or_else(|| {
            Error::bad_tensor(
                &file.path,
                name,
                format!(
                    "dtype {} is not a float type (F32, F16, BF16)",
                    dtype_name(e.stored)
                ),
            )
        })?;
        let data = file
            .data
            .sub(e.start, e.len)
            .ok_or_else(|| Error::bad_tensor(&file.path, name, "data range outside the file"))?;
        Ok(RawTensor {
            name: name.to_string(),
            dtype,
            shape: e.shape.clone(),
            data,
        })
    }
}

/// Name, dtype and shape of a tensor to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Row-major shape.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    fn nbytes(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.dtype.size(), |a, &d| a.checked_mul(d))
    }
}

/// Writes a safetensors file from tensors in memory. `metadata` becomes `__metadata__` (omitted
/// when empty; transformers wants `{"format": "pt"}`). The file is written to a temporary name and
/// renamed into place.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, DType, Vec<usize>, &[u8])],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(n, d, s, _)| TensorSpec {
            name: n.clone(),
            dtype: *d,
            shape: s.clone(),
        })
        .collect();
    write_safetensors_streamed(path, &specs, metadata, |i| {
        Ok(Bytes::from_vec(tensors[i].3.to_vec()))
    })
}

/// Writes a safetensors file whose tensors are produced one at a time by `data(i)` (the bytes of
/// `specs[i]`), so a checkpoint larger than memory can be written. Atomic like
/// [`write_safetensors`].
pub fn write_safetensors_streamed(
    path: &Path,
    specs: &[TensorSpec],
    metadata: &BTreeMap<String, String>,
    mut data: impl FnMut(usize) -> Result<Bytes>,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    let mut infos = Vec::with_capacity(specs.len());
    let mut offset = 0usize;
    for s in specs {
        if s.name == "__metadata__" || !seen.insert(s.name.as_str()) {
            return Err(Error::bad_tensor(
                path,
                &s.name,
                "duplicate or reserved tensor name",
            ));
        }
        let end = s
            .nbytes()
            .and_then(|n| offset.checked_add(n))
            .ok_or_else(|| Error::bad_tensor(path, &s.name, "shape overflows"))?;
        infos.push((
            s.name.clone(),
            TensorInfo {
                dtype: stored_dtype(s.dtype),
                shape: s.shape.clone(),
                data_offsets: (offset, end),
            },
        ));
        offset = end;
    }
    // The crate checks the layout; the header is serialised from its types but through
    // `Header`, because the crate keeps `__metadata__` in a `HashMap` whose order (and so the
    // file's bytes and hash) would change from run to run.
    Metadata::new(None, infos.clone())
        .map_err(|e| Error::malformed(path, format!("cannot lay out the tensors: {e}")))?;
    let mut text = serde_json::to_string(&Header {
        metadata,
        infos: &infos,
    })
    .map_err(|e| Error::malformed(path, format!("cannot serialise header: {e}")))?
    .into_bytes();
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    write_atomically(path, |w| {
        w.write_all(&(text.len() as u64).to_le_bytes())
            .with_path(path)?;
        w.write_all(&text).with_path(path)?;
        for (i, s) in specs.iter().enumerate() {
            let bytes = data(i)?;
            let n = s.nbytes().unwrap_or(0);
            if bytes.len() != n {
                return Err(Error::bad_tensor(
                    path,
                    &s.name,
                    format!(
                        "{} bytes given for shape {:?} of {} ({n} bytes)",
                        bytes.len(),
                        s.shape,
                        s.dtype
                    ),
                ));
            }
            w.write_all(&bytes).with_path(path)?;
        }
        Ok(())
    })
}

/// A safetensors header in a fixed order: `__metadata__` (sorted by key, omitted when empty), then
/// the tensors in file order.
struct Header<'a> {
    metadata: &'a BTreeMap<String, String>,
    infos: &'a [(String, TensorInfo)],
}

impl serde::Serialize for Header<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let with_metadata = !self.metadata.is_empty();
        let mut map =
            serializer.serialize_map(Some(self.infos.len() + usize::from(with_metadata)))?;
        if with_metadata {
            map.serialize_entry("__metadata__", self.metadata)?;
        }
        for (name, info) in self.infos {
            map.serialize_entry(name, info)?;
        }
        map.end()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file_with_header(header: &str, data_len: usize) -> Bytes {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data_len));
        Bytes::from_vec(v)
    }

    fn err(header: &str, data_len: usize) -> String {
        match SafetensorsStore::from_bytes("x.safetensors", file_with_header(header, data_len)) {
            Ok(_) => panic!("accepted {header}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn header_errors_name_file_and_tensor() {
        let e = err(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}"#,
            12,
        );
        assert!(
            e.contains("x.safetensors") && e.contains("`w`") && e.contains("needs 8 bytes"),
            "{e}"
        );
        let e = err(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            4,
        );
        assert!(e.contains("out of range"), "{e}");
        let e = err(
            r#"{"w":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        );
        assert!(e.contains("unknown dtype `Q9`") && e.contains("`w`"), "{e}");
        let e = err(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        );
        assert!(e.contains("overlaps"), "{e}");
        let e = err("not json", 0);
        assert!(e.contains("JSON"), "{e}");
    }

    #[test]
    fn layout_errors_name_the_tensor() {
        let cases: [(&str, usize, &[&str]); 5] = [
            (
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                12,
                &["x.safetensors", "cover 8 bytes"],
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                12,
                &["`b`", "4..8"],
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[1152921504606846976,16],"data_offsets":[0,8]}}"#,
                8,
                &["`w`", "overflows"],
            ),
            (
                r#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
                2,
                &["`w`", "12 bits"],
            ),
            (r#"{"__metadata__":{"a":1}}"#, 0, &["__metadata__"]),
        ];
        for (header, data_len, needles) in cases {
            let e = err(header, data_len);
            assert!(needles.iter().all(|n| e.contains(n)), "{e}");
        }
    }

    #[test]
    fn written_headers_are_deterministic_and_read_by_the_crate() {
        let dir = std::env::temp_dir().join(format!("finercut-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta: BTreeMap<String, String> =
            (0..8).map(|i| (format!("k{i}"), i.to_string())).collect();
        let data = [0u8; 16];
        let tensors = [
            ("z".to_string(), DType::F32, vec![2], &data[..8]),
            ("a".to_string(), DType::BF16, vec![2, 2], &data[8..]),
        ];
        let (p1, p2) = (dir.join("1.safetensors"), dir.join("2.safetensors"));
        write_safetensors(&p1, &tensors, &meta).unwrap();
        write_safetensors(&p2, &tensors, &meta).unwrap();
        let bytes = std::fs::read(&p1).unwrap();
        assert_eq!(bytes, std::fs::read(&p2).unwrap());
        let parsed = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(parsed.tensor("a").unwrap().shape(), &[2, 2]);
        let store = SafetensorsStore::open(&p1).unwrap();
        assert_eq!(store.names(), vec!["z", "a"]);
        assert_eq!(store.metadata(), meta);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_float_tensors_are_listed_but_not_served() {
        let s = SafetensorsStore::from_bytes(
            "y.safetensors",
            file_with_header(
                r#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
                8,
            ),
        )
        .unwrap();
        assert_eq!(s.names(), vec!["ids".to_string()]);
        assert_eq!(s.stored_dtype("ids"), Some("I64"));
        let e = s.get("ids").unwrap_err().to_string();
        assert!(e.contains("I64"), "{e}");
        assert!(matches!(s.get("nope"), Err(Error::MissingTensor { .. })));
    }
}
