//! Phi-3 and Phi-4 (`phi3`, `Phi3ForCausalLM`; Phi-4 and Phi-4-mini use the same class): Llama's
//! pre-norm block with the q, k and v projections fused into one `self_attn.qkv_proj` (rows q, k,
//! v) and the gate and up projections into one `mlp.gate_up_proj` (gate rows first), both split
//! at load, so the candidates stay one attention and one FFN sublayer per block. No biases.
//!
//! RoPE: `default` or `longrope` (the older names `su` and `yarn` mean `longrope`, as
//! `Phi3Config` maps them), read from `rope_scaling` (transformers 4; it wins when both are
//! present, as `Phi3Config` takes it first) or `rope_parameters` (transformers 5), with
//! `rope_theta` and `partial_rotary_factor` inside them or at the top level (inside wins).
//! LongRoPE's context of pre-training is the top-level `original_max_position_embeddings`
//! (default 4096), which transformers puts before the one inside the RoPE settings; its
//! attention factor is `attention_factor` or, when absent, `sqrt(1 + ln f / ln original)` with
//! `f` = `factor` or `max_position_embeddings / original` (1 when `f <= 1`).
//! `partial_rotary_factor` (Phi-4-mini: 0.75) rotates the first `int(head_dim · factor)` values
//! of each head. `sliding_window`, when set, applies to every layer. Phi-4-mini ties its
//! embeddings (`tie_word_embeddings`).
//!
//! Exports: the pruned checkpoint in the Hugging Face layout (`dropped`, `hf-compatible`) works
//! as for every family. Refused, with the reason in [`Phi3::supports`]: SliceGPT (this
//! implementation rotates separate q/k/v and gate/up matrices, and Phi-3 stores them fused),
//! `deci` GGUF (Phi-3 GGUF files are not read here, and llama.cpp's `deci` blocks have neither
//! LongRoPE nor partial rotary) and Nemotron-NAS (DeciLM blocks have separate projections and
//! plain RoPE).

use serde_json::{json, Map, Value as Json};

use super::{
    mistral::every_layer_sliding, BlockRecipe, Capability, Family, FfnTensors, HfDefaults,
    HfTensors, LikePreset, Support,
};
use crate::config::{Architecture, LayerAttention, LongRope, ModelConfig, RawConfig};
use crate::{Error, Result};

/// The Phi-3 family.
pub struct Phi3;

/// `Phi3Config`'s `original_max_position_embeddings`.
const ORIGINAL_CONTEXT: usize = 4096;

/// Fused q/k/v and gate/up projections.
const TENSORS: HfTensors = HfTensors {
    fused_qkv: Some("qkv_proj"),
    ffn_kind: FfnTensors::FusedGated {
        gate_up: "gate_up_proj",
        down: "down_proj",
    },
    ..HfTensors::LLAMA
};

/// Phi-3-mini-4k's shape.
const PHI3_MINI: LikePreset = LikePreset {
    name: "phi-3-mini",
    vocab: 32_064,
    hidden: 3072,
    intermediate: 8192,
    blocks: 32,
    heads: 32,
    kv_heads: 32,
    rope_theta: 10_000.0,
    rms_norm_eps: 1e-5,
    max_position: 4096,
    tie_embeddings: false,
    qkv_bias: false,
    experts: None,
    sliding_window: Some(2047),
    llama3_rope: false,
    hidden_act: "silu",
};

impl Family for Phi3 {
    fn architecture(&self) -> Architecture {
        Architecture::Phi3
    }
    fn name(&self) -> &'static str {
        "Phi-3"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["phi3"]
    }
    fn hf_class(&self) -> &'static str {
        "Phi3ForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults {
            rms_norm_eps: 1e-5,
            max_position_embeddings: 4096,
            ..HfDefaults::LLAMA
        }
    }
    fn reads_key(&self, key: &str) -> bool {
        key == "partial_rotary_factor"
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        &[
            "original_max_position_embeddings",
            "resid_pdrop",
            "embd_pdrop",
        ]
    }
    fn canonical(&self, mut raw: RawConfig, origin: &str) -> Result<RawConfig> {
        let given = |v: &Option<Json>| {
            v.as_ref()
                .filter(|j| j.as_object().is_some_and(|o| !o.is_empty()))
                .cloned()
        };
        let (key, params) = match (given(&raw.rope_scaling), given(&raw.rope_parameters)) {
            (Some(p), _) => ("rope_scaling", p),
            (None, Some(p)) => ("rope_parameters", p),
            (None, None) => ("rope_parameters", json!({})),
        };
        let num = |k: &str| params.get(k).and_then(Json::as_f64);
        let theta = num("rope_theta").or(raw.rope_theta).unwrap_or(10_000.0);
        let top = |k: &str| raw.other.get(k).filter(|v| !v.is_null());
        let partial = match params
            .get("partial_rotary_factor")
            .or(top("partial_rotary_factor"))
        {
            None => 1.0,
            Some(v) => v.as_f64().ok_or_else(|| {
                Error::config(
                    origin,
                    format!("`partial_rotary_factor` = {v} is not a number"),
                )
            })?,
        };
        let kind = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(Json::as_str)
            .unwrap_or("default");
        raw.long_rope = match kind {
            "default" => None,
            "longrope" | "su" | "yarn" => {
                let factors = |k: &str| -> Result<Vec<f64>> {
                    params
                        .get(k)
                        .and_then(Json::as_array)
                        .and_then(|a| a.iter().map(Json::as_f64).collect::<Option<Vec<_>>>())
                        .ok_or_else(|| {
                            Error::config(
                                origin,
                                format!("`{key}` of type `{kind}` needs a list of numbers `{k}`"),
                            )
                        })
                };
                let original = match top("original_max_position_embeddings") {
                    None => ORIGINAL_CONTEXT,
                    Some(v) => v
                        .as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|&n| n > 0)
                        .ok_or_else(|| {
                            Error::config(
                                origin,
                                format!("`original_max_position_embeddings` = {v} is not a positive count"),
                            )
                        })?,
                };
                let context = raw.max_position_embeddings.unwrap_or(4096);
                let factor = num("factor").unwrap_or(context as f64 / original as f64);
                let attention_factor = match num("attention_factor") {
                    Some(a) => a,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
                };
                Some(LongRope {
                    short_factor: factors("short_factor")?,
                    long_factor: factors("long_factor")?,
                    original_max_position_embeddings: original,
                    attention_factor,
                })
            }
            other => {
                return Err(Error::unsupported(
                    origin,
                    format!(
                    "`{key}` type `{other}` for model_type `phi3` (supported: default, longrope)"
                ),
                ))
            }
        };
        // What remains for the shared reader: the base, and the resolved rotating fraction.
        raw.rope_scaling = None;
        raw.rope_parameters = Some(json!({"rope_type": "default", "rope_theta": theta}));
        raw.other
            .insert("partial_rotary_factor".into(), json!(partial));
        Ok(raw)
    }
    fn attention_bias(&self, _raw: &RawConfig) -> bool {
        false
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
        set("sliding_window", json!(c.sliding_window));
        set("partial_rotary_factor", json!(c.partial_rotary_factor));
        if let Some(l) = &c.long_rope {
            set(
                "original_max_position_embeddings",
                json!(l.original_max_position_embeddings),
            );
            set(
                "rope_scaling",
                json!({
                    "rope_type": "longrope",
                    "type": "longrope",
                    "short_factor": l.short_factor,
                    "long_factor": l.long_factor,
                    "attention_factor": l.attention_factor,
                }),
            );
        }
    }
    fn tensors(&self) -> HfTensors {
        TENSORS
    }
    fn block(&self, c: &ModelConfig) -> BlockRecipe {
        BlockRecipe {
            qkv_bias: false,
            o_proj_bias: false,
            ..BlockRecipe::llama(c)
        }
    }
    fn supports(&self, c: &ModelConfig, what: Capability) -> Support {
        match what {
            Capability::SliceGpt => Err(
                "model_type `phi3` (Phi-3) stores q/k/v and gate/up as fused matrices \
                 (`qkv_proj`, `gate_up_proj`), and SliceGPT here rotates and slices separate \
                 projections"
                    .into(),
            ),
            Capability::DeciGguf => Err(
                "Phi-3 GGUF files are not read, and llama.cpp's `deci` blocks have neither \
                 LongRoPE nor partial rotary embeddings"
                    .into(),
            ),
            Capability::NemotronNas => super::not_nas(
                c,
                ", and DeciLM has separate q/k/v and gate/up projections and plain RoPE \
                 (Phi-3 fuses them into `qkv_proj` and `gate_up_proj`, with LongRoPE and \
                 partial rotary embeddings)",
            ),
        }
    }
    fn like_presets(&self) -> &'static [LikePreset] {
        &[
            PHI3_MINI,
            LikePreset {
                name: "phi-4-mini",
                vocab: 200_064,
                heads: 24,
                kv_heads: 8,
                max_position: 131_072,
                tie_embeddings: true,
                sliding_window: Some(262_144),
                ..PHI3_MINI
            },
        ]
    }
    fn like_config(&self, preset: &str, config: &mut Map<String, Json>) {
        // Phi-4-mini rotates three quarters of each head. Its LongRoPE factors are not reproduced:
        // RoPE adds no tensors, so time and memory do not depend on them.
        if preset == "phi-4-mini" {
            config.insert("partial_rotary_factor".into(), json!(0.75));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::ModelConfig;

    fn golden(name: &str) -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/golden/tiny")
            .join(name)
            .join("config.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn both_rope_spellings_and_the_legacy_names_read_alike() {
        // transformers 5 writes `rope_parameters`; transformers 4 checkpoints `rope_scaling` with
        // `rope_theta` and `partial_rotary_factor` at the top level.
        let v5 = golden("phi4_mini");
        let want = ModelConfig::from_json_str(&v5.to_string(), "v5").unwrap();
        assert_eq!(want.rotary_dim(), 12);
        assert!(want.tie_word_embeddings);
        let l = want.long_rope.as_ref().unwrap();
        assert_eq!(l.short_factor.len(), 6);
        let mut v4 = v5.clone();
        let mut p = v4["rope_parameters"].take();
        let o = v4.as_object_mut().unwrap();
        o.remove("rope_parameters");
        o.insert("rope_theta".into(), p["rope_theta"].take());
        o.insert(
            "partial_rotary_factor".into(),
            p["partial_rotary_factor"].take(),
        );
        let p = p.as_object_mut().unwrap();
        p.remove("rope_theta");
        p.remove("partial_rotary_factor");
        p.insert("type".into(), serde_json::json!("su"));
        p.remove("rope_type");
        o.insert("rope_scaling".into(), serde_json::Value::Object(p.clone()));
        let (got, unknown) = ModelConfig::parse_json_str(&v4.to_string(), "v4").unwrap();
        assert_eq!(got, want);
        assert!(unknown.is_empty(), "{unknown:?}");
        // A wrong number of factors, and a RoPE type Phi-3 does not have, are refused.
        let mut bad = v5.clone();
        bad["rope_parameters"]["short_factor"] = serde_json::json!([1.0, 1.0]);
        let e = ModelConfig::from_json_str(&bad.to_string(), "t").unwrap_err();
        assert!(e.to_string().contains("short_factor"), "{e}");
        let mut bad = v5;
        bad["rope_parameters"]["rope_type"] = serde_json::json!("llama3");
        let e = ModelConfig::from_json_str(&bad.to_string(), "t").unwrap_err();
        assert!(e.to_string().contains("llama3"), "{e}");
    }

    #[test]
    fn the_attention_factor_follows_the_context_ratio_when_not_given() {
        let mut j = golden("phi3_longrope");
        let p = j["rope_parameters"].as_object_mut().unwrap();
        p.remove("attention_factor");
        p.remove("factor");
        let c = ModelConfig::from_json_str(&j.to_string(), "t").unwrap();
        let l = c.long_rope.unwrap();
        let (ctx, orig) = (
            c.max_position_embeddings as f64,
            l.original_max_position_embeddings as f64,
        );
        let want = (1.0 + (ctx / orig).ln() / orig.ln()).sqrt();
        assert!((l.attention_factor - want).abs() < 1e-12);
    }
}
