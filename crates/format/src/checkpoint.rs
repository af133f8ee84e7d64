//! [`Checkpoint`]: configuration, tokenizer and weights of a model, from a Hugging Face directory
//! or a GGUF file; and [`convert_gguf_to_hf`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::config::{llama3_from_rope_factors, ModelConfig, RopeScaling, ROPE_FREQS_TENSOR};
use crate::error::IoResultExt;
use crate::gguf::{GgufFile, GgufStore};
use crate::io::{sha256_files, write_json};
use crate::safetensors::{write_safetensors_streamed, SafetensorsStore, TensorSpec};
use crate::staged::StagedDir;
use crate::tensor::{f32_to_bytes, Bytes, DType, TensorSource};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// A model on disk, opened.
pub struct Checkpoint {
    /// The checked configuration.
    pub config: ModelConfig,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The weights, by Hugging Face name.
    pub weights: Box<dyn TensorSource>,
    /// The weight files, in the order [`Checkpoint::sha256`] hashes them.
    pub files: Vec<PathBuf>,
    /// Keys of `config.json` that were ignored as unknown ([`crate::RawConfig::unknown_keys`]);
    /// empty for GGUF. Worth a warning: a setting this crate does not know may be one the model
    /// needs.
    pub unknown_config_keys: Vec<String>,
    /// Sublayers the checkpoint itself does not have (`2b` = attention of block `b`, `2b + 1`
    /// its FFN): the removed sublayers of a pruned `deci` GGUF or a Nemotron-NAS
    /// (`DeciLMForCausalLM`) directory. Empty for other models.
    pub absent_sublayers: BTreeSet<usize>,
}

/// The name of the input embedding, whose rows every token id must index.
const EMBEDDING: &str = "model.embed_tokens.weight";

impl Checkpoint {
    /// Opens `path`: a Hugging Face directory (config.json, tokenizer.json, model.safetensors or
    /// a sharded index, or the weights file of one of finercut's own layouts, whose `format`
    /// must match config.json: [`crate::own_types::check_weights_format`]), a `.gguf` file, or a directory holding exactly one `.gguf` file and no
    /// config.json.
    ///
    /// A tokenizer that can produce ids beyond the embedding's rows is refused here, naming the
    /// tokenizer, its vocabulary size and the rows, rather than at the first forward pass.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let config_path = path.join("config.json");
            if !config_path.is_file() {
                let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
                    .with_path(path)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                    .collect();
                return match ggufs.as_slice() {
                    [one] => Self::open_gguf(one),
                    _ => Err(Error::malformed(
                        path,
                        "neither a Hugging Face checkpoint (no config.json) nor a directory with a single .gguf file",
                    )),
                };
            }
            let (config, unknown_config_keys, absent_sublayers) =
                crate::nas::read_config(&config_path)?;
            let mut tokenizer = Tokenizer::from_file(&path.join("tokenizer.json"))?;
            tokenizer.set_special_ids_if_missing(config.bos_token_id, config.eos_token_id);
            let store = SafetensorsStore::open(path)?;
            let config_text = std::fs::read_to_string(&config_path).with_path(&config_path)?;
            crate::own_types::check_weights_format(
                crate::own_types::layout_of_config_text(&config_text),
                &store.metadata(),
                &store.origin().display().to_string(),
                &config_path.display().to_string(),
            )?;
            let files = store.files();
            // The family's view of the stored tensors, under the shared names.
            let weights = config.family().weights(&config, Box::new(store));
            let embedding = weights.get(EMBEDDING).ok().map(|t| t.shape);
            check_tokenizer(&tokenizer, &config, embedding.as_deref())?;
            Ok(Checkpoint {
                config,
                tokenizer,
                weights,
                files,
                unknown_config_keys,
                absent_sublayers,
            })
        } else {
            Self::open_gguf(path)
        }
    }

    fn open_gguf(path: &Path) -> Result<Self> {
        let file = Arc::new(GgufFile::open(path)?);
        let config = ModelConfig::from_gguf(&file)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let absent_sublayers = if file.architecture()? == "deci" {
            let (layers, ..) = crate::gguf::deci::deci_layers(&file)?;
            crate::gguf::deci::absent_sublayers(&layers)
        } else {
            BTreeSet::new()
        };
        let store = GgufStore::new(file)?;
        check_tokenizer(&tokenizer, &config, store.shape(EMBEDDING))?;
        Ok(Checkpoint {
            config,
            tokenizer,
            weights: Box::new(store),
            files: vec![path.to_path_buf()],
            unknown_config_keys: Vec::new(),
            absent_sublayers,
        })
    }

    /// SHA-256 (hex) over the weight files in order, streamed.
    pub fn sha256(&self) -> Result<String> {
        sha256_files(&self.files)
    }
}

/// Checks that the tokenizer's ids index the embedding: its rows as stored (`shape`), or
/// `vocab_size` of the configuration when the tensor is not there (the model reports that).
fn check_tokenizer(
    tokenizer: &Tokenizer,
    config: &ModelConfig,
    shape: Option<&[usize]>,
) -> Result<()> {
    match shape.and_then(|s| s.first()) {
        Some(&rows) => tokenizer.check_fits_embedding(rows, EMBEDDING),
        None => tokenizer.check_fits_embedding(config.vocab_size, "vocab_size of config.json"),
    }
}

/// What to do when an output directory already holds a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse, with an error that names the directory and the files found.
    Refuse,
    /// Replace the old checkpoint (see [`StagedDir`]).
    Replace,
}

/// Names of the files in `dir` that make it (part of) a Hugging Face checkpoint: `config.json`,
/// the tokenizer and generation settings, `*.safetensors` shards and `*.safetensors.index.json`
/// indexes, sorted. Empty when `dir` does not exist.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<String>> {
    const FILES: [&str; 5] = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ];
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_path(dir)? {
        let entry = entry.with_path(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if FILES.contains(&name.as_str())
            || name.ends_with(".safetensors")
            || name.ends_with(".safetensors.index.json")
        {
            found.push(name);
        }
    }
    found.sort();
    Ok(found)
}

/// Converts a GGUF model into a Hugging Face directory that transformers loads as is:
/// `model.safetensors` (tensors dequantised, Q/K un-permuted, stored as `dtype`, with
/// `__metadata__` `{"format": "pt", …}`), `config.json`, `tokenizer.json`,
/// `tokenizer_config.json` and `generation_config.json`.
///
/// The directory is written beside `out_dir` and renamed into place ([`StagedDir`]), so a failure
/// leaves no half-written checkpoint behind. Tensors are dequantised one at a time.
///
/// An `out_dir` that already holds a checkpoint is refused; [`convert_gguf_to_hf_replacing`]
/// replaces one.
pub fn convert_gguf_to_hf(gguf: &Path, out_dir: &Path, dtype: DType) -> Result<()> {
    convert_gguf_to_hf_replacing(gguf, out_dir, dtype, Overwrite::Refuse).map(|_| ())
}

/// [`convert_gguf_to_hf`], replacing a checkpoint already in `out_dir` when `overwrite` says so
/// (atomically: until the new one is complete, the old one stays). Returns
/// [`StagedDir::notes`]: what was found of interrupted earlier runs.
pub fn convert_gguf_to_hf_replacing(
    gguf: &Path,
    out_dir: &Path,
    dtype: DType,
    overwrite: Overwrite,
) -> Result<Vec<String>> {
    // A checkpoint already there is refused before the source is read.
    let staged = StagedDir::begin(out_dir, overwrite)?;
    let notes = staged.notes().to_vec();
    let out_dir = staged.path();
    let file = Arc::new(GgufFile::open(gguf)?);
    let mut config = ModelConfig::from_gguf(&file)?;
    config.torch_dtype = dtype;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let store = GgufStore::new(file.clone())?;
    if config.rope_scaling == RopeScaling::Factors {
        // config.json has no per-frequency factors: write the `llama3` scaling that gives them.
        let factors = store.get_f32(ROPE_FREQS_TENSOR)?;
        config.rope_scaling =
            llama3_from_rope_factors(&factors, config.rope_theta, config.head_dim).ok_or_else(
                || {
                    Error::unsupported(
                        gguf.display().to_string(),
                        format!("the RoPE frequency factors of tensor `{ROPE_FREQS_TENSOR}` match no `llama3` scaling, and config.json cannot hold them"),
                    )
                },
            )?;
    }

    let names: Vec<String> = store
        .names()
        .into_iter()
        .filter(|n| n != ROPE_FREQS_TENSOR)
        .collect();
    let specs: Vec<TensorSpec> = names
        .iter()
        .map(|n| TensorSpec {
            name: n.clone(),
            dtype,
            shape: store.shape(n).unwrap_or_default().to_vec(),
        })
        .collect();
    let source_name = gguf
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let metadata: BTreeMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        ("source".to_string(), source_name),
        (
            "converted_by".to_string(),
            format!("finercut-format {}", env!("CARGO_PKG_VERSION")),
        ),
    ]
    .into_iter()
    .collect();
    write_safetensors_streamed(&out_dir.join("model.safetensors"), &specs, &metadata, |i| {
        let values = store.get_f32(&names[i])?;
        Ok(match dtype {
            DType::F32 => Bytes::from_f32_vec(values),
            other => Bytes::from_vec(f32_to_bytes(&values, other)),
        })
    })?;

    write_json(&out_dir.join("config.json"), &config.to_hf_json())?;
    tokenizer.save(&out_dir.join("tokenizer.json"))?;
    write_json(
        &out_dir.join("tokenizer_config.json"),
        &tokenizer.hf_tokenizer_config(config.max_position_embeddings),
    )?;
    let generation = json!({
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    });
    write_json(&out_dir.join("generation_config.json"), &generation)?;
    staged.commit()?;
    Ok(notes)
}
