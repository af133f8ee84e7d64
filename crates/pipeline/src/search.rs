//! Running a search to the end, or resuming it from its checkpoint, with a progress bar.

use std::time::Instant;

use finercut_metrics::Metric;
use finercut_search::model_scorer::{ModelHiddenStates, StreamingScorer};
use finercut_search::{run, Family, Inputs, Observer, Provenance, SearchResult, Settings, Step};
use indicatif::ProgressBar;

use crate::error::{Context, Result};
use crate::Loaded;

/// Runs (or resumes, when `resume` and `out` exists) a search and returns its finished result;
/// `out` is the checkpoint, rewritten after every step.
pub fn execute(
    loaded: &Loaded,
    seqs: &[Vec<u32>],
    settings: &Settings,
    provenance: Provenance,
    out: &std::path::Path,
    resume: bool,
    verbose: bool,
) -> Result<SearchResult> {
    let num_blocks = loaded.checkpoint.config.num_hidden_layers;
    let mut result = if resume && out.exists() {
        let r = SearchResult::resume(out, settings, &provenance, num_blocks)
            .with_context(|| format!("cannot resume {}", out.display()))?;
        if !r.complete && verbose {
            eprintln!(
                "resuming {} after {} finished steps",
                out.display(),
                r.steps.len()
            );
        }
        r
    } else {
        SearchResult::new(settings.clone(), provenance, num_blocks)?
    };
    if result.complete {
        return Ok(result);
    }
    let mut observer = BarObserver::new(verbose);
    match settings.method.family() {
        Family::Greedy | Family::OneShot => {
            let mut scorer = StreamingScorer::new(
                &loaded.model,
                seqs.to_vec(),
                settings.metric.unwrap_or(Metric::Js),
            )?;
            if result.steps.is_empty() {
                result.preparation = scorer.preparation().clone();
            }
            run(
                &mut result,
                Inputs::Scorer(&mut scorer),
                Some(out),
                &mut observer,
            )?;
        }
        Family::HiddenStates => {
            let mut states = ModelHiddenStates::new(&loaded.model, seqs.to_vec())?;
            run(
                &mut result,
                Inputs::HiddenStates(&mut states),
                Some(out),
                &mut observer,
            )?;
        }
        Family::Random => {
            run(&mut result, Inputs::Nothing, Some(out), &mut observer)?;
        }
    }
    observer.finish();
    Ok(result)
}

/// Progress bar over the search: step, candidates scored, rate, ETA.
struct BarObserver {
    verbose: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    step: usize,
}

impl BarObserver {
    fn new(verbose: bool) -> Self {
        BarObserver {
            verbose,
            bar: None,
            started: Instant::now(),
            step: 0,
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for BarObserver {
    fn step_started(&mut self, step: usize, candidates: usize) {
        self.finish();
        if !self.verbose {
            return;
        }
        self.step = step;
        self.started = Instant::now();
        let bar = crate::progress_bar(
            candidates as u64,
            "step {prefix} [{bar:30}] {pos}/{len} candidates {per_sec} eta {eta}",
        );
        bar.set_prefix(format!("{}", step + 1));
        self.bar = Some(bar);
    }

    fn candidates_scored(&mut self, _step: usize, done: usize, _total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        }
    }

    fn step_finished(&mut self, step: usize, record: &Step) {
        self.finish();
        if !self.verbose {
            return;
        }
        let stopped = match &record.elimination {
            Some(e) => format!(
                ", {} of {} candidates stopped early",
                record.candidates.saturating_sub(e.completed),
                record.candidates
            ),
            None => String::new(),
        };
        eprintln!(
            "step {:>3}: removed {:<9} score {:.6e}  ({:.1} s, {:.1} fwd-eq{stopped})",
            step + 1,
            record.unit.to_string(),
            record.score,
            record.wall_s,
            record.forward_equivalents
        );
    }
}
