//! What an export drops: which Hugging Face tensors go away when a plan removes sublayers, so the
//! CLI's `export` can leave them out; and what `export --format hf-compatible` writes instead
//! ([`HfCompatible`]): the family's stock layout with the removed sublayers' output projections
//! zeroed.

use std::collections::BTreeSet;

use finercut_format::family::{StockTensor, StockView};
use finercut_format::{family, HfTensors, ModelConfig, RawTensor, TensorSource};
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

/// The output projection of each sublayer in `removed`, weight and bias, under the shared names
/// (`model.layers.{b}.self_attn.o_proj.*`, `model.layers.{b}.mlp.down_proj.*`): zeroed, they make
/// the sublayer's branch add exactly zero to the residual stream.
pub fn zeroed_tensors(removed: &BTreeSet<usize>) -> BTreeSet<String> {
    removed
        .iter()
        .flat_map(|&i| {
            let b = i / 2;
            let module = if i.is_multiple_of(2) {
                "self_attn.o_proj"
            } else {
                "mlp.down_proj"
            };
            ["weight", "bias"].map(|w| format!("model.layers.{b}.{module}.{w}"))
        })
        .collect()
}

/// The tensors of `export --format hf-compatible`: the checkpoint's tensors in its family's stock
/// layout ([`StockView`]: the names its own checkpoints use, so stock loaders find every tensor
/// they expect), with the output projections of the removed sublayers ([`zeroed_tensors`])
/// zeroed.
pub struct HfCompatible<'a> {
    stock: StockView<'a>,
    zeroed: BTreeSet<String>,
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
            zeroed: zeroed_tensors(removed),
        }
    }

    /// The stored tensors and what each is made of.
    pub fn layout(&self) -> &[StockTensor] {
        self.stock.layout()
    }

    /// The stored names of the zeroed tensors.
    pub fn zeroed(&self) -> Vec<&str> {
        self.layout()
            .iter()
            .filter(|t| t.parts.iter().any(|p| self.zeroed.contains(p)))
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
        if parts.iter().any(|p| self.zeroed.contains(p)) {
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
