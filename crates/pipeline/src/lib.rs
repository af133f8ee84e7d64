//! The steps `finercut`'s commands and the paper's reproduction compose: open and load a model
//! from disk, cut calibration sequences from text, run or resume a search with its per-step
//! checkpoint, score a plan on the benchmarks and on perplexity, write results atomically.
//!
//! The library crates below it (`finercut-format`, `-model`, `-search`, `-eval`) do no terminal
//! output and hold no policy about files; this crate adds both: progress bars on stderr, the
//! default model in the cache, atomic JSON results. The `finercut` binary is wiring over it, and
//! `finercut-reproduce` builds the paper's tables and figures from these steps.
//!
//! # Key types and functions
//!
//! - [`Loaded`] and [`load_model`]: a checkpoint with its model and the sublayers the checkpoint
//!   itself already removed (a `finercut export`), so that plans compose with it.
//! - [`calibration`]: the reference code's calibration set, contiguous chunks of one tokenised text.
//! - [`execute_search`]: runs a [`finercut_search::Settings`] to the end, resuming from its
//!   checkpoint file after an interruption.
//! - [`evaluate_plan`], [`perplexity_of`] and [`gsm8k_of`]: benchmarks, perplexity and GSM8K
//!   under a plan; [`evaluate_plan_on`], [`perplexity_of_on`] and [`gsm8k_of_on`] the same as one
//!   rank of several.
//! - [`write_tiny_model`]: a tiny random Llama with a byte-level tokenizer, for tests.
//!
//! # Example
//!
//! ```
//! use finercut_pipeline::{calibration, load_model, write_tiny_model, LoadOptions, TinySpec};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! write_tiny_model(dir.path(), &TinySpec::default())?;
//! let loaded = load_model(dir.path(), &LoadOptions::default())?;
//! let text = "The quick brown fox jumps over the lazy dog. ".repeat(4);
//! let seqs = calibration(&loaded.checkpoint.tokenizer, &text, "inline", 2, 16, 0)?;
//! assert_eq!(seqs.len(), 2);
//! # Ok(())
//! # }
//! ```

mod error;
mod files;
mod load;
mod progress;
mod score;
mod search;
mod text;
mod tiny;

pub use error::{Context, Error, Result};
pub use files::{sha256_hex, write_file_atomic, write_json_atomic};
pub use load::{
    load_model, load_model_part, model_path, open_checkpoint, removed_in_checkpoint, LoadOptions,
    Loaded,
};
pub use progress::{init_threads, peak_rss_mib, progress_bar};
pub use score::{
    evaluate_plan, evaluate_plan_on, gsm8k_of, gsm8k_of_on, perplexity_of, perplexity_of_on,
};
pub use search::{
    execute as execute_search, execute_on as execute_search_on,
    execute_on_stages as execute_search_on_stages,
};
pub use text::{calibration, calibration_from_ids, read_text, text_or_wikitext2};
pub use tiny::{byte_tokenizer, write_tiny_model, TinySpec};
