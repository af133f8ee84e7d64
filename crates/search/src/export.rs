//! What an export drops: which Hugging Face tensors go away when a plan removes sublayers, so the
//! CLI's `export` can leave them out; and what `export --format hf-compatible` writes instead
//! ([`HfCompatible`]): the family's stock layout with the removed sublayers' output projections
//! zeroed.

use std::collections::BTreeSet;

use finercut_format::family::{StockTensor, StockView};
use finercut_format::{family, FfnTensors, HfTensors, ModelConfig, RawTensor, TensorSource};
use serde::{Deserialize, Serialize};

use crate::{Result, SearchResult, Unit};

/// How a family names the tensors of one sublayer (norm and branch go together): its
/// [`HfTensors`], from its family module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorLayout(pub HfTensors);

#[allow(non_upper_case_globals)]
impl TensorLayout {
    /// Llama, Mistral, Qwen2, Qwen3: attention = `self_attn.` (with Qwen3's `q_norm`/`k_norm`) +
    /// `input_layernorm.`; FFN = `mlp.` + `post_attention_layernorm.`.
    pub const Llama: TensorLayout = TensorLayout(HfTensors::LLAMA);
    /// Mixtral: as Llama, with the FFN under `block_sparse_moe.`.
    pub const Mixtral: TensorLayout = TensorLayout(family::mixtral::TENSORS);
    /// Gemma 3 (sandwich norms): attention = `self_attn.` + `input_layernorm.` +
    /// `post_attention_layernorm.`; FFN = `mlp.` + `pre_feedforward_layernorm.` +
    /// `post_feedforward_layernorm.`.
    pub const Gemma3: TensorLayout = TensorLayout(family::gemma3::TENSORS);

    /// The layout of a Hugging Face `model_type` (`llama`, `mistral`, `qwen2`, `qwen3`, `mixtral`,
    /// `gemma3`, `gemma3_text`, …: every registered family's), case-insensitive.
    pub fn for_architecture(name: &str) -> Option<Self> {
        family::by_model_type(name).map(|f| TensorLayout(f.tensors()))
    }

    /// Tensor name prefixes (ending in `.`) of sublayer `i`.
    pub fn sublayer_prefixes(self, i: usize) -> Vec<String> {
        let b = i / 2;
        self.0
            .sublayer_modules(i.is_multiple_of(2))
            .iter()
            .map(|n| format!("model.layers.{b}.{n}."))
            .collect()
    }
}

/// Tensor name prefixes of every sublayer in `removed`, in sublayer order.
pub fn removed_tensor_prefixes(removed: &BTreeSet<usize>, layout: TensorLayout) -> Vec<String> {
    removed
        .iter()
        .flat_map(|&i| layout.sublayer_prefixes(i))
        .collect()
}

/// Whether tensor `name` starts with one of `prefixes`.
pub fn is_removed_tensor(name: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

/// Everything an export needs for one ratio of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportPlan {
    /// The pruning ratio.
    pub ratio: f64,
    /// Units removed, in removal order.
    pub removed_units: Vec<Unit>,
    /// Sublayer indices removed.
    pub removed_sublayers: BTreeSet<usize>,
    /// Hugging Face tensor name prefixes that go away.
    pub tensor_prefixes: Vec<String>,
}

impl ExportPlan {
    /// The export plan of `result` at `ratio` for tensors named as in `layout`.
    pub fn new(result: &SearchResult, ratio: f64, layout: TensorLayout) -> Result<Self> {
        let removed_units = result.units_for_ratio(ratio)?;
        let removed_sublayers: BTreeSet<usize> =
            removed_units.iter().flat_map(|u| u.sublayers()).collect();
        Ok(ExportPlan {
            ratio,
            tensor_prefixes: removed_tensor_prefixes(&removed_sublayers, layout),
            removed_units,
            removed_sublayers,
        })
    }
}

/// Whether tensor `name` (a shared name) is part of the output projection, weight or bias, of a
/// sublayer in `removed`, for a family whose tensors are named as in `tensors`: attention's
/// `o_proj`, the FFN's down projection (GPT-NeoX's under its shared name `down_proj`), and for a
/// mixture of experts every expert's down projection. Zeroed, they make the sublayer's branch add
/// exactly zero to the residual stream (a norm after the branch, Gemma's or OLMo 2's, maps zero to
/// zero).
pub fn is_zeroed_tensor(name: &str, removed: &BTreeSet<usize>, tensors: HfTensors) -> bool {
    let Some(rest) = name.strip_prefix("model.layers.") else {
        return false;
    };
    let Some((block, rest)) = rest.split_once('.') else {
        return false;
    };
    let Ok(b) = block.parse::<usize>() else {
        return false;
    };
    let Some((module, suffix)) = rest.rsplit_once('.') else {
        return false;
    };
    if suffix != "weight" && suffix != "bias" {
        return false;
    }
    if removed.contains(&(2 * b)) && module == format!("{}.o_proj", tensors.attn) {
        return true;
    }
    if !removed.contains(&(2 * b + 1)) {
        return false;
    }
    let Some(inner) = module
        .strip_prefix(tensors.ffn)
        .and_then(|m| m.strip_prefix('.'))
    else {
        return false;
    };
    match tensors.ffn_kind {
        FfnTensors::Gated { down, .. }
        | FfnTensors::FusedGated { down, .. }
        | FfnTensors::Plain { down, .. } => inner == down,
        FfnTensors::Experts { down, .. } => inner
            .strip_prefix("experts.")
            .and_then(|e| e.split_once('.'))
            .is_some_and(|(e, m)| e.parse::<usize>().is_ok() && m == down),
    }
}

/// The tensors of `export --format hf-compatible`: the checkpoint's tensors in its family's stock
/// layout ([`StockView`]: the names its own checkpoints use, so stock loaders find every tensor
/// they expect), with the output projections of the removed sublayers ([`is_zeroed_tensor`])
/// zeroed.
pub struct HfCompatible<'a> {
    stock: StockView<'a>,
    removed: BTreeSet<usize>,
    tensors: HfTensors,
}

impl<'a> HfCompatible<'a> {
    /// The hf-compatible tensors of `weights` (under the shared names, as
    /// [`finercut_format::Family::weights`] presents a checkpoint) of a model configured by
    /// `config`, with the sublayers in `removed` zeroed.
    pub fn new(
        config: &ModelConfig,
        weights: &'a dyn TensorSource,
        removed: &BTreeSet<usize>,
    ) -> HfCompatible<'a> {
        HfCompatible {
            stock: StockView::new(config, weights),
            removed: removed.clone(),
            tensors: config.family().tensors(),
        }
    }

    /// The stored tensors and what each is made of.
    pub fn layout(&self) -> &[StockTensor] {
        self.stock.layout()
    }

    fn is_zeroed(&self, shared: &str) -> bool {
        is_zeroed_tensor(shared, &self.removed, self.tensors)
    }

    /// The stored names of the zeroed tensors.
    pub fn zeroed(&self) -> Vec<&str> {
        self.layout()
            .iter()
            .filter(|t| t.parts.iter().any(|p| self.is_zeroed(p)))
            .map(|t| t.name.as_str())
            .collect()
    }
}

impl TensorSource for HfCompatible<'_> {
    fn names(&self) -> Vec<String> {
        self.stock.names()
    }

    fn contains(&self, name: &str) -> bool {
        self.stock.contains(name)
    }

    fn get(&self, name: &str) -> finercut_format::Result<RawTensor> {
        let mut t = self.stock.get(name)?;
        let parts = self
            .layout()
            .iter()
            .find(|s| s.name == name)
            .map_or(&[][..], |s| s.parts.as_slice());
        if parts.iter().any(|p| self.is_zeroed(p)) {
            if parts.len() > 1 {
                return Err(finercut_format::Error::config(
                    format!("tensor `{name}`"),
                    "an output projection to zero is stored fused with other tensors",
                ));
            }
            t.data = finercut_format::Bytes::from_vec(vec![0u8; t.data.len()]);
        }
        Ok(t)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn llama_prefixes() {
        let p = removed_tensor_prefixes(&BTreeSet::from([0, 5]), TensorLayout::Llama);
        assert_eq!(
            p,
            vec![
                "model.layers.0.self_attn.",
                "model.layers.0.input_layernorm.",
                "model.layers.2.mlp.",
                "model.layers.2.post_attention_layernorm.",
            ]
        );
        assert!(is_removed_tensor("model.layers.2.mlp.up_proj.weight", &p));
        assert!(!is_removed_tensor("model.layers.20.mlp.up_proj.weight", &p));
        assert!(!is_removed_tensor(
            "model.layers.1.self_attn.q_proj.weight",
            &p
        ));
    }

    #[test]
    fn output_projections_of_removed_sublayers_are_zeroed() {
        let removed = BTreeSet::from([0, 3]);
        let z = |name: &str, layout: TensorLayout| is_zeroed_tensor(name, &removed, layout.0);
        for name in [
            "model.layers.0.self_attn.o_proj.weight",
            "model.layers.0.self_attn.o_proj.bias",
            "model.layers.1.mlp.down_proj.weight",
        ] {
            assert!(z(name, TensorLayout::Llama), "{name}");
        }
        for name in [
            "model.layers.1.self_attn.o_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.1.mlp.up_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.10.mlp.down_proj.weight",
            "lm_head.weight",
        ] {
            assert!(!z(name, TensorLayout::Llama), "{name}");
        }
        // Every expert's down projection, not the router's.
        assert!(z(
            "model.layers.1.block_sparse_moe.experts.7.w2.weight",
            TensorLayout::Mixtral
        ));
        assert!(!z(
            "model.layers.1.block_sparse_moe.experts.7.w1.weight",
            TensorLayout::Mixtral
        ));
        assert!(!z(
            "model.layers.1.block_sparse_moe.gate.weight",
            TensorLayout::Mixtral
        ));
        assert!(!z(
            "model.layers.1.mlp.down_proj.weight",
            TensorLayout::Mixtral
        ));
    }

    #[test]
    fn gemma_and_mixtral_prefixes() {
        assert_eq!(TensorLayout::Gemma3.sublayer_prefixes(0).len(), 3);
        assert!(TensorLayout::Mixtral.sublayer_prefixes(1)[0].ends_with("block_sparse_moe."));
        assert_eq!(
            TensorLayout::for_architecture("Qwen2"),
            Some(TensorLayout::Llama)
        );
        assert_eq!(
            TensorLayout::for_architecture("qwen3"),
            Some(TensorLayout::Llama)
        );
        assert_eq!(TensorLayout::for_architecture("gpt2"), None);
    }
}
