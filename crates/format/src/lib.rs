//! Model formats: memory-mapped safetensors (single and sharded), GGUF, Hugging Face config.json and tokenizers.
//!
//! `finercut-format` turns files into three things the rest of finercut needs, and back:
//! a checked [`ModelConfig`], a [`Tokenizer`], and weights behind the [`TensorSource`] trait,
//! which hands out [`RawTensor`]s by Hugging Face name. It knows nothing about computing with them.
//!
//! Key types:
//! - [`SafetensorsStore`]: a Hugging Face checkpoint (one file or shards), memory-mapped; tensors
//!   are zero-copy [`Bytes`] views of the map. [`write_safetensors`] writes one.
//! - [`GgufFile`] / [`GgufStore`]: llama.cpp's GGUF (v2/v3); the store dequantises to F32 on each
//!   `get` and presents Hugging Face names, shapes and row order; its matrices are also served as
//!   [`QuantizedRows`] ([`TensorSource::get_quantized`]), kept quantised until a caller
//!   dequantises the rows it needs.
//! - [`ModelConfig`]: Llama, Mistral, Qwen2, Mixtral and Gemma 3, from config.json or GGUF
//!   metadata, and back to a config.json ([`ModelConfig::to_hf_json`]).
//! - [`Tokenizer`]: `tokenizer.json`, or rebuilt from GGUF metadata and savable as tokenizer.json.
//! - [`Checkpoint`]: all three for a path; [`convert_gguf_to_hf`] writes a GGUF model out as a
//!   Hugging Face directory; [`StagedDir`] writes every model directory beside its destination
//!   and renames it into place.
//! - [`gguf::write_gguf`] writes GGUF files; [`gguf::pruned_from_gguf`] turns a GGUF model with
//!   sublayers removed into llama.cpp's `deci` architecture, tensors copied byte for byte.
//! - [`nas`]: Nemotron-NAS (`DeciLMForCausalLM`) configurations, the Hugging Face layout of a
//!   model whose blocks may lack attention or FFN (vLLM serves it).
//! - [`own_types`]: the `model_type`s of checkpoints only finercut computes correctly (dropped
//!   sublayers, SliceGPT), which stock loaders refuse.
//! - [`cache`]: where `cargo xtask fetch` puts models and data.
//!
//! **Design decision: Hugging Face is the canonical layout.** Every source is presented with
//! Hugging Face names, row-major shapes and Hugging Face's Q/K row order, so the model code has one
//! loading path and a converted checkpoint is bit-identical to the GGUF it came from. The price is
//! that GGUF tensors are dequantised on every `get` (nothing is cached, so peak memory stays one
//! tensor).
//!
//! **Memory maps.** Files are mapped, not read: opening a 14 GB checkpoint costs nothing until a
//! tensor is touched. Mapping is `unsafe` in Rust because another process could change the file
//! underneath (see [`io::map_file`]); this crate assumes, as candle and ripgrep do, that model
//! files are not modified while open, and writes its own outputs by atomic rename.
//!
//! ```
//! use std::collections::BTreeMap;
//! use finercut_format::{write_safetensors, DType, SafetensorsStore, TensorSource};
//!
//! # fn main() -> finercut_format::Result<()> {
//! let dir = std::env::temp_dir().join(format!("finercut-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("model.safetensors");
//! let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
//! write_safetensors(&path, &[("w".into(), DType::F32, vec![2, 2], &data[..])], &meta)?;
//!
//! let store = SafetensorsStore::open(&path)?;
//! let w = store.get("w")?;
//! assert_eq!(w.shape, vec![2, 2]);
//! assert_eq!(w.to_f32_vec()?, vec![1.0, 2.0, 3.0, 4.0]);
//! # drop(store);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod cache;
mod checkpoint;
mod config;
mod error;
pub mod family;
pub mod gguf;
pub mod io;
pub mod nas;
pub mod own_types;
mod safetensors;
mod staged;
mod tensor;
mod tokenizer;

pub use checkpoint::{
    checkpoint_files, convert_gguf_to_hf, convert_gguf_to_hf_replacing, Checkpoint, Overwrite,
};
pub use config::{
    Activation, ArchParams, Architecture, Gemma3Params, LayerAttention, LongRope, ModelConfig,
    MoeParams, NeoxParams, RawConfig, RopeScaling, SliceParams, ROPE_FREQS_TENSOR,
};
pub use error::{Error, Result};
pub use family::{
    BlockRecipe, Capability, Family, FfnTensors, HfTensors, LikePreset, NormScale, QkNorm, Support,
    FAMILIES, SUPPORTED_MODEL_TYPES,
};
pub use gguf::{GgmlType, GgufFile, GgufStore, GgufTensorInfo, GgufTensorOut, QuantizedRows};
pub use safetensors::{
    write_safetensors, write_safetensors_streamed, SafetensorsStore, TensorSpec,
};
pub use staged::StagedDir;
pub use tensor::{f32_to_bytes, Bytes, DType, Owner, RawTensor, TensorSource};
pub use tokenizer::{Tokenizer, SUPPORTED_GGUF_PRE};
