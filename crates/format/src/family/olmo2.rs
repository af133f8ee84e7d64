//! OLMo 2 (`olmo2`): a Llama block whose RMSNorms come after each branch instead of before it
//! (`x + norm(attn(x))`, `h + norm(mlp(h))`: `post_attention_layernorm`,
//! `post_feedforward_layernorm`), with QK-norm over the whole q and k projections (weights of
//! `heads · head_dim`) before RoPE.
//!
//! Removing a sublayer skips its branch and its norm together, as zeroing the branch would (the
//! norm of zero is zero). Defaults are `Olmo2Config`'s. GGUF files of OLMo 2 are not read.

use serde_json::{json, Value as Json};

use super::{BlockRecipe, Capability, Family, HfDefaults, HfTensors, QkNorm, Support};
use crate::config::{Architecture, ModelConfig};

/// The OLMo 2 family.
pub struct Olmo2;

/// Norms after each branch only.
const TENSORS: HfTensors = HfTensors {
    attn_norm: None,
    attn_post_norm: Some("post_attention_layernorm"),
    ffn_norm: None,
    ffn_post_norm: Some("post_feedforward_layernorm"),
    ..HfTensors::LLAMA
};

impl Family for Olmo2 {
    fn architecture(&self) -> Architecture {
        Architecture::Olmo2
    }
    fn name(&self) -> &'static str {
        "OLMo 2"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["olmo2"]
    }
    fn hf_class(&self) -> &'static str {
        "Olmo2ForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults {
            rms_norm_eps: 1e-5,
            ..HfDefaults::LLAMA
        }
    }
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
        set("hidden_act", json!(c.hidden_act.hf_name()));
        set("attention_bias", json!(c.attention_bias));
    }
    fn tensors(&self) -> HfTensors {
        TENSORS
    }
    fn block(&self, c: &ModelConfig) -> BlockRecipe {
        BlockRecipe {
            qk_norm: QkNorm::Whole,
            ..BlockRecipe::llama(c)
        }
    }
    fn supports(&self, c: &ModelConfig, what: Capability) -> Support {
        match what {
            Capability::SliceGpt => Err(
                "model_type `olmo2` (OLMo 2) normalises each sublayer's output, and those norms \
                 cannot be folded into a rotation of the residual stream"
                    .into(),
            ),
            Capability::DeciGguf => Err(
                "OLMo 2's norms after each branch and QK-norm are not llama.cpp `deci` blocks"
                    .into(),
            ),
            Capability::NemotronNas => super::not_nas(c, ""),
        }
    }
}
