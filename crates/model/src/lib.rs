//! Llama-family transformer whose attention and FFN sublayers can be removed: the forward passes that
//! FinerCut (Zhang et al., arXiv 2405.18218) searches over.
//!
//! A decoder block is two residual sublayers, `h = x + Attn(norm1(x))` and `y = h + FFN(norm2(h))`, so
//! an L-block model has 2L sublayers `L0.attn, L0.mlp, L1.attn, …` ([`SublayerId`], index
//! `2·block + (kind == Mlp)`). A [`Plan`] names removed sublayers; a removed sublayer is skipped
//! entirely (norm and branch), turning its branch into the identity.
//!
//! # Key types
//!
//! - [`Model`]: built from a `finercut_format::ModelConfig` and a `TensorSource` (Hugging Face tensor
//!   names) by [`Model::load`]. Supports Llama 2/3 (incl. Llama 3.1 RoPE scaling, from config.json or
//!   from a GGUF's frequency factors), SmolLM2, Mistral (sliding window), Qwen2 (q/k/v biases), Qwen3
//!   (per-head q/k RMSNorm), Gemma 3 (QK-norm, sandwich norms, sliding-window layers) and Mixtral
//!   (sparse mixture of experts, removed as one FFN sublayer), and SliceGPT models of the dense
//!   families (`finercut-slice`: a narrower residual stream, a shortcut matrix per sublayer that a
//!   plan's removal keeps, norms dividing by the original width, an untied head).
//! - [`Model::forward`], [`Model::trace`], [`Model::resume`] and [`Model::advance`]: logits under a
//!   plan, the residual stream entering every sublayer, continuing from one of those states to the
//!   logits, or to the stream entering a later sublayer.
//! - [`Model::stream_candidates`]: one greedy step's candidates evaluated in a single walk over the
//!   sublayers, each candidate's logits streamed to a sink in row chunks ([`StreamStats`] counts the
//!   work in forward-equivalents).
//! - [`Model::continuation_logits`]: a shared prefix run once, many continuations scored against its
//!   cached keys and values; [`PrefixState`] keeps such a prefix's state so that it can be grown
//!   ([`Model::extend_prefix`], e.g. a few-shot header, then each question) and continued
//!   ([`Model::continuation_logits_from`]).
//! - [`Model::start_sequence`], [`Model::decode`] and [`Model::generate_greedy`]: incremental
//!   decoding of a batch of [`Sequence`]s, each on its own key/value cache that grows in place, and
//!   batched greedy generation with stop tests.
//!
//! # Design
//!
//! The sublayers are data (`Vec` of norm + [`SublayerKind`] branch), not a hard-coded block: the one
//! forward path skips what the plan removes, and the same per-sublayer step serves the dense forward,
//! resuming from a trace, and the candidate streams, which batch the rows of many streams into one GEMM
//! per weight (`docs/DESIGN.md`, The cost of the search). This crate does no file I/O: weights come
//! through `TensorSource`. Weight matrices stay as stored by default ([`WeightDtype`]): bf16/f16 in
//! place in the memory map, GGUF blocks quantised, widened to `f32` tile by tile inside each GEMM
//! (bit-identical to widening at load); aligned `f32` weights are used in place.
//!
//! Work is cut into batches of whole sequences of at most 8192 rows and LM-head chunks of
//! [`HEAD_ROWS`] rows, sizes fixed by the shapes: like the tensor kernels, results do not depend on the
//! number of threads.
//!
//! # Example
//!
//! ```
//! use finercut_format::{ModelConfig, RawTensor, TensorSource, Bytes, DType};
//! use finercut_model::{Model, Plan};
//! use finercut_tensor::Device;
//! use std::collections::HashMap;
//!
//! /// Weights held in memory, every value 0.01.
//! struct Mem(HashMap<String, Vec<usize>>);
//! impl TensorSource for Mem {
//!     fn names(&self) -> Vec<String> { self.0.keys().cloned().collect() }
//!     fn contains(&self, name: &str) -> bool { self.0.contains_key(name) }
//!     fn get(&self, name: &str) -> finercut_format::Result<RawTensor> {
//!         let shape = self.0[name].clone();
//!         let n: usize = shape.iter().product();
//!         Ok(RawTensor { name: name.into(), dtype: DType::F32, shape, data: Bytes::from_f32_vec(vec![0.01; n]) })
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ModelConfig::from_json_str(r#"{"model_type": "llama", "vocab_size": 32, "hidden_size": 8,
//!     "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
//!     "num_key_value_heads": 1, "tie_word_embeddings": true}"#, "example")?;
//! let mut w = HashMap::new();
//! w.insert("model.embed_tokens.weight".to_string(), vec![32, 8]);
//! w.insert("model.norm.weight".to_string(), vec![8]);
//! for (name, shape) in [("input_layernorm", vec![8]), ("post_attention_layernorm", vec![8]),
//!     ("self_attn.q_proj", vec![8, 8]), ("self_attn.k_proj", vec![4, 8]), ("self_attn.v_proj", vec![4, 8]),
//!     ("self_attn.o_proj", vec![8, 8]), ("mlp.gate_proj", vec![16, 8]), ("mlp.up_proj", vec![16, 8]),
//!     ("mlp.down_proj", vec![8, 16])] {
//!     w.insert(format!("model.layers.0.{name}.weight"), shape);
//! }
//! let model = Model::load(&config, &Mem(w), &Device::Cpu)?;
//! assert_eq!(model.num_sublayers(), 2);
//! let logits = model.forward(&[vec![1, 2, 3]], &Plan::from_removed([1]))?; // L0.mlp removed
//! assert_eq!(logits.shape(), &[1, 3, 32]);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod continuation;
mod error;
mod generate;
mod layers;
mod load;
mod model;
mod moe;
mod plan;
mod stream;
mod weights;

// This crate's unit tests run with the kernels an executable gets from `init_blas`.
#[cfg(test)]
finercut_tensor::init_blas_before_main!();

/// The formats crate this one is built against (configurations, `TensorSource`, safetensors and
/// GGUF), re-exported so that a user's versions match.
pub use finercut_format as format;
/// The tensor engine this one is built against (`Tensor`, `Device`, the BLAS set-up).
pub use finercut_tensor as tensor;

pub use continuation::PrefixState;
pub use error::{Error, Result};
/// Per-row divergences on the model's device (see `finercut_tensor::Tensor::row_divergences`).
pub use finercut_tensor::{DenseLogits, RowMetric, Tensor};
pub use generate::{GenerateOptions, GenerateStats, Generated, Sequence, StopReason};
pub use load::LoadOptions;
pub use model::{Model, ATTN_SHORTCUT, MLP_SHORTCUT};
pub use plan::{Plan, SublayerId, SublayerKind};
pub use stream::{Sink, StageStreams, StreamStats, TensorSink, HEAD_ROWS};
pub use weights::WeightDtype;
