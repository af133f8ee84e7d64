//! [`BackendStorage`] for host storage: the kernels of this module's siblings on `f32` slices.

use super::attention::{self, KvPrefix};
use super::gemm::{self, Gemm};
use super::storage::CpuStorage;
use super::{kernels, pool};
use crate::backend::{AttnDims, BLayout, BackendStorage, GemmSpec, RopeTables};
use crate::dtype::HalfKind;
use crate::ops::{Activation, NormWeight};
use crate::{DType, Device, Result};
use rayon::prelude::*;

impl BackendStorage for CpuStorage {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) | CpuStorage::Mapped { .. } => DType::F32,
            CpuStorage::Half { kind, .. } => kind.dtype(),
        }
    }

    fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::Mapped { len, .. } => *len,
            CpuStorage::Half { bits, .. } => bits.len(),
        }
    }

    fn to_vec_f32(&self) -> Result<Vec<f32>> {
        match self {
            CpuStorage::Half { kind, bits } => {
                let mut out = pool::take(bits.len());
                kind.to_f32(bits, &mut out);
                Ok(out)
            }
            c => Ok(pool::copy_of(c.as_f32("to_vec_f32")?)),
        }
    }

    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let values = self.to_vec_f32()?;
        Ok(match HalfKind::of(dtype) {
            None => CpuStorage::F32(values),
            Some(kind) => {
                let bits = kind.encode(&values);
                pool::give(values);
                CpuStorage::Half { kind, bits }
            }
        })
    }

    fn slice(&self, start: usize, len: usize) -> Result<Self> {
        Ok(CpuStorage::F32(pool::copy_of(
            &self.as_f32("slice_rows")?[start..start + len],
        )))
    }

    fn copy_from(&mut self, dst: usize, src: &Self, src_start: usize, len: usize) -> Result<()> {
        let op = "copy_rows_from";
        let s = &src.as_f32(op)?[src_start..src_start + len];
        self.as_f32_mut(op)?[dst..dst + len].copy_from_slice(s);
        Ok(())
    }

    fn add_from(&mut self, dst: usize, src: &Self, src_start: usize, len: usize) -> Result<()> {
        let op = "add_rows_from";
        let s = &src.as_f32(op)?[src_start..src_start + len];
        kernels::add_assign(&mut self.as_f32_mut(op)?[dst..dst + len], s);
        Ok(())
    }

    fn add_row_vector(&mut self, v: &Self, cols: usize) -> Result<()> {
        let op = "add_row_vector_in_place";
        let b = v.as_f32(op)?;
        kernels::for_rows_mut(self.as_f32_mut(op)?, cols, |_, row| {
            for (x, &y) in row.iter_mut().zip(b) {
                *x += y;
            }
        });
        Ok(())
    }

    fn scale(&mut self, s: f32) -> Result<()> {
        self.as_f32_mut("scale_in_place")?
            .par_chunks_mut(1 << 14)
            .for_each(|row| row.iter_mut().for_each(|x| *x *= s));
        Ok(())
    }

    fn softcap(&mut self, cap: f32) -> Result<()> {
        self.as_f32_mut("softcap_in_place")?
            .par_chunks_mut(1 << 14)
            .for_each(|c| kernels::softcap_in_place(c, cap));
        Ok(())
    }

    fn gated(&mut self, up: &Self, act: Activation) -> Result<()> {
        let op = "gated_in_place";
        let u = up.as_f32(op)?;
        let g = self.as_f32_mut(op)?;
        match act {
            Activation::Silu => kernels::for_chunks_zip(g, u, kernels::silu_mul),
            Activation::GeluTanh => kernels::for_chunks_zip(g, u, kernels::gelu_tanh_mul),
            Activation::Gelu => kernels::for_chunks_zip(g, u, kernels::gelu_mul),
        }
        Ok(())
    }

    fn activate(&mut self, act: Activation) -> Result<()> {
        let x = self.as_f32_mut("activate_in_place")?;
        x.par_chunks_mut(kernels::TASK_ELEMS)
            .for_each(|c| kernels::activate(c, act));
        Ok(())
    }

    fn log_softmax_rows(&mut self, cols: usize) -> Result<()> {
        kernels::for_rows_mut(
            self.as_f32_mut("log_softmax_last_in_place")?,
            cols,
            |_, r| kernels::log_softmax_row(r),
        );
        Ok(())
    }

    fn gemm(&self, b: &Self, spec: GemmSpec, out: &mut Self) -> Result<()> {
        let op = "matmul";
        let GemmSpec { m, n, k, .. } = spec;
        let g = Gemm {
            alpha: 1.0,
            m,
            n,
            k,
            lda: k,
            ldb: match spec.b_layout {
                BLayout::NxK => k,
                BLayout::KxN => n,
            },
            ldc: n,
            b_layout: spec.b_layout,
            accumulate: false,
        };
        let (a, bm) = (self.as_f32(op)?, b.as_f32(op)?);
        let c = out.as_f32_mut(op)?;
        gemm::sgemm(g, a, bm, &mut c[..m * n])
    }

    fn rms_norm(
        &self,
        src_row: usize,
        n: usize,
        cols: usize,
        weight: &Self,
        eps: f32,
        kind: NormWeight,
        out: &mut Self,
        dst_row: usize,
    ) -> Result<()> {
        let op = "rms_norm_rows_into";
        let c = cols;
        let x = &self.as_f32(op)?[src_row * c..(src_row + n) * c];
        let w = weight.as_f32(op)?;
        let dst = &mut out.as_f32_mut(op)?[dst_row * c..(dst_row + n) * c];
        let one_plus = kind == NormWeight::OnePlus;
        if kind == NormWeight::Centred {
            kernels::for_rows_zip(x, dst, c, c, |_, xr, or| {
                kernels::layer_norm_row(xr, w, eps, or)
            });
            return Ok(());
        }
        kernels::for_rows_zip(x, dst, c, c, |_, xr, or| {
            kernels::rms_norm_row(xr, w, eps, one_plus, or)
        });
        Ok(())
    }

    fn embedding(&self, ids: &[u32], d: usize) -> Result<Self> {
        let t = self.as_f32("embedding")?;
        let mut out = pool::take(ids.len() * d);
        kernels::for_rows_mut(&mut out, d, |r, row| {
            let i = ids[r] as usize;
            row.copy_from_slice(&t[i * d..(i + 1) * d]);
        });
        Ok(CpuStorage::F32(out))
    }

    fn gather_rows(&self, rows: &[u32], cols: usize) -> Result<Self> {
        let x = self.as_f32("gather_rows")?;
        let mut out = Vec::with_capacity(rows.len() * cols);
        for &r in rows {
            let r = r as usize;
            out.extend_from_slice(&x[r * cols..(r + 1) * cols]);
        }
        Ok(CpuStorage::F32(out))
    }

    fn add_scaled_rows_at(
        &mut self,
        rows: &[u32],
        src: &Self,
        scales: &[f32],
        cols: usize,
    ) -> Result<()> {
        let op = "add_scaled_rows_at";
        let c = cols;
        let y = src.as_f32(op)?;
        let x = self.as_f32_mut(op)?;
        // Sequential, so the result does not depend on the thread count even when rows repeat.
        for (i, (&r, &s)) in rows.iter().zip(scales).enumerate() {
            let r = r as usize;
            for (a, &b) in x[r * c..(r + 1) * c].iter_mut().zip(&y[i * c..(i + 1) * c]) {
                *a += s * b;
            }
        }
        Ok(())
    }

    fn rope(&mut self, cols: usize, tables: &RopeTables<'_>) -> Result<()> {
        let (half, hd) = (tables.half, tables.head_dim);
        kernels::for_rows_mut(self.as_f32_mut("Rope::apply")?, cols, |r, row| {
            let t = tables.index[r] as usize * half;
            kernels::rope_row(row, hd, &tables.cos[t..t + half], &tables.sin[t..t + half]);
        });
        Ok(())
    }

    fn attention(
        &self,
        k: &Self,
        v: &Self,
        prefix: Option<(&Self, &Self, usize)>,
        seq_lens: &[usize],
        dims: &AttnDims,
    ) -> Result<Self> {
        let op = "causal_attention";
        let mut out = pool::take(self.len());
        let prefix = match prefix {
            Some((pk, pv, len)) => Some(KvPrefix {
                k: pk.as_f32(op)?,
                v: pv.as_f32(op)?,
                len,
            }),
            None => None,
        };
        attention::attention(
            self.as_f32(op)?,
            k.as_f32(op)?,
            v.as_f32(op)?,
            seq_lens,
            prefix,
            dims,
            &mut out,
        )?;
        Ok(CpuStorage::F32(out))
    }
}
