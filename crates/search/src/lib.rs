//! Greedy FinerCut sublayer search, baselines, result files and checkpoints.
//!
//! FinerCut (`docs/DESIGN.md`, The search) removes, one step at a time, the attention or FFN
//! sublayer whose removal moves the model's final logits least from the dense model's; one run
//! yields every pruning ratio. This crate runs that search and the baselines the paper compares
//! against (ShortGPT, DeeperLayers, SLEB, BlockPruner, one-shot FinerCut, random), writes results and
//! atomic checkpoints, resumes interrupted runs, and turns results into plans, export lists and
//! the Figure-4 grid.
//!
//! Key types:
//! - [`Scorer`]: scores candidate removals; [`HiddenStates`]: dense block-boundary states.
//! - [`Settings`], [`Method`], [`Level`], [`Stop`], [`Provenance`]: what a run is asked to do.
//! - [`run()`] with [`Inputs`]: runs a method; [`Observer`] receives progress.
//! - [`SearchResult`]: the result file; [`SearchResult::plan_for_ratio`],
//!   [`SearchResult::resume`].
//! - [`export::ExportPlan`], [`inspect::Inspection`]: what an export drops, what a plan looks like.
//! - [`model_scorer`]: [`Scorer`] and [`HiddenStates`] backed by a `finercut_model::Model`
//!   (`StreamingScorer`, `NaiveScorer`, `ModelHiddenStates`).
//!
//! The main design decision: the search sees a model only through the two small traits above,
//! which speak in sublayer indices and scores. The greedy algorithm, the baselines, results,
//! checkpoints and their tests need no model at all; only [`model_scorer`] touches
//! `finercut_model`, and it sees logits only as rows of `f32` handed to
//! `finercut_metrics::Accumulator`.
//!
//! ```
//! use std::collections::BTreeSet;
//! use finercut_search::{run, FnScorer, Inputs, Method, Provenance, SearchResult, Settings};
//!
//! // A toy objective over 2 blocks (4 sublayers): removing sublayer i costs w[i].
//! let w = [0.4, 0.1, 0.3, 0.2];
//! let mut scorer = FnScorer::new(4, |removed: &BTreeSet<usize>| removed.iter().map(|&i| w[i]).sum());
//! let provenance = Provenance { model_sha256: "…".into(), data_sha256: "…".into() };
//! let mut result = SearchResult::new(Settings::new(Method::Finercut), provenance, 2)?;
//! run(&mut result, Inputs::Scorer(&mut scorer), None, &mut ())?;
//! let order: Vec<String> = result.order().iter().map(|u| u.to_string()).collect();
//! assert_eq!(order, ["L0.mlp", "L1.mlp", "L1.attn", "L0.attn"]);
//! assert_eq!(result.plan_for_ratio(0.5)?, BTreeSet::from([1, 3]));
//! # Ok::<(), finercut_search::Error>(())
//! ```
#![deny(missing_docs)]

use std::path::PathBuf;

pub mod distributed;
pub mod eliminate;
pub mod export;
pub mod inspect;
pub mod model_scorer;
mod result;
mod run;
mod scorer;
mod settings;
pub mod stages;
mod unit;

// This crate's unit tests run with the kernels an executable gets from `init_blas`.
#[cfg(test)]
finercut_tensor::init_blas_before_main!();

pub use eliminate::{eliminate, Elimination, GroupScoring};
pub use result::{Candidate, Cost, SearchResult, Step, Window, FORMAT_VERSION, RUNNERS_UP};
pub use run::{front_exclusion, run, Inputs};
pub use scorer::{BlockStates, FnScorer, HiddenStates, Observer, Scored, Scorer};
pub use settings::{
    check_ratio, ratio_to_sublayers, Family, Method, Provenance, Settings, Stop, TokenSelection,
};
pub use unit::{sublayer_name, Level, Unit};

/// The metrics the search scores with ([`Settings::metric`]), from `finercut-metrics`.
pub use finercut_metrics::Metric;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that is invalid or contradicts another.
    #[error("invalid setting {setting}: {message}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A unit name that is not `L{block}.attn`, `L{block}.mlp` or `L{block}`.
    #[error("invalid unit name {name:?}: expected L{{block}}.attn, L{{block}}.mlp or L{{block}}")]
    InvalidUnit {
        /// The name.
        name: String,
    },
    /// A scorer or state source that does not fit the result's model.
    #[error("the result is for a model of {expected} sublayers, the scorer has {got}")]
    ModelMismatch {
        /// Sublayers in the result.
        expected: usize,
        /// Sublayers in the scorer.
        got: usize,
    },
    /// A scorer that broke its contract.
    #[error("scorer: {message}")]
    Scorer {
        /// What happened.
        message: String,
    },
    /// A pruning ratio outside `(0, 1)` ([`check_ratio`]).
    #[error("ratio {ratio} is outside (0, 1): a pruning ratio is the fraction of the sublayers to remove, strictly between 0 and 1")]
    InvalidRatio {
        /// The ratio given.
        ratio: f64,
    },
    /// A step whose candidate scores are NaN or infinite: the search stops rather than remove a
    /// unit on a broken score; the checkpoint keeps the steps before it.
    #[error("step {step}: candidate scores are not finite: {candidates}; the search stopped (the checkpoint keeps the steps before it)")]
    NonFiniteScores {
        /// The step, counted from 1.
        step: usize,
        /// The candidates and their values.
        candidates: String,
    },
    /// A ratio beyond where the run stopped.
    #[error("ratio {ratio} needs {sublayers} sublayers removed, but the run stopped after {covered}; continue it with a larger ratio")]
    RatioNotCovered {
        /// The ratio asked for.
        ratio: f64,
        /// Sublayers it needs.
        sublayers: usize,
        /// Sublayers the result covers.
        covered: usize,
    },
    /// A ratio beyond what the level can remove.
    #[error("ratio {ratio} needs {sublayers} sublayers removed, but level {level} of this method removes at most {max}")]
    RatioBeyondLevel {
        /// The ratio asked for.
        ratio: f64,
        /// Sublayers it needs.
        sublayers: usize,
        /// The most the level can remove.
        max: usize,
        /// The level.
        level: Level,
    },
    /// An I/O failure on a result or checkpoint file.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A checkpoint or result file that cannot be read back.
    #[error("checkpoint {path}: {message}")]
    CorruptCheckpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint that belongs to a different run.
    #[error(
        "cannot resume from {path}: {what} differs (checkpoint: {checkpoint}, now: {requested})"
    )]
    ResumeMismatch {
        /// The file.
        path: PathBuf,
        /// What differs.
        what: &'static str,
        /// Value in the checkpoint.
        checkpoint: String,
        /// Value requested now.
        requested: String,
    },
    /// An error writing a result or checkpoint file.
    #[error(transparent)]
    File(#[from] finercut_format::Error),
    /// An error of a metric.
    #[error(transparent)]
    Metrics(#[from] finercut_metrics::Error),
    /// An error of the model.
    #[error(transparent)]
    Model(#[from] finercut_model::Error),
    /// A rank of a distributed run that does not run the same search as rank 0.
    #[error("rank {rank} differs from rank 0 in its {what} ({file}): rank 0 has {rank0}, rank {rank} has {theirs}")]
    RankMismatch {
        /// The rank.
        rank: usize,
        /// What differs.
        what: &'static str,
        /// The file it comes from, as that rank names it.
        file: String,
        /// Rank 0's value.
        rank0: String,
        /// The rank's value.
        theirs: String,
    },
    /// An error between the ranks of a distributed run.
    #[error(transparent)]
    Dist(#[from] finercut_dist::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
