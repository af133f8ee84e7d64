//! Element types a [`crate::Tensor`] can hold; compute happens in `f32`.

use std::fmt;

/// Element type of a tensor. Operations compute in `F32`; `BF16` and `F16` are storage types
/// converted with [`crate::Tensor::to_dtype`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE-754 binary32.
    F32,
    /// bfloat16 (the upper half of an `f32`).
    BF16,
    /// IEEE-754 binary16.
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        })
    }
}

/// The two 16-bit storage types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HalfKind {
    Bf16,
    F16,
}

impl HalfKind {
    pub(crate) fn of(dtype: DType) -> Option<HalfKind> {
        match dtype {
            DType::F32 => None,
            DType::BF16 => Some(HalfKind::Bf16),
            DType::F16 => Some(HalfKind::F16),
        }
    }

    pub(crate) fn dtype(self) -> DType {
        match self {
            HalfKind::Bf16 => DType::BF16,
            HalfKind::F16 => DType::F16,
        }
    }

    /// Converts 16-bit values to `f32`.
    pub(crate) fn to_f32(self, bits: &[u16], out: &mut [f32]) {
        match self {
            HalfKind::Bf16 => {
                for (o, &b) in out.iter_mut().zip(bits) {
                    *o = half::bf16::from_bits(b).to_f32();
                }
            }
            HalfKind::F16 => {
                for (o, &b) in out.iter_mut().zip(bits) {
                    *o = half::f16::from_bits(b).to_f32();
                }
            }
        }
    }

    /// Converts `f32` values to this type (round to nearest even).
    pub(crate) fn encode(self, src: &[f32]) -> Vec<u16> {
        match self {
            HalfKind::Bf16 => src
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_bits())
                .collect(),
            HalfKind::F16 => src
                .iter()
                .map(|&x| half::f16::from_f32(x).to_bits())
                .collect(),
        }
    }
}
