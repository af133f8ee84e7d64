//! `finercut slice`: SliceGPT (a width-pruning baseline) on a model, saved as a checkpoint that
//! every other command loads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use finercut_format::Overwrite;
use finercut_slice::{
    dim_for_ratio, dim_for_removed_params, removed_params, slice_model, sliced_param_count,
    SliceSettings,
};
use serde_json::json;

use crate::common;
use crate::export::OutType;

/// Arguments of `finercut slice`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("width").required(true).args(["dim", "ratio", "remove_params"])))]
pub struct Args {
    #[command(flatten)]
    pub model: crate::ModelArg,
    /// Residual width d' after slicing (1..=hidden_size).
    #[arg(long, value_name = "D")]
    pub dim: Option<usize>,
    /// Fraction of the hidden_size dimensions sliced away, in (0, 1): d' = ⌊(1 − R)·hidden_size⌋
    /// (SliceGPT's slicing ratio, without its rounding to a multiple of 8).
    #[arg(long, value_name = "R", value_parser = common::parse_ratio)]
    pub ratio: Option<f64>,
    /// Remove at least N parameters: the largest d' whose sliced model (untied head and shortcut
    /// matrices included) has at least N parameters fewer than the dense model.
    #[arg(long, value_name = "N")]
    pub remove_params: Option<usize>,
    #[command(flatten)]
    pub calib: crate::CalibArg,
    /// Worker threads [default: all cores]. Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Output directory: model.safetensors, config.json with a `slicegpt` section (and model_type
    /// `finercut-slicegpt`, which stock loaders refuse: they would ignore the shortcut matrices),
    /// tokenizer.json. Load it with `--model DIR` in any finercut command.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Storage type of the saved weights: f32 keeps the computed weights exactly (what
    /// `finercut reproduce` evaluates); f16 and bf16 halve the file, rounding each weight to
    /// nearest even.
    #[arg(long, value_enum, default_value_t = OutType::F32)]
    pub outtype: OutType,
    /// Replace a checkpoint already in --out (written beside it, renamed into its place once
    /// complete).
    #[arg(long)]
    pub force: bool,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    common::init_threads(args.threads)?;
    let loaded = common::load_model(&args.model, &finercut_dist::Alone)?;
    if !loaded.base_removed.is_empty() {
        bail!(
            "{} is a pruned export; slice the original model",
            loaded.path.display()
        );
    }
    let model = &loaded.model;
    let config = model.config();
    finercut_slice::check_supported(config)?;
    let d = config.hidden_size;
    let dense_params = model.param_count();
    let dim = match (args.dim, args.ratio, args.remove_params) {
        (Some(k), _, _) => {
            if k == 0 || k > d {
                bail!("--dim {k} is not in 1..={d}");
            }
            k
        }
        (_, Some(r), _) => dim_for_ratio(d, r)?,
        (_, _, Some(n)) => dim_for_removed_params(config, dense_params, n)?,
        _ => bail!("give one of --dim, --ratio, --remove-params"),
    };

    let calib = common::calibration_of(&args.calib, &loaded.checkpoint)?;
    let (samples, seq_len) = (args.calib.samples, args.calib.seq_len);
    let model_sha256 = loaded.checkpoint.sha256()?;
    let rows = samples * seq_len;
    if dim > rows {
        eprintln!(
            "warning: {rows} calibration tokens give covariances of rank at most {rows} < d' = {dim}; \
             the last {} kept directions are arbitrary (give more --samples or a longer --seq-len)",
            dim - rows
        );
    }

    eprintln!(
        "slicing {} from d = {d} to d' = {dim} on {} × {} calibration tokens",
        loaded.path.display(),
        samples,
        seq_len
    );
    let start = Instant::now();
    let sliced = slice_model(model, &calib.seqs, &SliceSettings { dim })?;
    let slice_secs = start.elapsed().as_secs_f64();

    let extra = BTreeMap::from([
        ("source_model_sha256".to_string(), json!(model_sha256)),
        (
            "calibration_data".to_string(),
            json!({
                "origin": calib.origin,
                "sha256": calib.source_sha256,
                "offset": args.calib.calib_offset,
            }),
        ),
    ]);
    let overwrite = if args.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    let save_start = Instant::now();
    let notes = sliced
        .save(
            &args.out,
            overwrite,
            Some(&loaded.checkpoint.tokenizer),
            &extra,
            args.outtype.dtype(),
        )
        .with_context(|| format!("cannot write the sliced model to {}", args.out.display()))?;
    common::warn_notes(&notes);
    let after = sliced.param_count();
    debug_assert_eq!(after, sliced_param_count(config, dim));
    println!(
        "d' = {dim} of d = {d} (slicing ratio {:.4})",
        1.0 - dim as f64 / d as f64
    );
    println!("parameters: {dense_params} dense, {after} sliced");
    println!(
        "removed: {} ({:.2}% of the dense model)",
        removed_params(config, dense_params, dim),
        100.0 * removed_params(config, dense_params, dim) as f64 / dense_params as f64
    );
    println!(
        "time: {slice_secs:.2} s slicing, {:.2} s saving; written to {}",
        save_start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
