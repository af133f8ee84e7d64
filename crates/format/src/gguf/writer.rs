//! Writing GGUF v3 files: the inverse of [`super::GgufFile::from_bytes`].
//!
//! The layout is ggml's `docs/GGUF.md`: header, metadata, tensor infos, padding to
//! `general.alignment` (32 unless the metadata says otherwise), then each tensor's bytes at an
//! aligned offset relative to the start of the data section. Tensor bytes are written as given
//! (quantised blocks are copied, never requantised), so a tensor read from one GGUF file and
//! written to another is bit-identical.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use super::{GgmlType, Value, DEFAULT_ALIGNMENT};
use crate::error::IoResultExt;
use crate::io::write_atomically;
use crate::tensor::Bytes;
use crate::{Error, Result};

/// A tensor to write: llama.cpp name, `ne` (fastest-varying first), storage type and bytes.
#[derive(Clone)]
pub struct GgufTensorOut {
    /// llama.cpp name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// `ne`: dimensions, fastest-varying first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// The tensor's bytes in that type (possibly borrowed from a memory map).
    pub data: Bytes,
}

impl std::fmt::Debug for GgufTensorOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTensorOut")
            .field("name", &self.name)
            .field("dims", &self.dims)
            .field("ggml_type", &self.ggml_type)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl GgufTensorOut {
    /// An F32 tensor of `dims` (fastest-varying first) holding `values`.
    pub fn f32(name: impl Into<String>, dims: Vec<u64>, values: Vec<f32>) -> Self {
        GgufTensorOut {
            name: name.into(),
            dims,
            ggml_type: GgmlType::F32,
            data: Bytes::from_f32_vec(values),
        }
    }

    /// The number of bytes a tensor of this type and shape takes, or an error naming it.
    fn expected_size(&self, path: &Path) -> Result<usize> {
        let (block, bytes) = self.ggml_type.layout().ok_or_else(|| {
            Error::bad_tensor(path, &self.name, format!("cannot write {}", self.ggml_type))
        })?;
        let row = self.dims.first().copied().unwrap_or(1);
        if self.dims.len() > 4 || self.dims.is_empty() {
            return Err(Error::bad_tensor(
                path,
                &self.name,
                format!("{} dimensions (1 to 4 are allowed)", self.dims.len()),
            ));
        }
        if row % block as u64 != 0 {
            return Err(Error::bad_tensor(
                path,
                &self.name,
                format!(
                    "row length {row} is not a multiple of the {} block size {block}",
                    self.ggml_type
                ),
            ));
        }
        let numel: u64 = self.dims.iter().product();
        Ok((numel / block as u64 * bytes as u64) as usize)
    }
}

fn put_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn put_value(w: &mut impl Write, v: &Value) -> std::io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => put_str(w, s),
        Value::Array(t, items) => {
            w.write_all(&t.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|i| put_value(w, i))
        }
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
    }
}

/// Checks that every element of an array has the declared element type.
fn check_value(path: &Path, key: &str, v: &Value) -> Result<()> {
    if let Value::Array(t, items) = v {
        for item in items {
            if item.gguf_type() != *t {
                return Err(Error::malformed(
                    path,
                    format!(
                        "metadata `{key}`: array of {} holds a {}",
                        super::type_name(*t),
                        item.type_name()
                    ),
                ));
            }
            check_value(path, key, item)?;
        }
    }
    Ok(())
}

/// Writes a GGUF v3 file at `path` (atomically: a temporary file renamed into place).
///
/// `metadata` is written in the order given; `general.alignment`, when present, sets the data
/// alignment. Every tensor's byte count must match its type and shape; names and keys must be
/// unique.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[GgufTensorOut],
) -> Result<()> {
    let mut keys = HashSet::new();
    for (k, v) in metadata {
        if !keys.insert(k.as_str()) {
            return Err(Error::malformed(
                path,
                format!("metadata key `{k}` given twice"),
            ));
        }
        check_value(path, k, v)?;
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => {
                return Err(Error::malformed(
                    path,
                    format!("general.alignment = {v} is not a power of two"),
                ))
            }
        },
    };
    let mut names = HashSet::new();
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        if !names.insert(t.name.as_str()) {
            return Err(Error::bad_tensor(path, &t.name, "name given twice"));
        }
        let size = t.expected_size(path)?;
        if size != t.data.len() {
            return Err(Error::bad_tensor(
                path,
                &t.name,
                format!(
                    "{} bytes given; {:?} of {} takes {size}",
                    t.data.len(),
                    t.dims,
                    t.ggml_type
                ),
            ));
        }
        offsets.push(offset);
        offset = (offset + size as u64).div_ceil(alignment) * alignment;
    }
    write_atomically(path, |w| {
        let mut pos = 0u64;
        let mut counted = CountingWriter {
            inner: w,
            n: &mut pos,
        };
        let header = (|| -> std::io::Result<()> {
            counted.write_all(b"GGUF")?;
            counted.write_all(&3u32.to_le_bytes())?;
            counted.write_all(&(tensors.len() as u64).to_le_bytes())?;
            counted.write_all(&(metadata.len() as u64).to_le_bytes())?;
            for (k, v) in metadata {
                put_str(&mut counted, k)?;
                counted.write_all(&v.gguf_type().to_le_bytes())?;
                put_value(&mut counted, v)?;
            }
            for (t, off) in tensors.iter().zip(&offsets) {
                put_str(&mut counted, &t.name)?;
                counted.write_all(&(t.dims.len() as u32).to_le_bytes())?;
                for d in &t.dims {
                    counted.write_all(&d.to_le_bytes())?;
                }
                counted.write_all(&t.ggml_type.id().to_le_bytes())?;
                counted.write_all(&off.to_le_bytes())?;
            }
            Ok(())
        })();
        header.with_path(path)?;
        let pad = |c: &mut CountingWriter<'_, _>| -> std::io::Result<()> {
            let to = c.n.div_ceil(alignment) * alignment;
            let zeros = vec![0u8; (to - *c.n) as usize];
            c.write_all(&zeros)
        };
        pad(&mut counted).with_path(path)?;
        for t in tensors {
            counted.write_all(&t.data).with_path(path)?;
            pad(&mut counted).with_path(path)?;
        }
        Ok(())
    })
}

/// A writer that counts the bytes written through it.
struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: &'a mut u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        *self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    #[test]
    fn written_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        let meta = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            ("general.alignment".to_string(), Value::U32(64)),
            (
                "llama.feed_forward_length".to_string(),
                Value::Array(5, vec![Value::I32(3), Value::I32(0)]),
            ),
        ];
        let q = Bytes::from_vec((0..20u8).collect());
        let tensors = vec![
            GgufTensorOut::f32("a", vec![3], vec![1.0, 2.0, 3.0]),
            GgufTensorOut {
                name: "b".into(),
                dims: vec![32, 1],
                ggml_type: GgmlType::Q4_1,
                data: q.clone(),
            },
        ];
        write_gguf(&p, &meta, &tensors).unwrap();
        let f = GgufFile::open(&p).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.metadata(), &meta[..]);
        assert_eq!(f.dequantize("a").unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(&*f.tensor_bytes("b").unwrap(), &*q);
        assert_eq!(f.tensor("b").unwrap().offset % 64, 0);
        assert_eq!(f.data_offset() % 64, 0);
    }

    #[test]
    fn inconsistent_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        let short = GgufTensorOut {
            name: "w".into(),
            dims: vec![32],
            ggml_type: GgmlType::Q8_0,
            data: Bytes::from_vec(vec![0; 33]),
        };
        let e = write_gguf(&p, &[], &[short]).unwrap_err().to_string();
        assert!(e.contains("`w`") && e.contains("34"), "{e}");
        let a = GgufTensorOut::f32("x", vec![1], vec![0.0]);
        let e = write_gguf(&p, &[], &[a.clone(), a])
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let mixed = Value::Array(4, vec![Value::U32(1), Value::I32(2)]);
        let e = write_gguf(&p, &[("k".into(), mixed)], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`k`"), "{e}");
        assert!(!p.exists());
    }
}
