//! GGUF files (versions 2 and 3): header, metadata, tensor infos and memory-mapped tensor data.
//!
//! Layout (`docs/GGUF.md`, after ggml's specification), all little-endian:
//! `"GGUF"`, `u32 version`, `u64 tensor_count`, `u64 metadata_kv_count`, the metadata
//! (`string key`, `u32 value_type`, value), the tensor infos (`string name`, `u32 n_dims`,
//! `u64 ne[n_dims]`, `u32 ggml_type`, `u64 offset`), padding to `general.alignment` (default 32),
//! then the data section; each tensor's `offset` is relative to its start and aligned.
//! Strings are a `u64` length and UTF-8 bytes; arrays are a `u32` element type, a `u64` count and
//! the elements (arrays may nest). `ne[0]` is the fastest-varying dimension, so the Hugging Face
//! (row-major) shape is `ne` reversed.

pub mod deci;
pub mod quants;
mod store;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::io::map_model_file;
use crate::tensor::{Bytes, Owner};
use crate::{Error, Result};

pub use deci::{pruned_from_gguf, GgufModelOut};
pub use quants::GgmlType;
pub use store::{hf_tensor_name, permute_rows, unpermute_rows, GgufStore, QuantizedRows};
pub use writer::{write_gguf, GgufTensorOut};

/// GGUF's default data alignment.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest array nesting accepted.
const MAX_DEPTH: usize = 8;
/// Most dimensions a ggml tensor has.
const MAX_DIMS: u32 = 4;
/// Most elements reserved ahead for a count read from the file. A count is only checked against
/// the bytes left (one byte per `u8`), while each parsed element takes far more memory (a
/// [`Value`] is 32 bytes), so reserving the full count would turn a corrupt count into an
/// allocation many times the file's size; beyond this many, vectors grow as elements arrive.
const MAX_RESERVE: usize = 1 << 12;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9: the element type and the elements (which may be arrays themselves).
    Array(u32, Vec<Value>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, for any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, for any integer type that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float. `F32` values convert through their shortest decimal form, so the
    /// `1e-5` stored as the f32 `9.99999974e-6` reads as `1e-5`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => format!("{v}").parse().ok(),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, v) => Some(v),
            _ => None,
        }
    }

    /// The GGUF type name (`u32`, `string`, `array`, …).
    pub fn type_name(&self) -> &'static str {
        type_name(self.gguf_type())
    }

    /// The GGUF value type id as stored in the file (`gguf_type`: 0 = u8 … 12 = f64).
    pub fn gguf_type(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(..) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
}

fn type_name(t: u32) -> &'static str {
    match t {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(v) => write!(f, "{v:?}"),
            Value::Array(t, v) => write!(f, "[{}; {}]", type_name(*t), v.len()),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
        }
    }
}

/// A tensor's description in the GGUF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// llama.cpp name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// `ne`: dimensions, fastest-varying first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the data section.
    pub offset: u64,
    /// Size of the data in bytes (`None` for a type whose layout this crate does not know).
    pub size: Option<usize>,
}

impl GgufTensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }

    /// The row-major (Hugging Face) shape: `dims` reversed.
    pub fn hf_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Elements per row (`ne[0]`).
    pub fn row_len(&self) -> usize {
        self.dims.first().map_or(1, |&d| d as usize)
    }

    /// Number of rows (the product of `ne[1..]`).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).map(|&d| d as usize).product()
    }
}

/// A GGUF file, memory-mapped, with its header parsed and checked.
pub struct GgufFile {
    path: PathBuf,
    data: Bytes,
    version: u32,
    metadata: Vec<(String, Value)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: usize,
}

struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(Error::malformed(
                self.path,
                format!(
                    "truncated: {what} at byte {} needs {n} bytes, the file has {}",
                    self.pos,
                    self.buf.len()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A count that will be followed by at least `min_each` bytes per element.
    fn count(&mut self, min_each: usize, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        if n.saturating_mul(min_each.max(1) as u64) > self.remaining() as u64 {
            return Err(Error::malformed(
                self.path,
                format!(
                    "{what} = {n} at byte {} is larger than the rest of the file",
                    self.pos - 8
                ),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(1, what)?;
        let at = self.pos;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            Error::malformed(self.path, format!("{what} at byte {at} is not UTF-8: {e}"))
        })
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array(key)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => {
                let at = self.pos;
                match self.array::<1>(key)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(Error::malformed(
                            self.path,
                            format!(
                                "metadata `{key}`: bool byte {b} at byte {at} is neither 0 nor 1"
                            ),
                        ))
                    }
                }
            }
            8 => Value::String(self.string(&format!("string value of `{key}`"))?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(Error::malformed(
                        self.path,
                        format!("metadata `{key}`: arrays nested too deep"),
                    ));
                }
                let et = self.u32(key)?;
                let min_each = match et {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    _ => 1,
                };
                let n = self.count(min_each, &format!("length of array `{key}`"))?;
                let mut v = Vec::with_capacity(n.min(MAX_RESERVE));
                for _ in 0..n {
                    v.push(self.value(et, key, depth + 1)?);
                }
                Value::Array(et, v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            other => {
                return Err(Error::malformed(
                    self.path,
                    format!(
                        "metadata `{key}`: unknown value type {other} at byte {}",
                        self.pos - 4
                    ),
                ))
            }
        })
    }
}

impl GgufFile {
    /// Maps and parses the GGUF file at `path`. The file must not change while it is open (see
    /// [`crate::io::map_file`]).
    pub fn open(path: &Path) -> Result<Self> {
        let mmap = map_model_file(path)?;
        let len = mmap.len();
        let owner: Owner = mmap;
        Self::from_bytes(path, Bytes::slice(owner, 0, len))
    }

    /// Parses GGUF bytes already in memory; `origin` names them in errors.
    pub fn from_bytes(origin: impl Into<PathBuf>, data: Bytes) -> Result<Self> {
        let path = origin.into();
        let buf: &[u8] = &data;
        let mut c = Cursor {
            path: &path,
            buf,
            pos: 0,
        };
        let magic = c.take(4, "magic")?;
        if magic != b"GGUF" {
            return Err(Error::malformed(
                &path,
                format!("not a GGUF file (magic {magic:02x?})"),
            ));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::unsupported(
                path.display().to_string(),
                format!("GGUF version {version} (versions 2 and 3 are supported)"),
            ));
        }
        let n_tensors = c.count(8 + 4 + 4 + 8, "tensor_count")?;
        let n_kv = c.count(8 + 4 + 1, "metadata_kv_count")?;
        let mut metadata = Vec::with_capacity(n_kv.min(MAX_RESERVE));
        let mut meta_index = HashMap::with_capacity(n_kv.min(MAX_RESERVE));
        for i in 0..n_kv {
            let key = c.string(&format!("key of metadata entry {i}"))?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(Error::malformed(
                    &path,
                    format!("metadata key `{key}` appears twice"),
                ));
            }
            metadata.push((key, value));
        }
        let alignment = match meta_index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(Error::malformed(
                        &path,
                        format!("general.alignment = {v} is not a power of two"),
                    ))
                }
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors.min(MAX_RESERVE));
        let mut tensor_index = HashMap::with_capacity(n_tensors.min(MAX_RESERVE));
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor {i}"))?;
            let n_dims = c.u32(&name)?;
            if n_dims > MAX_DIMS {
                return Err(Error::bad_tensor(
                    &path,
                    &name,
                    format!("{n_dims} dimensions (at most {MAX_DIMS})"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let ggml_type = GgmlType::from_id(c.u32(&name)?);
            let offset = c.u64(&name)?;
            let numel = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n < (1u64 << 48));
            let Some(numel) = numel else {
                return Err(Error::bad_tensor(
                    &path,
                    &name,
                    format!("dimensions {dims:?} overflow"),
                ));
            };
            let size = match ggml_type.layout() {
                Some((block, bytes)) => {
                    let row = dims.first().copied().unwrap_or(1);
                    if row % block as u64 != 0 {
                        return Err(Error::bad_tensor(
                            &path,
                            &name,
                            format!("row length {row} is not a multiple of the {ggml_type} block size {block}"),
                        ));
                    }
                    Some((numel / block as u64 * bytes as u64) as usize)
                }
                None => None,
            };
            if offset % alignment != 0 {
                return Err(Error::bad_tensor(
                    &path,
                    &name,
                    format!("data offset {offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(Error::bad_tensor(&path, &name, "name appears twice"));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                size,
            });
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        if n_tensors > 0 && data_offset > buf.len() as u64 {
            return Err(Error::malformed(
                &path,
                format!("truncated: the data section would start at byte {data_offset}, the file has {}", buf.len()),
            ));
        }
        let data_len = (buf.len() as u64).saturating_sub(data_offset);
        let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if let Some(size) = t.size {
                let end = t.offset.checked_add(size as u64).filter(|&e| e <= data_len).ok_or_else(|| {
                    Error::bad_tensor(
                        &path,
                        &t.name,
                        format!(
                            "data [{}, {}) out of range: the data section has {data_len} bytes (truncated file?)",
                            t.offset,
                            t.offset as u128 + size as u128
                        ),
                    )
                })?;
                spans.push((t.offset, end, i));
            }
        }
        spans.sort();
        for w in spans.windows(2) {
            if w[0].1 > w[1].0 && w[0].1 > w[0].0 && w[1].1 > w[1].0 {
                return Err(Error::bad_tensor(
                    &path,
                    &tensors[w[1].2].name,
                    format!("data overlaps tensor `{}`", tensors[w[0].2].name),
                ));
            }
        }
        Ok(GgufFile {
            path,
            data,
            version,
            metadata,
            meta_index,
            tensors,
            tensor_index,
            alignment,
            data_offset: data_offset as usize,
        })
    }

    /// The file's path (or the origin given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the file.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn typed<T>(
        &self,
        key: &str,
        want: &str,
        f: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| {
                Error::malformed(
                    &self.path,
                    format!("metadata `{key}` is {} {v}, expected {want}", v.type_name()),
                )
            }),
        }
    }

    /// `key` as an unsigned integer; an error when present with another type.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    /// `key` as a float (integers accepted); an error when present with another type.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a number", Value::as_f64)
    }

    /// `key` as a bool; an error when present with another type.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", Value::as_bool)
    }

    /// `key` as a string; an error when present with another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(Error::malformed(
                &self.path,
                format!(
                    "metadata `{key}` is {} {v}, expected a string",
                    v.type_name()
                ),
            )),
        }
    }

    /// `key` as an array; an error when present with another type.
    pub fn get_array(&self, key: &str) -> Result<Option<&[Value]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(_, v)) => Ok(Some(v)),
            Some(v) => Err(Error::malformed(
                &self.path,
                format!(
                    "metadata `{key}` is {} {v}, expected an array",
                    v.type_name()
                ),
            )),
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")?.ok_or_else(|| {
            Error::malformed(&self.path, "metadata `general.architecture` is missing")
        })
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name` (llama.cpp naming).
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw (possibly quantised) bytes of tensor `name`, zero-copy.
    pub fn tensor_bytes(&self, name: &str) -> Result<Bytes> {
        let t = self.tensor(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            origin: self.path.display().to_string(),
        })?;
        let size = t.size.ok_or_else(|| {
            Error::bad_tensor(
                &self.path,
                name,
                format!("ggml type {} is not supported", t.ggml_type),
            )
        })?;
        self.data
            .sub(self.data_offset + t.offset as usize, size)
            .ok_or_else(|| Error::bad_tensor(&self.path, name, "data outside the file"))
    }

    /// Tensor `name` dequantised to `f32` in GGUF row order (`ne` reversed is the shape).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            origin: self.path.display().to_string(),
        })?;
        self.dequantize_rows(t, t.n_rows(), |r| r)
    }

    /// Dequantises `n_out` rows of tensor `t`: output row `r` is source row `src(r)`. Rows are
    /// processed in parallel.
    pub(crate) fn dequantize_rows(
        &self,
        t: &GgufTensorInfo,
        n_out: usize,
        src: impl Fn(usize) -> usize + Sync,
    ) -> Result<Vec<f32>> {
        let bytes = self.tensor_bytes(&t.name)?;
        let (block, block_bytes) = t.ggml_type.layout().ok_or_else(|| {
            Error::bad_tensor(
                &self.path,
                &t.name,
                format!("ggml type {} is not supported", t.ggml_type),
            )
        })?;
        if !t.ggml_type.can_dequantize() {
            return Err(Error::bad_tensor(
                &self.path,
                &t.name,
                format!("dequantising {} is not implemented", t.ggml_type),
            ));
        }
        let row_len = t.row_len();
        let row_bytes = row_len / block * block_bytes;
        let n_rows = t.n_rows();
        let mut out = vec![0f32; n_out * row_len];
        if row_len == 0 {
            return Ok(out);
        }
        out.par_chunks_mut(row_len)
            .enumerate()
            .try_for_each(|(r, dst)| {
                let s = src(r);
                if s >= n_rows {
                    return Err(Error::bad_tensor(
                        &self.path,
                        &t.name,
                        format!("row {s} out of {n_rows}"),
                    ));
                }
                quants::dequantize_row(t.ggml_type, &bytes[s * row_bytes..(s + 1) * row_bytes], dst)
                    .map_err(|msg| Error::bad_tensor(&self.path, &t.name, msg))
            })?;
        Ok(out)
    }
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}
