//! The contract every backend's storage fulfils, and the parameters its operations take.
//!
//! [`crate::storage::Storage`] is an enum over backends (candle's `Storage` shape, `docs/STYLE.md`):
//! each operation matches on it once, in `storage.rs`, and calls the same [`BackendStorage`] method on
//! the variant's storage. The public [`crate::Tensor`] API checks shapes and ranges before it gets
//! here, so a backend receives element offsets and counts that are known to be in bounds.
//!
//! Storages are contiguous and row-major; "rows" are runs of `cols` values.

use crate::ops::{Activation, NormWeight};
use crate::{DType, Device, Result};

/// How the right-hand operand `B` of a GEMM is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BLayout {
    /// `B` is `[k, n]` row-major (`C = A·B`).
    KxN,
    /// `B` is `[n, k]` row-major (`C = A·Bᵀ`, e.g. `x·Wᵀ` for a linear layer).
    NxK,
}

/// The product `C[m×n] = A[m×k]·op(B)`, written into the first `m·n` elements of the output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub b_layout: BLayout,
}

/// Geometry and options of an attention call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttnDims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub window: Option<usize>,
    pub softcap: Option<f32>,
}

/// Cosine and sine tables of a rotary embedding for the rows of one call: row `r` uses table row
/// `index[r]` (`half` values each), so positions may differ from row to row. Each head of
/// `head_dim` values rotates its first `2 · half` (partial rotary when fewer than `head_dim`).
pub(crate) struct RopeTables<'a> {
    pub head_dim: usize,
    pub half: usize,
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    pub index: &'a [u32],
}

/// Operations of one backend's storage. Offsets and lengths are in elements and already checked.
pub(crate) trait BackendStorage: Sized {
    /// The device holding the data.
    fn device(&self) -> Device;
    /// The element type.
    fn dtype(&self) -> DType;
    /// Number of elements.
    fn len(&self) -> usize;
    /// All values as `f32` on the host.
    fn to_vec_f32(&self) -> Result<Vec<f32>>;
    /// The values converted to `dtype` (on the same device).
    fn to_dtype(&self, dtype: DType) -> Result<Self>;
    /// A new storage holding elements `start..start+len`.
    fn slice(&self, start: usize, len: usize) -> Result<Self>;
    /// `self[dst..dst+len] = src[src_start..src_start+len]`.
    fn copy_from(&mut self, dst: usize, src: &Self, src_start: usize, len: usize) -> Result<()>;
    /// `self[dst..dst+len] += src[src_start..src_start+len]`.
    fn add_from(&mut self, dst: usize, src: &Self, src_start: usize, len: usize) -> Result<()>;
    /// Adds the vector `v` (`cols` values) to every row.
    fn add_row_vector(&mut self, v: &Self, cols: usize) -> Result<()>;
    /// Multiplies every element by `s`.
    fn scale(&mut self, s: f32) -> Result<()>;
    /// `cap · tanh(x / cap)` elementwise.
    fn softcap(&mut self, cap: f32) -> Result<()>;
    /// `self = act(self) · up` elementwise.
    fn gated(&mut self, up: &Self, act: Activation) -> Result<()>;
    /// `self = act(self)` elementwise.
    fn activate(&mut self, act: Activation) -> Result<()>;
    /// Log-softmax of every row (log-sum-exp accumulated in `f64`).
    fn log_softmax_rows(&mut self, cols: usize) -> Result<()>;
    /// `out = A·op(B)` (see [`GemmSpec`]); `self` is `A`.
    fn gemm(&self, b: &Self, spec: GemmSpec, out: &mut Self) -> Result<()>;
    /// RMSNorm of rows `src_row..src_row+n` (`cols` wide) into rows `dst_row..` of `out`.
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<()>;
    /// Rows `ids` of the table (`d` wide) as a new `[ids.len(), d]` `f32` storage.
    fn embedding(&self, ids: &[u32], d: usize) -> Result<Self>;
    /// Rows `rows` (`cols` wide, may repeat) of an `f32` storage stacked into a new one.
    fn gather_rows(&self, rows: &[u32], cols: usize) -> Result<Self>;
    /// `self[rows[i]] += scales[i] · src[i]` for every row `i` of `src` (`cols` wide), in order of
    /// `i`, each product rounded to `f32` before the add (rows may repeat).
    fn add_scaled_rows_at(
        &mut self,
        rows: &[u32],
        src: &Self,
        scales: &[f32],
        cols: usize,
    ) -> Result<()>;
    /// Rotates every head of every row (`cols` wide) in place.
    fn rope(&mut self, cols: usize, tables: &RopeTables<'_>) -> Result<()>;
    /// Causal attention (see [`crate::causal_attention`]); `prefix` is `(k, v, len)`.
    fn attention(
        &self,
        k: &Self,
        v: &Self,
        prefix: Option<(&Self, &Self, usize)>,
        seq_lens: &[usize],
        dims: &AttnDims,
    ) -> Result<Self>;
}
