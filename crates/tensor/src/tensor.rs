//! [`Tensor`]: a contiguous, row-major array with a shape, a dtype and a device.

use crate::cpu::pool;
use crate::cpu::storage::CpuStorage;
use crate::dtype::HalfKind;
use crate::storage::{SharedBytes, Storage};
use crate::{DType, Device, Error, Result};
use std::fmt;

/// A contiguous row-major array of `f32` (or 16-bit storage) values on a device.
///
/// Cloning copies owned data and shares mapped data. Most operations treat a tensor as a matrix of
/// [`Tensor::rows`] × [`Tensor::cols`] (the last dimension is the row length).
#[derive(Clone)]
pub struct Tensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) storage: Storage,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor[{:?}, {}, {}{}]",
            self.shape,
            self.dtype(),
            self.device(),
            if self.is_mapped() { ", mapped" } else { "" }
        )
    }
}

fn elems(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// An uninitialised-for-our-purposes CPU tensor (contents unspecified) for outputs that are written
    /// entirely.
    pub(crate) fn cpu_uninit(shape: Vec<usize>) -> Tensor {
        Tensor::cpu(pool::take(elems(&shape)), shape)
    }

    /// A CPU tensor of owned `f32` data (length checked by callers inside the crate).
    pub(crate) fn cpu(data: Vec<f32>, shape: Vec<usize>) -> Tensor {
        debug_assert_eq!(data.len(), elems(&shape));
        Tensor {
            shape,
            storage: Storage::Cpu(CpuStorage::F32(data)),
        }
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize], device: &Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(Tensor::cpu(pool::take_zeroed(elems(shape)), shape.to_vec())),
            Device::Cuda(d) => Ok(Tensor {
                shape: shape.to_vec(),
                storage: Storage::Cuda(d.zeros(elems(shape))?),
            }),
        }
    }

    /// A tensor whose values are unspecified (but initialised): for buffers that are about to be
    /// overwritten entirely, which saves zeroing (and lets the CPU reuse a cached buffer as is).
    pub fn empty(shape: &[usize], device: &Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(Tensor::cpu_uninit(shape.to_vec())),
            // Device memory is zeroed on allocation (one memset, far cheaper than the kernels).
            Device::Cuda(d) => Ok(Tensor {
                shape: shape.to_vec(),
                storage: Storage::Cuda(d.zeros(elems(shape))?),
            }),
        }
    }

    /// A tensor owning `data` (row-major, `shape.iter().product()` values).
    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        let expected = elems(shape);
        if data.len() != expected {
            return Err(Error::ElementCount {
                op: "from_vec",
                shape: shape.to_vec(),
                expected,
                got: data.len(),
            });
        }
        let t = Tensor::cpu(data, shape.to_vec());
        match device {
            Device::Cpu => Ok(t),
            Device::Cuda(_) => t.to_device(device),
        }
    }

    /// A tensor holding a copy of `data`.
    pub fn from_slice(data: &[f32], shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A 16-bit tensor from bit patterns (`dtype` must be `BF16` or `F16`).
    pub fn from_half_bits(
        bits: Vec<u16>,
        dtype: DType,
        shape: &[usize],
        device: &Device,
    ) -> Result<Tensor> {
        let op = "from_half_bits";
        let kind = HalfKind::of(dtype).ok_or(Error::DType {
            op,
            expected: DType::BF16,
            got: dtype,
        })?;
        let expected = elems(shape);
        if bits.len() != expected {
            return Err(Error::ElementCount {
                op,
                shape: shape.to_vec(),
                expected,
                got: bits.len(),
            });
        }
        let t = Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(CpuStorage::Half { kind, bits }),
        };
        match device {
            Device::Cpu => Ok(t),
            Device::Cuda(_) => t.to_device(device),
        }
    }

    /// A CPU tensor over `len` little-endian bytes of `owner` starting at `start`.
    ///
    /// `f32` data whose first byte is 4-byte aligned is used in place (no copy; `owner` is kept alive);
    /// anything else is copied. Use [`Tensor::to_dtype`] to compute with 16-bit data.
    pub fn from_shared_bytes(
        owner: SharedBytes,
        start: usize,
        len: usize,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor> {
        let op = "from_shared_bytes";
        let expected = elems(shape);
        if len != expected * dtype.size_in_bytes() {
            return Err(Error::ElementCount {
                op,
                shape: shape.to_vec(),
                expected,
                got: len / dtype.size_in_bytes(),
            });
        }
        let bytes = (*owner).as_ref();
        let end = start.checked_add(len).ok_or(Error::ByteRange {
            op,
            start,
            end: usize::MAX,
            available: bytes.len(),
        })?;
        let slice = bytes.get(start..end).ok_or(Error::ByteRange {
            op,
            start,
            end,
            available: bytes.len(),
        })?;
        let storage = match HalfKind::of(dtype) {
            None if cfg!(target_endian = "little")
                && (slice.as_ptr() as usize).is_multiple_of(4) =>
            {
                CpuStorage::Mapped {
                    owner: owner.clone(),
                    start,
                    len: expected,
                }
            }
            None => CpuStorage::F32(
                slice
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Some(kind) => CpuStorage::Half {
                kind,
                bits: slice
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            },
        };
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(storage),
        })
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        elems(&self.shape)
    }

    /// Length of the last dimension (1 for a scalar).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Product of all dimensions but the last (the number of rows of length [`Tensor::cols`]).
    pub fn rows(&self) -> usize {
        match self.shape.split_last() {
            Some((_, lead)) => elems(lead),
            None => 1,
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// Device holding the data.
    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// Whether the data is used in place from shared bytes (e.g. a memory map).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Cpu(CpuStorage::Mapped { .. }))
    }

    /// The `f32` data of a CPU tensor.
    pub fn as_slice_f32(&self) -> Result<&[f32]> {
        self.cpu_f32("as_slice_f32")
    }

    /// Mutable `f32` data of a CPU tensor (a mapped tensor is copied into owned memory first).
    pub fn as_mut_slice_f32(&mut self) -> Result<&mut [f32]> {
        self.cpu_f32_mut("as_mut_slice_f32")
    }

    /// All values as `f32`, copied to the host (16-bit values are converted).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.storage.to_vec_f32()
    }

    /// A copy of this tensor in new memory. `clone` shares a CUDA tensor's device buffer (the first
    /// write to a shared buffer copies it); this copies at once, and a full card is an
    /// [`crate::Error::OutOfMemory`] rather than a panic.
    pub fn try_clone(&self) -> Result<Tensor> {
        Ok(Tensor {
            shape: self.shape.clone(),
            storage: self.storage.try_clone()?,
        })
    }

    /// This tensor converted to `dtype` (a clone when it already has it; `f32` to 16-bit rounds to
    /// nearest even).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        Ok(Tensor {
            shape: self.shape.clone(),
            storage: self.storage.to_dtype(dtype)?,
        })
    }

    /// This tensor on `device` (a clone when it is already there).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if self.device() == *device {
            return Ok(self.clone());
        }
        let storage = match (&self.storage, device) {
            (Storage::Cpu(c), Device::Cuda(d)) => Storage::Cuda(d.upload(c)?),
            (Storage::Cuda(c), Device::Cpu) => Storage::Cpu(c.to_cpu()?),
            // Between two cards, through the host.
            (Storage::Cuda(c), Device::Cuda(d)) => Storage::Cuda(d.upload(&c.to_cpu()?)?),
            (Storage::Cpu(_), Device::Cpu) => self.storage.clone(),
        };
        Ok(Tensor {
            shape: self.shape.clone(),
            storage,
        })
    }

    /// The same data with another shape of the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Tensor> {
        let expected = elems(shape);
        if expected != self.elem_count() {
            return Err(Error::ElementCount {
                op: "reshape",
                shape: shape.to_vec(),
                expected,
                got: self.elem_count(),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: self.storage,
        })
    }

    /// The `f32` slice of a CPU tensor, for operation `op`.
    pub(crate) fn cpu_f32(&self, op: &'static str) -> Result<&[f32]> {
        match &self.storage {
            Storage::Cpu(c) => c.as_f32(op),
            Storage::Cuda(_) => Err(Error::NotOnHost {
                op,
                device: self.device(),
            }),
        }
    }

    /// The mutable `f32` slice of a CPU tensor, for operation `op`.
    pub(crate) fn cpu_f32_mut(&mut self, op: &'static str) -> Result<&mut [f32]> {
        let device = self.device();
        match &mut self.storage {
            Storage::Cpu(c) => c.as_f32_mut(op),
            Storage::Cuda(_) => Err(Error::NotOnHost { op, device }),
        }
    }
}

/// The common device of two operands, or a typed mismatch error.
pub(crate) fn same_device(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Device> {
    let (lhs, rhs) = (a.device(), b.device());
    if lhs == rhs {
        Ok(lhs)
    } else {
        Err(Error::DeviceMismatch { op, lhs, rhs })
    }
}
