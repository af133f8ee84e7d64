//! Row-wise CPU kernels on `f32` slices: normalisation, activations, softmax, RoPE, gathers, adds.
//!
//! Rows are independent, so rayon splits work by groups of whole rows (a group size that depends on the
//! row length only); every row is computed by the same sequential code whatever the thread count.

use super::simd::{self, multiversion};
use rayon::prelude::*;

/// Elements per rayon task for row-wise work.
pub(crate) const TASK_ELEMS: usize = 1 << 14;

fn rows_per_task(cols: usize) -> usize {
    (TASK_ELEMS / cols.max(1)).max(1)
}

/// Calls `f(row_index, row)` for every row of `data` (`cols` wide), in parallel.
pub(crate) fn for_rows_mut(data: &mut [f32], cols: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if cols == 0 || data.is_empty() {
        return;
    }
    let per = rows_per_task(cols);
    data.par_chunks_mut(per * cols)
        .enumerate()
        .for_each(|(ci, chunk)| {
            for (r, row) in chunk.chunks_mut(cols).enumerate() {
                f(ci * per + r, row);
            }
        });
}

/// Calls `f(row_index, in_row, out_row)` for corresponding rows, in parallel.
pub(crate) fn for_rows_zip(
    input: &[f32],
    output: &mut [f32],
    cols_in: usize,
    cols_out: usize,
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) {
    if cols_in == 0 || cols_out == 0 || output.is_empty() {
        return;
    }
    let per = rows_per_task(cols_in.max(cols_out));
    output
        .par_chunks_mut(per * cols_out)
        .enumerate()
        .for_each(|(ci, chunk)| {
            for (r, row) in chunk.chunks_mut(cols_out).enumerate() {
                let i = ci * per + r;
                f(i, &input[i * cols_in..(i + 1) * cols_in], row);
            }
        });
}

/// Calls `f(chunk_a, chunk_b)` on matching chunks of two equally long slices, in parallel.
pub(crate) fn for_chunks_zip(a: &mut [f32], b: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    a.par_chunks_mut(TASK_ELEMS)
        .zip(b.par_chunks(TASK_ELEMS))
        .for_each(|(x, y)| f(x, y));
}

multiversion! {
    /// One RMSNorm row: `out = x / sqrt(mean(x²) + eps) * w` (or `* (1 + w)` for Gemma).
    pub(crate) fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, one_plus: bool, out: &mut [f32]) {
        let ms = simd::sum_sq(x) / x.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        if one_plus {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
                *o = (v * inv) * (1.0 + g);
            }
        } else {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
                *o = (v * inv) * g;
            }
        }
    }
}

/// One LayerNorm row without its bias: `out = (x − mean) / sqrt(var + eps) * w`, the mean and
/// the (biased) variance accumulated in `f64` over two passes.
pub(crate) fn layer_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let inv = (1.0 / (var + f64::from(eps)).sqrt()) as f32;
    let mean = mean as f32;
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = ((v - mean) * inv) * g;
    }
}

/// `g = gelu(g) * u` (exact GELU), elementwise.
pub(crate) fn gelu_mul(g: &mut [f32], u: &[f32]) {
    for (a, &b) in g.iter_mut().zip(u) {
        *a = simd::gelu_erf(*a) * b;
    }
}

/// `x = act(x)`, elementwise.
pub(crate) fn activate(x: &mut [f32], act: crate::Activation) {
    match act {
        crate::Activation::Silu => x.iter_mut().for_each(|a| *a = simd::silu(*a)),
        crate::Activation::GeluTanh => x.iter_mut().for_each(|a| *a = simd::gelu_tanh(*a)),
        crate::Activation::Gelu => x.iter_mut().for_each(|a| *a = simd::gelu_erf(*a)),
    }
}

multiversion! {
    /// `g = silu(g) * u`, elementwise.
    pub(crate) fn silu_mul(g: &mut [f32], u: &[f32]) {
        for (a, &b) in g.iter_mut().zip(u) {
            *a = simd::silu(*a) * b;
        }
    }
}

multiversion! {
    /// `g = gelu_tanh(g) * u`, elementwise.
    pub(crate) fn gelu_tanh_mul(g: &mut [f32], u: &[f32]) {
        for (a, &b) in g.iter_mut().zip(u) {
            *a = simd::gelu_tanh(*a) * b;
        }
    }
}

multiversion! {
    /// `x = cap · tanh(x / cap)`, elementwise.
    pub(crate) fn softcap_in_place(x: &mut [f32], cap: f32) {
        for a in x.iter_mut() {
            *a = cap * simd::tanh(*a / cap);
        }
    }
}

multiversion! {
    /// Log-softmax of one row, in place; the log-sum-exp is accumulated in `f64`.
    pub(crate) fn log_softmax_row(x: &mut [f32]) {
        if x.is_empty() {
            return;
        }
        let m = simd::max(x);
        let log_sum = simd::sum_exp_shift(x, m).ln() as f32;
        for v in x.iter_mut() {
            *v = (*v - m) - log_sum;
        }
    }
}

multiversion! {
    /// RoPE (Hugging Face `rotate_half` layout) on one row of heads of `head_dim` values, of which
    /// the first `cos.len() * 2` rotate.
    pub(crate) fn rope_row(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        for head in x.chunks_exact_mut(head_dim) {
            // The first 2·half values rotate; the rest (partial rotary) pass through.
            let (a, b) = head[..2 * half].split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

/// `dst += src`, elementwise, in parallel.
pub(crate) fn add_assign(dst: &mut [f32], src: &[f32]) {
    for_chunks_zip(dst, src, |d, s| {
        for (a, &b) in d.iter_mut().zip(s) {
            *a += b;
        }
    });
}
