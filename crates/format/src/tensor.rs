//! Raw tensors: dtype, shape and shared, zero-copy bytes, and the [`TensorSource`] trait.
//!
//! A [`Bytes`] is a byte range inside a reference-counted owner: a memory map, a `Vec<u8>` or a
//! `Vec<f32>`. Cloning it is cheap, and the tensor engine can adopt the same owner without a copy.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use half::{bf16, f16};

use crate::{Error, Result};

/// The floating-point dtypes a [`RawTensor`] can carry (little-endian in memory and on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16: the upper half of a binary32.
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The safetensors spelling: `F32`, `F16`, `BF16`.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }

    /// The PyTorch spelling used in config.json's `torch_dtype`: `float32`, `float16`, `bfloat16`.
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }

    /// Parses the PyTorch spelling (`float32`, `float16`, `bfloat16`, and `float`, `half`).
    pub fn from_torch_name(s: &str) -> Option<DType> {
        match s {
            "float32" | "float" => Some(DType::F32),
            "float16" | "half" => Some(DType::F16),
            "bfloat16" => Some(DType::BF16),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.safetensors_name())
    }
}

impl FromStr for DType {
    type Err = Error;

    /// Accepts `f32`, `f16`, `bf16` in any case, and the PyTorch names.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(DType::F32),
            "f16" => Ok(DType::F16),
            "bf16" => Ok(DType::BF16),
            other => DType::from_torch_name(other).ok_or_else(|| {
                Error::config(
                    "dtype",
                    format!("unknown dtype `{s}`; expected f32, f16 or bf16"),
                )
            }),
        }
    }
}

/// The owner of the memory a [`Bytes`] points into.
pub type Owner = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A `Vec<f32>` seen as bytes: keeps the 4-byte alignment of the floats.
struct F32Vec(Vec<f32>);

impl AsRef<[u8]> for F32Vec {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// A cheap-to-clone byte range inside a shared owner (a memory map or a vector).
#[derive(Clone)]
pub struct Bytes {
    owner: Owner,
    start: usize,
    len: usize,
}

impl Bytes {
    /// Takes ownership of `v`.
    pub fn from_vec(v: Vec<u8>) -> Bytes {
        let len = v.len();
        Bytes {
            owner: Arc::new(v),
            start: 0,
            len,
        }
    }

    /// Takes ownership of `v` without copying; the bytes are the floats in native (little-endian
    /// on every supported target) order and stay 4-byte aligned.
    pub fn from_f32_vec(v: Vec<f32>) -> Bytes {
        let len = v.len() * 4;
        Bytes {
            owner: Arc::new(F32Vec(v)),
            start: 0,
            len,
        }
    }

    /// The range `start..start + len` of `owner`.
    ///
    /// # Panics
    ///
    /// If the range does not lie inside `owner` (a programming error: ranges read from files are
    /// validated before they get here).
    pub fn slice(owner: Owner, start: usize, len: usize) -> Bytes {
        let total = (*owner).as_ref().len();
        assert!(
            start.checked_add(len).is_some_and(|end| end <= total),
            "Bytes::slice: range {start}+{len} outside an owner of {total} bytes"
        );
        Bytes { owner, start, len }
    }

    /// A sub-range of these bytes, or `None` when it does not fit.
    pub fn sub(&self, start: usize, len: usize) -> Option<Bytes> {
        let end = start.checked_add(len)?;
        (end <= self.len).then(|| Bytes {
            owner: self.owner.clone(),
            start: self.start + start,
            len,
        })
    }

    /// The shared owner (for building tensors on the same memory without a copy).
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Offset of the first byte inside [`Bytes::owner`].
    pub fn start(&self) -> usize {
        self.start
    }

    /// The bytes as `f32`s when they are 4-byte aligned and a multiple of 4 long.
    pub fn as_f32_slice(&self) -> Option<&[f32]> {
        bytemuck::try_cast_slice(self).ok()
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.start..self.start + self.len]
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes at {})", self.len, self.start)
    }
}

/// A named tensor as stored: dtype, row-major shape and little-endian bytes.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Hugging Face tensor name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Row-major shape (the last dimension is contiguous).
    pub shape: Vec<usize>,
    /// `shape.iter().product() * dtype.size()` bytes.
    pub data: Bytes,
}

impl RawTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements converted to `f32` (exact for all three dtypes).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let n = self.numel();
        if self.data.len() != n * self.dtype.size() {
            return Err(Error::Unsupported {
                origin: format!("tensor `{}`", self.name),
                msg: format!(
                    "{} bytes for shape {:?} of {}",
                    self.data.len(),
                    self.shape,
                    self.dtype
                ),
            });
        }
        let b: &[u8] = &self.data;
        Ok(match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        })
    }
}

/// Converts `f32`s to little-endian bytes of `dtype` (round to nearest even for F16 and BF16).
pub fn f32_to_bytes(values: &[f32], dtype: DType) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    match dtype {
        DType::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        DType::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
    }
    out
}

/// Anything that hands out tensors by Hugging Face name: a safetensors checkpoint, a GGUF file.
pub trait TensorSource: Send + Sync {
    /// Every tensor name, in storage order.
    fn names(&self) -> Vec<String>;
    /// Whether a tensor of that name exists.
    fn contains(&self, name: &str) -> bool;
    /// The tensor called `name` (Hugging Face naming, e.g. `model.layers.0.self_attn.q_proj.weight`).
    fn get(&self, name: &str) -> Result<RawTensor>;
    /// Matrix `name` as quantised rows that stay quantised until they are used, where the source
    /// stores it so (GGUF); `None` means: use [`TensorSource::get`].
    fn get_quantized(&self, name: &str) -> Result<Option<crate::gguf::QuantizedRows>> {
        let _ = name;
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bytes_ranges_and_views() {
        let b = Bytes::from_vec((0u8..16).collect());
        assert_eq!(&b[..3], &[0, 1, 2]);
        let s = b.sub(4, 4).unwrap();
        assert_eq!(&*s, &[4, 5, 6, 7]);
        assert_eq!(s.start(), 4);
        assert!(b.sub(10, 7).is_none());
        let f = Bytes::from_f32_vec(vec![1.0, -2.5]);
        assert_eq!(f.as_f32_slice().unwrap(), &[1.0, -2.5]);
        assert_eq!(f.len(), 8);
    }

    #[test]
    fn dtype_conversions_round_trip() {
        let v = [1.0f32, -0.5, 3.25, 0.0];
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let t = RawTensor {
                name: "t".into(),
                dtype: dt,
                shape: vec![2, 2],
                data: Bytes::from_vec(f32_to_bytes(&v, dt)),
            };
            assert_eq!(t.to_f32_vec().unwrap(), v);
        }
        assert_eq!("bf16".parse::<DType>().unwrap(), DType::BF16);
        assert_eq!("bfloat16".parse::<DType>().unwrap(), DType::BF16);
        assert!("int8".parse::<DType>().is_err());
    }
}
