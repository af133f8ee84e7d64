//! Mistral: Llama with an optional sliding window over every layer, `model_type` `mistral`.
//!
//! Its GGUF conversions are stored as llama.cpp's `llama` architecture, so they read back as
//! Llama (the window is not in the metadata).

use serde_json::{json, Value as Json};

use super::{llama::LLAMA3_8B, Capability, Family, HfDefaults, LikePreset, Support};
use crate::config::{Architecture, LayerAttention, ModelConfig, RawConfig};
use crate::Result;

/// The Mistral family.
pub struct Mistral;

impl Family for Mistral {
    fn architecture(&self) -> Architecture {
        Architecture::Mistral
    }
    fn name(&self) -> &'static str {
        "Mistral"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["mistral"]
    }
    fn hf_class(&self) -> &'static str {
        "MistralForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults {
            max_position_embeddings: 4096 * 32,
            ..HfDefaults::LLAMA
        }
    }
    fn hf_layers(
        &self,
        raw: &RawConfig,
        layers: usize,
        _origin: &str,
    ) -> Result<(Option<usize>, Vec<LayerAttention>)> {
        Ok(every_layer_sliding(raw.sliding_window, layers))
    }
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
        set("hidden_act", json!(c.hidden_act.hf_name()));
        set("attention_bias", json!(c.attention_bias));
        set("sliding_window", json!(c.sliding_window));
    }
    fn supports(&self, c: &ModelConfig, what: Capability) -> Support {
        match what {
            Capability::NemotronNas if c.sliding_window.is_some() => super::not_nas(c, ""),
            _ => Ok(()),
        }
    }
    fn like_presets(&self) -> &'static [LikePreset] {
        &[LikePreset {
            name: "mistral-7b",
            vocab: 32_000,
            rope_theta: 10_000.0,
            max_position: 32_768,
            sliding_window: Some(4096),
            ..LLAMA3_8B
        }]
    }
}

/// Mistral's and Mixtral's windows: `sliding_window` applies to every layer when set.
pub(crate) fn every_layer_sliding(
    window: Option<usize>,
    layers: usize,
) -> (Option<usize>, Vec<LayerAttention>) {
    match window {
        Some(w) => (Some(w), vec![LayerAttention::Sliding; layers]),
        None => (None, vec![LayerAttention::Full; layers]),
    }
}
