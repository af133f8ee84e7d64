//! Finding, opening and loading a model.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use finercut_format::{cache, Checkpoint};
use finercut_model::{Model, Plan, WeightDtype};
use finercut_tensor::{DType, Device};

use crate::error::{bail, invalid, Context, Result};

/// How to load a model: where it runs and how its weight matrices are held.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The device the model runs on.
    pub device: Device,
    /// How weight matrices are held on the CPU (as stored, or widened to f32 at load).
    pub weights: WeightDtype,
    /// The dtype weight matrices are uploaded in on a CUDA device (f32 or bf16).
    pub matrix_dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            weights: WeightDtype::Stored,
            matrix_dtype: DType::F32,
        }
    }
}

/// `path` when given (it must exist), else the default SmolLM2 in the cache.
pub fn model_path(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(p) => {
            if !p.exists() {
                bail!("model {} does not exist", p.display());
            }
            Ok(p.to_path_buf())
        }
        None => {
            let p = cache::default_model_path();
            if !p.is_file() {
                bail!(
                    "the default model is not in the cache ({}): run `cargo xtask fetch smollm2` \
                     or pass --model",
                    p.display()
                );
            }
            Ok(p)
        }
    }
}

/// Opens a checkpoint, naming the path in the error; keys of its config.json that were ignored
/// as unknown are listed in one warning on stderr.
pub fn open_checkpoint(path: &Path) -> Result<Checkpoint> {
    let ckpt =
        Checkpoint::open(path).with_context(|| format!("cannot open model {}", path.display()))?;
    if !ckpt.unknown_config_keys.is_empty() {
        eprintln!(
            "warning: {}: ignoring unknown config.json keys: {}",
            path.display(),
            ckpt.unknown_config_keys.join(", ")
        );
    }
    Ok(ckpt)
}

/// Sublayers removed by a `finercut export` checkpoint (its `config.json` section `finercut`).
pub fn removed_in_checkpoint(path: &Path) -> Result<BTreeSet<usize>> {
    let config = path.join("config.json");
    if !path.is_dir() || !config.is_file() {
        return Ok(BTreeSet::new());
    }
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", config.display()))?;
    let Some(list) = json
        .get("finercut")
        .and_then(|s| s.get("removed_sublayers"))
    else {
        return Ok(BTreeSet::new());
    };
    let list = list.as_array().ok_or_else(|| {
        invalid!(
            "{}: finercut.removed_sublayers is not a list",
            config.display()
        )
    })?;
    list.iter()
        .map(|v| {
            v.as_u64().map(|i| i as usize).ok_or_else(|| {
                invalid!(
                    "{}: finercut.removed_sublayers holds {v}, not a sublayer index",
                    config.display()
                )
            })
        })
        .collect()
}

/// A loaded model with the plan its checkpoint already applies (empty unless it is an export).
pub struct Loaded {
    /// The opened checkpoint (config, tokenizer, weights).
    pub checkpoint: Checkpoint,
    /// The model built from it.
    pub model: Model,
    /// Sublayers the checkpoint itself removed (`finercut export`).
    pub base_removed: BTreeSet<usize>,
    /// Where it was loaded from.
    pub path: PathBuf,
}

impl Loaded {
    /// The plan of the checkpoint with `extra` sublayers removed as well.
    pub fn plan_with(&self, extra: &BTreeSet<usize>) -> Plan {
        Plan::from_removed(self.base_removed.iter().chain(extra).copied())
    }
}

/// Opens the checkpoint at `path` (a directory or a `.gguf` file) and builds its model.
pub fn load_model(path: &Path, options: &LoadOptions) -> Result<Loaded> {
    load_model_part(path, options, None)
}

/// [`load_model`], building only sublayers `part` when given (a pipeline stage's window,
/// `finercut_search::stages`): only their tensors are read, with the embeddings when `part`
/// starts at 0 and the final norm and LM head when it ends at 2L.
pub fn load_model_part(
    path: &Path,
    options: &LoadOptions,
    part: Option<std::ops::Range<usize>>,
) -> Result<Loaded> {
    let checkpoint = open_checkpoint(path)?;
    let mut base_removed = removed_in_checkpoint(path)?;
    base_removed.extend(checkpoint.absent_sublayers.iter().copied());
    let model = Model::load_with_options(
        &checkpoint.config,
        checkpoint.weights.as_ref(),
        &options.device,
        &finercut_model::LoadOptions {
            absent: base_removed.clone(),
            weight_dtype: options.weights,
            matrix_dtype: options.matrix_dtype,
            sublayers: part,
        },
    )
    .with_context(|| format!("cannot build the model from {}", path.display()))?;
    eprintln!("weights: {}", model.weight_storage_summary());
    Ok(Loaded {
        checkpoint,
        model,
        base_removed,
        path: path.to_path_buf(),
    })
}
