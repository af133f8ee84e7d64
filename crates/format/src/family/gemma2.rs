//! Gemma 2 (`gemma2`): Gemma 3's block without QK-norm: GeGLU, `1 + w` RMSNorm weights, sandwich
//! norms around both sublayers, embeddings scaled by `sqrt(hidden_size)`, `tanh` soft-caps of the
//! attention logits and of the final logits, and sliding-window attention on every other layer
//! (layers 0, 2, … slide; 1, 3, … are global), one RoPE base for all layers.
//!
//! Defaults are `Gemma2Config`'s (soft-caps 50 and 30, window 4096, `head_dim` 256,
//! `query_pre_attn_scalar` 256). GGUF files of Gemma 2 are not read.

use serde_json::{json, Value as Json};

use super::{
    gemma3, layer_type_names, parse_layer_types, periodic_layers, BlockRecipe, Capability, Family,
    HfDefaults, HfTensors, NormScale, Support, TokenizerQuirks,
};
use crate::config::{
    ArchParams, Architecture, Gemma3Params, LayerAttention, ModelConfig, RawConfig,
};
use crate::Result;

/// The Gemma 2 family.
pub struct Gemma2;

impl Family for Gemma2 {
    fn architecture(&self) -> Architecture {
        Architecture::Gemma2
    }
    fn name(&self) -> &'static str {
        "Gemma 2"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["gemma2"]
    }
    fn hf_class(&self) -> &'static str {
        "Gemma2ForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults {
            head_dim: Some(256),
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            hidden_act: "gelu_pytorch_tanh",
            reads_hidden_activation: true,
        }
    }
    fn reads_key(&self, key: &str) -> bool {
        matches!(key, "final_logit_softcapping" | "attn_logit_softcapping")
    }
    fn hf_layers(
        &self,
        raw: &RawConfig,
        layers: usize,
        origin: &str,
    ) -> Result<(Option<usize>, Vec<LayerAttention>)> {
        let types = match &raw.layer_types {
            Some(names) => parse_layer_types(names, origin)?,
            None => periodic_layers(layers, 2),
        };
        Ok((Some(raw.sliding_window.unwrap_or(4096)), types))
    }
    fn hf_params(
        &self,
        raw: &RawConfig,
        theta: f64,
        _local: Option<f64>,
        _origin: &str,
    ) -> Result<ArchParams> {
        // Gemma 3's settings with one RoPE base: the local layers' is the global one. An absent
        // soft-cap takes `Gemma2Config`'s default; `null` means none.
        Ok(ArchParams::Gemma3(Gemma3Params {
            query_pre_attn_scalar: raw.query_pre_attn_scalar.unwrap_or(256.0),
            rope_local_base_freq: theta,
            final_logit_softcapping: raw.final_logit_softcapping.unwrap_or(Some(30.0)),
            attn_logit_softcapping: raw.attn_logit_softcapping.unwrap_or(Some(50.0)),
        }))
    }
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
        set("hidden_activation", json!(c.hidden_act.hf_name()));
        set("attention_bias", json!(c.attention_bias));
        set("sliding_window", json!(c.sliding_window));
        set("layer_types", json!(layer_type_names(&c.layer_types)));
        if let Some(g) = c.gemma3() {
            set(
                "query_pre_attn_scalar",
                gemma3::whole(g.query_pre_attn_scalar),
            );
            set("final_logit_softcapping", json!(g.final_logit_softcapping));
            set("attn_logit_softcapping", json!(g.attn_logit_softcapping));
        }
    }
    fn tensors(&self) -> HfTensors {
        gemma3::TENSORS
    }
    fn block(&self, c: &ModelConfig) -> BlockRecipe {
        let g = c.gemma3();
        BlockRecipe {
            norm_scale: NormScale::OnePlus,
            query_scale: g.map(|g| 1.0 / g.query_pre_attn_scalar.sqrt()),
            attn_softcap: g.and_then(|g| g.attn_logit_softcapping),
            final_softcap: g.and_then(|g| g.final_logit_softcapping),
            scale_embeddings: true,
            ..BlockRecipe::llama(c)
        }
    }
    fn tokenizer(&self) -> TokenizerQuirks {
        TokenizerQuirks {
            add_bos: true,
            gguf_gemma_sentencepiece: true,
        }
    }
    fn supports(&self, c: &ModelConfig, what: Capability) -> Support {
        match what {
            Capability::SliceGpt => Err(
                "model_type `gemma2` (Gemma 2) normalises each sublayer's output (sandwich norms), \
                 and those norms cannot be folded into a rotation of the residual stream"
                    .into(),
            ),
            Capability::DeciGguf => Err(
                "Gemma 2's GeGLU, sandwich norms and soft-caps are not llama.cpp `deci` blocks"
                    .into(),
            ),
            Capability::NemotronNas => super::not_nas(c, ""),
        }
    }
}
