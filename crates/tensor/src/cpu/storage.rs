//! Host storage: owned `f32`, `f32` used in place from shared bytes, or 16-bit values.

use super::pool;
use crate::dtype::HalfKind;
use crate::storage::SharedBytes;
use crate::{DType, Error, Result};

/// Host data.
pub(crate) enum CpuStorage {
    /// Owned `f32` values.
    F32(Vec<f32>),
    /// `f32` values used in place from shared bytes (4-byte aligned, checked at construction).
    Mapped {
        owner: SharedBytes,
        start: usize,
        len: usize,
    },
    /// Owned 16-bit values (bf16 or f16 bit patterns).
    Half { kind: HalfKind, bits: Vec<u16> },
}

impl CpuStorage {
    /// The `f32` values, if this storage holds `f32`.
    pub(crate) fn as_f32(&self, op: &'static str) -> Result<&[f32]> {
        match self {
            CpuStorage::F32(v) => Ok(v),
            CpuStorage::Mapped { owner, start, len } => mapped_f32(owner, *start, *len, op),
            CpuStorage::Half { kind, .. } => Err(Error::DType {
                op,
                expected: DType::F32,
                got: kind.dtype(),
            }),
        }
    }

    /// Mutable `f32` values; a mapped view is copied into owned memory first.
    pub(crate) fn as_f32_mut(&mut self, op: &'static str) -> Result<&mut [f32]> {
        if let CpuStorage::Mapped { owner, start, len } = self {
            let owned = pool::copy_of(mapped_f32(owner, *start, *len, op)?);
            *self = CpuStorage::F32(owned);
        }
        match self {
            CpuStorage::F32(v) => Ok(v),
            CpuStorage::Half { kind, .. } => Err(Error::DType {
                op,
                expected: DType::F32,
                got: kind.dtype(),
            }),
            CpuStorage::Mapped { .. } => Err(Error::Invalid {
                op,
                detail: "mapped storage after copy".into(),
            }),
        }
    }
}

impl Clone for CpuStorage {
    fn clone(&self) -> Self {
        match self {
            CpuStorage::F32(v) => CpuStorage::F32(pool::copy_of(v)),
            CpuStorage::Mapped { owner, start, len } => CpuStorage::Mapped {
                owner: owner.clone(),
                start: *start,
                len: *len,
            },
            CpuStorage::Half { kind, bits } => CpuStorage::Half {
                kind: *kind,
                bits: bits.clone(),
            },
        }
    }
}

impl Drop for CpuStorage {
    fn drop(&mut self) {
        if let CpuStorage::F32(v) = self {
            pool::give(std::mem::take(v));
        }
    }
}

fn mapped_f32<'a>(
    owner: &'a SharedBytes,
    start: usize,
    len: usize,
    op: &'static str,
) -> Result<&'a [f32]> {
    let bytes = (**owner).as_ref();
    let end = start + len * 4;
    let slice = bytes.get(start..end).ok_or(Error::ByteRange {
        op,
        start,
        end,
        available: bytes.len(),
    })?;
    bytemuck::try_cast_slice(slice).map_err(|e| Error::Invalid {
        op,
        detail: format!("shared bytes no longer usable as f32: {e}"),
    })
}
