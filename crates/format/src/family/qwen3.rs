//! Qwen3 (dense): Llama with an RMSNorm over every query and key head before RoPE (`q_norm`,
//! `k_norm`), no q/k/v biases by default, and `head_dim` defaulting to 128 whatever the width;
//! `model_type` `qwen3`.

use serde_json::{json, Value as Json};

use super::qwen2::{qwen_windows, write_qwen_windows};
use super::{
    layer_type_names, BlockRecipe, Capability, Family, GgufFacts, HfDefaults, QkNorm, Support,
};
use crate::config::{Architecture, LayerAttention, ModelConfig, RawConfig};
use crate::Result;

/// The Qwen3 family.
pub struct Qwen3;

impl Family for Qwen3 {
    fn architecture(&self) -> Architecture {
        Architecture::Qwen3
    }
    fn name(&self) -> &'static str {
        "Qwen3"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["qwen3"]
    }
    fn hf_class(&self) -> &'static str {
        "Qwen3ForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults {
            // transformers' Qwen3Config defaults `head_dim` to 128, whatever the width.
            head_dim: Some(128),
            max_position_embeddings: 32768,
            ..HfDefaults::LLAMA
        }
    }
    fn hf_layers(
        &self,
        raw: &RawConfig,
        layers: usize,
        origin: &str,
    ) -> Result<(Option<usize>, Vec<LayerAttention>)> {
        qwen_windows(raw, layers, 28, origin)
    }
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
        set("hidden_act", json!(c.hidden_act.hf_name()));
        set("attention_bias", json!(c.attention_bias));
        set("layer_types", json!(layer_type_names(&c.layer_types)));
        write_qwen_windows(c, set);
    }
    fn gguf_arch(&self) -> Option<&'static str> {
        Some("qwen3")
    }
    fn claims_gguf(&self, g: &GgufFacts<'_>) -> bool {
        g.arch == "qwen3"
    }
    fn block(&self, c: &ModelConfig) -> BlockRecipe {
        BlockRecipe {
            qk_norm: QkNorm::PerHead,
            ..BlockRecipe::llama(c)
        }
    }
    fn supports(&self, c: &ModelConfig, what: Capability) -> Support {
        match what {
            Capability::SliceGpt => Ok(()),
            Capability::DeciGguf => Err(
                "Qwen3 normalises queries and keys (QK-norm), which llama.cpp's `deci` blocks lack"
                    .into(),
            ),
            Capability::NemotronNas => super::not_nas(c, ""),
        }
    }
}
