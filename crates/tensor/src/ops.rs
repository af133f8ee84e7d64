//! Operations the Llama family needs: argument checks here, then one call into the storage, which
//! picks the backend in one place (`storage.rs`).
//!
//! Row-wise operations see a tensor as [`Tensor::rows`] × [`Tensor::cols`]. Operations with several
//! operands check that they share a device ([`Error::DeviceMismatch`]) and that shapes fit
//! ([`Error::ShapeMismatch`]).

use crate::backend::{AttnDims, BLayout, GemmSpec};
use crate::storage::Storage;
use crate::tensor::same_device;
use crate::{Error, Result, Tensor};

/// How a norm ([`Tensor::rms_norm`]) normalises a row and applies its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormWeight {
    /// RMSNorm, `x̂ · w` (Llama, Mistral, Qwen2).
    Plain,
    /// RMSNorm, `x̂ · (1 + w)` (Gemma).
    OnePlus,
    /// LayerNorm's normalisation and weight: `(x − mean(x)) / sqrt(var(x) + eps) · w` (GPT-NeoX;
    /// its bias is added separately, [`Tensor::add_row_vector_in_place`]).
    Centred,
}

/// Activation of a feed-forward layer (gated, or plain with [`Tensor::activate_in_place`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x·σ(x)` (SwiGLU).
    Silu,
    /// GELU with the tanh approximation (GeGLU, `gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact GELU, `x · Φ(x)` with the error function (`gelu`: GPT-NeoX, Pythia).
    Gelu,
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
        Ok(Tensor {
            shape: vec![n, c],
            storage: self.storage.slice(start * c, n * c)?,
        })
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
        self.storage
            .copy_from(op, dst_row * c, &src.storage, src_row * c, n * c)
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
        self.storage
            .add_from(op, dst_row * c, &src.storage, src_row * c, n * c)
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
        let idx = row_indices(op, rows)?;
        Ok(Tensor {
            shape: vec![rows.len(), c],
            storage: self.storage.gather_rows(&idx, c)?,
        })
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
        let idx = row_indices(op, rows)?;
        self.storage
            .add_scaled_rows_at(op, &idx, &src.storage, scales, c)
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
        self.storage.add_row_vector(op, &v.storage, c)
    }

    /// Multiplies every element by `s`.
    pub fn scale_in_place(&mut self, s: f32) -> Result<()> {
        self.storage.scale(s)
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
        self.storage.softcap(cap)
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
        let mut out = Tensor::empty(&shape, &same_device(op, self, w)?)?;
        let spec = GemmSpec {
            m,
            n,
            k,
            b_layout: BLayout::NxK,
        };
        self.storage.gemm(op, &w.storage, spec, &mut out.storage)?;
        Ok(out)
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
        let spec = GemmSpec {
            m,
            n,
            k,
            b_layout: BLayout::NxK,
        };
        self.storage.gemm(op, &w.storage, spec, &mut out.storage)
    }

    /// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps)` times the weight (`[cols]`).
    pub fn rms_norm(&self, weight: &Tensor, eps: f32, kind: NormWeight) -> Result<Tensor> {
        let op = "rms_norm";
        let mut out = Tensor::empty(&self.shape, &self.device())?;
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
        self.storage.rms_norm(
            op,
            src_row,
            n,
            c,
            &weight.storage,
            eps,
            kind,
            &mut out.storage,
            dst_row,
        )
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
        self.storage.gated(op, &up.storage, act)
    }

    /// `self = act(self)` elementwise (a feed-forward layer without a gate).
    pub fn activate_in_place(&mut self, act: Activation) -> Result<()> {
        self.storage.activate(act)
    }

    /// Log-softmax over the last dimension (log-sum-exp accumulated in `f64`).
    pub fn log_softmax_last(&self) -> Result<Tensor> {
        let mut out = self.clone();
        out.log_softmax_last_in_place()?;
        Ok(out)
    }

    /// Log-softmax over the last dimension, in place.
    pub fn log_softmax_last_in_place(&mut self) -> Result<()> {
        let c = self.cols();
        self.storage.log_softmax_rows(c)
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
    Ok(Tensor {
        shape: vec![ids.len(), d],
        storage: table.storage.embedding(ids, d)?,
    })
}

/// Row indices as the backends take them (`u32`).
fn row_indices(op: &'static str, rows: &[usize]) -> Result<Vec<u32>> {
    rows.iter()
        .map(|&r| {
            u32::try_from(r).map_err(|_| shape_err(op, format!("row {r} beyond the u32 range")))
        })
        .collect()
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
    attend(op, q, k, v, seq_lens, None, spec)
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
    causal_attention_with_prefix_rows(q, k, v, seq_lens, prefix_k, prefix_v, prefix_k.rows(), spec)
}

/// [`causal_attention_with_prefix`] whose prefix is the first `prefix_len` rows of `prefix_k` and
/// `prefix_v` (the rows after them are ignored): a key/value cache that grows in place inside a
/// larger buffer.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_with_prefix_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seq_lens: &[usize],
    prefix_k: &Tensor,
    prefix_v: &Tensor,
    prefix_len: usize,
    spec: &AttentionSpec,
) -> Result<Tensor> {
    let op = "causal_attention_with_prefix";
    check_attention(op, q, k, v, seq_lens, spec)?;
    if prefix_k.rank() != 2
        || prefix_k.cols() != k.cols()
        || prefix_v.shape != prefix_k.shape
        || prefix_len > prefix_k.rows()
    {
        return Err(shape_err(
            op,
            format!(
                "prefix k {:?}, v {:?} ({prefix_len} rows used) for keys {:?}",
                prefix_k.shape, prefix_v.shape, k.shape
            ),
        ));
    }
    same_device(op, q, prefix_k)?;
    same_device(op, q, prefix_v)?;
    let prefix = (&prefix_k.storage, &prefix_v.storage, prefix_len);
    attend(op, q, k, v, seq_lens, Some(prefix), spec)
}

/// The backend call shared by both attention entry points (arguments already checked).
fn attend(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seq_lens: &[usize],
    prefix: Option<(&Storage, &Storage, usize)>,
    spec: &AttentionSpec,
) -> Result<Tensor> {
    let storage = q
        .storage
        .attention(op, &k.storage, &v.storage, prefix, seq_lens, &dims(spec))?;
    Ok(Tensor {
        shape: vec![q.rows(), q.cols()],
        storage,
    })
}
