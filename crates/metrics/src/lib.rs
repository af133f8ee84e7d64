//! Divergences between next-token distributions and similarities of hidden states.
//!
//! FinerCut scores a pruned model by how far its final logits move away from the dense model's
//! logits on a calibration set (`docs/DESIGN.md`, Metrics).
//! This crate holds those scores and nothing else: it knows rows of `f32` logits, not models.
//!
//! Key types:
//! - [`Metric`]: which score (`js`, `js-reference`, `kl`, `angular`, `euclidean`, `ppl`).
//! - [`DenseRows`]: the dense model's logits, cached once, with per-row log-sum-exp and norms.
//! - [`Accumulator`]: takes the pruned model's rows in chunks, in any order, and finalises one score.
//! - [`similarity`]: cosine and angular measures of hidden states, used by the ShortGPT and
//!   DeeperLayers baselines.
//!
//! The main design decision: a score is a sum of independent per-row values.
//! The accumulator stores one `f64` per row and sums them in row order when it finishes, so the
//! score does not depend on how rows were chunked, in which order chunks arrived, or how many
//! threads computed them.
//! Each row value is one numerically stable pass over the pruned row (log-sum-exp first, then the
//! divergence), accumulated in `f64`; no vocabulary-sized row is ever copied.
//!
//! ```
//! use finercut_metrics::{Accumulator, DenseRows, Metric};
//!
//! // Two rows over a vocabulary of three tokens.
//! let dense = DenseRows::new(vec![1.0, 2.0, 3.0, 0.0, 0.0, 5.0], 3)?;
//! let mut acc = Accumulator::new(Metric::Js, &dense)?;
//! // Rows may arrive in any order and in chunks.
//! acc.add_rows(1, &[0.0, 0.0, 5.0])?;
//! acc.add_rows(0, &[1.0, 2.0, 3.0])?;
//! assert_eq!(acc.finish()?, 0.0);
//! # Ok::<(), finercut_metrics::Error>(())
//! ```
#![deny(missing_docs)]

mod accumulate;
mod dense;
mod fastmath;
mod metric;
#[cfg(feature = "ndarray")]
pub mod nd;
pub mod similarity;

pub use accumulate::{Accumulator, BOUND_MARGIN};
pub use dense::{next_token_targets, DenseRows};
pub use metric::Metric;

/// `ln Σ exp(x)` over one row of logits, in `f64` and numerically stable (the row's maximum is
/// taken out first), with the same kernel the metrics use: token `i` has probability
/// `exp(row[i] − log_sum_exp(row))`. NaN if the row holds a NaN or `+∞`, or has no finite
/// maximum (an empty row or one of `−∞` only).
///
/// ```
/// let lse = finercut_metrics::log_sum_exp(&[1000.0, 1000.0]);
/// assert!((lse - (1000.0 + std::f64::consts::LN_2)).abs() < 1e-9);
/// ```
pub fn log_sum_exp(row: &[f32]) -> f64 {
    dense::log_sum_exp(row)
}

/// Errors of this crate; each names the metric, row or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A metric name that is not one of the known names.
    #[error(
        "unknown metric {name:?}; expected one of: js, js-reference, kl, angular, euclidean, ppl"
    )]
    UnknownMetric {
        /// The name given.
        name: String,
    },
    /// A buffer whose length does not fit the expected shape.
    #[error("{what}: expected {expected} values, got {got}")]
    ShapeMismatch {
        /// What was being checked.
        what: String,
        /// Expected number of values.
        expected: usize,
        /// Number of values given.
        got: usize,
    },
    /// A vocabulary or hidden size of zero.
    #[error("{what} must be positive")]
    ZeroSize {
        /// Which size.
        what: &'static str,
    },
    /// Dense logits that are NaN or infinite.
    #[error("dense logits of row {row} are not finite")]
    NonFiniteDense {
        /// The row.
        row: usize,
    },
    /// A chunk of rows that runs past the last row.
    #[error("rows {first}..{end} are out of range: there are {num_rows} rows")]
    RowOutOfRange {
        /// First row of the chunk.
        first: usize,
        /// One past the last row of the chunk.
        end: usize,
        /// Number of rows.
        num_rows: usize,
    },
    /// A row delivered twice.
    #[error("row {row} was given twice to the {metric} accumulator")]
    RowTwice {
        /// The row.
        row: usize,
        /// The metric.
        metric: Metric,
    },
    /// Finishing before every row was given.
    #[error("{metric}: {missing} of {num_rows} rows were never given (first: row {first})")]
    MissingRows {
        /// The metric.
        metric: Metric,
        /// How many rows are missing.
        missing: usize,
        /// Number of rows.
        num_rows: usize,
        /// The first missing row.
        first: usize,
    },
    /// A metric that needs the dense logits, given dense rows built without them.
    #[error(
        "metric {metric} needs the dense model's logits, but the dense rows hold only targets"
    )]
    MissingDenseLogits {
        /// The metric.
        metric: Metric,
    },
    /// The perplexity metric without next-token targets.
    #[error("metric {metric} needs next-token targets; build the dense rows with targets")]
    MissingTargets {
        /// The metric.
        metric: Metric,
    },
    /// The perplexity metric with no row that has a target.
    #[error("metric {metric}: no row has a next-token target (sequences of length 1?)")]
    NoTargets {
        /// The metric.
        metric: Metric,
    },
    /// A target token id outside the vocabulary.
    #[error("target token {token} of row {row} is outside the vocabulary of {vocab}")]
    TargetOutOfRange {
        /// The row.
        row: usize,
        /// The token id.
        token: u32,
        /// Vocabulary size.
        vocab: usize,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
