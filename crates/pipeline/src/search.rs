//! Running a search to the end, or resuming it from its checkpoint, with a progress bar.

use std::time::Instant;

use finercut_dist::{Alone, Transport};
use finercut_metrics::Metric;
use finercut_search::distributed::{check_same_run, RunIdentity};
use finercut_search::model_scorer::{ModelHiddenStates, StreamingScorer};
use finercut_search::stages::{check_method, Stages};
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
    execute_on(
        &Alone, loaded, seqs, settings, provenance, out, resume, verbose,
    )
}

/// [`execute`] as one rank of `dist`: every rank runs the same search (checked first: model,
/// calibration, settings and resumed steps), the candidates of each scoring pass are shared
/// among the ranks, and only rank 0 writes `out` and shows progress. Every rank returns the same
/// result, equal bit for bit to the one-process run's (wall times aside). A rank that fails must
/// call [`Transport::abort`] so that the others do not wait for it.
#[allow(clippy::too_many_arguments)]
pub fn execute_on(
    dist: &dyn Transport,
    loaded: &Loaded,
    seqs: &[Vec<u32>],
    settings: &Settings,
    provenance: Provenance,
    out: &std::path::Path,
    resume: bool,
    verbose: bool,
) -> Result<SearchResult> {
    execute_on_stages(
        dist, None, loaded, seqs, settings, provenance, out, resume, verbose,
    )
}

/// [`execute_on`] with the ranks forming replicas of a pipeline (`stages`,
/// `finercut_search::stages`; `loaded` holds this rank's window of sublayers): the same result
/// bit for bit. Methods that score candidates and `random` run on stages; ShortGPT and
/// DeeperLayers are refused.
#[allow(clippy::too_many_arguments)]
pub fn execute_on_stages(
    dist: &dyn Transport,
    stages: Option<&Stages>,
    loaded: &Loaded,
    seqs: &[Vec<u32>],
    settings: &Settings,
    provenance: Provenance,
    out: &std::path::Path,
    resume: bool,
    verbose: bool,
) -> Result<SearchResult> {
    if stages.is_some() {
        check_method(settings.method)?;
    }
    let verbose = verbose && dist.rank() == 0;
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
    if dist.size() > 1 {
        let out_name = out.display().to_string();
        let model_name = loaded.path.display().to_string();
        let data_name = format!(
            "{} sequences of {} tokens",
            settings.samples, settings.seq_len
        );
        check_same_run(
            dist,
            &RunIdentity {
                provenance: &result.provenance,
                settings,
                resumed_steps: result.steps.len(),
                model_file: &model_name,
                data_file: &data_name,
                out_file: &out_name,
            },
        )
        .with_context(|| format!("rank {} of {}", dist.rank(), dist.size()))?;
    }
    if result.complete {
        return Ok(result);
    }
    // Only rank 0 writes the checkpoint and the result.
    let out = (dist.rank() == 0).then_some(out);
    let mut observer = BarObserver::new(verbose);
    match settings.method.family() {
        Family::Greedy | Family::OneShot => {
            let metric = settings.metric.unwrap_or(Metric::Js);
            let mut scorer = match stages {
                Some(stages) => {
                    StreamingScorer::staged(&loaded.model, seqs.to_vec(), metric, dist, stages)?
                }
                None => {
                    StreamingScorer::new(&loaded.model, seqs.to_vec(), metric)?.with_transport(dist)
                }
            };
            if result.steps.is_empty() {
                result.preparation = scorer.preparation().clone();
            }
            run(&mut result, Inputs::Scorer(&mut scorer), out, &mut observer)?;
            if verbose && dist.size() > 1 {
                eprintln!(
                    "{} ranks; rank 0 sent {} bytes of per-row values",
                    dist.size(),
                    scorer.sent_bytes()
                );
            }
            if let Some(stages) = stages {
                // Every rank reports what it handed to the next stage (a collective).
                let mine = scorer.handed_bytes().to_le_bytes();
                let all = dist
                    .all_gather_bytes(&mine)
                    .map_err(finercut_search::Error::from)?;
                if verbose {
                    let handed: Vec<String> = all
                        .iter()
                        .enumerate()
                        .map(|(rank, b)| {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(b.get(..8).unwrap_or(&[0; 8]));
                            format!("rank {rank}: {}", u64::from_le_bytes(a))
                        })
                        .collect();
                    eprintln!(
                        "{} replicas of {} stages; bytes of streams handed to the next stage: {}",
                        stages.replicas,
                        stages.count,
                        handed.join(", ")
                    );
                }
            }
        }
        Family::HiddenStates => {
            let mut states = ModelHiddenStates::new(&loaded.model, seqs.to_vec())?;
            run(
                &mut result,
                Inputs::HiddenStates(&mut states),
                out,
                &mut observer,
            )?;
        }
        Family::Random => {
            run(&mut result, Inputs::Nothing, out, &mut observer)?;
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
