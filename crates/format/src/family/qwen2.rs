//! Qwen2 (Qwen2, Qwen2.5): Llama with biases on q/k/v (never on `o_proj`), `model_type` `qwen2`.
//!
//! Sliding windows count only with `use_sliding_window`, from layer `max_window_layers` on (or as
//! `layer_types` says). GGUF stores Q/K in NeoX order; a pruned Qwen2 GGUF is a `deci` file whose
//! Q/K rows were moved into the interleaved order, recognised by its Q/K/V biases without an
//! output bias.

use serde_json::{json, Value as Json};

use super::{
    llama::LLAMA3_8B, parse_layer_types, Capability, Family, GgufFacts, HfDefaults, LikePreset,
    Support,
};
use crate::config::{Architecture, LayerAttention, ModelConfig, RawConfig};
use crate::Result;

/// The Qwen2 family.
pub struct Qwen2;

impl Family for Qwen2 {
    fn architecture(&self) -> Architecture {
        Architecture::Qwen2
    }
    fn name(&self) -> &'static str {
        "Qwen2"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["qwen2"]
    }
    fn hf_class(&self) -> &'static str {
        "Qwen2ForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults {
            max_position_embeddings: 32768,
            ..HfDefaults::LLAMA
        }
    }
    fn attention_bias(&self, _raw: &RawConfig) -> bool {
        true
    }
    fn hf_layers(
        &self,
        raw: &RawConfig,
        layers: usize,
        origin: &str,
    ) -> Result<(Option<usize>, Vec<LayerAttention>)> {
        qwen_windows(raw, layers, layers, origin)
    }
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
        set("hidden_act", json!(c.hidden_act.hf_name()));
        write_qwen_windows(c, set);
    }
    fn gguf_arch(&self) -> Option<&'static str> {
        Some("qwen2")
    }
    fn claims_gguf(&self, g: &GgufFacts<'_>) -> bool {
        g.arch == "qwen2" || (g.arch == "deci" && g.q_bias && !g.o_bias)
    }
    fn gguf_tensors(&self) -> super::GgufTensorRules {
        super::GgufTensorRules {
            deci: super::DeciRule::ReorderQk,
            ..super::GgufTensorRules::NEOX
        }
    }
    fn block(&self, c: &ModelConfig) -> super::BlockRecipe {
        super::BlockRecipe {
            o_proj_bias: false,
            ..super::BlockRecipe::llama(c)
        }
    }
    fn supports(&self, _c: &ModelConfig, _what: Capability) -> Support {
        Ok(())
    }
    fn like_presets(&self) -> &'static [LikePreset] {
        &[
            LikePreset {
                name: "qwen2.5-7b",
                vocab: 152_064,
                hidden: 3584,
                intermediate: 18_944,
                blocks: 28,
                heads: 28,
                kv_heads: 4,
                rope_theta: 1_000_000.0,
                rms_norm_eps: 1e-6,
                max_position: 32_768,
                qkv_bias: true,
                ..LLAMA3_8B
            },
            LikePreset {
                name: "qwen2.5-0.5b",
                vocab: 151_936,
                hidden: 896,
                intermediate: 4864,
                blocks: 24,
                heads: 14,
                kv_heads: 2,
                rope_theta: 1_000_000.0,
                rms_norm_eps: 1e-6,
                max_position: 32_768,
                tie_embeddings: true,
                qkv_bias: true,
                ..LLAMA3_8B
            },
        ]
    }
}

/// transformers' Qwen windows: `sliding_window` counts only with `use_sliding_window`; then the
/// layers are those of `layer_types`, or from `max_window_layers` (default `default_from`) on.
pub(crate) fn qwen_windows(
    raw: &RawConfig,
    layers: usize,
    default_from: usize,
    origin: &str,
) -> Result<(Option<usize>, Vec<LayerAttention>)> {
    match (raw.use_sliding_window.unwrap_or(false), raw.sliding_window) {
        (true, Some(w)) => {
            let types = match &raw.layer_types {
                Some(names) => parse_layer_types(names, origin)?,
                None => {
                    let from = raw.max_window_layers.unwrap_or(default_from);
                    (0..layers)
                        .map(|i| {
                            if i >= from {
                                LayerAttention::Sliding
                            } else {
                                LayerAttention::Full
                            }
                        })
                        .collect()
                }
            };
            Ok((Some(w), types))
        }
        _ => Ok((None, vec![LayerAttention::Full; layers])),
    }
}

/// Writes the window keys [`qwen_windows`] reads.
pub(crate) fn write_qwen_windows(c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
    set("use_sliding_window", json!(c.sliding_window.is_some()));
    set("sliding_window", json!(c.sliding_window));
    let first_sliding = c
        .layer_types
        .iter()
        .position(|t| *t == LayerAttention::Sliding);
    set(
        "max_window_layers",
        json!(first_sliding.unwrap_or(c.num_hidden_layers)),
    );
}
