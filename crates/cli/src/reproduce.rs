//! `finercut reproduce`: the paper's Table 2, figures and ablations on the models available here.
//!
//! Every search and evaluation is cached under `OUT/cache/`, keyed by the SHA-256 of the model,
//! the calibration tokens and the settings, so a rerun finishes from the cache and an interrupted
//! one picks up where it stopped (searches resume from their per-step checkpoints).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use finercut_eval::{EvalOptions, EvalReport, PerplexityOptions, PerplexityReport, TaskName};
use finercut_metrics::Metric;
use finercut_search::inspect::Inspection;
use finercut_search::{Level, Method, Provenance, SearchResult, Settings, Stop};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::{self, Loaded};
use crate::plots;

/// What to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// Table 2: dense, FinerCut, ShortGPT, DeeperLayers, SLEB and BlockPruner at 25% of sublayers.
    Table2,
    /// Figure 3: WikiText-2 perplexity against the removal ratio (0–50%).
    Figure3,
    /// Figure 4: the grid of pruned sublayers at 25%.
    Figure4,
    /// Figure 1b: removed attention versus FFN sublayers.
    Figure1b,
    /// Ablations: sublayers versus whole blocks; JS versus angular versus Euclidean.
    Ablation,
    /// Everything above.
    All,
}

/// Arguments of `finercut reproduce`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to reproduce.
    #[arg(value_enum)]
    pub what: What,
    /// The paper's settings: 10 × 256 calibration tokens, at most 1000 documents per zero-shot
    /// task, MMLU 5-shot with at most 50 questions per subject, every perplexity window.
    #[arg(long, conflicts_with = "smoke")]
    pub full: bool,
    /// The whole pipeline on a tiny random model in seconds (for tests).
    #[arg(long)]
    pub smoke: bool,
    #[command(flatten)]
    pub model: crate::ModelArg,
    /// Output directory: `<what>/` with results, tables and figures, and `cache/`.
    #[arg(long, default_value = "target/repro")]
    pub out: PathBuf,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Settings of one reproduction profile; written into every result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub samples: usize,
    pub seq_len: usize,
    pub calib_offset: usize,
    pub limit: Option<usize>,
    pub mmlu_limit: Option<usize>,
    pub ppl_seq_len: usize,
    pub ppl_max_windows: Option<usize>,
    pub ratio: f64,
    pub figure3_ratios: Vec<f64>,
}

impl Profile {
    fn new(full: bool, smoke: bool) -> Profile {
        if smoke {
            return Profile {
                name: "smoke".into(),
                samples: 2,
                seq_len: 32,
                calib_offset: 0,
                limit: Some(4),
                mmlu_limit: Some(1),
                ppl_seq_len: 32,
                ppl_max_windows: Some(4),
                ratio: 0.25,
                figure3_ratios: vec![0.0, 0.25, 0.5],
            };
        }
        if full {
            return Profile {
                name: "full".into(),
                samples: 10,
                seq_len: 256,
                calib_offset: 0,
                limit: Some(1000),
                mmlu_limit: Some(50),
                ppl_seq_len: 256,
                ppl_max_windows: None,
                ratio: 0.25,
                figure3_ratios: (0..=10).map(|i| i as f64 * 0.05).collect(),
            };
        }
        Profile {
            name: "default".into(),
            samples: 2,
            seq_len: 128,
            calib_offset: 0,
            limit: Some(40),
            mmlu_limit: Some(1),
            ppl_seq_len: 256,
            ppl_max_windows: Some(40),
            ratio: 0.25,
            figure3_ratios: (0..=5).map(|i| i as f64 * 0.1).collect(),
        }
    }

    fn caption(&self) -> String {
        format!(
            "profile `{}`: calibration {} × {} tokens of WikiText-2 test from token {}; zero-shot tasks \
             at most {} documents each, MMLU 5-shot at most {} questions per subject; WikiText-2 \
             perplexity over {} windows of {} tokens disjoint from the calibration slice; {}% of \
             sublayers removed (block methods: the equal number of whole blocks, rounded down)",
            self.name,
            self.samples,
            self.seq_len,
            self.calib_offset,
            self.limit.map_or("all".into(), |l| l.to_string()),
            self.mmlu_limit.map_or("all".into(), |l| l.to_string()),
            self.ppl_max_windows
                .map_or("all".into(), |l| format!("the first {l}")),
            self.ppl_seq_len,
            self.ratio * 100.0
        )
    }
}

/// Shared state of one reproduction.
struct Ctx {
    loaded: Loaded,
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
}

impl Ctx {
    fn stage<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Ctx) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.stage += 1;
        eprintln!("[{}] {name}", self.stage);
        let t0 = Instant::now();
        let v = f(self)?;
        let s = t0.elapsed().as_secs_f64();
        eprintln!("[{}] {name}: {s:.1} s", self.stage);
        self.timings.push((name.to_owned(), s));
        Ok(v)
    }

    fn key(&self, what: &serde_json::Value) -> String {
        let text = serde_json::to_string(what).unwrap_or_default();
        common::sha256_hex(text.as_bytes())[..16].to_owned()
    }

    /// A finished search, from the cache or computed (resuming an interrupted one).
    fn search(
        &mut self,
        method: Method,
        metric: Option<Metric>,
        level: Level,
        stop: Stop,
    ) -> anyhow::Result<SearchResult> {
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
        let mut keyed = settings.clone();
        keyed.threads = 0;
        keyed.stop = Stop::End;
        let key = self.key(&json!({
            "model": self.model_sha, "data": self.data_sha, "settings": keyed,
            "version": env!("CARGO_PKG_VERSION"),
        }));
        let name = format!(
            "{}-{}-{}-{key}.json",
            method.name(),
            settings.metric.map_or("none".into(), |m| m.to_string()),
            level.name()
        );
        let path = self.cache.join("runs").join(name);
        std::fs::create_dir_all(self.cache.join("runs"))
            .with_context(|| format!("cannot create {}", self.cache.display()))?;
        if let Ok(r) = SearchResult::load(&path) {
            if r.complete && covers(&r, stop) {
                return Ok(r);
            }
        }
        let provenance = Provenance {
            model_sha256: self.model_sha.clone(),
            data_sha256: self.data_sha.clone(),
        };
        crate::prune::execute(
            &self.loaded,
            &self.seqs,
            &settings,
            provenance,
            &path,
            true,
            true,
        )
    }

    /// Evaluation of a plan (benchmarks and perplexity), from the cache or computed.
    fn evaluate(
        &mut self,
        removed: &BTreeSet<usize>,
        tasks: &[TaskName],
    ) -> anyhow::Result<Evaluation> {
        let key = self.key(&json!({
            "model": self.model_sha, "removed": removed, "tasks": tasks.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "limit": self.profile.limit, "mmlu_limit": self.profile.mmlu_limit,
            "ppl": [self.profile.ppl_seq_len, self.profile.ppl_max_windows],
            "calib": [self.profile.calib_offset, self.profile.samples, self.profile.seq_len],
            "version": env!("CARGO_PKG_VERSION"),
        }));
        let path = self.cache.join("evals").join(format!("{key}.json"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(e) = serde_json::from_str::<Evaluation>(&text) {
                return Ok(e);
            }
        }
        let data = finercut_eval::default_data_dir();
        let (mmlu, zero): (Vec<TaskName>, Vec<TaskName>) =
            tasks.iter().partition(|t| **t == TaskName::Mmlu);
        let mut reports = Vec::new();
        if !zero.is_empty() {
            let options = EvalOptions::new(data.clone(), self.profile.limit);
            reports.push(crate::evaluate::evaluate_plan(
                &self.loaded,
                removed,
                &zero,
                &options,
                true,
            )?);
        }
        if !mmlu.is_empty() {
            let options = EvalOptions::new(data, self.profile.mmlu_limit);
            reports.push(crate::evaluate::evaluate_plan(
                &self.loaded,
                removed,
                &mmlu,
                &options,
                true,
            )?);
        }
        let mut tasks_out = BTreeMap::new();
        for r in &reports {
            for t in &r.tasks {
                tasks_out.insert(t.task.as_str().to_owned(), (t.value, t.stderr, t.n));
            }
        }
        let ppl = self.perplexity(removed)?;
        let e = Evaluation {
            removed: removed.clone(),
            tasks: tasks_out,
            ppl: ppl.perplexity,
            ppl_windows: ppl.windows_scored,
            ppl_excluded_windows: ppl.excluded_windows.clone(),
            reports,
        };
        common::write_json_atomic(&path, &serde_json::to_value(&e)?)?;
        Ok(e)
    }

    fn perplexity(&self, removed: &BTreeSet<usize>) -> anyhow::Result<PerplexityReport> {
        let mut options = PerplexityOptions::new(self.profile.ppl_seq_len);
        options.max_windows = self.profile.ppl_max_windows;
        let start = self.profile.calib_offset;
        options.exclude = Some(start..start + self.profile.samples * self.profile.seq_len);
        crate::run::perplexity_of(&self.loaded, removed, &self.text, &options, true)
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
    ppl: f64,
    ppl_windows: usize,
    ppl_excluded_windows: Vec<usize>,
    reports: Vec<EvalReport>,
}

impl Evaluation {
    fn average(&self, tasks: &[TaskName]) -> Option<f64> {
        let v: Vec<f64> = tasks
            .iter()
            .filter_map(|t| self.tasks.get(t.as_str()).map(|x| x.0))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let threads = common::init_threads(args.threads)?;
    let profile = Profile::new(args.full, args.smoke);
    let t_all = Instant::now();
    let model_path = if args.smoke {
        let dir = args.out.join("smoke-model");
        // Six blocks: 25% of 12 sublayers is 3, odd as for SmolLM2's 60, so the block methods'
        // rounding down to whole blocks is exercised.
        let spec = crate::tiny::TinySpec {
            blocks: 6,
            ..crate::tiny::TinySpec::default()
        };
        crate::tiny::write_tiny_model(&dir, &spec)?;
        dir
    } else {
        common::model_path(&args.model)?
    };
    let arg = crate::ModelArg {
        model: Some(model_path.clone()),
        dtype: args.model.dtype,
    };
    eprintln!("loading {}", model_path.display());
    let loaded = common::load_model(&arg)?;
    let model_sha = loaded.checkpoint.sha256()?;
    let (text, origin) = common::text_or_wikitext2(None)?;
    let seqs = common::calibration(
        &loaded.checkpoint.tokenizer,
        &text,
        &origin,
        profile.samples,
        profile.seq_len,
        profile.calib_offset,
    )?;
    let data_sha = Provenance::tokens_sha256(&seqs);
    let model_name = if args.smoke {
        "tiny random Llama (smoke)".to_owned()
    } else {
        model_display_name(&model_path)
    };
    let cache = args.out.join("cache").join(&profile.name);
    let mut ctx = Ctx {
        loaded,
        model_name,
        model_sha,
        seqs,
        data_sha,
        text,
        profile,
        threads,
        out: args.out.clone(),
        cache,
        timings: Vec::new(),
        stage: 0,
    };
    let all = args.what == What::All;
    if all || args.what == What::Table2 {
        table2(&mut ctx)?;
    }
    if all || args.what == What::Figure3 {
        figure3(&mut ctx)?;
    }
    if all || args.what == What::Figure4 || args.what == What::Figure1b {
        figure4_and_1b(
            &mut ctx,
            all || args.what == What::Figure4,
            all || args.what == What::Figure1b,
        )?;
    }
    if all || args.what == What::Ablation {
        ablation(&mut ctx)?;
    }
    eprintln!("done in {:.1} s", t_all.elapsed().as_secs_f64());
    Ok(())
}

fn model_display_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("SmolLM2-135M") {
        "SmolLM2-135M-Instruct (Q4_1 GGUF)".into()
    } else {
        name
    }
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
}

fn table2(ctx: &mut Ctx) -> anyhow::Result<()> {
    let tasks = paper_tasks();
    let dir = ctx.out.join("table2");
    let ratio = ctx.profile.ratio;
    let dense = ctx.stage("table2: dense model evaluation", |c| {
        c.evaluate(&BTreeSet::new(), &tasks)
    })?;
    let dense_avg = dense.average(&tasks);
    let total_params = ctx.total_params();
    let mut rows = vec![Row {
        method: "Dense".into(),
        metric: None,
        level: "-".into(),
        removed: Vec::new(),
        removed_attn: 0,
        removed_mlp: 0,
        params_removed: 0,
        params_removed_fraction: 0.0,
        tasks: dense.tasks.clone(),
        average: dense_avg,
        retained: dense_avg.map(|_| 1.0),
        ppl: dense.ppl,
        search_wall_s: 0.0,
        search_forward_equivalents: 0.0,
    }];
    for (label, method) in TABLE2_METHODS {
        let metric = (method == Method::Finercut).then_some(Metric::JsReference);
        let level = method_level(method);
        let result = ctx.stage(&format!("table2: {label} search"), |c| {
            c.search(method, metric, level, Stop::Ratio(ratio))
        })?;
        let removed = result.plan_for_ratio(ratio)?;
        let eval = ctx.stage(&format!("table2: {label} evaluation"), |c| {
            c.evaluate(&removed, &tasks)
        })?;
        let avg = eval.average(&tasks);
        let params = ctx.params_of(&removed);
        rows.push(Row {
            method: label.into(),
            metric: result.settings.metric.map(|m| m.to_string()),
            level: result.settings.level.name().into(),
            removed: result
                .units_for_ratio(ratio)?
                .iter()
                .map(|u| u.to_string())
                .collect(),
            removed_attn: removed.iter().filter(|&&i| i % 2 == 0).count(),
            removed_mlp: removed.iter().filter(|&&i| i % 2 == 1).count(),
            params_removed: params,
            params_removed_fraction: params as f64 / total_params as f64,
            tasks: eval.tasks.clone(),
            average: avg,
            retained: avg.zip(dense_avg).map(|(a, d)| a / d),
            ppl: eval.ppl,
            search_wall_s: result.total_wall_s(),
            search_forward_equivalents: result.total_forward_equivalents(),
        });
    }
    let md = render_table2(ctx, &tasks, &rows);
    common::write_file_atomic(&dir.join("table2.md"), &md)?;
    let results = json!({
        "table": "table2",
        "model": ctx.model_name,
        "model_path": ctx.loaded.path.display().to_string(),
        "model_sha256": ctx.model_sha,
        "calibration_sha256": ctx.data_sha,
        "profile": ctx.profile,
        "caption": ctx.profile.caption(),
        "total_params": total_params,
        "rows": rows,
        "timings_s": ctx.timings,
        "threads": ctx.threads,
        "version": env!("CARGO_PKG_VERSION"),
    });
    common::write_json_atomic(&dir.join("results.json"), &results)?;
    println!("{md}");
    println!(
        "written: {} and {}",
        dir.join("table2.md").display(),
        dir.join("results.json").display()
    );
    Ok(())
}

fn method_level(method: Method) -> Level {
    match method {
        Method::Finercut | Method::Blockpruner | Method::FinercutOneshot | Method::Random => {
            Level::Sublayer
        }
        _ => Level::Block,
    }
}

fn render_table2(ctx: &Ctx, tasks: &[TaskName], rows: &[Row]) -> String {
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
    s.push_str(" Avg | Retained | PPL |\n|---|---|---|");
    for _ in tasks {
        s.push_str("---|");
    }
    s.push_str("---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {}/{} | {} ({:.1}%) |",
            r.method,
            r.removed_attn,
            r.removed_mlp,
            human_count(r.params_removed),
            100.0 * r.params_removed_fraction
        ));
        for t in tasks {
            match r.tasks.get(t.as_str()) {
                Some((v, _, _)) => s.push_str(&format!(" {:.1} |", 100.0 * v)),
                None => s.push_str(" – |"),
            }
        }
        s.push_str(&format!(
            " {} | {} | {:.2} |\n",
            r.average
                .map_or("–".into(), |a| format!("{:.1}", 100.0 * a)),
            r.retained
                .map_or("–".into(), |a| format!("{:.1}%", 100.0 * a)),
            r.ppl
        ));
    }
    s.push_str(&format!(
        "\nAccuracies in %, acc_norm where the task has it, else acc (lm-evaluation-harness 0.4 \
         scoring). FinerCut uses the reference code's `js-reference` divergence at the sublayer \
         level; ShortGPT, DeeperLayers and SLEB remove whole blocks, BlockPruner sublayers by \
         perplexity. PPL: WikiText-2 test perplexity. Settings: {}.\n",
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

fn figure3(ctx: &mut Ctx) -> anyhow::Result<()> {
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
            let key = ctx.key(&json!({"ppl": ctx.model_sha, "removed": removed, "p": [ctx.profile.ppl_seq_len, ctx.profile.ppl_max_windows, ctx.profile.calib_offset, ctx.profile.samples, ctx.profile.seq_len], "v": env!("CARGO_PKG_VERSION")}));
            let path = ctx.cache.join("ppl").join(format!("{key}.json"));
            let ppl = match std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<f64>(&t).ok())
            {
                Some(p) => p,
                None => {
                    let p = ctx
                        .stage(
                            &format!("figure3: {label} perplexity at {:.0}%", r * 100.0),
                            |c| c.perplexity(&removed),
                        )?
                        .perplexity;
                    common::write_json_atomic(&path, &json!(p))?;
                    p
                }
            };
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
    let dir = ctx.out.join("figure3");
    let data = plots::Figure3Data {
        model: ctx.model_name.clone(),
        dataset: "WikiText-2".into(),
        methods: series,
    };
    let files = plots::figure3(&dir.join("figure3.svg"), &data)?;
    println!("figure3: {files}");
    Ok(())
}

fn figure4_and_1b(ctx: &mut Ctx, fig4: bool, fig1b: bool) -> anyhow::Result<()> {
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
    if fig4 {
        let dir = ctx.out.join("figure4");
        let data = plots::Figure4Data {
            method: "FinerCut".into(),
            ratio_percent: ratio * 100.0,
            panels: vec![plots::SublayerGrid::from_sublayer_indices(
                ctx.model_name.clone(),
                result.num_blocks,
                removed.iter().copied(),
            )],
        };
        let files = plots::figure4(&dir.join("figure4.svg"), &data)?;
        common::write_file_atomic(&dir.join("figure4.txt"), inspection.text())?;
        println!("{}", inspection.text());
        println!("figure4: {files}");
    }
    if fig1b {
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
        let dir = ctx.out.join("figure1b");
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
    Ok(())
}

fn ablation(ctx: &mut Ctx) -> anyhow::Result<()> {
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
    let mut rows = Vec::new();
    for (label, metric, level) in variants {
        let result = ctx.stage(&format!("ablation: {label} search"), |c| {
            c.search(Method::Finercut, Some(metric), level, Stop::Ratio(ratio))
        })?;
        let removed = result.plan_for_ratio(ratio)?;
        let eval = ctx.stage(&format!("ablation: {label} evaluation"), |c| {
            c.evaluate(&removed, &tasks)
        })?;
        rows.push(json!({
            "variant": label,
            "metric": metric.to_string(),
            "level": level.name(),
            "average": eval.average(&tasks),
            "ppl": eval.ppl,
            "tasks": eval.tasks,
            "removed": result
                .units_for_ratio(ratio)?
                .iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>(),
        }));
    }
    let dir = ctx.out.join("ablation");
    let names: Vec<String> = rows
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
            .zip(&names)
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
            .zip(&names)
            .map(|(r, n)| plots::AblationVariant {
                name: n.clone(),
                values: vec![r["ppl"].as_f64()],
            })
            .collect(),
    };
    let files = plots::ablation(&dir.join("ablation-perplexity.svg"), &ppl)?;
    println!("ablation: {files}");
    common::write_json_atomic(
        &dir.join("results.json"),
        &json!({"model": ctx.model_name, "model_sha256": ctx.model_sha, "profile": ctx.profile,
                "caption": ctx.profile.caption(), "rows": rows, "version": env!("CARGO_PKG_VERSION")}),
    )?;
    Ok(())
}
