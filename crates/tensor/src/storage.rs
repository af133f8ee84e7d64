//! Tensor storage: one enum over backends, and the one place where each operation picks its backend.
//!
//! This is candle's `Storage` shape (`docs/STYLE.md`): every operation below matches on the storage
//! once and calls the same [`BackendStorage`] method of the CPU or CUDA storage. Operands of an
//! operation must be on the same backend: a mixture is an [`Error::DeviceMismatch`]. Without the
//! `cuda` feature, [`CudaStorage`] is uninhabited and its arms are dead code the compiler can see.

use crate::backend::{AttnDims, BackendStorage, GemmSpec, RopeTables};
use crate::cpu::storage::CpuStorage;
use crate::cuda::CudaStorage;
use crate::ops::{Activation, NormWeight};
use crate::{DType, Device, Error, Result};
use std::sync::Arc;

/// Shared, immutable bytes that own a tensor's data (e.g. a memory map).
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Data of a tensor, on some device.
#[derive(Clone)]
pub(crate) enum Storage {
    Cpu(CpuStorage),
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Cuda(CudaStorage),
}

/// Dispatches `$body` on the backend storage of `$s`, binding it as `$x`; the other operands are
/// fetched from the same backend with `cpu`/`cuda` (a mismatch is an error).
macro_rules! dispatch {
    ($s:expr, $x:ident, $cpu:expr, $cuda:expr) => {
        match $s {
            Storage::Cpu($x) => $cpu,
            Storage::Cuda($x) => $cuda,
        }
    };
}

impl Storage {
    pub(crate) fn device(&self) -> Device {
        dispatch!(self, s, s.device(), s.device())
    }

    pub(crate) fn dtype(&self) -> DType {
        dispatch!(self, s, s.dtype(), s.dtype())
    }

    /// The host storage of an operand of `op` running on `dev`.
    fn cpu(&self, op: &'static str, dev: Device) -> Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            other => Err(Error::DeviceMismatch {
                op,
                lhs: dev,
                rhs: other.device(),
            }),
        }
    }

    /// The CUDA storage of an operand of `op` running on `dev` (the CUDA backend itself checks that
    /// two CUDA operands are on the same card).
    fn cuda(&self, op: &'static str, dev: Device) -> Result<&CudaStorage> {
        match self {
            Storage::Cuda(s) => Ok(s),
            other => Err(Error::DeviceMismatch {
                op,
                lhs: dev,
                rhs: other.device(),
            }),
        }
    }

    fn cpu_mut(&mut self, op: &'static str, dev: Device) -> Result<&mut CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            other => Err(Error::DeviceMismatch {
                op,
                lhs: dev,
                rhs: other.device(),
            }),
        }
    }

    fn cuda_mut(&mut self, op: &'static str, dev: Device) -> Result<&mut CudaStorage> {
        match self {
            Storage::Cuda(s) => Ok(s),
            other => Err(Error::DeviceMismatch {
                op,
                lhs: dev,
                rhs: other.device(),
            }),
        }
    }

    pub(crate) fn to_vec_f32(&self) -> Result<Vec<f32>> {
        dispatch!(self, s, s.to_vec_f32(), s.to_vec_f32())
    }

    /// A copy in new memory (a device copy for CUDA storage, which can fail); mapped host data
    /// stays shared.
    pub(crate) fn try_clone(&self) -> Result<Storage> {
        dispatch!(
            self,
            s,
            Ok(Storage::Cpu(s.clone())),
            Ok(Storage::Cuda(s.try_clone()?))
        )
    }

    pub(crate) fn to_dtype(&self, dtype: DType) -> Result<Storage> {
        dispatch!(
            self,
            s,
            Ok(Storage::Cpu(s.to_dtype(dtype)?)),
            Ok(Storage::Cuda(s.to_dtype(dtype)?))
        )
    }

    pub(crate) fn slice(&self, start: usize, len: usize) -> Result<Storage> {
        dispatch!(
            self,
            s,
            Ok(Storage::Cpu(s.slice(start, len)?)),
            Ok(Storage::Cuda(s.slice(start, len)?))
        )
    }

    pub(crate) fn copy_from(
        &mut self,
        op: &'static str,
        dst: usize,
        src: &Storage,
        src_start: usize,
        len: usize,
    ) -> Result<()> {
        let dev = self.device();
        dispatch!(
            self,
            s,
            s.copy_from(dst, src.cpu(op, dev)?, src_start, len),
            s.copy_from(dst, src.cuda(op, dev)?, src_start, len)
        )
    }

    pub(crate) fn add_from(
        &mut self,
        op: &'static str,
        dst: usize,
        src: &Storage,
        src_start: usize,
        len: usize,
    ) -> Result<()> {
        let dev = self.device();
        dispatch!(
            self,
            s,
            s.add_from(dst, src.cpu(op, dev)?, src_start, len),
            s.add_from(dst, src.cuda(op, dev)?, src_start, len)
        )
    }

    pub(crate) fn add_row_vector(
        &mut self,
        op: &'static str,
        v: &Storage,
        cols: usize,
    ) -> Result<()> {
        let dev = self.device();
        dispatch!(
            self,
            s,
            s.add_row_vector(v.cpu(op, dev)?, cols),
            s.add_row_vector(v.cuda(op, dev)?, cols)
        )
    }

    pub(crate) fn scale(&mut self, x: f32) -> Result<()> {
        dispatch!(self, s, s.scale(x), s.scale(x))
    }

    pub(crate) fn softcap(&mut self, cap: f32) -> Result<()> {
        dispatch!(self, s, s.softcap(cap), s.softcap(cap))
    }

    pub(crate) fn gated(&mut self, op: &'static str, up: &Storage, act: Activation) -> Result<()> {
        let dev = self.device();
        dispatch!(
            self,
            s,
            s.gated(up.cpu(op, dev)?, act),
            s.gated(up.cuda(op, dev)?, act)
        )
    }

    pub(crate) fn activate(&mut self, act: Activation) -> Result<()> {
        dispatch!(self, s, s.activate(act), s.activate(act))
    }

    pub(crate) fn log_softmax_rows(&mut self, cols: usize) -> Result<()> {
        dispatch!(self, s, s.log_softmax_rows(cols), s.log_softmax_rows(cols))
    }

    pub(crate) fn gemm(
        &self,
        op: &'static str,
        b: &Storage,
        spec: GemmSpec,
        out: &mut Storage,
    ) -> Result<()> {
        let dev = self.device();
        dispatch!(
            self,
            s,
            s.gemm(b.cpu(op, dev)?, spec, out.cpu_mut(op, dev)?),
            s.gemm(b.cuda(op, dev)?, spec, out.cuda_mut(op, dev)?)
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rms_norm(
        &self,
        op: &'static str,
        src_row: usize,
        n: usize,
        cols: usize,
        weight: &Storage,
        eps: f32,
        kind: NormWeight,
        out: &mut Storage,
        dst_row: usize,
    ) -> Result<()> {
        let dev = self.device();
        dispatch!(
            self,
            s,
            s.rms_norm(
                src_row,
                n,
                cols,
                weight.cpu(op, dev)?,
                eps,
                kind,
                out.cpu_mut(op, dev)?,
                dst_row
            ),
            s.rms_norm(
                src_row,
                n,
                cols,
                weight.cuda(op, dev)?,
                eps,
                kind,
                out.cuda_mut(op, dev)?,
                dst_row
            )
        )
    }

    pub(crate) fn embedding(&self, ids: &[u32], d: usize) -> Result<Storage> {
        dispatch!(
            self,
            s,
            Ok(Storage::Cpu(s.embedding(ids, d)?)),
            Ok(Storage::Cuda(s.embedding(ids, d)?))
        )
    }

    pub(crate) fn gather_rows(&self, rows: &[u32], cols: usize) -> Result<Storage> {
        dispatch!(
            self,
            s,
            Ok(Storage::Cpu(s.gather_rows(rows, cols)?)),
            Ok(Storage::Cuda(s.gather_rows(rows, cols)?))
        )
    }

    pub(crate) fn add_scaled_rows_at(
        &mut self,
        op: &'static str,
        rows: &[u32],
        src: &Storage,
        scales: &[f32],
        cols: usize,
    ) -> Result<()> {
        let dev = self.device();
        dispatch!(
            self,
            s,
            s.add_scaled_rows_at(rows, src.cpu(op, dev)?, scales, cols),
            s.add_scaled_rows_at(rows, src.cuda(op, dev)?, scales, cols)
        )
    }

    pub(crate) fn rope(&mut self, cols: usize, tables: &RopeTables<'_>) -> Result<()> {
        dispatch!(self, s, s.rope(cols, tables), s.rope(cols, tables))
    }

    /// Per-row divergences of these logits against rows `dense_row0 ..` of `dense` (see
    /// `Tensor::row_divergences`): a device operation; on the CPU `finercut-metrics` computes the
    /// same values from the slices.
    pub(crate) fn divergence_rows(
        &self,
        op: &'static str,
        dense: &Storage,
        meta: &crate::DenseLogits,
        vocab: usize,
        dense_row0: usize,
        metric: i32,
    ) -> Result<Vec<f64>> {
        let dev = self.device();
        dispatch!(
            self,
            s,
            {
                let _ = s;
                Err(Error::Invalid {
                    op,
                    detail: "computed on the host by finercut-metrics; this is for device tensors"
                        .into(),
                })
            },
            s.divergence_rows(op, dense.cuda(op, dev)?, meta, vocab, dense_row0, metric)
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention(
        &self,
        op: &'static str,
        k: &Storage,
        v: &Storage,
        prefix: Option<(&Storage, &Storage, usize)>,
        seq_lens: &[usize],
        dims: &AttnDims,
    ) -> Result<Storage> {
        let dev = self.device();
        dispatch!(
            self,
            s,
            {
                let prefix = match prefix {
                    Some((pk, pv, n)) => Some((pk.cpu(op, dev)?, pv.cpu(op, dev)?, n)),
                    None => None,
                };
                Ok(Storage::Cpu(s.attention(
                    k.cpu(op, dev)?,
                    v.cpu(op, dev)?,
                    prefix,
                    seq_lens,
                    dims,
                )?))
            },
            {
                let prefix = match prefix {
                    Some((pk, pv, n)) => Some((pk.cuda(op, dev)?, pv.cuda(op, dev)?, n)),
                    None => None,
                };
                Ok(Storage::Cuda(s.attention(
                    k.cuda(op, dev)?,
                    v.cuda(op, dev)?,
                    prefix,
                    seq_lens,
                    dims,
                )?))
            }
        )
    }
}
