//! Plain `f64` reference implementations and test helpers.

use finercut_tensor::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn rand_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

pub fn tensor(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
}

/// Kahan-compensated sum.
pub fn kahan(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0f64, 0f64);
    for v in values {
        let y = v - c;
        let t = sum + y;
        c = (t - sum) - y;
        sum = t;
    }
    sum
}

/// `a[m×k] · b` where `b` is `[n, k]` (transposed) or `[k, n]`.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, b_transposed: bool) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = kahan((0..k).map(|p| {
                let bv = if b_transposed {
                    b[j * k + p]
                } else {
                    b[p * n + j]
                };
                f64::from(a[i * k + p]) * f64::from(bv)
            }));
        }
    }
    out
}

pub fn rms_norm(x: &[f32], w: &[f32], eps: f64, one_plus: bool) -> Vec<f64> {
    let c = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(c) {
        let ms = kahan(row.iter().map(|&v| f64::from(v) * f64::from(v))) / c as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for (&v, &g) in row.iter().zip(w) {
            let g = if one_plus {
                1.0 + f64::from(g)
            } else {
                f64::from(g)
            };
            out.push(f64::from(v) * inv * g);
        }
    }
    out
}

/// LayerNorm without bias: `(x − mean) / sqrt(var + eps) · w` per row of `w.len()` values.
pub fn layer_norm(x: &[f32], w: &[f32], eps: f64) -> Vec<f64> {
    let c = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(c) {
        let mean = kahan(row.iter().map(|&v| f64::from(v))) / c as f64;
        let var = kahan(row.iter().map(|&v| (f64::from(v) - mean).powi(2))) / c as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for (&v, &g) in row.iter().zip(w) {
            out.push((f64::from(v) - mean) * inv * f64::from(g));
        }
    }
    out
}

/// Exact GELU `x · Φ(x)`, the normal CDF integrated from 0 by Simpson's rule (independent of any
/// `erf` implementation).
pub fn gelu(x: f64) -> f64 {
    let pdf = |t: f64| (-t * t / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    // Simpson's error is below 1e-8 for |x| <= 12 with 400 intervals.
    let n = 400;
    let h = x / n as f64;
    let inner: f64 = (1..n)
        .map(|i| pdf(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 })
        .sum();
    let integral = h / 3.0 * (pdf(0.0) + inner + pdf(x));
    x * (0.5 + integral)
}

pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

pub fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

pub fn log_softmax(x: &[f32], cols: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let m = row
            .iter()
            .map(|&v| f64::from(v))
            .fold(f64::NEG_INFINITY, f64::max);
        let lse = m + kahan(row.iter().map(|&v| (f64::from(v) - m).exp())).ln();
        out.extend(row.iter().map(|&v| f64::from(v) - lse));
    }
    out
}

/// RoPE (rotate_half layout) with the given inverse frequencies, rows at `positions`.
pub fn rope(
    x: &[f32],
    cols: usize,
    head_dim: usize,
    inv_freq: &[f64],
    positions: &[usize],
) -> Vec<f64> {
    // Partial rotary when `inv_freq` has fewer than `head_dim / 2` values: the rest pass through.
    let half = inv_freq.len();
    let mut out: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    for (r, row) in out.chunks_mut(cols).enumerate() {
        for head in row.chunks_mut(head_dim) {
            for i in 0..half {
                let a = positions[r] as f64 * inv_freq[i];
                let (x1, x2) = (head[i], head[i + half]);
                head[i] = x1 * a.cos() - x2 * a.sin();
                head[i + half] = x2 * a.cos() + x1 * a.sin();
            }
        }
    }
    out
}

/// Attention options of the reference.
pub struct Attn {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub window: Option<usize>,
    pub softcap: Option<f64>,
}

/// Causal attention of one sequence whose first `prefix` rows are context only: returns the outputs of
/// rows `prefix..` (all rows when `prefix == 0`).
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    rows: usize,
    prefix: usize,
    a: &Attn,
) -> Vec<f64> {
    let (hd, qc, kc) = (a.head_dim, a.heads * a.head_dim, a.kv_heads * a.head_dim);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0f64; (rows - prefix) * qc];
    for i in prefix..rows {
        for h in 0..a.heads {
            let g = h / (a.heads / a.kv_heads);
            let lo = a.window.map_or(0, |w| (i + 1).saturating_sub(w));
            let scores: Vec<f64> = (lo..=i)
                .map(|j| {
                    let s = kahan((0..hd).map(|e| {
                        f64::from(q[i * qc + h * hd + e]) * f64::from(k[j * kc + g * hd + e])
                    })) * scale;
                    match a.softcap {
                        Some(c) => c * (s / c).tanh(),
                        None => s,
                    }
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z = kahan(p.iter().cloned());
            for e in 0..hd {
                out[(i - prefix) * qc + h * hd + e] =
                    kahan((lo..=i).map(|j| p[j - lo] * f64::from(v[j * kc + g * hd + e]))) / z;
            }
        }
    }
    out
}

/// Asserts `|got - want| <= tol · (1 + |want|)` elementwise.
pub fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w} (error {err:e})"
        );
    }
}
