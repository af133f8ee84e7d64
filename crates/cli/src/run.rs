//! `finercut run` (top next tokens after a prompt) and `finercut ppl` (perplexity).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Context};
use finercut_eval::PerplexityOptions;
use finercut_search::SearchResult;

use crate::common::{self, Loaded};

/// Arguments of `finercut run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: crate::ModelArg,
    /// The prompt (encoded as the model's tokenizer does, with BOS where the model wants one).
    #[arg(long)]
    pub prompt: String,
    /// How many of the most likely next tokens to print.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Print one JSON object instead: the prompt's token ids, the removed sublayers and the
    /// next-token log-probabilities of the whole vocabulary.
    #[arg(long)]
    pub json: bool,
}

/// Optional pruning plan applied on top of the model.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// A result file of `finercut prune` to apply (needs --ratio).
    #[arg(long, value_name = "RUN.json", requires = "ratio")]
    pub plan: Option<PathBuf>,
    /// Pruning ratio of the plan, in (0, 1).
    #[arg(long, requires = "plan", value_parser = common::parse_ratio)]
    pub ratio: Option<f64>,
}

impl PlanArgs {
    /// The sublayers the plan removes at the ratio (empty without a plan), checked against the model.
    pub fn removed(&self, loaded: &Loaded) -> anyhow::Result<BTreeSet<usize>> {
        let (Some(path), Some(ratio)) = (&self.plan, self.ratio) else {
            return Ok(BTreeSet::new());
        };
        let result = SearchResult::load(path)?;
        let sha = loaded.checkpoint.sha256()?;
        common::check_plan_matches(&result, path, &sha, &loaded.checkpoint, "")?;
        Ok(result.plan_for_ratio(ratio)?)
    }
}

pub fn main(args: Args) -> anyhow::Result<()> {
    common::init_threads(None)?;
    let loaded = common::load_model(&args.model, &finercut_dist::Alone)?;
    let removed = args.plan.removed(&loaded)?;
    let plan = loaded.plan_with(&removed);
    let tok = &loaded.checkpoint.tokenizer;
    let ids = tok
        .encode(&args.prompt, tok.add_bos())
        .context("cannot tokenize the prompt")?;
    if ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let logits = loaded.model.forward(std::slice::from_ref(&ids), &plan)?;
    let all = logits.to_vec_f32()?;
    let vocab = loaded.checkpoint.config.vocab_size;
    let last = &all[all.len() - vocab..];
    let lse = finercut_metrics::log_sum_exp(last);
    if args.json {
        let logprobs: Vec<f64> = last.iter().map(|&x| x as f64 - lse).collect();
        let out = serde_json::json!({
            "ids": ids,
            "removed_sublayers": plan.removed().iter().collect::<Vec<_>>(),
            "logprobs": logprobs,
        });
        println!("{out}");
        return Ok(());
    }
    let mut order: Vec<usize> = (0..vocab).collect();
    order.sort_by(|&a, &b| last[b].total_cmp(&last[a]).then(a.cmp(&b)));
    println!("weights {}", loaded.model.weight_storage_summary());
    println!(
        "{} tokens; {} sublayers removed; most likely next tokens:",
        ids.len(),
        plan.removed().len()
    );
    for &id in order.iter().take(args.top) {
        let text = tok.decode(&[id as u32]).unwrap_or_default();
        println!(
            "{:>7}  {:>8.4}  p={:.4}  {:?}",
            id,
            last[id],
            (last[id] as f64 - lse).exp(),
            text
        );
    }
    Ok(())
}

/// Arguments of `finercut ppl`.
#[derive(Debug, clap::Args)]
pub struct PplArgs {
    #[command(flatten)]
    pub model: crate::ModelArg,
    /// Text to score, read as one string [default: the WikiText-2 raw test split built into the
    /// binary].
    #[arg(long, value_name = "FILE")]
    pub text: Option<PathBuf>,
    /// Window length in tokens; windows do not overlap and carry no BOS.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Score at most this many windows (the first ones).
    #[arg(long)]
    pub max_windows: Option<usize>,
    /// Leave out windows overlapping this calibration token range, START:END.
    #[arg(long, value_name = "START:END", value_parser = parse_range)]
    pub exclude: Option<(usize, usize)>,
    /// Print one JSON object (ppl, windows, tokens, …) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub plan: PlanArgs,
}

fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not START:END"))?;
    let a: usize = a.parse().map_err(|e| format!("`{a}`: {e}"))?;
    let b: usize = b.parse().map_err(|e| format!("`{b}`: {e}"))?;
    if a >= b {
        return Err(format!("empty range {a}:{b}"));
    }
    Ok((a, b))
}

pub fn ppl(args: PplArgs) -> anyhow::Result<()> {
    common::init_threads(args.threads)?;
    common::on_ranks(|dist| ppl_on(&args, dist))
}

/// The windows shared among the ranks of `dist`; rank 0 alone prints.
fn ppl_on(args: &PplArgs, dist: &dyn finercut_dist::Transport) -> anyhow::Result<()> {
    let loaded = common::load_model(&args.model, dist)?;
    let removed = args.plan.removed(&loaded)?;
    let (text, origin) = common::text_or_wikitext2(args.text.as_deref())?;
    let mut options = PerplexityOptions::new(args.seq_len);
    options.max_windows = args.max_windows;
    options.exclude = args.exclude.map(|(a, b)| a..b);
    let report =
        finercut_pipeline::perplexity_of_on(dist, &loaded, &removed, &text, &options, !args.json)?;
    if dist.rank() != 0 {
        return Ok(());
    }
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            if let Some(list) = o.remove("windows") {
                o.insert("window_nll".into(), list);
            }
            o.insert("windows".into(), report.windows_scored.into());
            o.insert("ppl".into(), report.perplexity.into());
            o.insert("tokens".into(), report.predicted_tokens.into());
            o.insert("text".into(), origin.into());
            o.insert("model".into(), loaded.path.display().to_string().into());
            o.insert("removed_sublayers".into(), serde_json::to_value(&removed)?);
            o.insert(
                "weights".into(),
                loaded.model.weight_storage_summary().into(),
            );
        }
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("weights {}", loaded.model.weight_storage_summary());
        println!(
            "perplexity {:.3} over {} windows of {} tokens ({} predicted tokens){}",
            report.perplexity,
            report.windows_scored,
            report.seq_len,
            report.predicted_tokens,
            if report.excluded_windows.is_empty() {
                String::new()
            } else {
                format!("; excluded windows {:?}", report.excluded_windows)
            }
        );
    }
    Ok(())
}
