//! [`DenseRows`]: the dense model's logits cached once, and the per-row kernels.
//!
//! Every kernel is one numerically stable pass over a pruned row after its log-sum-exp:
//! the maximum is taken in `f32`, everything else is computed and accumulated in `f64`.

use std::f64::consts::LN_2;

use rayon::prelude::*;

use crate::fastmath::{exp, ln_1p_unit};
use crate::{Error, Metric, Result};

/// The dense model's logits (rows × vocabulary, row-major) with what every metric needs per row:
/// log-sum-exp and Euclidean norm, and optionally next-token targets for perplexity.
///
/// A row is one (sequence, position) pair, sequences flattened in order.
#[derive(Debug, Clone)]
pub struct DenseRows {
    vocab: usize,
    num_rows: usize,
    logits: Option<Vec<f32>>,
    lse: Vec<f64>,
    norm: Vec<f64>,
    targets: Option<Vec<Option<u32>>>,
}

impl DenseRows {
    /// Caches dense logits `[rows, vocab]` (row-major); computes per-row log-sum-exp and norms.
    ///
    /// Takes the vector by value so the (large) logits are not copied.
    pub fn new(logits: Vec<f32>, vocab: usize) -> Result<Self> {
        if vocab == 0 {
            return Err(Error::ZeroSize {
                what: "vocabulary size",
            });
        }
        if !logits.len().is_multiple_of(vocab) {
            return Err(Error::ShapeMismatch {
                what: format!("dense logits with a vocabulary of {vocab}"),
                expected: (logits.len() / vocab + 1) * vocab,
                got: logits.len(),
            });
        }
        let num_rows = logits.len() / vocab;
        let stats: Vec<(f64, f64)> = logits
            .par_chunks(vocab)
            .map(|row| (log_sum_exp(row), sq_norm(row).sqrt()))
            .collect();
        if let Some(row) = stats
            .iter()
            .position(|(l, n)| !l.is_finite() || !n.is_finite())
        {
            return Err(Error::NonFiniteDense { row });
        }
        let (lse, norm) = stats.into_iter().unzip();
        Ok(DenseRows {
            vocab,
            num_rows,
            logits: Some(logits),
            lse,
            norm,
            targets: None,
        })
    }

    /// Dense rows that hold only next-token targets and no logits: enough for [`Metric::Ppl`],
    /// which needs no dense model.
    pub fn targets_only(targets: Vec<Option<u32>>, vocab: usize) -> Result<Self> {
        if vocab == 0 {
            return Err(Error::ZeroSize {
                what: "vocabulary size",
            });
        }
        let rows = DenseRows {
            vocab,
            num_rows: targets.len(),
            logits: None,
            lse: Vec::new(),
            norm: Vec::new(),
            targets: None,
        };
        rows.with_targets(targets)
    }

    /// Attaches next-token targets, one per row (`None` where a row has no next token).
    pub fn with_targets(mut self, targets: Vec<Option<u32>>) -> Result<Self> {
        if targets.len() != self.num_rows {
            return Err(Error::ShapeMismatch {
                what: "next-token targets (one per row)".to_owned(),
                expected: self.num_rows,
                got: targets.len(),
            });
        }
        for (row, t) in targets.iter().enumerate() {
            if let Some(token) = *t {
                if token as usize >= self.vocab {
                    return Err(Error::TargetOutOfRange {
                        row,
                        token,
                        vocab: self.vocab,
                    });
                }
            }
        }
        self.targets = Some(targets);
        Ok(self)
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// Vocabulary size (length of a row).
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Whether the dense logits are held (false for [`DenseRows::targets_only`]).
    pub fn has_logits(&self) -> bool {
        self.logits.is_some()
    }

    /// The next-token targets, if attached.
    pub fn targets(&self) -> Option<&[Option<u32>]> {
        self.targets.as_deref()
    }

    /// Dense logits of one row, if held and in range.
    pub fn row(&self, row: usize) -> Option<&[f32]> {
        let logits = self.logits.as_ref()?;
        logits.get(row * self.vocab..(row + 1) * self.vocab)
    }

    /// Log-sum-exp of one dense row, if held and in range.
    pub fn log_sum_exp(&self, row: usize) -> Option<f64> {
        self.lse.get(row).copied()
    }

    /// Checks that `metric` can be computed from these rows.
    pub fn check_supports(&self, metric: Metric) -> Result<()> {
        if metric.needs_dense_logits() && self.logits.is_none() {
            return Err(Error::MissingDenseLogits { metric });
        }
        if metric.needs_targets() {
            let targets = self
                .targets
                .as_ref()
                .ok_or(Error::MissingTargets { metric })?;
            if targets.iter().all(Option::is_none) {
                return Err(Error::NoTargets { metric });
            }
        }
        Ok(())
    }

    /// The per-row value of `metric` for the pruned row `pruned` at index `row`
    /// (see [`Metric`] for the definitions; [`crate::Accumulator`] sums and finalises these).
    ///
    /// NaN or infinite pruned logits give a NaN value rather than an error: a broken candidate
    /// is a legitimate, very bad, score.
    pub fn row_value(&self, metric: Metric, row: usize, pruned: &[f32]) -> Result<f64> {
        self.check_supports(metric)?;
        if row >= self.num_rows {
            return Err(Error::RowOutOfRange {
                first: row,
                end: row + 1,
                num_rows: self.num_rows,
            });
        }
        if pruned.len() != self.vocab {
            return Err(Error::ShapeMismatch {
                what: format!("pruned row {row}"),
                expected: self.vocab,
                got: pruned.len(),
            });
        }
        Ok(self.row_value_unchecked(metric, row, pruned))
    }

    /// [`DenseRows::row_value`] without the checks; `row` in range, `pruned.len() == vocab`, and
    /// the metric supported (else the result is meaningless, or it panics on an index).
    pub(crate) fn row_value_unchecked(&self, metric: Metric, row: usize, pruned: &[f32]) -> f64 {
        let dense = || {
            let logits = self.logits.as_deref().unwrap_or(&[]);
            &logits[row * self.vocab..(row + 1) * self.vocab]
        };
        match metric {
            Metric::Js => js_row(dense(), self.lse[row], pruned),
            Metric::JsReference => js_reference_row(dense(), self.lse[row], pruned),
            Metric::Kl => kl_row(dense(), self.lse[row], pruned),
            Metric::Angular => angular_row(dense(), self.norm[row], pruned),
            Metric::Euclidean => sq_distance(dense(), pruned),
            Metric::Ppl => match self.targets.as_ref().and_then(|t| t[row]) {
                Some(t) => clamp_non_negative(log_sum_exp(pruned) - f64::from(pruned[t as usize])),
                None => 0.0,
            },
        }
    }

    /// Whether `row` counts towards the mean of `metric` (false only for [`Metric::Ppl`] rows
    /// without a target).
    pub(crate) fn counts(&self, metric: Metric, row: usize) -> bool {
        match metric {
            Metric::Ppl => self.targets.as_ref().is_some_and(|t| t[row].is_some()),
            _ => true,
        }
    }
}

/// Flattened next-token targets of calibration sequences, in row order (sequence, position):
/// position `t` of a sequence has target `seq[t + 1]`; the last position has none.
pub fn next_token_targets(sequences: &[Vec<u32>]) -> Vec<Option<u32>> {
    sequences
        .iter()
        .flat_map(|seq| (0..seq.len()).map(move |t| seq.get(t + 1).copied()))
        .collect()
}

/// Accumulator lanes of the row kernels: independent partial sums let the compiler vectorise
/// the per-element work; they are combined in a fixed order, so results stay deterministic.
const LANES: usize = 8;

/// `Σ f(a_i, b_i)` in `f64` over two rows of equal length, in [`LANES`] partial sums.
///
/// A macro rather than a function taking a closure: the element expression must be inlined
/// into the lane loop to be vectorised, and LLVM does not always inline a large closure.
macro_rules! lane_sum {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {{
        let (a, b): (&[f32], &[f32]) = ($a, $b);
        let n = a.len().min(b.len());
        let main = n / LANES * LANES;
        let mut acc = [0.0f64; LANES];
        for (xs, ys) in a[..main]
            .chunks_exact(LANES)
            .zip(b[..main].chunks_exact(LANES))
        {
            for j in 0..LANES {
                let ($x, $y) = (f64::from(xs[j]), f64::from(ys[j]));
                acc[j] += $body;
            }
        }
        for j in main..n {
            let ($x, $y) = (f64::from(a[j]), f64::from(b[j]));
            acc[j - main] += $body;
        }
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
    }};
}

/// Maximum of a row (NaNs ignored here; they poison the sum that follows).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let main = row.len() / LANES * LANES;
    for x in row[..main].chunks_exact(LANES) {
        for j in 0..LANES {
            m[j] = if x[j] > m[j] { x[j] } else { m[j] };
        }
    }
    for &x in &row[main..] {
        m[0] = if x > m[0] { x } else { m[0] };
    }
    m.into_iter()
        .fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a })
}

/// Highest instruction-set level the kernels may use: 2 = AVX-512, 1 = AVX2, 0 = plain (lowered
/// by tests to check that all versions agree bit for bit).
static FORCE_LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

/// Defines a row kernel three times, plain, compiled for AVX2 and compiled for AVX-512, and
/// dispatches at run time to the widest the CPU supports.
///
/// All use the same IEEE operations in the same order (no FMA contraction), so they give
/// bit-identical results; AVX2 and AVX-512 only make the vectorised element loops wider.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$m])*
        pub(crate) fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn imp($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2")]
                fn avx512($($arg: $ty),*) -> $ret {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) -> $ret {
                    imp($($arg),*)
                }
                let level = FORCE_LEVEL.load(std::sync::atomic::Ordering::Relaxed);
                if level >= 2
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU supports these AVX-512 subsets, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if level >= 1 && std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

/// For log-probabilities `lp`, `lq` of one token: `(big, e, l1p, t)` with `t = |lq − lp|`,
/// `big = max(p, q) = exp(max(lp, lq))`, `e = exp(−t)` (so `min(p, q) = big·e`) and
/// `l1p = ln(1 + e)`. Every JS-type term is `big` times a function of `t`: three
/// transcendental calls per element, branch-free.
#[inline(always)]
fn mix_terms(lp: f64, lq: f64) -> (f64, f64, f64, f64) {
    let t = (lq - lp).abs();
    let e = exp(-t);
    let l1p = ln_1p_unit(e);
    let big = exp(if lq > lp { lq } else { lp });
    (big, e, l1p, t)
}

/// `p(lp − lm) + q(lq − lm)` = `big·[(1+e)(ln 2 − l1p) − t·e]`; exactly 0 when `t` is.
#[inline(always)]
fn js_elem(lp: f64, lq: f64) -> f64 {
    let (big, e, l1p, t) = mix_terms(lp, lq);
    // A pruned logit of −∞ gives t = ∞, e = 0: its t·e term is 0, not NaN.
    big * ((1.0 + e) * (LN_2 - l1p) - if e == 0.0 { 0.0 } else { t * e })
}

/// `m(lm − lp) + m(lm − lq)` = `m·(2 l1p − 2 ln 2 + t)` with `m = big(1+e)/2`.
#[inline(always)]
fn js_reference_elem(lp: f64, lq: f64) -> f64 {
    let (big, e, l1p, t) = mix_terms(lp, lq);
    0.5 * big * (1.0 + e) * (2.0 * (l1p - LN_2) + t)
}

multiversion! {
    /// `ln Σ exp(x)` in `f64`; NaN if the row has a NaN or `+∞`, or no finite maximum.
    fn log_sum_exp(row: &[f32]) -> f64 {
        let max = row_max(row);
        if !max.is_finite() {
            return f64::NAN;
        }
        let max = f64::from(max);
        let sum = lane_sum!(row, row, |x, _y| exp(x - max));
        max + sum.ln()
    }
}

multiversion! {
    /// `Σ x²`.
    fn sq_norm(row: &[f32]) -> f64 {
        lane_sum!(row, row, |x, _y| x * x)
    }
}

multiversion! {
    /// `Σ (a − b)²`.
    fn sq_distance(a: &[f32], b: &[f32]) -> f64 {
        lane_sum!(a, b, |x, y| (x - y) * (x - y))
    }
}

multiversion! {
    /// `½ Σ [p(lp − lm) + q(lq − lm)]`, `lm = ln((p+q)/2)`, clamped to `[0, ln 2]`.
    fn js_row(dense: &[f32], lse_d: f64, pruned: &[f32]) -> f64 {
        let lse_q = log_sum_exp(pruned);
        let acc = lane_sum!(dense, pruned, |a, b| js_elem(a - lse_d, b - lse_q));
        let v = clamp_non_negative(0.5 * acc);
        // Not `f64::min`, which would turn NaN into ln 2.
        if v > LN_2 {
            LN_2
        } else {
            v
        }
    }
}

multiversion! {
    /// `½ Σ [m(lm − lp) + m(lm − lq)] / V`.
    fn js_reference_row(dense: &[f32], lse_d: f64, pruned: &[f32]) -> f64 {
        let lse_q = log_sum_exp(pruned);
        let acc = lane_sum!(dense, pruned, |a, b| js_reference_elem(a - lse_d, b - lse_q));
        clamp_non_negative(0.5 * acc) / dense.len() as f64
    }
}

multiversion! {
    /// `Σ p (lp − lq)`.
    fn kl_row(dense: &[f32], lse_d: f64, pruned: &[f32]) -> f64 {
        let lse_q = log_sum_exp(pruned);
        let shift = lse_q - lse_d;
        let acc = lane_sum!(dense, pruned, |a, b| exp(a - lse_d) * ((a - b) + shift));
        clamp_non_negative(acc)
    }
}

multiversion! {
    /// `acos(clamp(cos, 0, 1))`; a zero vector has cosine 0 with anything (as PyTorch's
    /// `cosine_similarity` with its `eps` gives).
    fn angular_row(dense: &[f32], norm_d: f64, pruned: &[f32]) -> f64 {
        let dot = lane_sum!(dense, pruned, |a, b| a * b);
        let sq = lane_sum!(pruned, pruned, |x, _y| x * x);
        let denom = norm_d * sq.sqrt();
        let cos = if denom > 0.0 {
            dot / denom
        } else if denom.is_nan() {
            f64::NAN
        } else {
            0.0
        };
        cos.clamp(0.0, 1.0).acos()
    }
}

/// Rounding can push a divergence a hair below zero; NaN stays NaN.
fn clamp_non_negative(x: f64) -> f64 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_stable() {
        let row = [1000.0f32, 1000.0];
        assert!((log_sum_exp(&row) - (1000.0 + LN_2)).abs() < 1e-12);
        assert!(log_sum_exp(&[f32::NAN, 1.0]).is_nan());
        assert!(log_sum_exp(&[f32::INFINITY, 1.0]).is_nan());
    }

    #[test]
    fn equal_log_probs_give_exact_zero() {
        assert_eq!(js_elem(-1.5, -1.5), 0.0);
        assert_eq!(js_reference_elem(-1.5, -1.5), 0.0);
        assert_eq!(js_elem(-0.0, 0.0), 0.0);
    }

    #[test]
    fn plain_avx2_and_avx512_kernels_agree_bit_for_bit() {
        use std::sync::atomic::Ordering;
        let vocab = 1003;
        let dense: Vec<f32> = (0..3 * vocab)
            .map(|i| ((i * 7919) % 2003) as f32 * 0.01 - 10.0)
            .collect();
        let pruned: Vec<f32> = dense
            .iter()
            .enumerate()
            .map(|(i, &x)| x + ((i % 17) as f32 - 8.0) * 0.05)
            .collect();
        let rows = DenseRows::new(dense, vocab)
            .unwrap()
            .with_targets(vec![Some(1), Some(2), None])
            .unwrap();
        let all = |rows: &DenseRows| -> Vec<u64> {
            Metric::ALL
                .iter()
                .flat_map(|&m| (0..3).map(move |r| (m, r)))
                .map(|(m, r)| {
                    rows.row_value(m, r, &pruned[r * vocab..(r + 1) * vocab])
                        .unwrap()
                        .to_bits()
                })
                .collect()
        };
        let widest = all(&rows);
        FORCE_LEVEL.store(1, Ordering::Relaxed);
        let avx2 = all(&rows);
        FORCE_LEVEL.store(0, Ordering::Relaxed);
        let plain = all(&rows);
        FORCE_LEVEL.store(2, Ordering::Relaxed);
        assert_eq!(widest, plain);
        assert_eq!(avx2, plain);
    }

    #[test]
    fn targets_flatten_in_row_order() {
        let t = next_token_targets(&[vec![5, 6, 7], vec![8, 9]]);
        assert_eq!(t, vec![Some(6), Some(7), None, Some(9), None]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(DenseRows::new(vec![0.0; 5], 2).is_err());
        assert!(DenseRows::new(vec![0.0; 4], 0).is_err());
        assert!(DenseRows::new(vec![f32::NAN, 0.0], 2).is_err());
        let d = DenseRows::new(vec![0.0; 4], 2).unwrap();
        assert!(d.clone().with_targets(vec![Some(2), None]).is_err());
        assert!(d.clone().with_targets(vec![Some(1)]).is_err());
        assert!(d.row_value(Metric::Ppl, 0, &[0.0, 0.0]).is_err());
        assert!(d.row_value(Metric::Js, 2, &[0.0, 0.0]).is_err());
        assert!(d.row_value(Metric::Js, 0, &[0.0]).is_err());
        let t = DenseRows::targets_only(vec![Some(1), None], 2).unwrap();
        assert!(t.row_value(Metric::Js, 0, &[0.0, 0.0]).is_err());
        assert!(t.row_value(Metric::Ppl, 0, &[0.0, 0.0]).is_ok());
    }
}
