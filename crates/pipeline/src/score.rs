//! Scoring a plan: the benchmarks and perplexity of a loaded model with sublayers removed.

use std::collections::BTreeSet;

use finercut_dist::{Alone, Transport};
use finercut_eval::gsm8k::{Gsm8kOptions, Gsm8kReport};
use finercut_eval::{
    evaluate_on, perplexity_on, EvalOptions, EvalReport, PerplexityOptions, PerplexityReport,
    TaskName,
};

use crate::error::Result;
use crate::Loaded;

/// Evaluates a loaded model under a plan.
pub fn evaluate_plan(
    loaded: &Loaded,
    removed: &BTreeSet<usize>,
    tasks: &[TaskName],
    options: &EvalOptions,
    show_progress: bool,
) -> Result<EvalReport> {
    evaluate_plan_on(&Alone, loaded, removed, tasks, options, show_progress)
}

/// [`evaluate_plan`] as one rank of `dist` ([`finercut_eval::evaluate_on`]): the documents are
/// shared among the ranks, every rank returns the one-process report, and only rank 0 shows
/// progress (of its own share).
pub fn evaluate_plan_on(
    dist: &dyn Transport,
    loaded: &Loaded,
    removed: &BTreeSet<usize>,
    tasks: &[TaskName],
    options: &EvalOptions,
    show_progress: bool,
) -> Result<EvalReport> {
    let show_progress = show_progress && dist.rank() == 0;
    let plan = loaded.plan_with(removed);
    let lm = finercut_eval::ModelLm::new(&loaded.model, plan, &loaded.checkpoint.tokenizer)?;
    let bar = show_progress.then(|| {
        crate::progress_bar(
            0,
            "{prefix:>14} [{bar:30}] {pos}/{len} continuations {per_sec} eta {eta}",
        )
    });
    // Without a terminal (a log file) the bar is hidden: a line per finished task instead.
    let plain = show_progress && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let t0 = std::time::Instant::now();
    let report = evaluate_on(dist, &lm, tasks, options, &mut |p| {
        if let Some(bar) = &bar {
            bar.set_prefix(p.task.to_string());
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        }
        if plain && p.done == p.total {
            eprintln!(
                "[{:>7.1}s] {}: {} continuations scored",
                t0.elapsed().as_secs_f64(),
                p.task,
                p.total
            );
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}

/// Perplexity of a loaded model under a plan.
pub fn perplexity_of(
    loaded: &Loaded,
    removed: &BTreeSet<usize>,
    text: &str,
    options: &PerplexityOptions,
    show_progress: bool,
) -> Result<PerplexityReport> {
    perplexity_of_on(&Alone, loaded, removed, text, options, show_progress)
}

/// [`perplexity_of`] as one rank of `dist` ([`finercut_eval::perplexity_on`]): the windows are
/// shared among the ranks, every rank returns the one-process report bit for bit, and only rank 0
/// shows progress (of its own share).
pub fn perplexity_of_on(
    dist: &dyn Transport,
    loaded: &Loaded,
    removed: &BTreeSet<usize>,
    text: &str,
    options: &PerplexityOptions,
    show_progress: bool,
) -> Result<PerplexityReport> {
    let show_progress = show_progress && dist.rank() == 0;
    let plan = loaded.plan_with(removed);
    let lm = finercut_eval::ModelLm::new(&loaded.model, plan, &loaded.checkpoint.tokenizer)?;
    let bar = show_progress
        .then(|| crate::progress_bar(0, "ppl [{bar:30}] {pos}/{len} windows {per_sec} eta {eta}"));
    let report = perplexity_on(dist, &lm, text, options, &mut |p| {
        if let Some(bar) = &bar {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}

/// GSM8K of a loaded model under a plan, by batched greedy generation
/// ([`finercut_eval::gsm8k::evaluate`]), with a progress bar over the questions.
pub fn gsm8k_of(
    loaded: &Loaded,
    removed: &BTreeSet<usize>,
    options: &Gsm8kOptions,
    show_progress: bool,
) -> Result<Gsm8kReport> {
    gsm8k_of_on(&Alone, loaded, removed, options, show_progress)
}

/// [`gsm8k_of`] as one rank of `dist` ([`finercut_eval::gsm8k::evaluate_on`]): the questions are
/// shared among the ranks, every rank returns the one-process outcomes, and only rank 0 shows
/// progress (of its own share).
pub fn gsm8k_of_on(
    dist: &dyn Transport,
    loaded: &Loaded,
    removed: &BTreeSet<usize>,
    options: &Gsm8kOptions,
    show_progress: bool,
) -> Result<Gsm8kReport> {
    let show_progress = show_progress && dist.rank() == 0;
    let plan = loaded.plan_with(removed);
    let lm = finercut_eval::ModelLm::new(&loaded.model, plan, &loaded.checkpoint.tokenizer)?;
    let bar = show_progress
        .then(|| crate::progress_bar(0, "{prefix:>14} [{bar:30}] {pos}/{len} questions eta {eta}"));
    if let Some(bar) = &bar {
        bar.set_prefix("gsm8k");
    }
    // Without a terminal (a log file) the bar is hidden: a line after the first question and
    // after every tenth of them instead.
    let plain = show_progress && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let t0 = std::time::Instant::now();
    let mut tenths = 0;
    let report = finercut_eval::gsm8k::evaluate_on(dist, &lm, options, &mut |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        let tenth = done * 10 / total.max(1);
        if plain && (done == 1 || tenth > tenths) {
            tenths = tenth;
            eprintln!(
                "[{:>7.1}s] gsm8k: {done}/{total} questions answered",
                t0.elapsed().as_secs_f64()
            );
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}
