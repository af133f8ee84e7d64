//! Operations the Llama family needs, dispatched by device (only the CPU exists so far).
//!
//! Row-wise operations see a tensor as [`Tensor::rows`] × [`Tensor::cols`]. Operations with several
//! operands check that they share a device ([`Error::DeviceMismatch`]) and that shapes fit
//! ([`Error::ShapeMismatch`]).

use crate::cpu::attention::{self, AttnDims, KvPrefix};
use crate::cpu::gemm::{self, BLayout, Gemm};
use crate::cpu::{kernels, pool};
use crate::tensor::same_device;
use crate::{Device, Error, Result, Tensor};
use rayon::prelude::*;

/// How an RMSNorm applies its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormWeight {
    /// `x̂ · w` (Llama, Mistral, Qwen2).
    Plain,
    /// `x̂ · (1 + w)` (Gemma).
    OnePlus,
}

/// Activation of a gated feed-forward layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x·σ(x)` (SwiGLU).
    Silu,
    /// GELU with the tanh approximation (GeGLU, `gelu_pytorch_tanh`).
    GeluTanh,
}

/// Geometry and options of causal attention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`; must divide it).
    pub kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Factor applied to `q·k` (default `1/sqrt(head_dim)`).
    pub scale: f32,
    /// When set, a query at position `p` sees keys `p+1-w ..= p` only.
    pub sliding_window: Option<usize>,
    /// When set, scores become `cap · tanh(score / cap)` before the softmax.
    pub softcap: Option<f32>,
}

impl AttentionSpec {
    /// Plain causal attention with scale `1/sqrt(head_dim)`.
    pub fn new(heads: usize, kv_heads: usize, head_dim: usize) -> AttentionSpec {
        AttentionSpec {
            heads,
            kv_heads,
            head_dim,
            scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            sliding_window: None,
            softcap: None,
        }
    }
}

fn shape_err(op: &'static str, detail: String) -> Error {
    Error::ShapeMismatch { op, detail }
}

fn check_rows(op: &'static str, t: &Tensor, start: usize, n: usize) -> Result<()> {
    let end = start.checked_add(n).ok_or(Error::Index {
        op,
        index: usize::MAX,
        size: t.rows(),
    })?;
    if end > t.rows() {
        return Err(Error::Index {
            op,
            index: end - 1,
            size: t.rows(),
        });
    }
    Ok(())
}

impl Tensor {
    /// Rows `start..start+n` as a new `[n, cols]` tensor.
    pub fn slice_rows(&self, start: usize, n: usize) -> Result<Tensor> {
        let op = "slice_rows";
        check_rows(op, self, start, n)?;
        let c = self.cols();
        match self.device() {
            Device::Cpu => Ok(Tensor::cpu(
                pool::copy_of(&self.cpu_f32(op)?[start * c..(start + n) * c]),
                vec![n, c],
            )),
            Device::Cuda(d) => match d {},
        }
    }

    /// Copies rows `src_row..src_row+n` of `src` over rows `dst_row..` of `self` (same row length).
    pub fn copy_rows_from(
        &mut self,
        dst_row: usize,
        src: &Tensor,
        src_row: usize,
        n: usize,
    ) -> Result<()> {
        let op = "copy_rows_from";
        self.check_row_op(op, dst_row, src, src_row, n)?;
        let c = self.cols();
        match same_device(op, self, src)? {
            Device::Cpu => {
                let s = &src.cpu_f32(op)?[src_row * c..(src_row + n) * c];
                self.cpu_f32_mut(op)?[dst_row * c..(dst_row + n) * c].copy_from_slice(s);
                Ok(())
            }
            Device::Cuda(d) => match d {},
        }
    }

    /// `self[dst_row..][..n] += src[src_row..][..n]` (rows of the same length): the residual add of a
    /// branch output computed for a batch of stacked streams.
    pub fn add_rows_from(
        &mut self,
        dst_row: usize,
        src: &Tensor,
        src_row: usize,
        n: usize,
    ) -> Result<()> {
        let op = "add_rows_from";
        self.check_row_op(op, dst_row, src, src_row, n)?;
        let c = self.cols();
        match same_device(op, self, src)? {
            Device::Cpu => {
                let s = &src.cpu_f32(op)?[src_row * c..(src_row + n) * c];
                kernels::add_assign(
                    &mut self.cpu_f32_mut(op)?[dst_row * c..(dst_row + n) * c],
                    s,
                );
                Ok(())
            }
            Device::Cuda(d) => match d {},
        }
    }

    /// The rows `rows[0], rows[1], …` of `self` stacked into a new `[rows.len(), cols]` tensor
    /// (rows may repeat): the tokens routed to one expert of a mixture.
    pub fn gather_rows(&self, rows: &[usize]) -> Result<Tensor> {
        let op = "gather_rows";
        let (n, c) = (self.rows(), self.cols());
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(shape_err(
                op,
                format!("row {bad} of a tensor with {n} rows"),
            ));
        }
        match self.device() {
            Device::Cpu => {
                let x = self.cpu_f32(op)?;
                let mut out = Vec::with_capacity(rows.len() * c);
                for &r in rows {
                    out.extend_from_slice(&x[r * c..(r + 1) * c]);
                }
                Ok(Tensor::cpu(out, vec![rows.len(), c]))
            }
            Device::Cuda(d) => match d {},
        }
    }

    /// `self[rows[i]] += scales[i] · src[i]` for every row `i` of `src`, in order of `i` (each
    /// product rounded to `f32` before the add): the weighted scatter of one expert's outputs.
    /// Sequential, so the result does not depend on the thread count even when rows repeat.
    pub fn add_scaled_rows_at(
        &mut self,
        rows: &[usize],
        src: &Tensor,
        scales: &[f32],
    ) -> Result<()> {
        let op = "add_scaled_rows_at";
        let (n, c) = (self.rows(), self.cols());
        if src.cols() != c || src.rows() != rows.len() || scales.len() != rows.len() {
            return Err(shape_err(
                op,
                format!(
                    "{:?} += {:?} at {} rows with {} scales",
                    self.shape,
                    src.shape,
                    rows.len(),
                    scales.len()
                ),
            ));
        }
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(shape_err(
                op,
                format!("row {bad} of a tensor with {n} rows"),
            ));
        }
        match same_device(op, self, src)? {
            Device::Cpu => {
                let y = src.cpu_f32(op)?;
                let x = self.cpu_f32_mut(op)?;
                for (i, (&r, &s)) in rows.iter().zip(scales).enumerate() {
                    for (a, &b) in x[r * c..(r + 1) * c].iter_mut().zip(&y[i * c..(i + 1) * c]) {
                        *a += s * b;
                    }
                }
                Ok(())
            }
            Device::Cuda(d) => match d {},
        }
    }

    fn check_row_op(
        &self,
        op: &'static str,
        dst_row: usize,
        src: &Tensor,
        src_row: usize,
        n: usize,
    ) -> Result<()> {
        if self.cols() != src.cols() {
            return Err(shape_err(
                op,
                format!("row lengths differ: {:?} vs {:?}", self.shape, src.shape),
            ));
        }
        check_rows(op, self, dst_row, n)?;
        check_rows(op, src, src_row, n)
    }

    /// Adds the vector `v` (`[cols]`) to every row (a bias).
    pub fn add_row_vector_in_place(&mut self, v: &Tensor) -> Result<()> {
        let op = "add_row_vector_in_place";
        if v.elem_count() != self.cols() {
            return Err(shape_err(
                op,
                format!("vector {:?} for rows of {}", v.shape, self.cols()),
            ));
        }
        let c = self.cols();
        match same_device(op, self, v)? {
            Device::Cpu => {
                let b = v.cpu_f32(op)?;
                kernels::for_rows_mut(self.cpu_f32_mut(op)?, c, |_, row| {
                    for (x, &y) in row.iter_mut().zip(b) {
                        *x += y;
                    }
                });
                Ok(())
            }
            Device::Cuda(d) => match d {},
        }
    }

    /// Multiplies every element by `s`.
    pub fn scale_in_place(&mut self, s: f32) -> Result<()> {
        let op = "scale_in_place";
        match self.device() {
            Device::Cpu => {
                let c = self.cols();
                kernels::for_rows_mut(self.cpu_f32_mut(op)?, c, |_, row| {
                    row.iter_mut().for_each(|x| *x *= s)
                });
                Ok(())
            }
            Device::Cuda(d) => match d {},
        }
    }

    /// `cap · tanh(x / cap)` elementwise, in place (logit soft-capping).
    pub fn softcap_in_place(&mut self, cap: f32) -> Result<()> {
        let op = "softcap_in_place";
        if !(cap.is_finite() && cap > 0.0) {
            return Err(Error::Invalid {
                op,
                detail: format!("softcap {cap} must be positive"),
            });
        }
        match self.device() {
            Device::Cpu => {
                self.cpu_f32_mut(op)?
                    .par_chunks_mut(1 << 14)
                    .for_each(|c| kernels::softcap_in_place(c, cap));
                Ok(())
            }
            Device::Cuda(d) => match d {},
        }
    }

    /// `self · wᵀ` for `self = [.., k]` and `w = [n, k]` (a linear layer without bias): `[.., n]`.
    pub fn matmul_t(&self, w: &Tensor) -> Result<Tensor> {
        let op = "matmul_t";
        if w.rank() != 2 || self.rank() == 0 || w.shape[1] != self.cols() {
            return Err(shape_err(op, format!("{:?} · {:?}ᵀ", self.shape, w.shape)));
        }
        let (m, k, n) = (self.rows(), self.cols(), w.shape[0]);
        let mut shape = self.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        match same_device(op, self, w)? {
            Device::Cpu => {
                let mut out = pool::take(m * n);
                let g = Gemm {
                    alpha: 1.0,
                    m,
                    n,
                    k,
                    lda: k,
                    ldb: k,
                    ldc: n,
                    b_layout: BLayout::NxK,
                    accumulate: false,
                };
                gemm::sgemm(g, self.cpu_f32(op)?, w.cpu_f32(op)?, &mut out)?;
                Ok(Tensor::cpu(out, shape))
            }
            Device::Cuda(d) => match d {},
        }
    }

    /// `self · wᵀ` written into the first `self.rows()` rows of `out` (`[.., n]`, at least that many
    /// rows; the rest is untouched): lets a caller reuse one large output buffer, e.g. for LM-head chunks.
    pub fn matmul_t_into(&self, w: &Tensor, out: &mut Tensor) -> Result<()> {
        let op = "matmul_t_into";
        if w.rank() != 2
            || self.rank() == 0
            || w.shape[1] != self.cols()
            || out.cols() != w.shape[0]
            || out.rows() < self.rows()
        {
            return Err(shape_err(
                op,
                format!("{:?} · {:?}ᵀ into {:?}", self.shape, w.shape, out.shape),
            ));
        }
        let (m, k, n) = (self.rows(), self.cols(), w.shape[0]);
        same_device(op, self, out)?;
        match same_device(op, self, w)? {
            Device::Cpu => {
                let g = Gemm {
                    alpha: 1.0,
                    m,
                    n,
                    k,
                    lda: k,
                    ldb: k,
                    ldc: n,
                    b_layout: BLayout::NxK,
                    accumulate: false,
                };
                gemm::sgemm(
                    g,
                    self.cpu_f32(op)?,
                    w.cpu_f32(op)?,
                    &mut out.cpu_f32_mut(op)?[..m * n],
                )
            }
            Device::Cuda(d) => match d {},
        }
    }

    /// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps)` times the weight (`[cols]`).
    pub fn rms_norm(&self, weight: &Tensor, eps: f32, kind: NormWeight) -> Result<Tensor> {
        let op = "rms_norm";
        let mut out = match self.device() {
            Device::Cpu => Tensor::cpu_uninit(self.shape.clone()),
            Device::Cuda(d) => match d {},
        };
        self.rms_norm_rows_into(0, self.rows(), weight, eps, kind, &mut out, 0)
            .map_err(|e| rename(e, op))?;
        Ok(out)
    }

    /// RMSNorm of rows `src_row..src_row+n`, written to rows `dst_row..` of `out` (same row length):
    /// normalises several streams into one stacked batch without an extra copy.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm_rows_into(
        &self,
        src_row: usize,
        n: usize,
        weight: &Tensor,
        eps: f32,
        kind: NormWeight,
        out: &mut Tensor,
        dst_row: usize,
    ) -> Result<()> {
        let op = "rms_norm_rows_into";
        let c = self.cols();
        if weight.elem_count() != c {
            return Err(shape_err(
                op,
                format!("weight {:?} for rows of {c}", weight.shape),
            ));
        }
        out.check_row_op(op, dst_row, self, src_row, n)?;
        same_device(op, self, weight)?;
        match same_device(op, self, out)? {
            Device::Cpu => {
                let x = &self.cpu_f32(op)?[src_row * c..(src_row + n) * c];
                let w = weight.cpu_f32(op)?;
                let dst = &mut out.cpu_f32_mut(op)?[dst_row * c..(dst_row + n) * c];
                let one_plus = kind == NormWeight::OnePlus;
                kernels::for_rows_zip(x, dst, c, c, |_, xr, or| {
                    kernels::rms_norm_row(xr, w, eps, one_plus, or)
                });
                Ok(())
            }
            Device::Cuda(d) => match d {},
        }
    }

    /// `self = act(self) · up` elementwise (the gated feed-forward product; same shapes).
    pub fn gated_in_place(&mut self, up: &Tensor, act: Activation) -> Result<()> {
        let op = "gated_in_place";
        if self.shape != up.shape {
            return Err(shape_err(
                op,
                format!("gate {:?} vs up {:?}", self.shape, up.shape),
            ));
        }
        match same_device(op, self, up)? {
            Device::Cpu => {
                let u = up.cpu_f32(op)?;
                let g = self.cpu_f32_mut(op)?;
                match act {
                    Activation::Silu => kernels::for_chunks_zip(g, u, kernels::silu_mul),
                    Activation::GeluTanh => kernels::for_chunks_zip(g, u, kernels::gelu_tanh_mul),
                }
                Ok(())
            }
            Device::Cuda(d) => match d {},
        }
    }

    /// Log-softmax over the last dimension (log-sum-exp accumulated in `f64`).
    pub fn log_softmax_last(&self) -> Result<Tensor> {
        let mut out = self.clone();
        out.log_softmax_last_in_place()?;
        Ok(out)
    }

    /// Log-softmax over the last dimension, in place.
    pub fn log_softmax_last_in_place(&mut self) -> Result<()> {
        let op = "log_softmax_last_in_place";
        match self.device() {
            Device::Cpu => {
                let c = self.cols();
                kernels::for_rows_mut(self.cpu_f32_mut(op)?, c, |_, r| kernels::log_softmax_row(r));
                Ok(())
            }
            Device::Cuda(d) => match d {},
        }
    }
}

fn rename(e: Error, op: &'static str) -> Error {
    match e {
        Error::ShapeMismatch { detail, .. } => Error::ShapeMismatch { op, detail },
        other => other,
    }
}

/// `x · wᵀ (+ bias)`: a linear layer with weight `[out, in]` on rows `[.., in]`.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut y = x.matmul_t(w)?;
    if let Some(b) = bias {
        y.add_row_vector_in_place(b)?;
    }
    Ok(y)
}

/// Rows of `table` (`[vocab, d]`) picked by `ids`: `[ids.len(), d]`.
pub fn embedding(table: &Tensor, ids: &[u32]) -> Result<Tensor> {
    let op = "embedding";
    if table.rank() != 2 {
        return Err(shape_err(
            op,
            format!("table {:?} is not a matrix", table.shape),
        ));
    }
    let (vocab, d) = (table.shape[0], table.shape[1]);
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::Index {
            op,
            index: bad as usize,
            size: vocab,
        });
    }
    match table.device() {
        Device::Cpu => {
            let t = table.cpu_f32(op)?;
            let mut out = pool::take(ids.len() * d);
            kernels::for_rows_mut(&mut out, d, |r, row| {
                let i = ids[r] as usize;
                row.copy_from_slice(&t[i * d..(i + 1) * d]);
            });
            Ok(Tensor::cpu(out, vec![ids.len(), d]))
        }
        Device::Cuda(dev) => match dev {},
    }
}

fn check_attention(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seq_lens: &[usize],
    spec: &AttentionSpec,
) -> Result<()> {
    let s = spec;
    if s.heads == 0 || s.kv_heads == 0 || s.head_dim == 0 || !s.heads.is_multiple_of(s.kv_heads) {
        return Err(Error::Invalid {
            op,
            detail: format!("bad head geometry {s:?}"),
        });
    }
    if s.sliding_window == Some(0) {
        return Err(Error::Invalid {
            op,
            detail: "sliding window of 0".into(),
        });
    }
    let rows: usize = seq_lens.iter().sum();
    let (qc, kc) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    if q.rows() != rows
        || q.cols() != qc
        || k.rows() != rows
        || k.cols() != kc
        || v.shape != k.shape
    {
        return Err(shape_err(
            op,
            format!(
                "q {:?}, k {:?}, v {:?} for {rows} rows, {qc} query and {kc} key columns",
                q.shape, k.shape, v.shape
            ),
        ));
    }
    same_device(op, q, k)?;
    same_device(op, q, v)?;
    Ok(())
}

fn dims(spec: &AttentionSpec) -> AttnDims {
    AttnDims {
        heads: spec.heads,
        kv_heads: spec.kv_heads,
        head_dim: spec.head_dim,
        scale: spec.scale,
        window: spec.sliding_window,
        softcap: spec.softcap,
    }
}

/// Causal self-attention over a batch of sequences stacked by rows.
///
/// `q` is `[rows, heads·head_dim]`, `k` and `v` are `[rows, kv_heads·head_dim]` (RoPE already applied);
/// `seq_lens` gives the length of each sequence (they sum to `rows`). Returns `[rows, heads·head_dim]`.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seq_lens: &[usize],
    spec: &AttentionSpec,
) -> Result<Tensor> {
    let op = "causal_attention";
    check_attention(op, q, k, v, seq_lens, spec)?;
    match q.device() {
        Device::Cpu => {
            let mut out = pool::take(q.elem_count());
            attention::attention(
                q.cpu_f32(op)?,
                k.cpu_f32(op)?,
                v.cpu_f32(op)?,
                seq_lens,
                None,
                &dims(spec),
                &mut out,
            )?;
            Ok(Tensor::cpu(out, vec![q.rows(), q.cols()]))
        }
        Device::Cuda(d) => match d {},
    }
}

/// Causal attention of sequences that all continue one shared prefix whose keys and values
/// (`[prefix_len, kv_heads·head_dim]`) are given: query `i` of every sequence sits at position
/// `prefix_len + i` and sees the whole prefix and its own keys `0..=i`.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_with_prefix(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seq_lens: &[usize],
    prefix_k: &Tensor,
    prefix_v: &Tensor,
    spec: &AttentionSpec,
) -> Result<Tensor> {
    let op = "causal_attention_with_prefix";
    check_attention(op, q, k, v, seq_lens, spec)?;
    if prefix_k.cols() != k.cols() || prefix_v.shape != prefix_k.shape {
        return Err(shape_err(
            op,
            format!(
                "prefix k {:?}, v {:?} for keys {:?}",
                prefix_k.shape, prefix_v.shape, k.shape
            ),
        ));
    }
    same_device(op, q, prefix_k)?;
    same_device(op, q, prefix_v)?;
    match q.device() {
        Device::Cpu => {
            let mut out = pool::take(q.elem_count());
            let prefix = KvPrefix {
                k: prefix_k.cpu_f32(op)?,
                v: prefix_v.cpu_f32(op)?,
                len: prefix_k.rows(),
            };
            attention::attention(
                q.cpu_f32(op)?,
                k.cpu_f32(op)?,
                v.cpu_f32(op)?,
                seq_lens,
                Some(prefix),
                &dims(spec),
                &mut out,
            )?;
            Ok(Tensor::cpu(out, vec![q.rows(), q.cols()]))
        }
        Device::Cuda(d) => match d {},
    }
}
