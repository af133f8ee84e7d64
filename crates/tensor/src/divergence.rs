//! Per-row divergences between a model's logits and reference ("dense") logits, computed on the
//! device that holds them, so that only one number per row travels back to the host.
//!
//! The formulas are `finercut-metrics`' (that crate stays their one definition and the oracle of
//! the tests): the CUDA kernels compute each row's value term for term in `f64`, and
//! `finercut_metrics::Accumulator::add_row_values` combines the values exactly as for rows
//! computed on the host. On the CPU, use `finercut-metrics` directly on the logits.

use crate::{Error, Result, Tensor};

/// The per-row value to compute (the metrics of `finercut_metrics::Metric`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowMetric {
    /// Jensen–Shannon divergence (natural log), clamped to `[0, ln 2]`.
    Js,
    /// The reference implementation's `js_divergence`: `½[KL(M‖P) + KL(M‖Q)] / V`.
    JsReference,
    /// `KL(dense ‖ pruned)`.
    Kl,
    /// `acos(clamp(cos(dense, pruned), 0, 1))` of the logit vectors.
    Angular,
    /// Squared Euclidean distance of the logit vectors.
    Euclidean,
    /// Negative log-likelihood of the row's target (0 for a row without one).
    Ppl,
}

impl RowMetric {
    /// The metric's code in `kernels.cu` (`DIV_*`).
    pub(crate) fn code(self) -> i32 {
        match self {
            RowMetric::Js => 0,
            RowMetric::JsReference => 1,
            RowMetric::Kl => 2,
            RowMetric::Angular => 3,
            RowMetric::Euclidean => 4,
            RowMetric::Ppl => 5,
        }
    }
}

/// Reference logits `[rows, vocab]` kept where they were computed, with each row's log-sum-exp
/// (from `finercut_metrics::DenseRows::log_sum_exp`), its Euclidean norm and its next-token target.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // Read by the CUDA backend only.
pub struct DenseLogits {
    pub(crate) logits: Tensor,
    pub(crate) lse: Vec<f64>,
    pub(crate) norm: Vec<f64>,
    pub(crate) targets: Vec<i32>,
}

impl DenseLogits {
    /// Reference logits with their per-row log-sum-exp and targets (`targets` may be empty when
    /// no metric needs them; else one per row).
    pub fn new(logits: &Tensor, lse: &[f64], targets: &[Option<u32>]) -> Result<DenseLogits> {
        let op = "DenseLogits::new";
        let rows = logits.rows();
        if logits.rank() != 2 || lse.len() != rows || !(targets.is_empty() || targets.len() == rows)
        {
            return Err(Error::ShapeMismatch {
                op,
                detail: format!(
                    "logits {:?} with {} log-sum-exps and {} targets",
                    logits.shape(),
                    lse.len(),
                    targets.len()
                ),
            });
        }
        let vocab = logits.cols();
        let values = logits.to_vec_f32()?;
        let norm = values
            .chunks(vocab.max(1))
            .map(|r| {
                r.iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let mut t = Vec::with_capacity(rows);
        for target in targets {
            t.push(match target {
                Some(id) if (*id as usize) < vocab => *id as i32,
                Some(id) => {
                    return Err(Error::Index {
                        op,
                        index: *id as usize,
                        size: vocab,
                    })
                }
                None => -1,
            });
        }
        if t.is_empty() {
            t = vec![-1; rows];
        }
        Ok(DenseLogits {
            logits: logits.clone(),
            lse: lse.to_vec(),
            norm,
            targets: t,
        })
    }
}

impl Tensor {
    /// The value of `metric` for every row of these logits (`[rows, vocab]`) against dense rows
    /// `dense_row0 ..` of `dense`, computed on the device; only the values come back.
    ///
    /// CUDA tensors only: on the CPU, `finercut-metrics` computes the same values from the slices.
    pub fn row_divergences(
        &self,
        dense: &DenseLogits,
        dense_row0: usize,
        metric: RowMetric,
    ) -> Result<Vec<f64>> {
        let op = "row_divergences";
        let vocab = dense.logits.cols();
        if self.rank() != 2
            || self.cols() != vocab
            || dense_row0 + self.rows() > dense.logits.rows()
        {
            return Err(Error::ShapeMismatch {
                op,
                detail: format!(
                    "rows {:?} from dense row {dense_row0} of {:?}",
                    self.shape,
                    dense.logits.shape()
                ),
            });
        }
        self.storage.divergence_rows(
            op,
            &dense.logits.storage,
            dense,
            vocab,
            dense_row0,
            metric.code(),
        )
    }
}
