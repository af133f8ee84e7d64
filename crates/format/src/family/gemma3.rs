//! Gemma 3 (`gemma3_text`, and the text part of a multimodal `gemma3` config under
//! `text_config`): GeGLU, `1 + w` RMSNorm weights, sandwich norms around both sublayers, QK-norm,
//! embeddings scaled by `sqrt(hidden_size)`, local (sliding) and global layers with their own
//! RoPE bases, optional soft-caps of the attention and final logits.
//!
//! Defaults are `Gemma3TextConfig`'s. GGUF (llama.cpp `gemma3`) stores norm weights plus one and
//! names the pre-FFN norm `ffn_norm`; it lacks the local RoPE base (10000), the layer pattern
//! (every 6th global) and `query_pre_attn_scalar` (`head_dim`, or `hidden / heads` for the 27B
//! model's 62 layers), filled in as llama.cpp does.

use serde_json::{json, Value as Json};

use super::{
    layer_type_names, parse_layer_types, periodic_layers, regular_pattern, BlockRecipe, Capability,
    Family, GgufFacts, GgufParts, GgufTensorRules, HfDefaults, HfTensors, NormScale, QkNorm,
    Support, TokenizerQuirks,
};
use crate::config::{
    Activation, ArchParams, Architecture, Gemma3Params, LayerAttention, ModelConfig, RawConfig,
};
use crate::gguf::{GgufFile, Value};
use crate::{Error, Result};

/// The Gemma 3 family.
pub struct Gemma3;

/// Gemma 3's sandwich norms.
pub const TENSORS: HfTensors = HfTensors {
    attn_post_norm: Some("post_attention_layernorm"),
    ffn_norm: Some("pre_feedforward_layernorm"),
    ffn_post_norm: Some("post_feedforward_layernorm"),
    ..HfTensors::LLAMA
};

impl Family for Gemma3 {
    fn architecture(&self) -> Architecture {
        Architecture::Gemma3
    }
    fn name(&self) -> &'static str {
        "Gemma 3"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["gemma3_text", "gemma3"]
    }
    fn hf_class(&self) -> &'static str {
        "Gemma3ForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults {
            head_dim: Some(256),
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 131_072,
            tie_word_embeddings: true,
            hidden_act: "gelu_pytorch_tanh",
            reads_hidden_activation: true,
        }
    }
    fn reads_key(&self, key: &str) -> bool {
        matches!(key, "final_logit_softcapping" | "attn_logit_softcapping")
    }
    fn canonical(&self, mut raw: RawConfig, origin: &str) -> Result<RawConfig> {
        // A multimodal Gemma 3 config nests the language model under `text_config`.
        if raw.model_type.as_deref() != Some("gemma3") {
            return Ok(raw);
        }
        let Some(text) = raw.text_config.take() else {
            return Ok(raw);
        };
        let mut inner: RawConfig = serde_json::from_value(text)
            .map_err(|e| Error::config(origin, format!("invalid `text_config`: {e}")))?;
        inner.model_type = Some("gemma3_text".into());
        inner.bos_token_id = inner.bos_token_id.or(raw.bos_token_id);
        inner.eos_token_id = inner.eos_token_id.or(raw.eos_token_id);
        inner.pad_token_id = inner.pad_token_id.or(raw.pad_token_id);
        inner.torch_dtype = inner.torch_dtype.or(raw.torch_dtype).or(raw.dtype);
        Ok(inner)
    }
    fn hf_layers(
        &self,
        raw: &RawConfig,
        layers: usize,
        origin: &str,
    ) -> Result<(Option<usize>, Vec<LayerAttention>)> {
        let window = raw.sliding_window.unwrap_or(4096);
        let types = match &raw.layer_types {
            Some(names) => parse_layer_types(names, origin)?,
            None => {
                let p = raw
                    .sliding_window_pattern
                    .or(raw.sliding_window_pattern_private)
                    .unwrap_or(6);
                if p == 0 {
                    return Err(Error::config(
                        origin,
                        "`sliding_window_pattern` must be positive",
                    ));
                }
                periodic_layers(layers, p)
            }
        };
        Ok((Some(window), types))
    }
    fn hf_params(
        &self,
        raw: &RawConfig,
        _theta: f64,
        local: Option<f64>,
        _origin: &str,
    ) -> Result<ArchParams> {
        Ok(ArchParams::Gemma3(Gemma3Params {
            query_pre_attn_scalar: raw.query_pre_attn_scalar.unwrap_or(256.0),
            rope_local_base_freq: local.unwrap_or(10_000.0),
            final_logit_softcapping: raw.final_logit_softcapping.flatten(),
            attn_logit_softcapping: raw.attn_logit_softcapping.flatten(),
        }))
    }
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
        set("hidden_activation", json!(c.hidden_act.hf_name()));
        set("attention_bias", json!(c.attention_bias));
        set("sliding_window", json!(c.sliding_window));
        set("layer_types", json!(layer_type_names(&c.layer_types)));
        if let Some(p) = regular_pattern(&c.layer_types) {
            set("sliding_window_pattern", json!(p));
        }
        if let Some(g) = c.gemma3() {
            set("query_pre_attn_scalar", whole(g.query_pre_attn_scalar));
            set("rope_local_base_freq", json!(g.rope_local_base_freq));
            set("final_logit_softcapping", json!(g.final_logit_softcapping));
            set("attn_logit_softcapping", json!(g.attn_logit_softcapping));
        }
    }
    fn gguf_arch(&self) -> Option<&'static str> {
        Some("gemma3")
    }
    fn claims_gguf(&self, g: &GgufFacts<'_>) -> bool {
        g.arch == "gemma3"
    }
    fn gguf_parts(&self, file: &GgufFile, g: &GgufFacts<'_>, origin: &str) -> Result<GgufParts> {
        let key = |k: &str| format!("{}.{k}", g.arch);
        let window = file
            .get_u64(&key("attention.sliding_window"))?
            .unwrap_or(512) as usize;
        // `attention.sliding_window_pattern`: a period, or one bool per layer (true = sliding);
        // llama.cpp's default for Gemma 3 is a period of 6.
        let pattern_key = key("attention.sliding_window_pattern");
        let types = match file.get(&pattern_key) {
            Some(Value::Array(_, items)) => items
                .iter()
                .map(|b| match b.as_bool() {
                    Some(true) => Ok(LayerAttention::Sliding),
                    Some(false) => Ok(LayerAttention::Full),
                    None => Err(Error::config(
                        origin,
                        format!("metadata `{pattern_key}` is not an array of bools"),
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => {
                let period = file.get_u64(&pattern_key)?.unwrap_or(6).max(1) as usize;
                periodic_layers(g.layers, period)
            }
        };
        Ok(GgufParts {
            sliding_window: Some(window),
            layer_types: types,
            arch: ArchParams::Gemma3(Gemma3Params {
                // llama.cpp: 1/sqrt(n_embd / n_head) for the 27B model (62 layers), else 1/sqrt(head_dim).
                query_pre_attn_scalar: if g.layers == 62 {
                    (g.hidden_size / g.heads.max(1)) as f64
                } else {
                    g.head_dim as f64
                },
                rope_local_base_freq: 10_000.0,
                final_logit_softcapping: file.get_f64(&key("final_logit_softcapping"))?,
                attn_logit_softcapping: file.get_f64(&key("attn_logit_softcapping"))?,
            }),
            hidden_act: Activation::GeluTanh,
            default_rope_theta: 1_000_000.0,
        })
    }
    fn gguf_tensors(&self) -> GgufTensorRules {
        GgufTensorRules {
            norm_plus_one: true,
            ffn_norm: "pre_feedforward_layernorm",
            ..GgufTensorRules::NEOX
        }
    }
    fn tensors(&self) -> HfTensors {
        TENSORS
    }
    fn block(&self, c: &ModelConfig) -> BlockRecipe {
        let g = c.gemma3();
        BlockRecipe {
            norm_scale: NormScale::OnePlus,
            qk_norm: QkNorm::PerHead,
            query_scale: g.map(|g| 1.0 / g.query_pre_attn_scalar.sqrt()),
            attn_softcap: g.and_then(|g| g.attn_logit_softcapping),
            final_softcap: g.and_then(|g| g.final_logit_softcapping),
            scale_embeddings: true,
            local_rope_theta: g.map(|g| g.rope_local_base_freq),
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
                "model_type `gemma3_text` (Gemma 3) normalises each sublayer's output (sandwich \
                 norms), and those norms cannot be folded into a rotation of the residual stream"
                    .into(),
            ),
            Capability::DeciGguf => Err(
                "Gemma 3's GeGLU, sandwich norms and QK-norm are not llama.cpp `deci` blocks"
                    .into(),
            ),
            Capability::NemotronNas => super::not_nas(c, ""),
        }
    }
}

/// `query_pre_attn_scalar` as config.json writes it: transformers 5 types this field as an int, so
/// whole values are written without a fraction.
pub(crate) fn whole(q: f64) -> Json {
    if q.fract() == 0.0 && q.abs() < 1e15 {
        json!(q as i64)
    } else {
        json!(q)
    }
}
