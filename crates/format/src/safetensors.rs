//! Memory-mapped safetensors checkpoints (single files and sharded), and writing them.
//!
//! Format (huggingface/safetensors): an 8-byte little-endian header length `N`, `N` bytes of JSON
//! mapping each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to
//! the data section that follows the header) plus an optional `__metadata__` string map, then the
//! data. The header is parsed and checked here rather than by the `safetensors` crate so that
//! every error names the file and the tensor; the tests check files written here against that
//! crate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::IoResultExt;
use crate::io::{map_model_file, write_atomically};
use crate::tensor::{Bytes, DType, Owner, RawTensor, TensorSource};
use crate::{Error, Result};

/// Largest header accepted (the reference implementation uses the same limit).
const MAX_HEADER: u64 = 100_000_000;

/// Every dtype a safetensors header may name, with its size in bytes.
const STORED_DTYPES: &[(&str, usize)] = &[
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("F8_E5M2", 1),
    ("F8_E4M3", 1),
    ("F8_E8M0", 1),
    ("I16", 2),
    ("U16", 2),
    ("F16", 2),
    ("BF16", 2),
    ("I32", 4),
    ("U32", 4),
    ("F32", 4),
    ("F64", 8),
    ("I64", 8),
    ("U64", 8),
];

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    /// The dtype as written in the header.
    stored: &'static str,
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

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

impl SafeFile {
    fn parse(path: &Path, data: Bytes) -> Result<SafeFile> {
        let bytes: &[u8] = &data;
        let total = bytes.len();
        if total < 8 {
            return Err(Error::malformed(
                path,
                format!("truncated: {total} bytes, but a safetensors file starts with an 8-byte header length"),
            ));
        }
        let mut n8 = [0u8; 8];
        n8.copy_from_slice(&bytes[..8]);
        let n = u64::from_le_bytes(n8);
        if n > MAX_HEADER {
            return Err(Error::malformed(
                path,
                format!("header length {n} exceeds the limit of {MAX_HEADER} bytes"),
            ));
        }
        if n > (total - 8) as u64 {
            return Err(Error::malformed(
                path,
                format!("header length {n} goes beyond the end of the file ({total} bytes): truncated or not safetensors"),
            ));
        }
        let header_end = 8 + n as usize;
        let text = std::str::from_utf8(&bytes[8..header_end])
            .map_err(|e| Error::malformed(path, format!("header is not UTF-8: {e}")))?;
        let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| Error::malformed(path, format!("header is not a JSON object: {e}")))?;
        let data_len = total - header_end;
        let mut entries = Vec::with_capacity(json.len());
        let mut metadata = BTreeMap::new();
        for (name, value) in json {
            if name == "__metadata__" {
                metadata = serde_json::from_value(value).map_err(|e| {
                    Error::malformed(
                        path,
                        format!("`__metadata__` is not a map of strings to strings: {e}"),
                    )
                })?;
                continue;
            }
            let raw: RawEntry = serde_json::from_value(value).map_err(|e| {
                Error::bad_tensor(path, &name, format!("invalid header entry: {e}"))
            })?;
            let (stored, size) = STORED_DTYPES
                .iter()
                .find(|(s, _)| *s == raw.dtype)
                .copied()
                .ok_or_else(|| {
                    Error::bad_tensor(path, &name, format!("unknown dtype `{}`", raw.dtype))
                })?;
            let (begin, end) = raw.data_offsets;
            if begin > end || end > data_len as u64 {
                return Err(Error::bad_tensor(
                    path,
                    &name,
                    format!("data_offsets [{begin}, {end}] out of range: the data section has {data_len} bytes"),
                ));
            }
            let need = raw
                .shape
                .iter()
                .try_fold(size, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| {
                    Error::bad_tensor(path, &name, format!("shape {:?} overflows", raw.shape))
                })?;
            if need as u64 != end - begin {
                return Err(Error::bad_tensor(
                    path,
                    &name,
                    format!(
                        "shape {:?} of {stored} needs {need} bytes but data_offsets [{begin}, {end}] span {}",
                        raw.shape,
                        end - begin
                    ),
                ));
            }
            let dtype = match stored {
                "F32" => Some(DType::F32),
                "F16" => Some(DType::F16),
                "BF16" => Some(DType::BF16),
                _ => None,
            };
            entries.push(Entry {
                name,
                stored,
                dtype,
                shape: raw.shape,
                start: header_end + begin as usize,
                len: (end - begin) as usize,
            });
        }
        entries.sort_by(|a, b| (a.start, a.len, &a.name).cmp(&(b.start, b.len, &b.name)));
        for w in entries.windows(2) {
            if w[0].len > 0 && w[1].len > 0 && w[0].start + w[0].len > w[1].start {
                return Err(Error::bad_tensor(
                    path,
                    &w[1].name,
                    format!("data overlaps tensor `{}`", w[0].name),
                ));
            }
        }
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
    /// (sharded) or `model.safetensors`; or a `*.safetensors.index.json` file.
    ///
    /// Each shard is mapped once. Files must not change while the store is alive (see
    /// [`crate::io::map_file`]).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            let single = path.join("model.safetensors");
            if index.is_file() {
                Self::open_index(&index)
            } else if single.is_file() {
                Self::open_single(&single)
            } else {
                Err(Error::malformed(
                    path,
                    "no model.safetensors or model.safetensors.index.json in this directory",
                ))
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
            .map(|&(f, e)| self.files[f].entries[e].stored)
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
                format!("dtype {} is not a float type (F32, F16, BF16)", e.stored),
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
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut offset = 0usize;
    for s in specs {
        if s.name == "__metadata__" || header.contains_key(&s.name) {
            return Err(Error::bad_tensor(
                path,
                &s.name,
                "duplicate or reserved tensor name",
            ));
        }
        let n = s
            .nbytes()
            .ok_or_else(|| Error::bad_tensor(path, &s.name, "shape overflows"))?;
        header.insert(
            s.name.clone(),
            serde_json::json!({
                "dtype": s.dtype.safetensors_name(),
                "shape": s.shape,
                "data_offsets": [offset, offset + n],
            }),
        );
        offset += n;
    }
    let mut text = serde_json::to_string(&header)
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
