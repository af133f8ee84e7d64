//! [`Checkpoint`]: configuration, tokenizer and weights of a model, from a Hugging Face directory
//! or a GGUF file; and [`convert_gguf_to_hf`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::config::ModelConfig;
use crate::error::IoResultExt;
use crate::gguf::{GgufFile, GgufStore};
use crate::io::{sha256_files, write_json};
use crate::safetensors::{write_safetensors_streamed, SafetensorsStore, TensorSpec};
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
    /// Sublayers the checkpoint itself does not have (`2b` = attention of block `b`, `2b + 1`
    /// its FFN): the removed sublayers of a pruned `deci` GGUF or a Nemotron-NAS
    /// (`DeciLMForCausalLM`) directory. Empty for other models.
    pub absent_sublayers: BTreeSet<usize>,
}

impl Checkpoint {
    /// Opens `path`: a Hugging Face directory (config.json, tokenizer.json, model.safetensors or
    /// a sharded index), a `.gguf` file, or a directory holding exactly one `.gguf` file and no
    /// config.json.
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
            let (config, absent_sublayers) = crate::nas::read_config(&config_path)?;
            let mut tokenizer = Tokenizer::from_file(&path.join("tokenizer.json"))?;
            tokenizer.set_special_ids_if_missing(config.bos_token_id, config.eos_token_id);
            let store = SafetensorsStore::open(path)?;
            let files = store.files();
            Ok(Checkpoint {
                config,
                tokenizer,
                weights: Box::new(store),
                files,
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
        Ok(Checkpoint {
            config,
            tokenizer,
            weights: Box::new(store),
            files: vec![path.to_path_buf()],
            absent_sublayers,
        })
    }

    /// SHA-256 (hex) over the weight files in order, streamed.
    pub fn sha256(&self) -> Result<String> {
        sha256_files(&self.files)
    }
}

/// Converts a GGUF model into a Hugging Face directory that transformers loads as is:
/// `model.safetensors` (tensors dequantised, Q/K un-permuted, stored as `dtype`, with
/// `__metadata__` `{"format": "pt", …}`), `config.json`, `tokenizer.json`,
/// `tokenizer_config.json` and `generation_config.json`.
///
/// Every file is written under a temporary name in `out_dir` and renamed into place, so a failure
/// leaves no half-written file behind. Tensors are dequantised one at a time.
pub fn convert_gguf_to_hf(gguf: &Path, out_dir: &Path, dtype: DType) -> Result<()> {
    let file = Arc::new(GgufFile::open(gguf)?);
    let mut config = ModelConfig::from_gguf(&file)?;
    config.torch_dtype = dtype;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let store = GgufStore::new(file.clone())?;
    std::fs::create_dir_all(out_dir).with_path(out_dir)?;

    let names = store.names();
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
    Ok(())
}
