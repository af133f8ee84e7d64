//! Qwen3-MoE (`qwen3_moe`): Qwen3's attention (per-head QK-norm) with a sparse mixture of experts
//! as the FFN of every block: a router `mlp.gate` and experts `mlp.experts.E.{gate_proj, up_proj,
//! down_proj}` of width `moe_intermediate_size`, `num_experts_per_tok` of them per token,
//! weighted by their softmax probabilities, renormalised over the chosen experts when
//! `norm_topk_prob` is set.
//!
//! As for Mixtral, the whole mixture is one FFN sublayer. The expert count is read under both of
//! its names (`num_experts`, written by transformers 4, and `num_local_experts`, by
//! transformers 5). Dense layers among sparse ones (`mlp_only_layers`, `decoder_sparse_step`
//! other than 1) are refused: every FFN sublayer of a model is one kind. GGUF files of Qwen3-MoE
//! are not read.

use serde_json::{json, Value as Json};

use super::{
    mistral::every_layer_sliding, BlockRecipe, Capability, Family, FfnTensors, HfDefaults,
    HfTensors, QkNorm, Support,
};
use crate::config::{ArchParams, Architecture, LayerAttention, ModelConfig, MoeParams, RawConfig};
use crate::{Error, Result};

/// The Qwen3-MoE family.
pub struct Qwen3Moe;

/// Experts under `mlp`.
const TENSORS: HfTensors = HfTensors {
    ffn_kind: FfnTensors::Experts {
        router: "gate",
        gate: "gate_proj",
        up: "up_proj",
        down: "down_proj",
    },
    ..HfTensors::LLAMA
};

impl Family for Qwen3Moe {
    fn architecture(&self) -> Architecture {
        Architecture::Qwen3Moe
    }
    fn name(&self) -> &'static str {
        "Qwen3-MoE"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["qwen3_moe"]
    }
    fn hf_class(&self) -> &'static str {
        "Qwen3MoeForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults {
            max_position_embeddings: 32768,
            ..HfDefaults::LLAMA
        }
    }
    fn reads_key(&self, key: &str) -> bool {
        matches!(
            key,
            "num_local_experts" | "num_experts_per_tok" | "num_experts" | "moe_intermediate_size"
        )
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        &["norm_topk_prob", "decoder_sparse_step", "mlp_only_layers"]
    }
    fn canonical(&self, mut raw: RawConfig, origin: &str) -> Result<RawConfig> {
        let other = |k: &str| raw.other.get(k).filter(|v| !v.is_null());
        if let Some(step) = other("decoder_sparse_step") {
            if step.as_u64() != Some(1) {
                return Err(Error::unsupported(
                    origin,
                    format!("`decoder_sparse_step` = {step}: dense FFN layers among sparse ones"),
                ));
            }
        }
        if let Some(layers) = other("mlp_only_layers") {
            if layers.as_array().is_none_or(|a| !a.is_empty()) {
                return Err(Error::unsupported(
                    origin,
                    format!("`mlp_only_layers` = {layers}: dense FFN layers among sparse ones"),
                ));
            }
        }
        let count = |k: &str| -> Result<Option<usize>> {
            match other(k) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| Error::config(origin, format!("`{k}` = {v} is not a count"))),
            }
        };
        let experts = count("num_experts")?;
        let width = count("moe_intermediate_size")?;
        // The experts' width is the FFN width of every block.
        raw.intermediate_size = Some(width.unwrap_or(768));
        raw.num_local_experts = raw.num_local_experts.or(experts).or(Some(128));
        raw.num_experts_per_tok = raw.num_experts_per_tok.or(Some(8));
        Ok(raw)
    }
    fn hf_layers(
        &self,
        raw: &RawConfig,
        layers: usize,
        _origin: &str,
    ) -> Result<(Option<usize>, Vec<LayerAttention>)> {
        // `sliding_window` counts only with `use_sliding_window`, and then for every layer.
        let window = raw
            .sliding_window
            .filter(|_| raw.use_sliding_window == Some(true));
        Ok(every_layer_sliding(window, layers))
    }
    fn hf_params(
        &self,
        raw: &RawConfig,
        _theta: f64,
        _local: Option<f64>,
        origin: &str,
    ) -> Result<ArchParams> {
        let positive = |name: &str, v: Option<usize>| match v {
            Some(n) if n > 0 => Ok(n),
            _ => Err(Error::config(origin, format!("`{name}` must be positive"))),
        };
        let norm = raw.other.get("norm_topk_prob").and_then(Json::as_bool);
        Ok(ArchParams::Mixtral(MoeParams {
            num_local_experts: positive("num_local_experts", raw.num_local_experts)?,
            num_experts_per_tok: positive("num_experts_per_tok", raw.num_experts_per_tok)?,
            norm_topk_prob: norm.unwrap_or(false),
        }))
    }
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
        set("hidden_act", json!(c.hidden_act.hf_name()));
        set("attention_bias", json!(c.attention_bias));
        set("use_sliding_window", json!(c.sliding_window.is_some()));
        set("sliding_window", json!(c.sliding_window));
        set("moe_intermediate_size", json!(c.intermediate_size));
        set("decoder_sparse_step", json!(1));
        set("mlp_only_layers", json!([]));
        if let Some(m) = c.moe() {
            set("num_local_experts", json!(m.num_local_experts));
            set("num_experts_per_tok", json!(m.num_experts_per_tok));
            set("norm_topk_prob", json!(m.norm_topk_prob));
        }
    }
    fn tensors(&self) -> HfTensors {
        TENSORS
    }
    fn block(&self, c: &ModelConfig) -> BlockRecipe {
        BlockRecipe {
            qk_norm: QkNorm::PerHead,
            experts: c.moe().copied(),
            ..BlockRecipe::llama(c)
        }
    }
    fn supports(&self, c: &ModelConfig, what: Capability) -> Support {
        match what {
            Capability::SliceGpt => Err(
                "model_type `qwen3_moe` (Qwen3-MoE) has a mixture-of-experts FFN; SliceGPT is \
                 implemented for dense Llama-family models only"
                    .into(),
            ),
            Capability::DeciGguf => Err(
                "Qwen3-MoE has a mixture-of-experts FFN, which llama.cpp's `deci` blocks lack"
                    .into(),
            ),
            Capability::NemotronNas => super::not_nas(c, ""),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::ModelConfig;

    #[test]
    fn both_spellings_of_the_expert_count_and_dense_layers_refused() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/golden/tiny/qwen3_moe/config.json");
        let text = std::fs::read_to_string(path).unwrap();
        let mut j: serde_json::Value = serde_json::from_str(&text).unwrap();
        let want = ModelConfig::from_json_str(&text, "t5").unwrap();
        let m = want.moe().unwrap();
        assert_eq!((m.num_local_experts, m.num_experts_per_tok), (4, 2));
        assert!(!m.norm_topk_prob);
        assert_eq!(want.intermediate_size, 16);
        let n = j["num_local_experts"].take();
        j["num_experts"] = n;
        let old = ModelConfig::parse_json_str(&j.to_string(), "t4").unwrap();
        assert_eq!(old.0, want);
        assert!(old.1.is_empty(), "{:?}", old.1);
        j["mlp_only_layers"] = serde_json::json!([1]);
        let e = ModelConfig::from_json_str(&j.to_string(), "t").unwrap_err();
        assert!(e.to_string().contains("mlp_only_layers"), "{e}");
    }
}
