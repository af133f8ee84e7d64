//! `finercut prune`: run FinerCut or a baseline and write the result file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use finercut_metrics::Metric;
use finercut_search::{Level, Method, Provenance, Settings, Stop, TokenSelection};

use crate::common;

/// Arguments of `finercut prune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: crate::ModelArg,
    /// Pruning method: FinerCut (greedy) or a baseline.
    #[arg(long, default_value = "finercut", value_parser = parse_method)]
    pub method: Method,
    /// Stop once this fraction of the 2L sublayers is removed, in (0, 1); every smaller ratio can
    /// be read off the same run. Use --to-end to run until nothing is left.
    #[arg(long, default_value_t = 0.25, conflicts_with = "to_end", value_parser = common::parse_ratio)]
    pub ratio: f64,
    /// Run until every unit is removed (all ratios from one run).
    #[arg(long)]
    pub to_end: bool,
    /// Score of a candidate: js (textbook Jensen–Shannon, default), js-reference (the reference
    /// code's variant), kl, angular, euclidean, ppl (calibration perplexity). SLEB and BlockPruner
    /// always use ppl; ShortGPT, DeeperLayers and random use none.
    #[arg(long, value_parser = parse_metric)]
    pub metric: Option<Metric>,
    /// Candidate units: sublayer (attention and FFN, default), attn, mlp or block.
    #[arg(long, value_parser = parse_level)]
    pub level: Option<Level>,
    #[command(flatten)]
    pub calib: crate::CalibArg,
    /// Front exclusion x of the reference code: the first ⌊2L·x/2⌋+1 blocks are not candidates
    /// until ⌊2L·x⌋+1 sublayers are removed. Off by default.
    #[arg(long, value_name = "X")]
    pub front_exclusion: Option<f64>,
    /// DeeperLayers: compare all token positions instead of the last one.
    #[arg(long)]
    pub all_tokens: bool,
    /// Seed of the random baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Score every candidate of every step on every calibration row. By default a candidate is
    /// stopped once it provably cannot be the best of its step (same removal order and scores of
    /// the removed units; the result records such runners-up as lower bounds).
    #[arg(long)]
    pub exhaustive: bool,
    /// Split the model into this many pipeline stages (under `mpirun`/`srun`): each rank loads
    /// only its contiguous range of sublayers and hands the residual streams to the next; with
    /// more ranks than stages, the ranks form replicas (`-np 4 --stages 2`: two replicas of two
    /// stages). The ranks must be a multiple of the stages. Results do not depend on it.
    #[arg(long, value_name = "P")]
    pub stages: Option<usize>,
    /// How far, in sublayers, a stage boundary may move from its first step's place as the live
    /// candidates change: each stage loads that many sublayers more on each side.
    #[arg(long, value_name = "SUBLAYERS", default_value_t = finercut_search::stages::DEFAULT_MARGIN, requires = "stages")]
    pub stage_margin: usize,
    /// Micro-batches per scoring pass on pipeline stages: groups of candidates handed from stage
    /// to stage one by one, so that the stages overlap. 0 (the default) chooses them per pass by
    /// the shortest simulated schedule (`docs/SCALING.md`, Micro-batches); 1 runs the stages one
    /// after the other. Results do not depend on it.
    #[arg(long, value_name = "M", default_value_t = 0, requires = "stages")]
    pub micro_batches: usize,
    /// Worker threads [default: all cores]. Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Result file (JSON), rewritten atomically after every step.
    #[arg(long, default_value = "run.json")]
    pub out: PathBuf,
    /// Continue the interrupted run in --out (same model, data and settings) instead of refusing
    /// to overwrite it.
    #[arg(long)]
    pub resume: bool,
    /// Overwrite an existing --out.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
}

fn parse_method(s: &str) -> Result<Method, String> {
    s.parse().map_err(|e| format!("{e}"))
}
fn parse_metric(s: &str) -> Result<Metric, String> {
    s.parse().map_err(|e| format!("{e}"))
}
fn parse_level(s: &str) -> Result<Level, String> {
    s.parse().map_err(|e| format!("{e}"))
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let threads = common::init_threads(args.threads)?;
    common::on_ranks(|dist| search(&args, threads, dist))
}

fn search(args: &Args, threads: usize, dist: &dyn finercut_dist::Transport) -> anyhow::Result<()> {
    let rank0 = dist.rank() == 0;
    if args.out.exists() && !args.resume && !args.force {
        bail!(
            "{} exists: pass --resume to continue it or --force to overwrite it",
            args.out.display()
        );
    }
    let stages = match args.stages {
        None => None,
        Some(p) => {
            finercut_search::stages::check_method(args.method)?;
            let path = common::model_path(&args.model)?;
            let config = common::open_checkpoint(&path)?.config;
            let layout =
                finercut_search::stages::Stages::new(p, args.stage_margin, dist.size(), &config)?;
            Some(match args.micro_batches {
                0 => layout,
                m => layout.with_micro_batches(m),
            })
        }
    };
    let loaded = match &stages {
        None => common::load_model(&args.model, dist)?,
        Some(st) => {
            let window = st.window(st.place(dist.rank()).1);
            eprintln!(
                "rank {}: stage {} of {}, loading sublayers {}..{} (first step: {:?})",
                dist.rank(),
                st.place(dist.rank()).1,
                st.count,
                window.start,
                window.end,
                st.first_boundaries()
            );
            common::load_model_part(&args.model, dist, Some(window))?
        }
    };
    if !loaded.base_removed.is_empty() {
        bail!(
            "{} is a pruned export; search on the original model",
            loaded.path.display()
        );
    }
    let seqs = common::calibration_of(&args.calib, &loaded.checkpoint)?.seqs;

    let mut settings = Settings::new(args.method);
    if let Some(m) = args.metric {
        settings.metric = Some(m);
    }
    if let Some(l) = args.level {
        settings.level = l;
    }
    settings.stop = if args.to_end {
        Stop::End
    } else {
        Stop::Ratio(args.ratio)
    };
    settings.front_exclusion = args.front_exclusion;
    settings.samples = args.calib.samples;
    settings.seq_len = args.calib.seq_len;
    settings.calib_offset = args.calib.calib_offset;
    settings.seed = (args.method == Method::Random).then_some(args.seed);
    settings.threads = threads;
    settings.exhaustive = args.exhaustive;
    settings.weights = Some(match &stages {
        // What one process would record: the stages' storage added up (a collective).
        Some(st) => st.weight_summary(dist, &loaded.model)?,
        None => loaded.model.weight_storage_summary(),
    });
    if args.all_tokens {
        settings.token_selection = TokenSelection::All;
    }
    settings.validate()?;

    if rank0 {
        eprintln!("hashing {}", loaded.path.display());
    }
    let provenance = Provenance {
        model_sha256: loaded.checkpoint.sha256()?,
        data_sha256: Provenance::tokens_sha256(&seqs),
    };
    let t0 = Instant::now();
    let result = finercut_pipeline::execute_search_on_stages(
        dist,
        stages.as_ref(),
        &loaded,
        &seqs,
        &settings,
        provenance,
        &args.out,
        args.resume,
        true,
    )?;
    if !rank0 {
        return Ok(());
    }
    let order: Vec<String> = result.order().iter().map(|u| u.to_string()).collect();
    println!(
        "{} ({}) on {}: removed {} in {:.1} s, {:.1} forward-equivalents",
        settings.method,
        settings
            .metric
            .map(|m| m.to_string())
            .unwrap_or_else(|| "no metric".into()),
        loaded.path.display(),
        if !result.windows.is_empty() {
            "the windows listed in the result".to_string()
        } else if order.is_empty() {
            "nothing (the ratio is below one unit)".to_string()
        } else {
            order.join(" ")
        },
        t0.elapsed().as_secs_f64(),
        result.total_forward_equivalents()
    );
    println!("result: {}", args.out.display());
    Ok(())
}
