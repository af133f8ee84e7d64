//! `finercut export`: write a pruned checkpoint.
//!
//! Four layouts (`--format`):
//! - `dropped` (default): the tensors of removed sublayers are dropped (the checkpoint is
//!   physically smaller) and a `finercut` section of `config.json` lists them; this project loads
//!   it with that plan applied. Its `model_type` is `finercut-dropped`
//!   ([`finercut_format::own_types`]), so stock loaders refuse it rather than fill the missing
//!   tensors with random values.
//! - `hf-compatible`: the family's stock layout (its own tensor names, GPT-NeoX's fused
//!   `query_key_value` joined back: `finercut_format::Family::stock_layout`) with zeroed output
//!   projections (`o_proj` / `down_proj`, GPT-NeoX's `attention.dense` / `mlp.dense_4h_to_h`, and
//!   their biases) of removed sublayers, so unmodified Hugging Face transformers loads it and
//!   computes the same logits: a removed branch then adds zero. As large and as slow as the dense
//!   model.
//! - `gguf`: a GGUF file that llama.cpp runs with the removed sublayers physically absent
//!   (its `deci` architecture; see `finercut_format::gguf::deci`); tensors are copied byte for
//!   byte from the source GGUF.
//! - `hf-nas`: safetensors and a Nemotron-NAS (`DeciLMForCausalLM`) `config.json` with one
//!   `block_configs` entry per block, which vLLM serves; whole removed blocks are dropped and the
//!   rest renumbered.
//!
//! finercut loads all four and computes the pruned model's logits. Every layout is written
//! beside `--out` and renamed into place ([`StagedDir`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use finercut_format::gguf::deci::kept_blocks;
use finercut_format::gguf::pruned_from_gguf;
use finercut_format::nas::{nas_config_json, NAS_CONFIGURATION_PY};
use finercut_format::own_types::{mark, stock_weights_metadata, OwnLayout};
use finercut_format::{
    checkpoint_files, f32_to_bytes, write_safetensors_streamed, Bytes, Checkpoint, DType, GgufFile,
    ModelConfig, Overwrite, StagedDir, TensorSource, TensorSpec,
};
use finercut_search::export::{is_removed_tensor, ExportPlan, HfCompatible, TensorLayout};
use finercut_search::{sublayer_name, SearchResult};

use crate::common;

/// The layout `finercut export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Removed sublayers' tensors dropped; a `finercut` section in config.json lists them.
    Dropped,
    /// Stock layout with zeroed output projections: unmodified transformers loads it.
    HfCompatible,
    /// GGUF for llama.cpp (`deci` architecture when sublayers are removed).
    Gguf,
    /// Safetensors with a Nemotron-NAS (DeciLMForCausalLM) config.json, served by vLLM.
    HfNas,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Dropped => "dropped",
            Format::HfCompatible => "hf-compatible",
            Format::Gguf => "gguf",
            Format::HfNas => "hf-nas",
        }
    }
}

/// Storage type of tensors converted from a Hugging Face checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutType {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl OutType {
    /// The element type it names.
    pub fn dtype(self) -> DType {
        match self {
            OutType::F32 => DType::F32,
            OutType::F16 => DType::F16,
            OutType::Bf16 => DType::BF16,
        }
    }
}

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
    /// Output directory; refused if it already holds a checkpoint (or, for `--format gguf`, a
    /// `.gguf` file), unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Layout to write: `dropped` (finercut's own), `hf-compatible` (stock layout, zeroed output
    /// projections), `gguf` (llama.cpp, `DIR/model.gguf`), `hf-nas` (Nemotron-NAS safetensors
    /// for vLLM).
    #[arg(long, value_enum, default_value = "dropped")]
    pub format: Format,
    /// Same as `--format hf-compatible`.
    #[arg(long, conflicts_with = "format")]
    pub hf_compatible: bool,
    /// Storage type of the tensors of `hf-nas` and `gguf` exports [default: as stored, f32 for
    /// a GGUF source in `hf-nas`; a `gguf` export copies the source GGUF's tensors unchanged].
    /// A `gguf` export dequantises quantised matrices into this type (1-D tensors stay f32).
    #[arg(long, value_enum)]
    pub outtype: Option<OutType>,
    /// The model the plan was searched on, when --model is another copy of it (e.g. the Hugging
    /// Face checkpoint that this GGUF was converted from, or a GGUF conversion of this checkpoint):
    /// the plan's SHA-256 is checked against this model instead, and its shape (architecture,
    /// blocks, widths, heads, vocabulary) against --model's. Without it the plan must have been
    /// searched on --model itself.
    #[arg(long, value_name = "DIR|FILE.gguf")]
    pub searched_on: Option<PathBuf>,
    /// Replace a checkpoint already in --out: the export is written beside it and renamed into
    /// its place once complete, replacing the old weight shards, index and JSON files (and, for
    /// `--format gguf`, its `.gguf` files) and keeping other files, so none of the old weights
    /// can be loaded in place of the new ones and an interrupted export leaves the old one.
    #[arg(long)]
    pub force: bool,
}

impl Args {
    fn effective_format(&self) -> Format {
        if self.hf_compatible {
            Format::HfCompatible
        } else {
            self.format
        }
    }
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let format = args.effective_format();
    let model_path = common::model_path(&args.model)?;
    let ckpt = common::open_checkpoint(&model_path)?;
    let result = SearchResult::load(&args.plan)?;
    let model_sha = match &args.searched_on {
        None => {
            let sha = ckpt.sha256()?;
            common::check_plan_matches(
                &result,
                &args.plan,
                &sha,
                &ckpt,
                ", or name it with --searched-on when --model is another copy of it (e.g. its GGUF \
                 conversion)",
            )?;
            sha
        }
        Some(path) => {
            let searched = common::open_checkpoint(path)?;
            let sha = searched.sha256()?;
            common::check_plan_matches(&result, &args.plan, &sha, &searched, " as --searched-on")?;
            check_same_shape(&searched.config, path, &ckpt.config, &model_path)?;
            ckpt.sha256()?
        }
    };
    let mut already = common::removed_in_checkpoint(&model_path)?;
    already.extend(ckpt.absent_sublayers.iter().copied());
    if !already.is_empty() {
        bail!(
            "{} is already a pruned export (removes {} sublayers); export from the original model",
            model_path.display(),
            already.len()
        );
    }
    if args.outtype.is_some() && !matches!(format, Format::HfNas | Format::Gguf) {
        bail!(
            "--outtype applies to --format hf-nas and gguf; {} keeps the source's tensor types",
            format.name()
        );
    }
    if ckpt.config.slicing().is_some() && format != Format::Dropped {
        bail!(
            "{} is a SliceGPT model: stock runtimes do not compute its residual shortcut matrices, \
             so it exports only as --format dropped (which finercut loads), not {}",
            model_path.display(),
            format.name()
        );
    }
    let arch = ckpt.config.architecture.model_type();
    let layout = TensorLayout::for_architecture(arch)
        .with_context(|| format!("export does not know the tensor layout of `{arch}`"))?;
    let plan = ExportPlan::new(&result, args.ratio, layout)?;
    if format == Format::Gguf {
        gguf_source(&ckpt)?;
    }
    let model_dir = if model_path.is_file() {
        model_path.parent().unwrap_or(Path::new("."))
    } else {
        model_path.as_path()
    };
    if same_directory(model_dir, &args.out) {
        bail!(
            "--out {} is the model being exported; write the export to another directory",
            args.out.display()
        );
    }
    if format == Format::HfCompatible {
        if let Err(why) = ckpt.config.family().hf_compatible_export() {
            bail!("--format hf-compatible: {why}");
        }
    }
    let staged = prepare_export_dir(&args.out, format, args.force)?;
    common::warn_notes(staged.notes());
    let out = staged.path();
    let what = match format {
        Format::Dropped | Format::HfCompatible => {
            write_safetensors_export(&ckpt, &plan, &result, &model_sha, out, format)?;
            if format == Format::Dropped {
                "tensors dropped".to_string()
            } else {
                "zeroed output projections".to_string()
            }
        }
        Format::Gguf => {
            let path = write_gguf_export(&ckpt, &plan, out, args.outtype)?;
            let name = path.file_name().unwrap_or_default();
            format!("GGUF {}", args.out.join(name).display())
        }
        Format::HfNas => {
            write_nas_export(&ckpt, &plan, out, args.outtype)?;
            "Nemotron-NAS layout".to_string()
        }
    };
    if format == Format::Gguf {
        // The new `.gguf` replaces an old one (refused above unless --force): a directory with
        // two opens as neither.
        staged.commit_replacing(|name| name.ends_with(".gguf"))?;
    } else {
        staged.commit()?;
    }
    let names: Vec<String> = plan
        .removed_sublayers
        .iter()
        .map(|&i| sublayer_name(i))
        .collect();
    eprintln!(
        "wrote {} with {} sublayers removed ({what}): {}",
        args.out.display(),
        names.len(),
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

/// `.gguf` files in `dir`, sorted (none when `dir` does not exist).
fn gguf_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "gguf") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Starts writing an export in `format` to `out` ([`StagedDir`]: written beside `out`, renamed
/// into its place by the caller's commit), refusing a checkpoint already there unless `force`; a
/// GGUF export also refuses the `.gguf` files already there unless `force` (the commit then
/// replaces them), since a directory with two `.gguf` files opens as neither.
fn prepare_export_dir(out: &Path, format: Format, force: bool) -> anyhow::Result<StagedDir> {
    let overwrite = if force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    if format == Format::Gguf && !force {
        let stale = gguf_files(out)?;
        if !stale.is_empty() {
            let mut names: Vec<String> = stale
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            names.extend(checkpoint_files(out)?);
            bail!(
                "{}: already holds a checkpoint ({}); choose another directory or overwrite it with --force",
                out.display(),
                names.join(", ")
            );
        }
    }
    Ok(StagedDir::begin(out, overwrite)?)
}

/// The GGUF file a GGUF export copies its tensors from: the model itself.
fn gguf_source(ckpt: &Checkpoint) -> anyhow::Result<&Path> {
    match ckpt.files.as_slice() {
        [one] if one.extension().is_some_and(|e| e == "gguf") => Ok(one),
        _ => bail!(
            "--format gguf needs a GGUF model as the source (its tensor types are kept, so \
             Q4_1 stays Q4_1); writing GGUF from a Hugging Face checkpoint is not implemented: \
             convert it with llama.cpp's convert_hf_to_gguf.py first, or export --format hf-nas"
        ),
    }
}

/// Fails unless `other` (at `other_path`) has the shape of `config` (at `path`): the same
/// architecture, block count, widths, heads and vocabulary, so that a plan searched on one
/// removes the same sublayers of the other.
fn check_same_shape(
    other: &ModelConfig,
    other_path: &Path,
    config: &ModelConfig,
    path: &Path,
) -> anyhow::Result<()> {
    let (a, b) = (
        other.architecture.model_type(),
        config.architecture.model_type(),
    );
    if a != b {
        bail!(
            "--searched-on {} is a `{a}` model and {} a `{b}` one: a plan searched on one does not \
             apply to the other",
            other_path.display(),
            path.display()
        );
    }
    for ((name, x), (_, y)) in other.shape().into_iter().zip(config.shape()) {
        if x != y {
            bail!(
                "--searched-on {} has {name} {x} and {} has {y}: they are not copies of one model",
                other_path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// The GGUF export: `out/model.gguf`, from a GGUF source with its tensors copied unchanged.
/// With `outtype`, matrices are stored in that type instead (dequantised).
fn write_gguf_export(
    ckpt: &Checkpoint,
    plan: &ExportPlan,
    out: &Path,
    outtype: Option<OutType>,
) -> anyhow::Result<PathBuf> {
    let source = gguf_source(ckpt)?;
    let file = GgufFile::open(source)?;
    let mut model = pruned_from_gguf(&file, &plan.removed_sublayers)
        .with_context(|| format!("cannot export {} as GGUF", source.display()))?;
    if let Some(t) = outtype {
        model.store_floats_as(t.dtype(), source)?;
    }
    let path = out.join("model.gguf");
    model.write(&path)?;
    Ok(path)
}

/// `model.layers.{b}.rest` with block `b` renumbered, or `None` when block `b` is dropped; other
/// names unchanged.
fn renumbered(name: &str, renumber: &[Option<usize>]) -> Option<String> {
    let Some(rest) = name.strip_prefix("model.layers.") else {
        return Some(name.to_string());
    };
    let Some((b, tail)) = rest.split_once('.') else {
        return Some(name.to_string());
    };
    let Ok(b) = b.parse::<usize>() else {
        return Some(name.to_string());
    };
    let nb = (*renumber.get(b)?)?;
    Some(format!("model.layers.{nb}.{tail}"))
}

/// The Nemotron-NAS export: safetensors with removed sublayers' tensors dropped and blocks
/// renumbered, config.json with `block_configs`, the configuration class, tokenizer files.
fn write_nas_export(
    ckpt: &Checkpoint,
    plan: &ExportPlan,
    out: &Path,
    outtype: Option<OutType>,
) -> anyhow::Result<()> {
    let config = &ckpt.config;
    let kept = kept_blocks(config.num_hidden_layers, &plan.removed_sublayers);
    let blocks: Vec<(bool, bool)> = kept.iter().map(|k| (k.attn, k.ffn)).collect();
    let mut renumbering = vec![None; config.num_hidden_layers];
    for (new, k) in kept.iter().enumerate() {
        renumbering[k.source] = Some(new);
    }
    if config.rope_scaling == finercut_format::RopeScaling::Factors {
        bail!(
            "--format hf-nas: this GGUF's RoPE frequencies come from its `{}` tensor, which \
             config.json cannot hold; convert it first (`finercut convert` writes the `llama3` \
             rope_scaling that gives them) and export the converted directory",
            finercut_format::ROPE_FREQS_TENSOR
        );
    }
    let mut out_config = config.clone();
    if let Some(t) = outtype {
        out_config.torch_dtype = t.dtype();
    }
    let json = nas_config_json(&out_config, &blocks)?;
    let mut names = ckpt.weights.names();
    names.sort();
    let mut keep: Vec<(String, String)> = Vec::new();
    for n in names {
        if is_removed_tensor(&n, &plan.tensor_prefixes) {
            continue;
        }
        if let Some(new) = renumbered(&n, &renumbering) {
            keep.push((n, new));
        }
    }
    let mut specs = Vec::with_capacity(keep.len());
    for (old, new) in &keep {
        let t = ckpt.weights.get(old)?;
        specs.push(TensorSpec {
            name: new.clone(),
            dtype: outtype.map_or(t.dtype, OutType::dtype),
            shape: t.shape.clone(),
        });
    }
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors_streamed(&out.join("model.safetensors"), &specs, &meta, |i| {
        let t = ckpt.weights.get(&keep[i].0)?;
        match outtype {
            Some(o) if o.dtype() != t.dtype => {
                Ok(Bytes::from_vec(f32_to_bytes(&t.to_f32_vec()?, o.dtype())))
            }
            _ => Ok(t.data),
        }
    })?;
    common::write_json_atomic(&out.join("config.json"), &json)?;
    finercut_format::io::write_bytes_atomically(
        &out.join("configuration_decilm.py"),
        NAS_CONFIGURATION_PY.as_bytes(),
    )?;
    ckpt.tokenizer.save(&out.join("tokenizer.json"))?;
    common::write_json_atomic(
        &out.join("tokenizer_config.json"),
        &ckpt
            .tokenizer
            .hf_tokenizer_config(config.max_position_embeddings),
    )?;
    let generation = serde_json::json!({
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    });
    common::write_json_atomic(&out.join("generation_config.json"), &generation)?;
    Ok(())
}

fn write_safetensors_export(
    ckpt: &Checkpoint,
    plan: &ExportPlan,
    result: &SearchResult,
    model_sha: &str,
    out: &Path,
    format: Format,
) -> anyhow::Result<()> {
    let hf_compatible = format == Format::HfCompatible;
    // hf-compatible: the family's stock layout (its own tensor names, fused tensors joined back)
    // with the removed sublayers' output projections zeroed; dropped: the shared names, the
    // removed sublayers' tensors left out.
    let stock = HfCompatible::new(&ckpt.config, ckpt.weights.as_ref(), &plan.removed_sublayers);
    let source: &dyn TensorSource = if hf_compatible {
        &stock
    } else {
        ckpt.weights.as_ref()
    };
    let keep: Vec<String> = if hf_compatible {
        stock.names()
    } else {
        let mut names = ckpt.weights.names();
        names.sort();
        names
            .into_iter()
            .filter(|n| !is_removed_tensor(n, &plan.tensor_prefixes))
            .collect()
    };
    let mut specs = Vec::with_capacity(keep.len());
    for name in &keep {
        let t = source.get(name)?;
        specs.push(TensorSpec {
            name: name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        });
    }
    // The dropped layout's weights get their own file name and `format`, which stock loaders
    // refuse (by Auto class or by class name: `finercut_format::own_types`).
    let (weights_path, meta) = if hf_compatible {
        (out.join("model.safetensors"), stock_weights_metadata())
    } else {
        (
            out.join(OwnLayout::Dropped.weights_file()),
            OwnLayout::Dropped.weights_metadata(),
        )
    };
    write_safetensors_streamed(&weights_path, &specs, &meta, |i| {
        Ok(source.get(&keep[i])?.data)
    })?;

    let mut config = ckpt.config.to_hf_json();
    let removed: Vec<usize> = plan.removed_sublayers.iter().copied().collect();
    let section = serde_json::json!({
        "removed_sublayers": if hf_compatible { Vec::new() } else { removed.clone() },
        "zeroed_sublayers": if hf_compatible { removed } else { Vec::new() },
        "removed": plan.removed_units.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
        "ratio": plan.ratio,
        "method": result.settings.method.name(),
        "metric": result.settings.metric.map(|m| m.to_string()),
        "level": result.settings.level.name(),
        "source_model_sha256": model_sha,
        "searched_on_sha256": result.provenance.model_sha256,
        "layout": format.name(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(obj) = config.as_object_mut() {
        obj.insert("finercut".into(), section);
    }
    let config_path = out.join("config.json");
    if !hf_compatible {
        // Stock loaders would fill the dropped tensors with random values: give them a
        // model_type they refuse (finercut reads the source's back from the section).
        mark(
            &mut config,
            OwnLayout::Dropped,
            &config_path.display().to_string(),
        )?;
    }
    common::write_json_atomic(&config_path, &config)?;
    ckpt.tokenizer.save(&out.join("tokenizer.json"))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renumbering_drops_and_shifts_blocks() {
        let r = [Some(0), None, Some(1)];
        assert_eq!(
            renumbered("model.layers.2.mlp.up_proj.weight", &r).as_deref(),
            Some("model.layers.1.mlp.up_proj.weight")
        );
        assert_eq!(renumbered("model.layers.1.mlp.up_proj.weight", &r), None);
        assert_eq!(
            renumbered("model.norm.weight", &r).as_deref(),
            Some("model.norm.weight")
        );
    }

    #[test]
    fn gguf_export_refuses_a_gguf_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        prepare_export_dir(&out, Format::Gguf, false)
            .unwrap()
            .commit()
            .unwrap();
        std::fs::write(out.join("README"), b"1").unwrap();
        drop(prepare_export_dir(&out, Format::Gguf, false).unwrap());
        std::fs::write(out.join("old.gguf"), b"1").unwrap();
        let e = prepare_export_dir(&out, Format::Gguf, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("old.gguf") && e.contains("--force"), "{e}");
        // Other layouts leave a GGUF alone.
        prepare_export_dir(&out, Format::HfNas, false)
            .unwrap()
            .commit()
            .unwrap();
        assert!(out.join("old.gguf").exists());
        let staged = prepare_export_dir(&out, Format::Gguf, true).unwrap();
        std::fs::write(staged.path().join("model.gguf"), b"2").unwrap();
        staged.commit_replacing(|n| n.ends_with(".gguf")).unwrap();
        assert!(!out.join("old.gguf").exists());
        assert!(out.join("model.gguf").exists());
        assert!(out.join("README").exists());
        let file = dir.path().join("f");
        std::fs::write(&file, b"1").unwrap();
        assert!(prepare_export_dir(&file, Format::Gguf, true).is_err());
    }
}
