//! `finercut reproduce`: the paper's Table 2, figures and ablations on the models available here.
//!
//! Every search and evaluation is cached under `OUT/cache/`, keyed by the SHA-256 of the model,
//! the calibration tokens and the settings, so a rerun finishes from the cache and an interrupted
//! one picks up where it stopped (searches resume from their per-step checkpoints).
//!
//! On several ranks ([`run_on`]) every rank runs the same orchestration. Each search's candidates,
//! each evaluation's documents, each perplexity's windows and each GSM8K run's questions are
//! shared among the ranks, whose results every rank receives bit for bit. Rank 0 alone reads and
//! writes the cache and writes the tables, figures and result files: what it read from the cache
//! (a file's bytes, or that it is absent) is broadcast, so every rank takes the same path through
//! the same numbers, with or without a file system shared among the ranks. SliceGPT's slicing is
//! not shared: when rank 0's cache holds the sliced model it sends its files to the other ranks,
//! else every rank slices (the slicing does not depend on the thread count), and the ranks check
//! that their sliced weights hash alike. An error on any rank ends every rank
//! ([`Transport::abort`]) with a message naming that rank.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use finercut_dist::{Alone, Transport};
use finercut_eval::gsm8k::{Gsm8kDocResult, Gsm8kOptions, Gsm8kReport};
use finercut_eval::{EvalOptions, EvalReport, PerplexityOptions, PerplexityReport, TaskName};
use finercut_metrics::Metric;
use finercut_pipeline::{self as pipeline, Context, LoadOptions, Loaded};
use finercut_search::inspect::Inspection;
use finercut_search::{Level, Method, Provenance, SearchResult, Settings, Stop};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{bail, Result};
use crate::models::ModelChoice;
use crate::plots;
use crate::stats::{self, Bootstrap, Comparison, Outcomes, Standing};
use crate::{Options, ProfileKind, What};

/// Settings of one reproduction profile; written into every result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    /// `default`, `full` or `smoke`.
    pub name: String,
    /// Calibration sequences.
    pub samples: usize,
    /// Tokens per calibration sequence.
    pub seq_len: usize,
    /// First calibration token in WikiText-2 test.
    pub calib_offset: usize,
    /// Documents per zero-shot task where the dense model is at chance (`None`: all).
    pub limit: Option<usize>,
    /// Documents per zero-shot task where the dense model is above chance (`None`: all).
    pub limit_above_chance: Option<usize>,
    /// MMLU questions per subject (`None`: all).
    pub mmlu_limit: Option<usize>,
    /// Perplexity window length.
    pub ppl_seq_len: usize,
    /// Perplexity windows (`None`: all).
    pub ppl_max_windows: Option<usize>,
    /// Fraction of sublayers removed in Table 2.
    pub ratio: f64,
    /// Removal ratios of Figure 3.
    pub figure3_ratios: Vec<f64>,
    /// The paired bootstrap of the intervals.
    pub bootstrap: Bootstrap,
    /// GSM8K questions the dense model answers first, to decide whether it is above chance.
    pub gsm8k_probe: usize,
    /// GSM8K questions for every row when the dense model is above chance (`None`: all 1319).
    pub gsm8k_limit: Option<usize>,
    /// Most tokens generated per GSM8K question (`None`: the task config's 512).
    pub gsm8k_max_gen_toks: Option<usize>,
    /// SliceGPT's calibration sequences (its PCA needs more tokens than the model's width).
    pub slicegpt_samples: usize,
    /// Tokens per SliceGPT calibration sequence.
    pub slicegpt_seq_len: usize,
    /// Generate every row even when the dense model is at chance (the smoke profile, so that the
    /// whole path runs in tests).
    pub gsm8k_always: bool,
}

impl Profile {
    /// The settings of a profile.
    pub fn new(kind: ProfileKind) -> Profile {
        match kind {
            ProfileKind::Smoke => Profile {
                name: "smoke".into(),
                samples: 2,
                seq_len: 32,
                calib_offset: 0,
                limit: Some(4),
                limit_above_chance: Some(6),
                mmlu_limit: Some(1),
                ppl_seq_len: 32,
                ppl_max_windows: Some(4),
                ratio: 0.25,
                figure3_ratios: vec![0.0, 0.25, 0.5],
                bootstrap: Bootstrap {
                    replicates: 200,
                    ..Bootstrap::default()
                },
                gsm8k_probe: 2,
                gsm8k_limit: Some(3),
                gsm8k_max_gen_toks: Some(8),
                gsm8k_always: true,
                slicegpt_samples: 2,
                slicegpt_seq_len: 32,
            },
            ProfileKind::Full => Profile {
                name: "full".into(),
                samples: 10,
                seq_len: 256,
                calib_offset: 0,
                limit: Some(1000),
                limit_above_chance: Some(1000),
                mmlu_limit: Some(50),
                ppl_seq_len: 256,
                ppl_max_windows: None,
                ratio: 0.25,
                figure3_ratios: (0..=10).map(|i| i as f64 * 0.05).collect(),
                bootstrap: Bootstrap::default(),
                gsm8k_probe: 50,
                gsm8k_limit: None,
                gsm8k_max_gen_toks: None,
                gsm8k_always: false,
                slicegpt_samples: 10,
                slicegpt_seq_len: 256,
            },
            ProfileKind::Default => Profile {
                name: "default".into(),
                samples: 2,
                seq_len: 128,
                calib_offset: 0,
                limit: Some(30),
                limit_above_chance: Some(60),
                mmlu_limit: Some(1),
                ppl_seq_len: 256,
                ppl_max_windows: Some(40),
                ratio: 0.25,
                figure3_ratios: (0..=5).map(|i| i as f64 * 0.1).collect(),
                bootstrap: Bootstrap::default(),
                gsm8k_probe: 20,
                gsm8k_limit: Some(60),
                gsm8k_max_gen_toks: Some(256),
                gsm8k_always: false,
                slicegpt_samples: 10,
                slicegpt_seq_len: 256,
            },
        }
    }

    /// The tokens of WikiText-2 test that any search or SliceGPT calibrates on; perplexity windows
    /// overlapping them are left out.
    pub fn calibration_range(&self) -> std::ops::Range<usize> {
        let n = (self.samples * self.seq_len).max(self.slicegpt_samples * self.slicegpt_seq_len);
        self.calib_offset..self.calib_offset + n
    }

    fn caption(&self) -> String {
        let all = |l: Option<usize>| l.map_or("all".into(), |l| l.to_string());
        format!(
            "profile `{}`: calibration {} × {} tokens of WikiText-2 test from token {}; zero-shot tasks \
             at most {} documents where the dense model is above chance, else at most {}; MMLU \
             5-shot at most {} questions per subject; WikiText-2 perplexity over {} windows of {} \
             tokens disjoint from every calibration slice; SliceGPT calibrates on {} × {} tokens \
             from the same start; {}% of sublayers removed (block methods: \
             the equal number of whole blocks, rounded down); intervals: paired bootstrap over \
             documents, {} resamples, seed {}",
            self.name,
            self.samples,
            self.seq_len,
            self.calib_offset,
            all(self.limit_above_chance),
            all(self.limit),
            all(self.mmlu_limit),
            self.ppl_max_windows
                .map_or("all".into(), |l| format!("the first {l}")),
            self.ppl_seq_len,
            self.slicegpt_samples,
            self.slicegpt_seq_len,
            self.ratio * 100.0,
            self.bootstrap.replicates,
            self.bootstrap.seed,
        )
    }
}

/// Shared state of one reproduction.
struct Ctx<'d> {
    /// The ranks sharing the work; rank 0 alone reads and writes the cache and the outputs.
    dist: &'d dyn Transport,
    /// On ranks other than 0, a private directory for copies of rank 0's cached files and for
    /// models this rank writes itself (the smoke models, SliceGPT's); `None` on rank 0.
    private: Option<PathBuf>,
    loaded: Loaded,
    /// Short name of the model, its directory under each output.
    model_key: String,
    model_name: String,
    model_sha: String,
    seqs: Vec<Vec<u32>>,
    data_sha: String,
    text: String,
    profile: Profile,
    threads: usize,
    out: PathBuf,
    cache: PathBuf,
    timings: Vec<(String, f64)>,
    stage: usize,
    /// Documents per task, decided from the dense model's accuracy ([`Ctx::decide_limits`]).
    limits: BTreeMap<String, Option<usize>>,
    /// How models are loaded (the sliced model is loaded like the source).
    load: LoadOptions,
    /// Models other than the source that rows evaluate (SliceGPT's), with their SHA-256.
    variants: BTreeMap<String, (Loaded, String)>,
}

impl Ctx<'_> {
    fn stage<T>(&mut self, name: &str, f: impl FnOnce(&mut Ctx<'_>) -> Result<T>) -> Result<T> {
        self.stage += 1;
        let lead = self.lead();
        if lead {
            eprintln!("[{}] {name}", self.stage);
        }
        let t0 = Instant::now();
        let v = f(self)?;
        let s = t0.elapsed().as_secs_f64();
        if lead {
            eprintln!("[{}] {name}: {s:.1} s", self.stage);
        }
        self.timings.push((name.to_owned(), s));
        Ok(v)
    }

    /// Whether this is rank 0, the one that reads and writes files.
    fn lead(&self) -> bool {
        self.dist.rank() == 0
    }

    /// Rank 0's file `path` on every rank: its bytes, or `None` when rank 0 cannot read it
    /// (absent). Every rank must call it (a broadcast) and takes the same decision from it.
    fn shared_read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        let mine = if self.lead() {
            std::fs::read(path).ok()
        } else {
            None
        };
        if self.dist.size() == 1 {
            return Ok(mine);
        }
        let mut message = vec![u8::from(mine.is_some())];
        if let Some(bytes) = &mine {
            message.extend_from_slice(bytes);
        }
        let got = self.dist.broadcast_bytes(0, &message)?;
        Ok(match got.split_first() {
            Some((1, rest)) => Some(rest.to_vec()),
            _ => None,
        })
    }

    /// Rank 0's cached model directory `dir` on every rank ([`shared_dir`]): on rank 0 whether
    /// `dir` holds every file of `need`; on the others, its files copied into `into` when it does.
    fn shared_dir(&self, dir: &Path, need: &[&str], into: &Path) -> Result<bool> {
        shared_dir(self.dist, dir, need, into, COPY_PIECE)
    }

    /// A JSON file of rank 0's cache, read as `T` on every rank (`None`: absent or unreadable
    /// on rank 0, so every rank computes it).
    fn shared_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        Ok(self
            .shared_read(path)?
            .and_then(|b| serde_json::from_slice::<T>(&b).ok()))
    }

    /// A path on this rank whose content is rank 0's file `path` (absent when that is): `path`
    /// itself on rank 0, a copy in this rank's private directory on the others.
    fn shared_copy(&self, path: &Path) -> Result<PathBuf> {
        let bytes = self.shared_read(path)?;
        let Some(private) = &self.private else {
            return Ok(path.to_path_buf());
        };
        let name = path
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let copy = private.join("copies").join(name);
        match bytes {
            Some(b) => pipeline::write_file_atomic(&copy, b)?,
            None => {
                if copy.exists() {
                    std::fs::remove_file(&copy)
                        .with_context(|| format!("cannot remove {}", copy.display()))?;
                }
            }
        }
        Ok(copy)
    }

    /// Writes a JSON file of the cache (rank 0 alone).
    fn write_cache(&self, path: &Path, value: &serde_json::Value) -> Result<()> {
        if self.lead() {
            pipeline::write_json_atomic(path, value)?;
        }
        Ok(())
    }

    fn key(&self, what: &serde_json::Value) -> String {
        let text = serde_json::to_string(what).unwrap_or_default();
        pipeline::sha256_hex(text.as_bytes())[..16].to_owned()
    }

    /// A finished search, from the cache or computed (resuming an interrupted one).
    fn search(
        &mut self,
        method: Method,
        metric: Option<Metric>,
        level: Level,
        stop: Stop,
    ) -> Result<SearchResult> {
        let mut settings = Settings::new(method);
        if metric.is_some() {
            settings.metric = metric;
        }
        settings.level = level;
        settings.stop = stop;
        settings.samples = self.profile.samples;
        settings.seq_len = self.profile.seq_len;
        settings.calib_offset = self.profile.calib_offset;
        settings.threads = self.threads;
        let path = self.search_path(&settings);
        if self.lead() {
            std::fs::create_dir_all(self.cache.join("runs"))
                .with_context(|| format!("cannot create {}", self.cache.display()))?;
        }
        // Rank 0's result or checkpoint, which the other ranks resume from too.
        let path = self.shared_copy(&path)?;
        if let Ok(r) = SearchResult::load(&path) {
            if r.complete && covers(&r, stop) {
                return Ok(r);
            }
        }
        let provenance = Provenance {
            model_sha256: self.model_sha.clone(),
            data_sha256: self.data_sha.clone(),
        };
        Ok(pipeline::execute_search_on(
            self.dist,
            &self.loaded,
            &self.seqs,
            &settings,
            provenance,
            &path,
            true,
            true,
        )?)
    }

    /// Runs `f` with the model of row variant `name` (e.g. the sliced model) in place of the source;
    /// `None` runs it on the source.
    fn on_variant<T>(
        &mut self,
        name: Option<&str>,
        f: impl FnOnce(&mut Ctx<'_>) -> Result<T>,
    ) -> Result<T> {
        let Some(name) = name else {
            return f(self);
        };
        let Some((mut loaded, mut sha)) = self.variants.remove(name) else {
            return Err(crate::Error::Invalid(format!(
                "no model for the {name} row"
            )));
        };
        std::mem::swap(&mut self.loaded, &mut loaded);
        std::mem::swap(&mut self.model_sha, &mut sha);
        let r = f(self);
        std::mem::swap(&mut self.loaded, &mut loaded);
        std::mem::swap(&mut self.model_sha, &mut sha);
        self.variants.insert(name.to_owned(), (loaded, sha));
        r
    }

    /// The result file of a search with these settings (whatever its thread count and stop).
    fn search_path(&self, settings: &Settings) -> PathBuf {
        let mut keyed = settings.clone();
        keyed.threads = 0;
        keyed.stop = Stop::End;
        let key = self.key(&json!({
            "model": self.model_sha, "data": self.data_sha, "settings": keyed,
            "version": env!("CARGO_PKG_VERSION"),
        }));
        let name = format!(
            "{}-{}-{}-{key}.json",
            settings.method.name(),
            settings.metric.map_or("none".into(), |m| m.to_string()),
            settings.level.name()
        );
        self.cache.join("runs").join(name)
    }

    /// The output directory of `what` for this model.
    fn dir(&self, what: &str) -> PathBuf {
        self.out.join(what).join(&self.model_key)
    }

    /// Documents evaluated for `task`: MMLU's per-subject limit, else the limit decided from the
    /// dense model ([`Ctx::decide_limits`]), else the profile's at-chance limit.
    fn limit_of(&self, task: TaskName) -> Option<usize> {
        if task == TaskName::Mmlu {
            return self.profile.mmlu_limit;
        }
        self.limits
            .get(task.as_str())
            .copied()
            .unwrap_or(self.profile.limit)
    }

    /// Spends documents where they buy certainty: the dense model is evaluated on the profile's
    /// at-chance limit; every zero-shot task whose accuracy there is above chance by more than 1.96
    /// standard errors gets the larger limit. The decision is recorded in the results.
    fn decide_limits(&mut self, tasks: &[TaskName]) -> Result<Vec<LimitDecision>> {
        self.limits.clear();
        let probe = self.evaluate(&BTreeSet::new(), tasks)?;
        let mut decisions = Vec::new();
        for &t in tasks {
            if t == TaskName::Mmlu {
                continue;
            }
            let Some(&(value, stderr, n)) = probe.tasks.get(t.as_str()) else {
                continue;
            };
            let chance = chance_level(t);
            let above = value - 1.96 * stderr.unwrap_or(0.0) > chance;
            let limit = if above {
                self.profile.limit_above_chance
            } else {
                self.profile.limit
            };
            self.limits.insert(t.as_str().to_owned(), limit);
            decisions.push(LimitDecision {
                task: t.as_str().to_owned(),
                dense_accuracy: value,
                stderr,
                documents_probed: n,
                chance,
                above_chance: above,
                limit,
            });
        }
        Ok(decisions)
    }

    /// Evaluation of a plan (benchmarks and perplexity). Each task's result and the perplexity are
    /// cached on their own, so a task evaluated with the same documents before (the dense probe of
    /// [`Ctx::decide_limits`]) is not evaluated again.
    fn evaluate(&mut self, removed: &BTreeSet<usize>, tasks: &[TaskName]) -> Result<Evaluation> {
        let data = finercut_eval::default_data_dir();
        let mut reports = Vec::new();
        let mut outcomes = Outcomes::default();
        let mut tasks_out = BTreeMap::new();
        for &task in tasks {
            let limit = self.limit_of(task);
            let key = self.key(&json!({
                "model": self.model_sha, "removed": removed, "task": task.as_str(), "limit": limit,
                "version": env!("CARGO_PKG_VERSION"),
            }));
            let path = self
                .cache
                .join("evals")
                .join(format!("{}-{key}.json", task.as_str()));
            let cached = self.shared_json::<TaskEvaluation>(&path)?;
            let te = match cached {
                Some(te) => te,
                None => {
                    let mut options = EvalOptions::new(data.clone(), limit);
                    options.record_docs = usize::MAX;
                    let mut report = pipeline::evaluate_plan_on(
                        self.dist,
                        &self.loaded,
                        removed,
                        &[task],
                        &options,
                        true,
                    )?;
                    let mut o = Outcomes::default();
                    for t in &mut report.tasks {
                        o.insert_task(
                            t.task.as_str(),
                            t.docs
                                .iter()
                                .map(|d| (stats::doc_key(d.subtask.as_deref(), d.doc), d.correct)),
                        );
                        // The outcomes keep what the statistics need; the log-likelihoods stay
                        // out of the cache.
                        t.docs.clear();
                    }
                    let te = TaskEvaluation {
                        report,
                        outcomes: o,
                    };
                    self.write_cache(
                        &path,
                        &serde_json::to_value(&te).context("serialising an evaluation")?,
                    )?;
                    te
                }
            };
            for t in &te.report.tasks {
                tasks_out.insert(t.task.as_str().to_owned(), (t.value, t.stderr, t.n));
            }
            outcomes.tasks.extend(te.outcomes.tasks);
            reports.push(te.report);
        }
        let ppl = self.cached_perplexity(removed)?;
        Ok(Evaluation {
            removed: removed.clone(),
            tasks: tasks_out,
            outcomes,
            ppl,
            reports,
        })
    }

    /// GSM8K of a plan on the first `limit` questions, from the cache or computed.
    fn gsm8k(&mut self, removed: &BTreeSet<usize>, limit: Option<usize>) -> Result<Gsm8kReport> {
        let key = self.key(&json!({
            "gsm8k": self.model_sha, "removed": removed, "limit": limit,
            "max_gen_toks": self.profile.gsm8k_max_gen_toks, "v": env!("CARGO_PKG_VERSION"),
        }));
        let path = self.cache.join("gsm8k").join(format!("{key}.json"));
        if let Some(r) = self.shared_json::<Gsm8kReport>(&path)? {
            return Ok(r);
        }
        let mut options = Gsm8kOptions::new(finercut_eval::default_data_dir());
        options.limit = limit;
        options.max_gen_toks = self.profile.gsm8k_max_gen_toks;
        let report = pipeline::gsm8k_of_on(self.dist, &self.loaded, removed, &options, true)?;
        self.write_cache(
            &path,
            &serde_json::to_value(&report).context("serialising a GSM8K report")?,
        )?;
        Ok(report)
    }

    /// WikiText-2 perplexity of a plan, from the cache or computed.
    fn cached_perplexity(&mut self, removed: &BTreeSet<usize>) -> Result<f64> {
        let key = self.key(&json!({"ppl": self.model_sha, "removed": removed, "p": [self.profile.ppl_seq_len, self.profile.ppl_max_windows, self.profile.calib_offset, self.profile.samples, self.profile.seq_len], "v": env!("CARGO_PKG_VERSION")}));
        let path = self.cache.join("ppl").join(format!("{key}.json"));
        if let Some(p) = self.shared_json::<f64>(&path)? {
            return Ok(p);
        }
        let p = self.perplexity(removed)?.perplexity;
        self.write_cache(&path, &json!(p))?;
        Ok(p)
    }

    fn perplexity(&self, removed: &BTreeSet<usize>) -> Result<PerplexityReport> {
        let mut options = PerplexityOptions::new(self.profile.ppl_seq_len);
        options.max_windows = self.profile.ppl_max_windows;
        options.exclude = Some(self.profile.calibration_range());
        Ok(pipeline::perplexity_of_on(
            self.dist,
            &self.loaded,
            removed,
            &self.text,
            &options,
            true,
        )?)
    }

    fn params_of(&self, removed: &BTreeSet<usize>) -> usize {
        removed
            .iter()
            .map(|&i| self.loaded.model.param_count_of(i))
            .sum()
    }

    fn total_params(&self) -> usize {
        let c = &self.loaded.checkpoint.config;
        let sub: usize = (0..2 * c.num_hidden_layers)
            .map(|i| self.loaded.model.param_count_of(i))
            .sum();
        let head = if c.tie_word_embeddings {
            0
        } else {
            c.vocab_size * c.hidden_size
        };
        sub + c.vocab_size * c.hidden_size + head + c.hidden_size
    }
}

/// Chance accuracy of a task's headline metric: one over the number of choices (LAMBADA, which
/// asks for the exact last word, has none).
fn chance_level(task: TaskName) -> f64 {
    match task.as_str() {
        "boolq" | "piqa" | "winogrande" | "copa" => 0.5,
        "lambada_openai" => 0.0,
        _ => 0.25,
    }
}

/// How many documents a task got, and why.
#[derive(Debug, Clone, Serialize)]
struct LimitDecision {
    task: String,
    dense_accuracy: f64,
    stderr: Option<f64>,
    documents_probed: usize,
    chance: f64,
    above_chance: bool,
    limit: Option<usize>,
}

fn covers(r: &SearchResult, stop: Stop) -> bool {
    match stop {
        Stop::End => r.exhausted,
        Stop::Ratio(x) => r.exhausted || r.units_for_ratio(x).is_ok(),
    }
}

/// Scores of one plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Evaluation {
    removed: BTreeSet<usize>,
    /// task → (value, stderr, n).
    tasks: BTreeMap<String, (f64, Option<f64>, usize)>,
    /// Per-document outcomes, for the paired statistics.
    outcomes: Outcomes,
    ppl: f64,
    reports: Vec<EvalReport>,
}

/// One task's evaluation under one plan, as cached.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TaskEvaluation {
    report: EvalReport,
    outcomes: Outcomes,
}

impl Evaluation {
    /// Unweighted mean of the task accuracies (the table's "Avg").
    fn average_of_tasks(&self) -> Option<f64> {
        let v: Vec<f64> = self.tasks.values().map(|x| x.0).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// Runs the reproduction `options` asks for, model by model, and writes the tables and figures
/// under `options.out` (`<what>/<model>/…`, and a Markdown file in `table2/` with every model's
/// table).
pub fn run(options: &Options) -> Result<()> {
    run_on(&Alone, options)
}

/// [`run`] as one rank of `dist`: every rank runs the same orchestration and shares each unit's
/// work (see the module docs); rank 0 alone reads and writes the cache and writes the outputs,
/// which are those of one process bit for bit (timings aside). An error on any rank ends every
/// rank's run ([`Transport::abort`]) with an error naming that rank.
pub fn run_on(dist: &dyn Transport, options: &Options) -> Result<()> {
    let result = run_ranks(dist, options).and_then(|()| {
        // A barrier: a rank returns success only once every rank has finished (an error on
        // rank 0 after the last shared unit, e.g. writing a table, still reaches the others).
        if dist.size() > 1 {
            dist.all_gather_bytes(&[1])?;
        }
        Ok(())
    });
    match result {
        Err(e @ crate::Error::Dist(finercut_dist::Error::Aborted { .. })) => Err(e),
        Err(e) if dist.size() > 1 => {
            // The abort names this rank (`Error::Aborted` on the others, a line from MPI).
            dist.abort(&format!("reproduce: {e}"));
            Err(crate::Error::OnRank {
                rank: dist.rank(),
                size: dist.size(),
                source: Box::new(e),
            })
        }
        other => other,
    }
}

fn run_ranks(dist: &dyn Transport, options: &Options) -> Result<()> {
    let lead = dist.rank() == 0;
    let profile = Profile::new(options.profile);
    let t_all = Instant::now();
    // Ranks other than 0 write nothing under `out`: the models they write themselves (the smoke
    // profile's) and their copies of rank 0's cached files go to a private directory.
    // A fresh directory, removed when the run ends however it ends.
    let private = if lead {
        None
    } else {
        Some(
            tempfile::Builder::new()
                .prefix(&format!("finercut-reproduce-rank{}-", dist.rank()))
                .tempdir()
                .context("cannot create a private directory for this rank")?,
        )
    };
    let private_path = private.as_ref().map(|d| d.path().to_path_buf());
    let models_out = private_path.clone().unwrap_or_else(|| options.out.clone());
    let models = ModelChoice::resolve(&options.models, options.profile, &models_out)?;
    let (text, origin) = pipeline::text_or_wikitext2(None)?;
    let mut table2_sections = Vec::new();
    let mut gsm8k_sections = Vec::new();
    let mut figure4_panels = Vec::new();
    for choice in &models {
        let model_path = choice.prepare()?;
        if lead {
            eprintln!("== {}: loading {}", choice.display, model_path.display());
        }
        let loaded = pipeline::load_model(&model_path, &options.load)?;
        let model_sha = loaded.checkpoint.sha256()?;
        let seqs = pipeline::calibration(
            &loaded.checkpoint.tokenizer,
            &text,
            &origin,
            profile.samples,
            profile.seq_len,
            profile.calib_offset,
        )?;
        let data_sha = Provenance::tokens_sha256(&seqs);
        same_on_every_rank(
            dist,
            &format!("model {} ({})", choice.key, model_path.display()),
            &[&model_sha, &data_sha],
        )?;
        let cache = options
            .out
            .join("cache")
            .join(&profile.name)
            .join(&choice.key);
        let mut ctx = Ctx {
            dist,
            private: private_path.clone(),
            loaded,
            model_key: choice.key.clone(),
            model_name: choice.display.clone(),
            model_sha,
            seqs,
            data_sha,
            text: text.clone(),
            profile: profile.clone(),
            threads: options.threads,
            out: options.out.clone(),
            cache,
            timings: Vec::new(),
            stage: 0,
            limits: BTreeMap::new(),
            load: options.load.clone(),
            variants: BTreeMap::new(),
        };
        let what = options.what;
        if what_has(what, What::Table2) {
            table2_sections.push(table2(&mut ctx)?);
        }
        if what_has(what, What::Figure3) {
            figure3(&mut ctx)?;
        }
        let (fig4, fig1b) = (
            what_has(what, What::Figure4),
            what_has(what, What::Figure1b),
        );
        if fig4 || fig1b {
            figure4_panels.push(figure4_and_1b(&mut ctx, fig4, fig1b)?);
        }
        if what_has(what, What::Ablation) {
            ablation(&mut ctx)?;
        }
        if what == What::Gsm8k {
            gsm8k_sections.push(gsm8k_only(&mut ctx)?);
        }
        if lead {
            eprintln!(
                "== {}: finished after {:.1} s in all",
                choice.display,
                t_all.elapsed().as_secs_f64()
            );
        }
    }
    if !lead {
        return Ok(());
    }
    if !table2_sections.is_empty() {
        let path = options.out.join("table2").join("table2.md");
        pipeline::write_file_atomic(&path, table2_sections.join("\n"))?;
        println!("written: {}", path.display());
    }
    if !gsm8k_sections.is_empty() {
        let path = options.out.join("gsm8k").join("gsm8k.md");
        pipeline::write_file_atomic(&path, gsm8k_sections.join("\n"))?;
        println!("written: {}", path.display());
    }
    if what_has(options.what, What::Figure4) && figure4_panels.len() > 1 {
        // The paper's layout: one panel per model, side by side.
        let data = plots::Figure4Data {
            method: "FinerCut".into(),
            ratio_percent: profile.ratio * 100.0,
            panels: figure4_panels,
        };
        let files = plots::figure4(&options.out.join("figure4").join("figure4.svg"), &data)?;
        println!("figure4 (all models): {files}");
    }
    eprintln!("done in {:.1} s", t_all.elapsed().as_secs_f64());
    Ok(())
}

/// The largest piece of a file rank 0 sends to the other ranks in one broadcast.
const COPY_PIECE: usize = 64 << 20;

/// Whether rank 0's directory `dir` holds every file of `need`, on every rank alike; when it does,
/// the ranks other than 0 receive its files (the plain files whose names do not start with a dot)
/// into their directory `into`, in broadcasts of at most `piece` bytes, each file written beside
/// its place and renamed once whole. Rank 0 reads; the others need no file system in common with
/// it. A file that rank 0 cannot read whole is an error on rank 0 (which ends every rank).
fn shared_dir(
    dist: &dyn Transport,
    dir: &Path,
    need: &[&str],
    into: &Path,
    piece: usize,
) -> Result<bool> {
    let lead = dist.rank() == 0;
    let listing: Option<Vec<(String, u64)>> = if lead {
        if need.iter().all(|n| dir.join(n).is_file()) {
            let mut files = Vec::new();
            let entries =
                std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let meta = entry
                    .metadata()
                    .with_context(|| format!("cannot read {}", entry.path().display()))?;
                if meta.is_file() && !name.starts_with('.') {
                    files.push((name, meta.len()));
                }
            }
            files.sort();
            Some(files)
        } else {
            None
        }
    } else {
        None
    };
    if dist.size() == 1 {
        return Ok(listing.is_some());
    }
    let message = serde_json::to_vec(&listing).unwrap_or_default();
    let got = dist.broadcast_bytes(0, &message)?;
    let listing: Option<Vec<(String, u64)>> = serde_json::from_slice(&got).map_err(|e| {
        crate::Error::Invalid(format!("rank 0's listing of {}: {e}", dir.display()))
    })?;
    let Some(files) = listing else {
        return Ok(false);
    };
    if !lead {
        std::fs::create_dir_all(into)
            .with_context(|| format!("cannot create {}", into.display()))?;
    }
    for (name, len) in files {
        if name.contains('/') || name.contains('\\') || name == ".." {
            bail!(
                "rank 0 lists {name:?} in {}: not a file name",
                dir.display()
            );
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let pieces = len.div_ceil(piece.max(1));
        if lead {
            use std::io::Read;
            let path = dir.join(&name);
            let mut file = std::fs::File::open(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut left = len;
            for _ in 0..pieces {
                let mut buf = vec![0u8; left.min(piece)];
                file.read_exact(&mut buf)
                    .with_context(|| format!("cannot read {} whole", path.display()))?;
                left -= buf.len();
                dist.broadcast_bytes(0, &buf)?;
            }
        } else {
            let path = into.join(&name);
            let mut failed: Option<crate::Error> = None;
            let written = finercut_format::io::write_atomically(&path, |w| {
                use std::io::Write;
                let mut left = len;
                for _ in 0..pieces {
                    let want = left.min(piece);
                    match dist.broadcast_bytes(0, &[]) {
                        Ok(bytes) if bytes.len() == want => {
                            w.write_all(&bytes)
                                .map_err(|e| finercut_format::Error::io(&path, e))?;
                            left -= want;
                        }
                        Ok(bytes) => {
                            failed = Some(crate::Error::Invalid(format!(
                                "rank 0 sent {} bytes of {name}, {want} expected",
                                bytes.len()
                            )));
                            return Err(finercut_format::Error::io(
                                &path,
                                std::io::Error::other("short piece"),
                            ));
                        }
                        Err(e) => {
                            failed = Some(e.into());
                            return Err(finercut_format::Error::io(
                                &path,
                                std::io::Error::other("transport failed"),
                            ));
                        }
                    }
                }
                Ok(())
            });
            if let Some(e) = failed {
                return Err(e);
            }
            written?;
        }
    }
    Ok(true)
}

/// Checks that every rank computed the same `values` (hashes) for `what`; on a mismatch every
/// rank fails alike, naming the first rank that differs.
fn same_on_every_rank(dist: &dyn Transport, what: &str, values: &[&str]) -> Result<()> {
    if dist.size() == 1 {
        return Ok(());
    }
    let mine = values.join("\n");
    let all = dist.all_gather_bytes(mine.as_bytes())?;
    for (rank, theirs) in all.iter().enumerate().skip(1) {
        if theirs != &all[0] {
            bail!(
                "rank {rank} of {} disagrees with rank 0 on {what}: {} against rank 0's {}",
                dist.size(),
                String::from_utf8_lossy(theirs).replace('\n', ", "),
                String::from_utf8_lossy(&all[0]).replace('\n', ", ")
            );
        }
    }
    Ok(())
}

/// Whether asking for `asked` produces `part` (`All` has GSM8K inside Table 2).
fn what_has(asked: What, part: What) -> bool {
    (asked == What::All && part != What::Gsm8k) || asked == part
}

/// The paper's Table 2 methods, in its row order.
const TABLE2_METHODS: [(&str, Method); 5] = [
    ("FinerCut", Method::Finercut),
    ("ShortGPT", Method::Shortgpt),
    ("DeeperLayers", Method::DeeperLayers),
    ("SLEB", Method::Sleb),
    ("BlockPruner", Method::Blockpruner),
];

fn paper_tasks() -> Vec<TaskName> {
    TaskName::parse_list("paper").unwrap_or_default()
}

/// The tasks' names, as the paired statistics key them.
fn task_names(tasks: &[TaskName]) -> Vec<String> {
    tasks.iter().map(|t| t.as_str().to_owned()).collect()
}

/// How many of the removed sublayers are attention (even indices; FFNs are odd).
fn attention_count(removed: &BTreeSet<usize>) -> usize {
    removed.iter().filter(|&&i| i % 2 == 0).count()
}

fn task_header(t: TaskName) -> &'static str {
    match t.as_str() {
        "arc_easy" => "ARC-e",
        "arc_challenge" => "ARC-c",
        "boolq" => "BoolQ",
        "hellaswag" => "HellaSwag",
        "openbookqa" => "OBQA",
        "piqa" => "PIQA",
        "winogrande" => "WinoG",
        "lambada_openai" => "LAMBADA",
        "mmlu" => "MMLU",
        "copa" => "COPA",
        other => other,
    }
}

#[derive(Debug, Serialize)]
struct Row {
    method: String,
    metric: Option<String>,
    level: String,
    removed: Vec<String>,
    removed_attn: usize,
    removed_mlp: usize,
    params_removed: usize,
    params_removed_fraction: f64,
    tasks: BTreeMap<String, (f64, Option<f64>, usize)>,
    average: Option<f64>,
    retained: Option<f64>,
    ppl: f64,
    search_wall_s: f64,
    search_forward_equivalents: f64,
    /// The search's result file: `finercut eval --plan FILE --ratio R` or `finercut export` re-create
    /// the row's model from it.
    plan_file: Option<PathBuf>,
    /// This row minus the dense model, with 95% paired bootstrap intervals.
    vs_dense: Option<Comparison>,
    /// This row minus FinerCut, with 95% paired bootstrap intervals.
    vs_finercut: Option<Comparison>,
    /// How the row stands against FinerCut on the average.
    standing: Option<Standing>,
    #[serde(skip)]
    outcomes: Outcomes,
    #[serde(skip)]
    removed_set: BTreeSet<usize>,
    /// What the "Removed" column says when the row does not remove sublayers (SliceGPT's width).
    removed_label: Option<String>,
    /// The model the row evaluates when it is not the source under a plan (see [`Ctx::on_variant`]).
    #[serde(skip)]
    variant: Option<String>,
}

impl Row {
    /// A row before its evaluation (the comparisons are filled in after it): the method and the
    /// sublayers it removes.
    fn planned(method: &str, removed: BTreeSet<usize>) -> Row {
        Row {
            method: method.into(),
            metric: None,
            level: "-".into(),
            removed: Vec::new(),
            removed_attn: attention_count(&removed),
            removed_mlp: removed.len() - attention_count(&removed),
            params_removed: 0,
            params_removed_fraction: 0.0,
            tasks: BTreeMap::new(),
            average: None,
            retained: None,
            ppl: f64::NAN,
            search_wall_s: 0.0,
            search_forward_equivalents: 0.0,
            plan_file: None,
            vs_dense: None,
            vs_finercut: None,
            standing: None,
            outcomes: Outcomes::default(),
            removed_set: removed,
            removed_label: None,
            variant: None,
        }
    }

    /// The row with the scores of `eval` (of this row's model and plan).
    fn with_eval(self, eval: &Evaluation, dense_avg: Option<f64>) -> Row {
        let average = eval.average_of_tasks();
        Row {
            tasks: eval.tasks.clone(),
            average,
            retained: average.zip(dense_avg).map(|(a, d)| a / d),
            ppl: eval.ppl,
            outcomes: eval.outcomes.clone(),
            ..self
        }
    }

    /// What the row removes, for the GSM8K results (which have no benchmark columns).
    fn plan_json(&self) -> serde_json::Value {
        json!({
            "method": self.method, "metric": self.metric, "level": self.level,
            "removed": self.removed, "removed_label": self.removed_label,
            "params_removed": self.params_removed,
            "params_removed_fraction": self.params_removed_fraction,
            "search_wall_s": self.search_wall_s, "plan_file": self.plan_file,
        })
    }
}

/// Table 2's rows before evaluation (see [`planned_rows`]).
struct Planned {
    rows: Vec<Row>,
    /// Why SliceGPT has no row on this model, when it has none.
    slicegpt_skipped: Option<String>,
    /// The dense model's parameter count, the denominator of every row's removed fraction.
    total_params: usize,
}

/// The rows of Table 2 before evaluation: the dense model, each method's plan from its search (at
/// the profile's ratio), and SliceGPT's sliced model at FinerCut's parameter count, or why SliceGPT
/// does not apply to this model. `stage` prefixes the names of the timed stages.
fn planned_rows(ctx: &mut Ctx<'_>, stage: &str) -> Result<Planned> {
    let ratio = ctx.profile.ratio;
    let total_params = ctx.total_params();
    let mut rows = vec![Row::planned("Dense", BTreeSet::new())];
    for (label, method) in TABLE2_METHODS {
        let metric = (method == Method::Finercut).then_some(Metric::JsReference);
        let level = method_level(method);
        let result = ctx.stage(&format!("{stage}: {label} search"), |c| {
            c.search(method, metric, level, Stop::Ratio(ratio))
        })?;
        let removed = result.plan_for_ratio(ratio)?;
        let params = ctx.params_of(&removed);
        rows.push(Row {
            metric: result.settings.metric.map(|m| m.to_string()),
            level: result.settings.level.name().into(),
            removed: result
                .units_for_ratio(ratio)?
                .iter()
                .map(|u| u.to_string())
                .collect(),
            params_removed: params,
            params_removed_fraction: params as f64 / total_params as f64,
            search_wall_s: result.total_wall_s(),
            search_forward_equivalents: result.total_forward_equivalents(),
            plan_file: Some(ctx.search_path(&result.settings)),
            ..Row::planned(label, removed)
        });
    }
    let target = rows
        .iter()
        .find(|r| r.method == "FinerCut")
        .map_or(0, |r| r.params_removed);
    let slicegpt_skipped = match slicegpt_row(ctx, stage, target, total_params)? {
        Ok(row) => {
            rows.push(row);
            None
        }
        Err(why) => Some(why),
    };
    Ok(Planned {
        rows,
        slicegpt_skipped,
        total_params,
    })
}

/// Table 2 of one model: returns its Markdown section (table, verdict, settings).
fn table2(ctx: &mut Ctx<'_>) -> Result<String> {
    let tasks = paper_tasks();
    let dir = ctx.dir("table2");
    let decisions = ctx.stage("table2: documents per task from the dense model", |c| {
        c.decide_limits(&tasks)
    })?;
    let dense = ctx.stage("table2: dense model evaluation", |c| {
        c.evaluate(&BTreeSet::new(), &tasks)
    })?;
    let dense_avg = dense.average_of_tasks();
    let Planned {
        rows: planned,
        slicegpt_skipped: slicegpt_note,
        total_params,
    } = planned_rows(ctx, "table2")?;
    let mut rows = Vec::with_capacity(planned.len());
    for row in planned {
        if row.method == "Dense" {
            rows.push(row.with_eval(&dense, dense_avg));
            continue;
        }
        let eval = ctx.stage(&format!("table2: {} evaluation", row.method), |c| {
            c.on_variant(row.variant.as_deref(), |c| {
                c.evaluate(&row.removed_set, &tasks)
            })
        })?;
        rows.push(row.with_eval(&eval, dense_avg));
    }
    let names = task_names(&tasks);
    let boot = ctx.profile.bootstrap;
    let finercut = rows
        .iter()
        .find(|r| r.method == "FinerCut")
        .map(|r| r.outcomes.clone());
    for r in rows.iter_mut().skip(1) {
        r.vs_dense = Some(stats::paired(&r.outcomes, &dense.outcomes, &names, &boot)?);
        if r.method != "FinerCut" {
            if let Some(f) = &finercut {
                let c = stats::paired(&r.outcomes, f, &names, &boot)?;
                r.standing = Some(Standing::of(&c.average));
                r.vs_finercut = Some(c);
            }
        }
    }
    let standings: Vec<(String, Standing)> = rows
        .iter()
        .filter_map(|r| r.standing.map(|s| (r.method.clone(), s)))
        .collect();
    let verdict = stats::verdict(&ctx.model_name, &standings);
    let (gsm8k_md, gsm8k_json) = ctx.stage("table2: GSM8K generation check", |c| {
        gsm8k_section(c, &rows)
    })?;
    let mut md = render_table2(ctx, &tasks, &rows, &verdict);
    if let Some(why) = &slicegpt_note {
        md.push_str(&format!("\nSliceGPT row skipped: {why}\n"));
    }
    md.push_str(&gsm8k_md);
    write_table(
        ctx,
        &dir,
        "table2",
        &md,
        json!({
            "documents_per_task": decisions,
            "total_params": total_params,
            "rows": rows,
            "verdict": verdict,
            "slicegpt_skipped": slicegpt_note,
            "gsm8k": gsm8k_json,
        }),
    )?;
    Ok(md)
}

/// Writes a table's Markdown (`<name>.md`) and `results.json` in `dir`, and prints them: the run's
/// provenance (model, hashes, profile, timings, threads, version) with the table's `fields`.
fn write_table(
    ctx: &Ctx<'_>,
    dir: &Path,
    name: &str,
    md: &str,
    fields: serde_json::Value,
) -> Result<()> {
    if !ctx.lead() {
        return Ok(());
    }
    let md_path = dir.join(format!("{name}.md"));
    pipeline::write_file_atomic(&md_path, md)?;
    let mut results = json!({
        "table": name,
        "model": ctx.model_name,
        "model_path": ctx.loaded.path.display().to_string(),
        "model_sha256": ctx.model_sha,
        "calibration_sha256": ctx.data_sha,
        "profile": ctx.profile,
        "caption": ctx.profile.caption(),
        "timings_s": ctx.timings,
        "threads": ctx.threads,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let (Some(all), serde_json::Value::Object(extra)) = (results.as_object_mut(), fields) {
        all.extend(extra);
    }
    let json_path = dir.join("results.json");
    pipeline::write_json_atomic(&json_path, &results)?;
    println!("{md}");
    println!("written: {} and {}", md_path.display(), json_path.display());
    Ok(())
}

/// Table 2's GSM8K check alone: the same rows and questions as [`table2`] (the searches, SliceGPT
/// model and generations are shared through the cache), without the multiple-choice evaluations.
/// Writes its Markdown section and `results.json` under `gsm8k/<model>/`; returns the section.
fn gsm8k_only(ctx: &mut Ctx<'_>) -> Result<String> {
    let dir = ctx.dir("gsm8k");
    let Planned {
        rows,
        slicegpt_skipped: slicegpt_note,
        total_params,
    } = planned_rows(ctx, "gsm8k")?;
    let (mut md, gsm8k_json) = ctx.stage("gsm8k: generation", |c| gsm8k_section(c, &rows))?;
    if let Some(why) = &slicegpt_note {
        md.push_str(&format!("\nSliceGPT row skipped: {why}\n"));
    }
    md.push_str(&format!(
        "\nRows: Table 2's plans at {:.0}% removed ({}).\n",
        ctx.profile.ratio * 100.0,
        ctx.profile.caption()
    ));
    write_table(
        ctx,
        &dir,
        "gsm8k",
        &md,
        json!({
            "total_params": total_params,
            "rows": rows.iter().map(Row::plan_json).collect::<Vec<_>>(),
            "slicegpt_skipped": slicegpt_note,
            "gsm8k": gsm8k_json,
        }),
    )?;
    Ok(md)
}

/// GSM8K for every row of Table 2 when the dense model is above chance on it: greedy generation,
/// exact match of the extracted number, the difference to the dense model as a paired bootstrap
/// interval over the same questions, and tokens per second. Returns the Markdown section and its
/// data.
fn gsm8k_section(ctx: &mut Ctx<'_>, rows: &[Row]) -> Result<(String, serde_json::Value)> {
    let probe_n = ctx.profile.gsm8k_probe;
    let probe = ctx.gsm8k(&BTreeSet::new(), Some(probe_n))?;
    let n = probe.docs.len();
    let k = probe.docs.iter().filter(|d| d.flexible_correct).count();
    let p = k as f64 / n.max(1) as f64;
    // Chance is 0 (an exact number); above it when the 95% normal interval's lower end is.
    let above = n > 0 && p - 1.96 * (p * (1.0 - p) / n as f64).sqrt() > 0.0;
    let mut md = format!("\n#### GSM8K (generation check): {}\n\n", ctx.model_name);
    if !above && !ctx.profile.gsm8k_always {
        md.push_str(&format!(
            "The dense model answers {k} of the first {n} questions (flexible exact match): not \
             above chance beyond noise, so the pruned models are not generated. Throughput of the \
             dense model: prefill {:.0} tokens/s, generation {:.1} tokens/s (batches of {}).\n",
            probe.prefill_tokens_per_second, probe.generation_tokens_per_second, probe.batch_size
        ));
        return Ok((
            md,
            json!({"above_chance": false, "probe_questions": n, "probe_correct": k, "probe": probe}),
        ));
    }
    let limit = ctx.profile.gsm8k_limit;
    let mut reports = Vec::new();
    for r in rows {
        let report = ctx.on_variant(r.variant.as_deref(), |c| c.gsm8k(&r.removed_set, limit))?;
        reports.push((r.method.clone(), report));
    }
    let outcomes = |rep: &Gsm8kReport| {
        let mut o = Outcomes::default();
        o.insert_task(
            "gsm8k",
            rep.docs
                .iter()
                .map(|d| (stats::doc_key(None, d.doc_id), d.flexible_correct)),
        );
        o
    };
    let dense = outcomes(&reports[0].1);
    let dense_correct = correct_ids(&reports[0].1.docs);
    let names = ["gsm8k".to_owned()];
    md.push_str(&format!(
        "| Method | Removed | Exact match (flexible) | Δ vs dense | Of the dense model's {} \
         correct, still correct | Strict | Generated tokens | Prefill tok/s | Generation tok/s \
         |\n|---|---|---|---|---|---|---|---|---|\n",
        dense_correct.len()
    ));
    let mut data = Vec::new();
    let mut tallies = Vec::new();
    for (i, ((method, rep), row)) in reports.iter().zip(rows).enumerate() {
        let diff = if i == 0 {
            None
        } else {
            Some(stats::paired(&outcomes(rep), &dense, &names, &ctx.profile.bootstrap)?.average)
        };
        let strict = rep
            .metrics
            .get(finercut_eval::gsm8k::STRICT)
            .map(|m| m.value);
        let tally = Gsm8kTally::of(
            method,
            &rep.docs,
            rep.generated_tokens,
            &dense_correct,
            diff.as_ref(),
        );
        let removed = if i == 0 {
            "–".to_owned()
        } else {
            row.removed_label
                .clone()
                .unwrap_or_else(|| format!("{}/{}", row.removed_attn, row.removed_mlp))
        };
        md.push_str(&format!(
            "| {method} | {removed} | {:.1} ({}/{}) | {} | {} | {} | {} | {:.0} | {:.1} |\n",
            100.0 * rep.value,
            tally.correct,
            tally.questions,
            diff.as_ref().map_or("–".into(), interval_pp),
            tally.dense_correct_kept,
            strict.map_or("–".into(), |v| format!("{:.1}", 100.0 * v)),
            rep.generated_tokens,
            rep.prefill_tokens_per_second,
            rep.generation_tokens_per_second
        ));
        data.push(json!({
            "method": method, "exact_match_flexible": rep.value, "exact_match_strict": strict,
            "vs_dense": diff, "questions": rep.n, "correct": tally.correct,
            "dense_correct_kept": tally.dense_correct_kept,
            "generated_tokens": rep.generated_tokens,
            "generated_tokens_per_question": tally.tokens_per_question,
            "prefill_tokens_per_second": rep.prefill_tokens_per_second,
            "generation_tokens_per_second": rep.generation_tokens_per_second,
            "batch_size": rep.batch_size, "max_gen_toks": rep.max_gen_toks,
        }));
        tallies.push(tally);
    }
    md.push_str(&format!(
        "\n{} questions of the test split, oe-eval's 8-shot chain-of-thought prompt, greedy \
         generation with a key/value cache (at most {} new tokens), answers extracted like \
         lm-evaluation-harness's `flexible-extract` (headline) and `strict-match`. The dense model \
         answered {k} of the first {n} before the rows were generated. Δ: percentage points with a \
         95% paired bootstrap interval over the same questions (`*`: excludes zero). \
         \"Still correct\": of the questions the dense model answers correctly (flexible), those \
         the row answers correctly too.\n",
        reports[0].1.n, reports[0].1.max_gen_toks
    ));
    let headline = gsm8k_headline(&tallies);
    md.push_str(&format!("\n**Headline.** {headline}\n"));
    Ok((
        md,
        json!({"above_chance": true, "probe_questions": n, "probe_correct": k,
               "dense_correct": dense_correct.len(), "rows": data, "headline": headline}),
    ))
}

/// The `doc_id`s of the questions answered correctly (flexible exact match).
fn correct_ids(docs: &[Gsm8kDocResult]) -> BTreeSet<usize> {
    docs.iter()
        .filter(|d| d.flexible_correct)
        .map(|d| d.doc_id)
        .collect()
}

/// One row of the GSM8K check, counted from its per-question outcomes.
#[derive(Debug, Clone, PartialEq)]
struct Gsm8kTally {
    method: String,
    questions: usize,
    /// Questions answered correctly (flexible exact match).
    correct: usize,
    /// Of the dense model's correctly answered questions, those this row answers correctly.
    dense_correct_kept: usize,
    /// New tokens per question.
    tokens_per_question: f64,
    /// Whether the difference to the dense model excludes zero (`None` for the dense row).
    drop_excludes_zero: Option<bool>,
}

impl Gsm8kTally {
    /// The tally of a row whose per-question outcomes are `docs` (`generated_tokens` new tokens
    /// in all), against the dense model's correctly answered `doc_id`s and its difference to it.
    fn of(
        method: &str,
        docs: &[Gsm8kDocResult],
        generated_tokens: usize,
        dense_correct: &BTreeSet<usize>,
        diff: Option<&stats::Interval>,
    ) -> Gsm8kTally {
        let correct = correct_ids(docs);
        Gsm8kTally {
            method: method.to_owned(),
            questions: docs.len(),
            correct: correct.len(),
            dense_correct_kept: correct.intersection(dense_correct).count(),
            tokens_per_question: generated_tokens as f64 / docs.len().max(1) as f64,
            drop_excludes_zero: diff.map(|d| d.excludes(0.0)),
        }
    }
}

/// The GSM8K check's headline, from its rows (the dense model first): how many questions each
/// row answers, how many of the dense model's correct answers the pruned rows keep, how many of
/// their differences exclude zero, and how long their answers are.
fn gsm8k_headline(tallies: &[Gsm8kTally]) -> String {
    let Some((dense, pruned)) = tallies.split_first() else {
        return "No rows.".to_owned();
    };
    let mut s = format!(
        "The dense model answers {} of {} questions.",
        dense.correct, dense.questions
    );
    if pruned.is_empty() {
        return s;
    }
    let range = |v: Vec<f64>, digits: usize| -> String {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if (hi - lo).abs() < 0.5 * 10f64.powi(-(digits as i32)) {
            format!("{lo:.digits$}")
        } else {
            format!("{lo:.digits$}–{hi:.digits$}")
        }
    };
    let list = |f: &dyn Fn(&Gsm8kTally) -> usize| -> String {
        pruned
            .iter()
            .map(|t| format!("{} {}", t.method, f(t)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    s.push_str(&format!(
        " The pruned rows answer {} ({}).",
        range(pruned.iter().map(|t| t.correct as f64).collect(), 0),
        list(&|t| t.correct)
    ));
    let kept: Vec<usize> = pruned.iter().map(|t| t.dense_correct_kept).collect();
    if kept.iter().all(|&k| k == 0) {
        s.push_str(&format!(
            " None of them answers any of the dense model's {} correct questions.",
            dense.correct
        ));
    } else {
        s.push_str(&format!(
            " Of the dense model's {} correct answers they keep {} ({}).",
            dense.correct,
            range(kept.iter().map(|&k| k as f64).collect(), 0),
            list(&|t| t.dense_correct_kept)
        ));
    }
    let excluding = pruned
        .iter()
        .filter(|t| t.drop_excludes_zero == Some(true))
        .count();
    s.push_str(&format!(
        " {excluding} of the {} differences to the dense model exclude zero.",
        pruned.len()
    ));
    s.push_str(&format!(
        " New tokens per question: dense {:.0}, pruned rows {}.",
        dense.tokens_per_question,
        range(pruned.iter().map(|t| t.tokens_per_question).collect(), 0)
    ));
    s
}

/// The SliceGPT row: the source sliced to the residual width whose removed parameter count is the
/// smallest at least `target` (FinerCut's), saved as a checkpoint in the cache and loaded back as
/// the row's model variant, to be evaluated like the other rows. `Ok(Err(why))` when SliceGPT
/// cannot apply to this model.
fn slicegpt_row(
    ctx: &mut Ctx<'_>,
    stage: &str,
    target: usize,
    total_params: usize,
) -> Result<std::result::Result<Row, String>> {
    let config = ctx.loaded.checkpoint.config.clone();
    if let Err(e) = finercut_slice::check_supported(&config) {
        return Ok(Err(e.to_string()));
    }
    let dense_params = ctx.loaded.model.param_count();
    let dim = match finercut_slice::dim_for_removed_params(&config, dense_params, target) {
        Ok(dim) => dim,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let (text, origin) = (ctx.text.clone(), "WikiText-2 test".to_owned());
    let seqs = pipeline::calibration(
        &ctx.loaded.checkpoint.tokenizer,
        &text,
        &origin,
        ctx.profile.slicegpt_samples,
        ctx.profile.slicegpt_seq_len,
        ctx.profile.calib_offset,
    )?;
    let data_sha = Provenance::tokens_sha256(&seqs);
    let key = ctx.key(&json!({
        "slicegpt": ctx.model_sha, "data": data_sha, "dim": dim, "v": env!("CARGO_PKG_VERSION"),
    }));
    let dir = ctx.cache.join(format!("slicegpt-{key}"));
    // Rank 0's sliced model is in its cache; the other ranks receive it from rank 0 when it is
    // there, else every rank slices into its own directory (the slicing does not depend on the
    // thread count), and they check below that they agree.
    let own_dir = match &ctx.private {
        Some(private) => private.join(format!("slicegpt-{key}")),
        None => dir.clone(),
    };
    let mut wall_s = 0.0;
    let weights = finercut_format::own_types::OwnLayout::Sliced.weights_file();
    // When rank 0's cache holds the sliced model, the other ranks receive it instead of slicing.
    if !ctx.shared_dir(&dir, &["config.json", weights], &own_dir)? {
        let t0 = Instant::now();
        let sliced = ctx.stage(&format!("{stage}: SliceGPT slicing to width {dim}"), |c| {
            Ok(finercut_slice::slice_model(
                &c.loaded.model,
                &seqs,
                &finercut_slice::SliceSettings { dim },
            )?)
        })?;
        wall_s = t0.elapsed().as_secs_f64();
        let extra = BTreeMap::from([
            ("source_sha256".to_owned(), json!(ctx.model_sha)),
            ("calibration_sha256".to_owned(), json!(data_sha)),
            ("target_removed_params".to_owned(), json!(target)),
            ("slice_wall_s".to_owned(), json!(wall_s)),
        ]);
        let notes = sliced.save(
            &own_dir,
            finercut_format::Overwrite::Replace,
            Some(&ctx.loaded.checkpoint.tokenizer),
            &extra,
            finercut_format::DType::F32,
        )?;
        if ctx.lead() {
            for n in notes {
                eprintln!("warning: {n}");
            }
        }
    }
    let loaded = pipeline::load_model(&own_dir, &ctx.load)?;
    let sliced_params = loaded.model.param_count();
    let mut sha = loaded.checkpoint.sha256()?;
    if ctx.dist.size() > 1 {
        // The weights must agree bit for bit; `config.json` differs by its recorded wall time, so
        // every rank keys its caches by rank 0's hash.
        let weights_sha = finercut_format::io::sha256_files(&[own_dir.join(weights)])?;
        same_on_every_rank(
            ctx.dist,
            &format!("SliceGPT's sliced weights ({weights})"),
            &[&weights_sha],
        )?;
        let rank0 = ctx.dist.broadcast_bytes(0, sha.as_bytes())?;
        sha = String::from_utf8_lossy(&rank0).into_owned();
    }
    ctx.variants.insert("SliceGPT".to_owned(), (loaded, sha));
    let removed = dense_params.saturating_sub(sliced_params);
    Ok(Ok(Row {
        level: "width".into(),
        removed_label: Some(format!("width {}→{dim}", config.hidden_size)),
        params_removed: removed,
        params_removed_fraction: removed as f64 / total_params as f64,
        search_wall_s: wall_s,
        plan_file: Some(dir),
        variant: Some("SliceGPT".to_owned()),
        ..Row::planned("SliceGPT", BTreeSet::new())
    }))
}

fn method_level(method: Method) -> Level {
    match method {
        Method::Finercut | Method::Blockpruner | Method::FinercutOneshot | Method::Random => {
            Level::Sublayer
        }
        _ => Level::Block,
    }
}

/// `+1.2 [−0.8, +3.1]` in percentage points, with `*` when the interval excludes zero.
fn interval_pp(i: &stats::Interval) -> String {
    format!(
        "{:+.1} [{:+.1}, {:+.1}]{}",
        100.0 * i.estimate,
        100.0 * i.low,
        100.0 * i.high,
        if i.excludes(0.0) { "*" } else { "" }
    )
}

fn render_table2(ctx: &Ctx<'_>, tasks: &[TaskName], rows: &[Row], verdict: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "### Table 2: {} with {:.0}% of sublayers removed\n\n",
        ctx.model_name,
        ctx.profile.ratio * 100.0
    ));
    s.push_str("| Method | Removed (attn/FFN) | Params removed |");
    for t in tasks {
        s.push_str(&format!(" {} |", task_header(*t)));
    }
    s.push_str(" Avg | Δ Avg vs dense | Δ Avg vs FinerCut | Retained | PPL |\n|---|---|---|");
    for _ in tasks {
        s.push_str("---|");
    }
    s.push_str("---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} ({:.1}%) |",
            r.method,
            r.removed_label
                .clone()
                .unwrap_or_else(|| format!("{}/{}", r.removed_attn, r.removed_mlp)),
            human_count(r.params_removed),
            100.0 * r.params_removed_fraction
        ));
        for t in tasks {
            let marked = r
                .vs_dense
                .as_ref()
                .and_then(|c| c.tasks.get(t.as_str()))
                .is_some_and(|i| i.excludes(0.0));
            match r.tasks.get(t.as_str()) {
                Some((v, _, _)) => s.push_str(&format!(
                    " {:.1}{} |",
                    100.0 * v,
                    if marked { "*" } else { "" }
                )),
                None => s.push_str(" – |"),
            }
        }
        let retained = match (&r.vs_dense, r.retained) {
            (Some(c), _) => format!(
                "{:.1}% [{:.1}, {:.1}]",
                100.0 * c.ratio.estimate,
                100.0 * c.ratio.low,
                100.0 * c.ratio.high
            ),
            (None, Some(a)) => format!("{:.1}%", 100.0 * a),
            (None, None) => "–".into(),
        };
        s.push_str(&format!(
            " {} | {} | {} | {} | {:.2} |\n",
            r.average
                .map_or("–".into(), |a| format!("{:.1}", 100.0 * a)),
            r.vs_dense
                .as_ref()
                .map_or("–".into(), |c| interval_pp(&c.average)),
            r.vs_finercut
                .as_ref()
                .map_or("–".into(), |c| interval_pp(&c.average)),
            retained,
            r.ppl
        ));
    }
    s.push_str(&format!("\n**Verdict.** {verdict}\n"));
    let docs: Vec<String> = tasks
        .iter()
        .filter_map(|t| {
            rows.first()
                .and_then(|r| r.tasks.get(t.as_str()))
                .map(|x| format!("{} {}", task_header(*t), x.2))
        })
        .collect();
    s.push_str(&format!(
        "\nAccuracies in %, acc_norm where the task has it, else acc (lm-evaluation-harness 0.4 \
         scoring); documents per task: {}. Δ columns: the row minus the dense model / minus \
         FinerCut on the task average, in points, with 95% paired bootstrap intervals over the \
         same documents; `*` marks an interval (or, on a task, the difference to the dense model) \
         that excludes zero. Retained: the row's average over the dense model's, with its \
         interval. FinerCut uses the reference code's `js-reference` divergence at the sublayer \
         level; ShortGPT, DeeperLayers and SLEB remove whole blocks, BlockPruner sublayers by \
         perplexity; SliceGPT rotates the residual stream into the principal components of the \
         same calibration tokens and slices it to the widest width that removes at least as many \
         parameters as FinerCut (shortcut matrices and an untied head counted). PPL: WikiText-2 test perplexity. Settings: {}.\n",
        docs.join(", "),
        ctx.profile.caption()
    ));
    s
}

/// `12.3M`, `45.6K` or `789`.
fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn figure3(ctx: &mut Ctx<'_>) -> Result<()> {
    let ratios = ctx.profile.figure3_ratios.clone();
    let max = ratios.iter().copied().fold(0.0, f64::max);
    let methods = [
        ("FinerCut", Method::Finercut),
        ("ShortGPT", Method::Shortgpt),
        ("DeeperLayers", Method::DeeperLayers),
    ];
    let mut series = Vec::new();
    for (label, method) in methods {
        let metric = (method == Method::Finercut).then_some(Metric::JsReference);
        let result = ctx.stage(
            &format!("figure3: {label} search to {:.0}%", max * 100.0),
            |c| c.search(method, metric, method_level(method), Stop::Ratio(max)),
        )?;
        let mut points = Vec::new();
        for &r in &ratios {
            let removed = if r == 0.0 {
                BTreeSet::new()
            } else {
                result.plan_for_ratio(r)?
            };
            let ppl = ctx.stage(
                &format!("figure3: {label} perplexity at {:.0}%", r * 100.0),
                |c| c.cached_perplexity(&removed),
            )?;
            // Rounded so that 0.3 × 100 is written as 30, not 30.000000000000004.
            points.push(((r * 100.0 * 1e6).round() / 1e6, ppl));
        }
        series.push(plots::MethodCurve {
            method: label.to_owned(),
            points: points
                .into_iter()
                .map(|(ratio_percent, perplexity)| plots::CurvePoint {
                    ratio_percent,
                    perplexity,
                })
                .collect(),
        });
    }
    if !ctx.lead() {
        return Ok(());
    }
    let dir = ctx.dir("figure3");
    let data = plots::Figure3Data {
        model: ctx.model_name.clone(),
        dataset: "WikiText-2".into(),
        methods: series,
    };
    let files = plots::figure3(&dir.join("figure3.svg"), &data)?;
    println!("figure3: {files}");
    Ok(())
}

/// Figure 4 and/or 1b of one model; returns the model's Figure 4 panel.
fn figure4_and_1b(ctx: &mut Ctx<'_>, fig4: bool, fig1b: bool) -> Result<plots::SublayerGrid> {
    let ratio = ctx.profile.ratio;
    let result = ctx.stage("figure4: FinerCut search", |c| {
        c.search(
            Method::Finercut,
            Some(Metric::JsReference),
            Level::Sublayer,
            Stop::Ratio(ratio),
        )
    })?;
    let removed = result.plan_for_ratio(ratio)?;
    let inspection = Inspection::new(result.num_blocks, &removed);
    let panel = plots::SublayerGrid::from_sublayer_indices(
        ctx.model_name.clone(),
        result.num_blocks,
        removed.iter().copied(),
    );
    if fig4 && ctx.lead() {
        let dir = ctx.dir("figure4");
        let data = plots::Figure4Data {
            method: "FinerCut".into(),
            ratio_percent: ratio * 100.0,
            panels: vec![panel.clone()],
        };
        let files = plots::figure4(&dir.join("figure4.svg"), &data)?;
        pipeline::write_file_atomic(&dir.join("figure4.txt"), inspection.text())?;
        println!("{}", inspection.text());
        println!("figure4: {files}");
    }
    if fig1b && ctx.lead() {
        let mut groups = Vec::new();
        for k in 1..=4 {
            let r = ratio * k as f64 / 4.0;
            if let Ok(rem) = result.plan_for_ratio(r) {
                let grid = plots::SublayerGrid::from_sublayer_indices(
                    ctx.model_name.clone(),
                    result.num_blocks,
                    rem,
                );
                groups.push(plots::RemovedCounts::from_grid(
                    format!("{:.1}%", r * 100.0),
                    &grid,
                ));
            }
        }
        let dir = ctx.dir("figure1b");
        let data = plots::Figure1bData {
            title: format!(
                "Attention vs. FFN sublayers removed by FinerCut — {}",
                ctx.model_name
            ),
            group_axis: "Removal ratio".into(),
            groups,
        };
        let files = plots::figure1b(&dir.join("figure1b.svg"), &data)?;
        println!("figure1b: {files}");
    }
    Ok(panel)
}

fn ablation(ctx: &mut Ctx<'_>) -> Result<()> {
    let ratio = ctx.profile.ratio;
    let tasks = paper_tasks();
    let variants: [(&str, Metric, Level); 5] = [
        (
            "sublayers, JS (reference)",
            Metric::JsReference,
            Level::Sublayer,
        ),
        ("blocks, JS (reference)", Metric::JsReference, Level::Block),
        ("sublayers, JS (textbook)", Metric::Js, Level::Sublayer),
        ("sublayers, angular", Metric::Angular, Level::Sublayer),
        ("sublayers, Euclidean", Metric::Euclidean, Level::Sublayer),
    ];
    // The same documents per task as Table 2, whether or not Table 2 ran first in this run.
    let decisions = ctx.stage("ablation: documents per task from the dense model", |c| {
        c.decide_limits(&tasks)
    })?;
    let names = task_names(&tasks);
    let mut rows = Vec::new();
    let mut md = format!(
        "#### Ablation: {} with {:.0}% of sublayers removed\n\n| Variant | Removed (attn/FFN) | \
         Avg | Δ Avg vs Table 2's FinerCut | PPL | First removals |\n|---|---|---|---|---|---|\n",
        ctx.model_name,
        ratio * 100.0
    );
    let mut reference: Option<Outcomes> = None;
    for (label, metric, level) in variants {
        let result = ctx.stage(&format!("ablation: {label} search"), |c| {
            c.search(Method::Finercut, Some(metric), level, Stop::Ratio(ratio))
        })?;
        let removed = result.plan_for_ratio(ratio)?;
        let eval = ctx.stage(&format!("ablation: {label} evaluation"), |c| {
            c.evaluate(&removed, &tasks)
        })?;
        // The first variant is Table 2's FinerCut; the others are paired against it.
        let vs_reference = match &reference {
            None => {
                reference = Some(eval.outcomes.clone());
                None
            }
            Some(r) => Some(stats::paired(
                &eval.outcomes,
                r,
                &names,
                &ctx.profile.bootstrap,
            )?),
        };
        let units: Vec<String> = result
            .units_for_ratio(ratio)?
            .iter()
            .map(|u| u.to_string())
            .collect();
        let attn = attention_count(&removed);
        md.push_str(&format!(
            "| {label} | {attn}/{} | {} | {} | {:.2} | {} |\n",
            removed.len() - attn,
            eval.average_of_tasks()
                .map_or("–".into(), |a| format!("{:.1}", 100.0 * a)),
            vs_reference
                .as_ref()
                .map_or("–".into(), |c| interval_pp(&c.average)),
            eval.ppl,
            units.iter().take(5).cloned().collect::<Vec<_>>().join(" "),
        ));
        rows.push(json!({
            "variant": label,
            "metric": metric.to_string(),
            "level": level.name(),
            "average": eval.average_of_tasks(),
            "vs_reference": vs_reference,
            "ppl": eval.ppl,
            "tasks": eval.tasks,
            "removed": units,
        }));
    }
    md.push_str(&format!(
        "\nAvg: the nine benchmarks' average accuracy (%); Δ: the variant minus the first row (Table \
         2's FinerCut) in points, with a 95% paired bootstrap interval over the same documents (`*`: \
         excludes zero). PPL: WikiText-2 test perplexity. Settings: {}.\n",
        ctx.profile.caption()
    ));
    if !ctx.lead() {
        return Ok(());
    }
    let dir = ctx.dir("ablation");
    let variant_names: Vec<String> = rows
        .iter()
        .map(|r| r["variant"].as_str().unwrap_or_default().to_owned())
        .collect();
    let acc = plots::AblationData {
        title: format!(
            "FinerCut ablations at {:.0}% removed: benchmark average — {}",
            ratio * 100.0,
            ctx.model_name
        ),
        group_axis: "Variant".into(),
        value_axis: "Average accuracy (%)".into(),
        log_y: false,
        groups: vec!["average accuracy".into()],
        variants: rows
            .iter()
            .zip(&variant_names)
            .map(|(r, n)| plots::AblationVariant {
                name: n.clone(),
                values: vec![r["average"].as_f64().map(|a| 100.0 * a)],
            })
            .collect(),
    };
    let files = plots::ablation(&dir.join("ablation-accuracy.svg"), &acc)?;
    println!("ablation: {files}");
    let ppl = plots::AblationData {
        title: format!(
            "FinerCut ablations at {:.0}% removed: WikiText-2 perplexity — {}",
            ratio * 100.0,
            ctx.model_name
        ),
        group_axis: "Variant".into(),
        value_axis: "Perplexity".into(),
        log_y: true,
        groups: vec!["perplexity".into()],
        variants: rows
            .iter()
            .zip(&variant_names)
            .map(|(r, n)| plots::AblationVariant {
                name: n.clone(),
                values: vec![r["ppl"].as_f64()],
            })
            .collect(),
    };
    let files = plots::ablation(&dir.join("ablation-perplexity.svg"), &ppl)?;
    println!("ablation: {files}");
    write_table(
        ctx,
        &dir,
        "ablation",
        &md,
        json!({ "documents_per_task": decisions, "rows": rows }),
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Rank 0's directory reaches ranks 1 and 2 in pieces, a file longer than a piece, one that
    /// is a whole number of pieces and an empty one alike, its hidden files left out; with a
    /// needed file missing no rank copies anything, and one rank alone only looks.
    #[test]
    fn rank_0s_directory_reaches_the_other_ranks_byte_for_byte() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        std::fs::create_dir_all(&dir).unwrap();
        let long: Vec<u8> = (0..100u8).collect();
        std::fs::write(dir.join("weights.bin"), &long).unwrap();
        std::fs::write(dir.join("config.json"), b"{\"a\": 1}\n12345").unwrap();
        std::fs::write(dir.join("tokenizer.json"), b"").unwrap();
        std::fs::write(dir.join(".weights.bin.tmp-1"), b"half").unwrap();
        let run = |need: &'static [&'static str], name: &'static str| -> Vec<bool> {
            std::thread::scope(|s| {
                let handles: Vec<_> = finercut_dist::Local::group(3)
                    .into_iter()
                    .map(|t| {
                        let (dir, root) = (dir.clone(), root.path().to_path_buf());
                        s.spawn(move || {
                            let into = root.join(format!("{name}-rank{}", t.rank()));
                            shared_dir(&t, &dir, need, &into, 10).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        };
        assert_eq!(run(&["config.json", "weights.bin"], "copy"), [true; 3]);
        assert!(
            !root.path().join("copy-rank0").exists(),
            "rank 0 reads in place"
        );
        for rank in 1..3 {
            let into = root.path().join(format!("copy-rank{rank}"));
            let mut names: Vec<String> = std::fs::read_dir(&into)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["config.json", "tokenizer.json", "weights.bin"]);
            for name in &names {
                assert_eq!(
                    std::fs::read(into.join(name)).unwrap(),
                    std::fs::read(dir.join(name)).unwrap(),
                    "rank {rank}: {name}"
                );
            }
        }
        assert_eq!(run(&["config.json", "missing.bin"], "none"), [false; 3]);
        for rank in 0..3 {
            assert!(!root.path().join(format!("none-rank{rank}")).exists());
        }
        let alone = finercut_dist::Alone;
        let into = root.path().join("alone");
        assert!(shared_dir(&alone, &dir, &["weights.bin"], &into, 10).unwrap());
        assert!(!shared_dir(&alone, &dir, &["missing.bin"], &into, 10).unwrap());
        assert!(!into.exists());
    }

    fn doc(doc_id: usize, correct: bool) -> Gsm8kDocResult {
        Gsm8kDocResult {
            doc_id,
            target: "1".into(),
            generation: String::new(),
            flexible: if correct { "1" } else { "2" }.into(),
            strict: String::new(),
            flexible_correct: correct,
            strict_correct: false,
            prompt_tokens: 10,
            generated_tokens: 5,
            stop: "eos".into(),
        }
    }

    fn interval(low: f64, high: f64) -> stats::Interval {
        stats::Interval {
            estimate: 0.5 * (low + high),
            low,
            high,
        }
    }

    #[test]
    fn gsm8k_tallies_count_the_dense_models_answers_kept() {
        let dense_docs: Vec<_> = (0..6).map(|i| doc(i, i < 3)).collect();
        let dense_correct = correct_ids(&dense_docs);
        assert_eq!(dense_correct, BTreeSet::from([0, 1, 2]));
        let dense = Gsm8kTally::of("Dense", &dense_docs, 600, &dense_correct, None);
        assert_eq!(
            (dense.correct, dense.dense_correct_kept, dense.questions),
            (3, 3, 6)
        );
        assert_eq!(dense.tokens_per_question, 100.0);
        // Right on question 2 (one the dense model answers) and 4 and 5 (ones it does not).
        let row_docs: Vec<_> = (0..6).map(|i| doc(i, [2, 4, 5].contains(&i))).collect();
        let drop = interval(-0.4, 0.1);
        let a = Gsm8kTally::of("A", &row_docs, 1200, &dense_correct, Some(&drop));
        assert_eq!((a.correct, a.dense_correct_kept), (3, 1));
        assert_eq!(a.drop_excludes_zero, Some(false));
        let none: Vec<_> = (0..6).map(|i| doc(i, i == 5)).collect();
        let b = Gsm8kTally::of(
            "B",
            &none,
            1500,
            &dense_correct,
            Some(&interval(-0.6, -0.1)),
        );
        assert_eq!((b.correct, b.dense_correct_kept), (1, 0));

        let h = gsm8k_headline(&[dense.clone(), a.clone(), b.clone()]);
        assert_eq!(
            h,
            "The dense model answers 3 of 6 questions. The pruned rows answer 1–3 (A 3, B 1). \
             Of the dense model's 3 correct answers they keep 0–1 (A 1, B 0). 1 of the 2 \
             differences to the dense model exclude zero. New tokens per question: dense 100, \
             pruned rows 200–250."
        );
        let h = gsm8k_headline(&[dense.clone(), b]);
        assert!(
            h.contains("None of them answers any of the dense model's 3 correct questions."),
            "{h}"
        );
        assert!(h.contains("pruned rows 250."), "{h}");
        assert_eq!(
            gsm8k_headline(&[dense]),
            "The dense model answers 3 of 6 questions."
        );
    }
}
