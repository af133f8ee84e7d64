//! Mixtral: Mistral with a sparse mixture-of-experts FFN (`block_sparse_moe`: a router `gate`
//! and experts `w1` (gate), `w3` (up), `w2` (down)); `model_type` `mixtral`.
//!
//! The whole mixture is one FFN sublayer, removed as one unit. Its GGUF conversions are
//! llama.cpp `llama` files with `expert_count` set and the experts stacked per layer.

use serde_json::{json, Value as Json};

use super::mistral::every_layer_sliding;
use super::{
    llama::LLAMA3_8B, positive_or, BlockRecipe, Capability, Family, FfnTensors, GgufFacts,
    GgufParts, GgufTensorRules, HfDefaults, HfTensors, LikePreset, Support,
};
use crate::config::{ArchParams, Architecture, LayerAttention, ModelConfig, MoeParams, RawConfig};
use crate::gguf::GgufFile;
use crate::{Error, Result};

/// The Mixtral family.
pub struct Mixtral;

/// Mixtral's tensor names.
pub const TENSORS: HfTensors = HfTensors {
    ffn: "block_sparse_moe",
    ffn_kind: FfnTensors::Experts {
        router: "gate",
        gate: "w1",
        up: "w3",
        down: "w2",
    },
    ..HfTensors::LLAMA
};

impl Family for Mixtral {
    fn architecture(&self) -> Architecture {
        Architecture::Mixtral
    }
    fn name(&self) -> &'static str {
        "Mixtral"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["mixtral"]
    }
    fn hf_class(&self) -> &'static str {
        "MixtralForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults {
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 4096 * 32,
            ..HfDefaults::LLAMA
        }
    }
    fn reads_key(&self, key: &str) -> bool {
        matches!(key, "num_local_experts" | "num_experts_per_tok")
    }
    fn hf_layers(
        &self,
        raw: &RawConfig,
        layers: usize,
        _origin: &str,
    ) -> Result<(Option<usize>, Vec<LayerAttention>)> {
        Ok(every_layer_sliding(raw.sliding_window, layers))
    }
    fn hf_params(
        &self,
        raw: &RawConfig,
        _theta: f64,
        _local: Option<f64>,
        origin: &str,
    ) -> Result<ArchParams> {
        Ok(ArchParams::Mixtral(MoeParams {
            num_local_experts: positive_or(origin, "num_local_experts", raw.num_local_experts, 8)?,
            num_experts_per_tok: positive_or(
                origin,
                "num_experts_per_tok",
                raw.num_experts_per_tok,
                2,
            )?,
            norm_topk_prob: true,
        }))
    }
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
        set("hidden_act", json!(c.hidden_act.hf_name()));
        set("attention_bias", json!(c.attention_bias));
        set("sliding_window", json!(c.sliding_window));
        if let Some(m) = c.moe() {
            set("num_local_experts", json!(m.num_local_experts));
            set("num_experts_per_tok", json!(m.num_experts_per_tok));
        }
    }
    fn gguf_arch(&self) -> Option<&'static str> {
        Some("llama")
    }
    fn claims_gguf(&self, g: &GgufFacts<'_>) -> bool {
        g.arch == "llama" && g.experts > 0
    }
    fn gguf_parts(&self, file: &GgufFile, g: &GgufFacts<'_>, origin: &str) -> Result<GgufParts> {
        let key = format!("{}.expert_used_count", g.arch);
        let used = file
            .get_u64(&key)?
            .ok_or_else(|| Error::config(origin, format!("metadata `{key}` is missing")))?;
        Ok(GgufParts {
            arch: ArchParams::Mixtral(MoeParams {
                num_local_experts: g.experts,
                num_experts_per_tok: used as usize,
                norm_topk_prob: true,
            }),
            ..GgufParts::dense(g.layers)
        })
    }
    fn gguf_tensors(&self) -> GgufTensorRules {
        GgufTensorRules::LLAMA
    }
    fn tensors(&self) -> HfTensors {
        TENSORS
    }
    fn block(&self, c: &ModelConfig) -> BlockRecipe {
        BlockRecipe {
            experts: c.moe().copied(),
            ..BlockRecipe::llama(c)
        }
    }
    fn supports(&self, c: &ModelConfig, what: Capability) -> Support {
        match what {
            Capability::SliceGpt => Err(
                "model_type `mixtral` (Mixtral) has a mixture-of-experts FFN; SliceGPT is \
                 implemented for dense Llama-family models only"
                    .into(),
            ),
            Capability::DeciGguf => Err(
                "Mixtral has a mixture-of-experts FFN, which llama.cpp's `deci` blocks lack".into(),
            ),
            Capability::NemotronNas => super::not_nas(c, ""),
        }
    }
    fn like_presets(&self) -> &'static [LikePreset] {
        &[LikePreset {
            name: "mixtral-8x7b-2layers",
            vocab: 32_000,
            blocks: 2,
            rope_theta: 1_000_000.0,
            max_position: 32_768,
            experts: Some((8, 2)),
            ..LLAMA3_8B
        }]
    }
}
