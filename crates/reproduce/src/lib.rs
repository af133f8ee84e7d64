//! The FinerCut paper's Table 2, Figures 1b, 3 and 4 and its ablations, reproduced on the models
//! available, with paired bootstrap intervals and verdicts computed from them.
//!
//! [`run`] takes the models of a profile (or those named), and for each: evaluates the dense model,
//! runs FinerCut and the baselines (searches resume from their checkpoints), evaluates every
//! pruned model on the same documents, and writes the table (Markdown) and `results.json` under
//! `table2/<model>/` with each row's difference to the dense model and to FinerCut as 95% paired bootstrap intervals
//! ([`stats`]), and a verdict line per model. Every search and evaluation is cached under
//! `cache/<profile>/<model>/`, keyed by the SHA-256 of the model, the calibration tokens and the
//! settings, so a rerun finishes from the cache and an interrupted one picks up where it stopped.
//! [`run_on`] is the same as one rank of several (MPI): every unit's work is shared among the
//! ranks and rank 0 alone reads and writes files, with the one-process tables bit for bit.
//!
//! # Key types
//!
//! - [`Options`]: what to reproduce, the profile ([`ProfileKind`]), the models, the output directory.
//! - [`Profile`]: the settings a profile stands for; written into every result.
//! - [`models::KNOWN_MODELS`]: the real models `--models` names.
//! - [`stats::paired`] and [`stats::verdict`]: the paired bootstrap and the verdict line.
//! - [`plots`]: the figures as SVG (and PNG where a converter is installed), with CSV and JSON data.
//!
//! # Example
//!
//! The smoke profile runs the whole pipeline on two tiny random models in seconds:
//!
//! ```no_run
//! use finercut_reproduce::{run, Options, ProfileKind, What};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let out = tempfile::tempdir()?;
//! run(&Options::new(What::Table2, ProfileKind::Smoke, out.path().to_path_buf()))?;
//! assert!(out.path().join("table2/tiny-1/results.json").is_file());
//! # Ok(())
//! # }
//! ```

mod error;
pub mod models;
pub mod plots;
mod reproduce;
pub mod stats;

use std::path::PathBuf;

use finercut_pipeline::LoadOptions;

pub use error::{Error, Result};
pub use reproduce::{run, run_on, Profile};

/// What to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// Table 2: dense, FinerCut and the baselines at 25% of sublayers.
    Table2,
    /// Figure 3: WikiText-2 perplexity against the removal ratio.
    Figure3,
    /// Figure 4: the grid of pruned sublayers at 25%.
    Figure4,
    /// Figure 1b: removed attention versus FFN sublayers.
    Figure1b,
    /// Ablations: sublayers versus whole blocks; JS versus angular versus Euclidean.
    Ablation,
    /// The GSM8K generation check of Table 2 alone: the same rows (searches, SliceGPT model) and
    /// questions, without the multiple-choice evaluations, for models where Table 2 is too costly.
    Gsm8k,
    /// Table 2 (with its GSM8K check), Figures 3, 4 and 1b and the ablation.
    All,
}

/// A reproduction profile: how much data and compute to spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    /// Two real models in under an hour on two cores (see `docs/REPRODUCING.md`).
    Default,
    /// The paper's settings on every known model: hours.
    Full,
    /// The whole pipeline on two tiny random models in seconds (for tests).
    Smoke,
}

/// What [`run`] does.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to reproduce.
    pub what: What,
    /// The profile.
    pub profile: ProfileKind,
    /// Known model names, `all`, or checkpoint paths; empty: the profile's models.
    pub models: Vec<String>,
    /// Output directory.
    pub out: PathBuf,
    /// Worker threads (recorded in the results; the caller sets up the thread pool).
    pub threads: usize,
    /// How models are loaded.
    pub load: LoadOptions,
}

impl Options {
    /// `what` under `profile` on the profile's models, written to `out`, on the CPU with the
    /// threads of the global pool.
    pub fn new(what: What, profile: ProfileKind, out: PathBuf) -> Options {
        Options {
            what,
            profile,
            models: Vec::new(),
            out,
            threads: rayon_threads(),
            load: LoadOptions::default(),
        }
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
