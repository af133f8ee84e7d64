//! `finercut export`: write a pruned checkpoint.
//!
//! Two layouts. The default drops the tensors of removed sublayers (the checkpoint is physically
//! smaller) and lists the removed sublayers in a `finercut` section of `config.json`; this project
//! loads it with that plan applied. `--hf-compatible` keeps the stock layout and zeroes the output
//! projections (`o_proj` / `down_proj`, and their biases) of removed sublayers, so unmodified
//! Hugging Face transformers loads it and computes the same logits: a removed branch then adds zero.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use finercut_format::{
    prepare_output_dir, write_safetensors_streamed, Bytes, Checkpoint, Overwrite, TensorSpec,
};
use finercut_search::export::{is_removed_tensor, ExportPlan, TensorLayout};
use finercut_search::{sublayer_name, SearchResult};

use crate::common;

/// Arguments of `finercut export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: crate::ModelArg,
    /// The result file of `finercut prune` whose plan to apply.
    #[arg(long, value_name = "RUN.json")]
    pub plan: PathBuf,
    /// Pruning ratio in (0, 1): the first ⌊2L·ratio⌋ sublayers of the run's removal order are
    /// removed.
    #[arg(long, value_parser = common::parse_ratio)]
    pub ratio: f64,
    /// Output directory (model.safetensors, config.json, tokenizer.json); refused if it already
    /// holds a checkpoint, unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace a checkpoint already in --out: its weight shards, index and JSON files are removed
    /// first, so none of the old weights can be loaded in place of the new ones.
    #[arg(long)]
    pub force: bool,
    /// Keep the stock Llama layout with zeroed o_proj / down_proj, loadable by unmodified
    /// transformers, instead of dropping the removed sublayers' tensors.
    #[arg(long)]
    pub hf_compatible: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let model_path = common::model_path(&args.model)?;
    let ckpt = common::open_checkpoint(&model_path)?;
    let result = SearchResult::load(&args.plan)?;
    let model_sha = ckpt.sha256()?;
    common::check_plan_matches(&result, &args.plan, &model_sha, &ckpt)?;
    let already = common::removed_in_checkpoint(&model_path)?;
    if !already.is_empty() {
        bail!(
            "{} is already a pruned export (removes {} sublayers); export from the original model",
            model_path.display(),
            already.len()
        );
    }
    let arch = ckpt.config.architecture.model_type();
    let layout = TensorLayout::for_architecture(arch)
        .with_context(|| format!("export does not know the tensor layout of `{arch}`"))?;
    let plan = ExportPlan::new(&result, args.ratio, layout)?;
    if same_directory(&model_path, &args.out) {
        bail!(
            "--out {} is the model being exported; write the export to another directory",
            args.out.display()
        );
    }
    prepare_output_dir(
        &args.out,
        if args.force {
            Overwrite::Replace
        } else {
            Overwrite::Refuse
        },
    )?;
    write_export(&ckpt, &plan, &result, &model_sha, &args)?;
    let names: Vec<String> = plan
        .removed_sublayers
        .iter()
        .map(|&i| sublayer_name(i))
        .collect();
    eprintln!(
        "wrote {} with {} sublayers removed ({}): {}",
        args.out.display(),
        names.len(),
        if args.hf_compatible {
            "zeroed output projections"
        } else {
            "tensors dropped"
        },
        names.join(" ")
    );
    Ok(())
}

/// Whether `a` and `b` name the same existing directory.
fn same_directory(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn write_export(
    ckpt: &Checkpoint,
    plan: &ExportPlan,
    result: &SearchResult,
    model_sha: &str,
    args: &Args,
) -> anyhow::Result<()> {
    let mut names = ckpt.weights.names();
    names.sort();
    let zeroed: Vec<String> = plan
        .removed_sublayers
        .iter()
        .flat_map(|&i| {
            let b = i / 2;
            if i % 2 == 0 {
                vec![
                    format!("model.layers.{b}.self_attn.o_proj.weight"),
                    format!("model.layers.{b}.self_attn.o_proj.bias"),
                ]
            } else {
                vec![
                    format!("model.layers.{b}.mlp.down_proj.weight"),
                    format!("model.layers.{b}.mlp.down_proj.bias"),
                ]
            }
        })
        .collect();
    let keep: Vec<String> = if args.hf_compatible {
        names
    } else {
        names
            .into_iter()
            .filter(|n| !is_removed_tensor(n, &plan.tensor_prefixes))
            .collect()
    };
    let mut specs = Vec::with_capacity(keep.len());
    for name in &keep {
        let t = ckpt.weights.get(name)?;
        specs.push(TensorSpec {
            name: name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        });
    }
    let weights_path = args.out.join("model.safetensors");
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors_streamed(&weights_path, &specs, &meta, |i| {
        let t = ckpt.weights.get(&keep[i])?;
        if args.hf_compatible && zeroed.contains(&keep[i]) {
            Ok(Bytes::from_vec(vec![0u8; t.data.len()]))
        } else {
            Ok(t.data)
        }
    })?;

    let mut config = ckpt.config.to_hf_json();
    let section = serde_json::json!({
        "removed_sublayers": if args.hf_compatible { Vec::new() } else { plan.removed_sublayers.iter().copied().collect::<Vec<_>>() },
        "zeroed_sublayers": if args.hf_compatible { plan.removed_sublayers.iter().copied().collect::<Vec<_>>() } else { Vec::new() },
        "removed": plan.removed_units.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
        "ratio": plan.ratio,
        "method": result.settings.method.name(),
        "metric": result.settings.metric.map(|m| m.to_string()),
        "level": result.settings.level.name(),
        "source_model_sha256": model_sha,
        "layout": if args.hf_compatible { "hf-compatible" } else { "dropped" },
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(obj) = config.as_object_mut() {
        obj.insert("finercut".into(), section);
    }
    common::write_json_atomic(&args.out.join("config.json"), &config)?;
    ckpt.tokenizer.save(&args.out.join("tokenizer.json"))?;
    Ok(())
}
