//! Llama (1–3.2, SmolLM, TinyLlama, …): the reference pre-norm block, `model_type` `llama`.
//!
//! Llama 3.1's `llama3` RoPE scaling is shared configuration; Llama 3.2's tied embeddings are
//! `tie_word_embeddings`. In GGUF, llama.cpp's converter permutes Q/K rows into its interleaved
//! RoPE order ([`GgufTensorRules::LLAMA`]); a pruned Llama is written back as `deci`.

use serde_json::{json, Value as Json};

use super::{Capability, Family, GgufFacts, GgufTensorRules, HfDefaults, LikePreset, Support};
use crate::config::{Architecture, ModelConfig};

/// The Llama family.
pub struct Llama;

/// Llama 3 8B's shape, the base of the other presets.
pub(crate) const LLAMA3_8B: LikePreset = LikePreset {
    name: "llama-3-8b",
    vocab: 128_256,
    hidden: 4096,
    intermediate: 14_336,
    blocks: 32,
    heads: 32,
    kv_heads: 8,
    rope_theta: 500_000.0,
    rms_norm_eps: 1e-5,
    max_position: 8192,
    tie_embeddings: false,
    qkv_bias: false,
    experts: None,
    sliding_window: None,
    llama3_rope: false,
    hidden_act: "silu",
};

impl Family for Llama {
    fn architecture(&self) -> Architecture {
        Architecture::Llama
    }
    fn name(&self) -> &'static str {
        "Llama"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["llama"]
    }
    fn hf_class(&self) -> &'static str {
        "LlamaForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults::LLAMA
    }
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
        set("hidden_act", json!(c.hidden_act.hf_name()));
        set("attention_bias", json!(c.attention_bias));
        set("mlp_bias", json!(false));
        set("pretraining_tp", json!(1));
    }
    fn gguf_arch(&self) -> Option<&'static str> {
        Some("llama")
    }
    fn claims_gguf(&self, g: &GgufFacts<'_>) -> bool {
        match g.arch {
            "llama" => g.experts == 0,
            // A pruned Qwen2 is a `deci` file with Q/K/V biases and no output bias.
            "deci" => !g.q_bias || g.o_bias,
            _ => false,
        }
    }
    fn gguf_tensors(&self) -> GgufTensorRules {
        GgufTensorRules::LLAMA
    }
    fn supports(&self, _c: &ModelConfig, _what: Capability) -> Support {
        Ok(())
    }
    fn like_presets(&self) -> &'static [LikePreset] {
        &[
            LLAMA3_8B,
            LikePreset {
                name: "llama-3.1-8b",
                max_position: 131_072,
                llama3_rope: true,
                ..LLAMA3_8B
            },
        ]
    }
}
