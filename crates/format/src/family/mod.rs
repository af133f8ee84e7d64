//! Model families: everything this project knows about one family, in that family's module.
//!
//! Every family runs through one parametrised transformer (`finercut-model`), because pruning
//! needs uniform sublayers; what differs between families is *knowledge*, and a family's module
//! holds all of it behind the [`Family`] trait:
//! - how its Hugging Face `config.json` (both spellings where checkpoints use both) and its GGUF
//!   metadata map onto the shared [`ModelConfig`];
//! - its tensor names in both formats and any row permutation or stored offset ([`HfTensors`],
//!   [`GgufTensorRules`]);
//! - its block recipe ([`BlockRecipe`]: norm placement, biases, QK-norm, soft-caps, RoPE of the
//!   local layers, mixture of experts), read by the model crate, which cannot be named here;
//! - its tokenizer quirks ([`TokenizerQuirks`]);
//! - which exports and baselines it supports, with the reason for each refusal ([`Support`]);
//! - the shapes `finercut make-tiny --like` builds ([`LikePreset`]).
//!
//! [`FAMILIES`] registers them, one line per family; [`Architecture::family`] finds one.
//! Nothing outside this directory matches on [`Architecture`] (a tidy test keeps it so).

use serde_json::Value as Json;

use crate::config::{
    ArchParams, Architecture, LayerAttention, ModelConfig, MoeParams, RawConfig, MAX_LAYERS,
};
use crate::gguf::GgufFile;
use crate::tensor::{Bytes, RawTensor, TensorSource};
use crate::{Error, Result};

pub mod gemma2;
pub mod gemma3;
pub mod gpt_neox;
pub mod llama;
pub mod mistral;
pub mod mixtral;
pub mod olmo2;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3_moe;
pub mod sliced;

/// Every family, one registration line each. Families are tried in this order when a GGUF
/// file's metadata is matched ([`Family::claims_gguf`]).
pub static FAMILIES: &[&dyn Family] = &[
    &llama::Llama,
    &mistral::Mistral,
    &qwen2::Qwen2,
    &qwen3::Qwen3,
    &mixtral::Mixtral,
    &gemma3::Gemma3,
    &gemma2::Gemma2,
    &olmo2::Olmo2,
    &qwen3_moe::Qwen3Moe,
    &phi3::Phi3,
    &gpt_neox::GptNeox,
];

impl Architecture {
    /// The family module of this architecture.
    pub fn family(self) -> &'static dyn Family {
        FAMILIES
            .iter()
            .copied()
            .find(|f| f.architecture() == self)
            .unwrap_or(&llama::Llama)
    }

    /// The Hugging Face `model_type` written by [`ModelConfig::to_hf_json`].
    pub fn model_type(self) -> &'static str {
        self.family().model_types()[0]
    }

    /// The transformers class written to `architectures`.
    pub fn hf_class(self) -> &'static str {
        self.family().hf_class()
    }

    /// The architecture of a `config.json` `model_type`.
    pub(crate) fn from_model_type(s: &str) -> Option<Self> {
        FAMILIES
            .iter()
            .find(|f| f.model_types().contains(&s))
            .map(|f| f.architecture())
    }
}

/// The family of a `model_type`, compared case-insensitively.
pub fn by_model_type(name: &str) -> Option<&'static dyn Family> {
    let name = name.to_ascii_lowercase();
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.model_types().contains(&name.as_str()))
}

impl Architecture {}

/// The `model_type` values accepted in config.json, in registry order: iterate it
/// (`for t in SUPPORTED_MODEL_TYPES`) or [`ModelTypes::join`] it.
pub const SUPPORTED_MODEL_TYPES: ModelTypes = ModelTypes;

/// Every `model_type` of every registered family (see [`SUPPORTED_MODEL_TYPES`]).
#[derive(Debug, Clone, Copy)]
pub struct ModelTypes;

impl ModelTypes {
    /// The model types joined by `sep`.
    pub fn join(self, sep: &str) -> String {
        self.into_iter().collect::<Vec<_>>().join(sep)
    }
}

impl IntoIterator for ModelTypes {
    type Item = &'static str;
    type IntoIter = std::vec::IntoIter<&'static str>;
    fn into_iter(self) -> Self::IntoIter {
        FAMILIES
            .iter()
            .flat_map(|f| f.model_types().iter().copied())
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// Defaults of a family's transformers config class, for keys a `config.json` leaves out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HfDefaults {
    /// `head_dim` when absent; `None`: `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// `rope_theta` (of the global layers).
    pub rope_theta: f64,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f64,
    /// `max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// `tie_word_embeddings`.
    pub tie_word_embeddings: bool,
    /// The activation's name when the config names none.
    pub hidden_act: &'static str,
    /// Whether `hidden_activation` (Gemma's spelling) wins over `hidden_act`.
    pub reads_hidden_activation: bool,
}

impl HfDefaults {
    /// transformers' `LlamaConfig` defaults.
    pub const LLAMA: HfDefaults = HfDefaults {
        head_dim: None,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 2048,
        tie_word_embeddings: false,
        hidden_act: "silu",
        reads_hidden_activation: false,
    };
}

/// What a GGUF file says about itself before a family is chosen.
#[derive(Debug, Clone, Copy)]
pub struct GgufFacts<'a> {
    /// `general.architecture`.
    pub arch: &'a str,
    /// `{arch}.expert_count` (0 when absent).
    pub experts: usize,
    /// Whether some block has an `attn_q.bias`.
    pub q_bias: bool,
    /// Whether some block has an `attn_output.bias`.
    pub o_bias: bool,
    /// Blocks.
    pub layers: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// Query heads.
    pub heads: usize,
    /// Head width.
    pub head_dim: usize,
}

/// The family-specific part of a configuration read from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufParts {
    /// Sliding window and per-layer attention span.
    pub sliding_window: Option<usize>,
    /// One entry per layer.
    pub layer_types: Vec<LayerAttention>,
    /// Architecture-specific settings.
    pub arch: ArchParams,
    /// The FFN activation.
    pub hidden_act: crate::config::Activation,
    /// `rope.freq_base` when the file has none.
    pub default_rope_theta: f64,
}

impl GgufParts {
    /// A dense model of `layers` full-attention layers with SwiGLU and RoPE base 10000.
    pub fn dense(layers: usize) -> GgufParts {
        GgufParts {
            sliding_window: None,
            layer_types: vec![LayerAttention::Full; layers],
            arch: ArchParams::Dense,
            hidden_act: crate::config::Activation::Silu,
            default_rope_theta: 10_000.0,
        }
    }
}

/// How llama.cpp stores a family's tensors, beyond the shared name table of
/// [`crate::gguf::hf_tensor_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgufTensorRules {
    /// Q/K rows are in llama.cpp's interleaved RoPE order (`convert_hf_to_gguf.py` permutes a
    /// Llama's), undone at load.
    pub qk_permuted: bool,
    /// Norm weights are stored plus one (Gemma: `norm_shift`), subtracted at load.
    pub norm_plus_one: bool,
    /// The Hugging Face name of `ffn_norm` (the norm before the FFN).
    pub ffn_norm: &'static str,
    /// Mixture-of-experts tensors are stacked per layer (`ffn_gate_exps` …) and split at load.
    pub stacked_experts: bool,
    /// How a file with sublayers removed is written as llama.cpp's `deci` (`gguf::deci`).
    pub deci: DeciRule,
}

/// Whether and how a GGUF architecture's blocks become llama.cpp `deci` blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeciRule {
    /// Not `deci` blocks (QK-norm, sandwich norms, GeGLU, …): refused.
    Refused,
    /// Llama blocks in llama.cpp's Q/K row order: copied as they are.
    AsIs,
    /// Llama blocks with Q/K rows in NeoX order: the rows (and biases) move into the interleaved
    /// order `deci` rotates.
    ReorderQk,
}

impl GgufTensorRules {
    /// Llama's: permuted Q/K, plain norms, `ffn_norm` = `post_attention_layernorm`.
    pub const LLAMA: GgufTensorRules = GgufTensorRules {
        qk_permuted: true,
        norm_plus_one: false,
        ffn_norm: "post_attention_layernorm",
        stacked_experts: true,
        deci: DeciRule::AsIs,
    };
    /// Unpermuted Q/K (NeoX RoPE order), no stacked experts, not written as `deci`.
    pub const NEOX: GgufTensorRules = GgufTensorRules {
        qk_permuted: false,
        norm_plus_one: false,
        ffn_norm: "post_attention_layernorm",
        stacked_experts: false,
        deci: DeciRule::Refused,
    };
}

/// A family's Hugging Face tensor names inside `model.layers.N.`: which module of a block holds
/// what, and so which tensors belong to which sublayer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HfTensors {
    /// The norm before attention, if any.
    pub attn_norm: Option<&'static str>,
    /// The norm of attention's output (sandwich norms), if any.
    pub attn_post_norm: Option<&'static str>,
    /// The norm before the FFN, if any.
    pub ffn_norm: Option<&'static str>,
    /// The norm of the FFN's output, if any.
    pub ffn_post_norm: Option<&'static str>,
    /// The attention module (`self_attn`), holding `q_proj` … and `q_norm`/`k_norm`.
    pub attn: &'static str,
    /// The fused projection holding the q, k and v rows in that order (Phi-3's `qkv_proj`), in
    /// place of `q_proj`, `k_proj` and `v_proj`; split at load.
    pub fused_qkv: Option<&'static str>,
    /// The FFN module (`mlp`, or Mixtral's `block_sparse_moe`).
    pub ffn: &'static str,
    /// The FFN's tensors.
    pub ffn_kind: FfnTensors,
}

/// How an FFN module names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnTensors {
    /// A gated FFN: gate, up and down projections.
    Gated {
        /// Gate projection.
        gate: &'static str,
        /// Up projection.
        up: &'static str,
        /// Down projection.
        down: &'static str,
    },
    /// A gated FFN whose gate and up projections are one matrix, the gate's rows first (Phi-3's
    /// `gate_up_proj`); split at load.
    FusedGated {
        /// Gate and up projections.
        gate_up: &'static str,
        /// Down projection.
        down: &'static str,
    },
    /// An ungated FFN with biases, `down(act(up(x)))` (GPT-NeoX).
    Plain {
        /// Up projection.
        up: &'static str,
        /// Down projection.
        down: &'static str,
    },
    /// A sparse mixture: a router and experts `experts.E.{gate,up,down}`.
    Experts {
        /// The router.
        router: &'static str,
        /// Gate projection of one expert.
        gate: &'static str,
        /// Up projection of one expert.
        up: &'static str,
        /// Down projection of one expert.
        down: &'static str,
    },
}

impl HfTensors {
    /// Llama's pre-norm block.
    pub const LLAMA: HfTensors = HfTensors {
        attn_norm: Some("input_layernorm"),
        attn_post_norm: None,
        ffn_norm: Some("post_attention_layernorm"),
        ffn_post_norm: None,
        attn: "self_attn",
        fused_qkv: None,
        ffn: "mlp",
        ffn_kind: FfnTensors::Gated {
            gate: "gate_proj",
            up: "up_proj",
            down: "down_proj",
        },
    };

    /// The modules of one sublayer (attention or FFN), each the start of tensor names
    /// `model.layers.N.{module}.…`: removing the sublayer removes these.
    pub fn sublayer_modules(&self, attention: bool) -> Vec<&'static str> {
        if attention {
            [Some(self.attn), self.attn_norm, self.attn_post_norm]
                .into_iter()
                .flatten()
                .collect()
        } else {
            [Some(self.ffn), self.ffn_norm, self.ffn_post_norm]
                .into_iter()
                .flatten()
                .collect()
        }
    }
}

/// Where queries and keys are normalised before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// Not at all.
    None,
    /// Every head vector (Gemma 3, Qwen3: weights of `head_dim`).
    PerHead,
    /// The whole q and k projections (OLMo 2: weights of `heads · head_dim`).
    Whole,
}

/// A norm's kind: RMSNorm whose stored weight scales as `w` or Gemma's `1 + w`, or LayerNorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormScale {
    /// RMSNorm, `x̂ · w`.
    Plain,
    /// RMSNorm, `x̂ · (1 + w)`.
    OnePlus,
    /// LayerNorm with weight and bias, `(x − mean) / σ · w + b` (GPT-NeoX).
    LayerNorm,
}

/// The block of a configured model, as the shared transformer builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRecipe {
    /// Tensor names.
    pub tensors: HfTensors,
    /// How norm weights scale.
    pub norm_scale: NormScale,
    /// RMSNorms of queries and keys before RoPE (`q_norm`, `k_norm`).
    pub qk_norm: QkNorm,
    /// Biases on q/k/v.
    pub qkv_bias: bool,
    /// A bias on `o_proj`.
    pub o_proj_bias: bool,
    /// Queries scaled by this instead of `head_dim ** -0.5`.
    pub query_scale: Option<f64>,
    /// `tanh` softcap of the attention logits.
    pub attn_softcap: Option<f64>,
    /// `tanh` softcap of the final logits.
    pub final_softcap: Option<f64>,
    /// Embeddings multiplied by `sqrt(hidden_size)`.
    pub scale_embeddings: bool,
    /// RoPE base of the sliding-window layers when it differs from `rope_theta`.
    pub local_rope_theta: Option<f64>,
    /// Mixture of experts.
    pub experts: Option<MoeParams>,
    /// Biases on the FFN's projections.
    pub mlp_bias: bool,
    /// Parallel residual blocks: the attention and the FFN both read the block input,
    /// `x + attn(norm1(x)) + ffn(norm2(x))` (GPT-NeoX's `use_parallel_residual`).
    pub parallel_residual: bool,
    /// Partial rotary embeddings: only the first this many values of each head rotate (`None`:
    /// all of `head_dim`).
    pub rotary_dim: Option<usize>,
}

impl BlockRecipe {
    /// Llama's block for `c` with `c`'s family's tensor names: plain pre-norms, biases as
    /// configured.
    pub fn llama(c: &ModelConfig) -> BlockRecipe {
        BlockRecipe {
            tensors: c.architecture.family().tensors(),
            norm_scale: NormScale::Plain,
            qk_norm: QkNorm::None,
            qkv_bias: c.attention_bias,
            o_proj_bias: c.attention_bias,
            query_scale: None,
            attn_softcap: None,
            final_softcap: None,
            scale_embeddings: false,
            local_rope_theta: None,
            experts: None,
            mlp_bias: false,
            parallel_residual: false,
            rotary_dim: None,
        }
    }
}

/// Tokenizer behaviour that depends on the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenizerQuirks {
    /// Evaluation prepends BOS to every context (Gemma's tokenizer does, and the model expects it).
    pub add_bos: bool,
    /// A GGUF vocabulary is Gemma's SentencePiece (rebuilt as transformers 5 does), not Llama's.
    pub gguf_gemma_sentencepiece: bool,
}

impl TokenizerQuirks {
    /// No quirks.
    pub const NONE: TokenizerQuirks = TokenizerQuirks {
        add_bos: false,
        gguf_gemma_sentencepiece: false,
    };
}

/// An export or baseline that a family may not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// `finercut slice` (SliceGPT, which rotates the residual stream).
    SliceGpt,
    /// `export --format gguf` with sublayers removed: llama.cpp's `deci` architecture.
    DeciGguf,
    /// `export --format hf-nas`: a Nemotron-NAS `DeciLMForCausalLM` config.
    NemotronNas,
}

/// Whether a family supports a [`Capability`]: `Err` holds why not, for the refusal message.
pub type Support = std::result::Result<(), String>;

/// The shape of a published model for `finercut make-tiny --like`: its `config.json` sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LikePreset {
    /// The preset's name (`llama-3-8b`).
    pub name: &'static str,
    /// Vocabulary.
    pub vocab: usize,
    /// Residual width.
    pub hidden: usize,
    /// FFN width (per expert).
    pub intermediate: usize,
    /// Blocks.
    pub blocks: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// Norm epsilon.
    pub rms_norm_eps: f64,
    /// Context length.
    pub max_position: usize,
    /// Tied embeddings.
    pub tie_embeddings: bool,
    /// q/k/v biases.
    pub qkv_bias: bool,
    /// `(experts, experts per token)`.
    pub experts: Option<(usize, usize)>,
    /// Sliding window.
    pub sliding_window: Option<usize>,
    /// Llama 3.1's `rope_scaling`.
    pub llama3_rope: bool,
    /// `hidden_act`.
    pub hidden_act: &'static str,
}

/// One model family's knowledge (see the module documentation).
pub trait Family: Sync {
    /// The architecture this module describes.
    fn architecture(&self) -> Architecture;
    /// The family's name in messages (`Gemma 3`).
    fn name(&self) -> &'static str;
    /// The `model_type`s read from config.json; the first is written.
    fn model_types(&self) -> &'static [&'static str];
    /// The transformers class written to `architectures`.
    fn hf_class(&self) -> &'static str;
    /// Defaults for keys config.json leaves out.
    fn hf_defaults(&self) -> HfDefaults;

    /// Whether config.json key `key`, one that only some families read ([`FAMILY_KEYS`]), is
    /// read by this one; the others refuse it, since ignoring it would compute another model.
    fn reads_key(&self, _key: &str) -> bool {
        false
    }
    /// config.json in the shared spellings: the language model's settings of a config that nests
    /// them (multimodal Gemma 3's `text_config`), or the family's own keys moved onto the shared
    /// ones (Qwen3-MoE's `moe_intermediate_size`); settings of the family that are not
    /// implemented are refused here.
    fn canonical(&self, raw: RawConfig, _origin: &str) -> Result<RawConfig> {
        Ok(raw)
    }
    /// Keys of config.json that only this family reads (from [`RawConfig`]'s other keys), so they
    /// are not reported as unknown.
    fn extra_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether q/k/v carry biases.
    fn attention_bias(&self, raw: &RawConfig) -> bool {
        raw.attention_bias.unwrap_or(false)
    }
    /// The sliding window and each layer's span from config.json.
    fn hf_layers(
        &self,
        _raw: &RawConfig,
        layers: usize,
        _origin: &str,
    ) -> Result<(Option<usize>, Vec<LayerAttention>)> {
        Ok((None, vec![LayerAttention::Full; layers]))
    }
    /// Architecture-specific settings from config.json; `rope_theta` is the (global) RoPE base
    /// and `local_theta` that of the sliding layers when the config names one (in either
    /// spelling).
    fn hf_params(
        &self,
        raw: &RawConfig,
        _rope_theta: f64,
        _local_theta: Option<f64>,
        origin: &str,
    ) -> Result<ArchParams> {
        sliced::dense_or_sliced(raw, origin)
    }
    /// Writes the family's own keys of config.json (the shared ones are written already).
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json));

    /// The `general.architecture` the family is stored under in GGUF, if llama.cpp has one.
    fn gguf_arch(&self) -> Option<&'static str> {
        None
    }
    /// Whether a GGUF file is this family's.
    fn claims_gguf(&self, _g: &GgufFacts<'_>) -> bool {
        false
    }
    /// The family-specific settings of a GGUF file.
    fn gguf_parts(&self, _file: &GgufFile, g: &GgufFacts<'_>, _origin: &str) -> Result<GgufParts> {
        Ok(GgufParts::dense(g.layers))
    }
    /// How llama.cpp stores the family's tensors.
    fn gguf_tensors(&self) -> GgufTensorRules {
        GgufTensorRules::NEOX
    }

    /// The weights of a checkpoint of this family (configured by `c`), under the shared tensor
    /// names the loader reads: the store itself, or a view that renames (and splits fused)
    /// tensors.
    fn weights(&self, _c: &ModelConfig, store: Box<dyn TensorSource>) -> Box<dyn TensorSource> {
        store
    }
    /// Whether `export --format hf-compatible` (the stock tensor layout with zeroed output
    /// projections) can be written; `Err` says why not.
    fn hf_compatible_export(&self) -> Support {
        Ok(())
    }
    /// The family's stock checkpoint layout, the inverse of [`Family::weights`]: each tensor its
    /// own checkpoints store, built from the tensors `shared` names (in that order) as
    /// [`Family::weights`] presents them. Written by `export --format hf-compatible` and
    /// `make-tiny --like`, so stock loaders read them. Default: every tensor as it is named.
    fn stock_layout(&self, _c: &ModelConfig, shared: &[String]) -> Vec<StockTensor> {
        shared.iter().map(|n| StockTensor::same(n)).collect()
    }

    /// The family's Hugging Face tensor names.
    fn tensors(&self) -> HfTensors {
        HfTensors::LLAMA
    }
    /// The block of a model configured by `c`.
    fn block(&self, c: &ModelConfig) -> BlockRecipe {
        BlockRecipe::llama(c)
    }
    /// Tokenizer quirks.
    fn tokenizer(&self) -> TokenizerQuirks {
        TokenizerQuirks::NONE
    }
    /// Whether the family (configured by `c`) supports `what`, and why not.
    fn supports(&self, c: &ModelConfig, what: Capability) -> Support;
    /// The shapes of published models of this family for `make-tiny --like`.
    fn like_presets(&self) -> &'static [LikePreset] {
        &[]
    }
    /// Settings of preset `preset` beyond its [`LikePreset`] sizes, added to the config.json that
    /// `make-tiny --like` reads (Phi-4-mini's `partial_rotary_factor`).
    fn like_config(&self, _preset: &str, _config: &mut serde_json::Map<String, Json>) {}
}

/// One tensor of a family's stock checkpoint layout ([`Family::stock_layout`]) and the tensors,
/// under the shared names, that it is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockTensor {
    /// The stored name (`gpt_neox.layers.0.attention.query_key_value.weight`).
    pub name: String,
    /// The shared-name tensors it holds, in order; they agree on every dimension but the first.
    pub parts: Vec<String>,
    /// `None`: the parts' rows one part after the other. `Some(n)`: `n` rows of each part in
    /// turn, again and again (GPT-NeoX's `query_key_value`, whose rows are `[heads, 3,
    /// head_dim]`: `n` = `head_dim`).
    pub interleave_rows: Option<usize>,
}

impl StockTensor {
    /// A tensor stored under its shared name.
    pub fn same(name: &str) -> StockTensor {
        StockTensor::renamed(name, name)
    }

    /// The shared tensor `shared` stored as `name`.
    pub fn renamed(name: &str, shared: &str) -> StockTensor {
        StockTensor {
            name: name.to_string(),
            parts: vec![shared.to_string()],
            interleave_rows: None,
        }
    }

    /// The shape of the stored tensor, given its parts' shapes (in [`StockTensor::parts`]'
    /// order); `Err` names the tensor when they do not fit together.
    pub fn shape(&self, parts: &[Vec<usize>]) -> Result<Vec<usize>> {
        let mismatch = |why: String| Error::config(format!("tensor `{}`", self.name), why);
        let first = parts
            .first()
            .ok_or_else(|| mismatch("made of no tensors".into()))?;
        let mut rows = 0;
        for (p, shape) in self.parts.iter().zip(parts) {
            if shape.len() != first.len() || shape.get(1..) != first.get(1..) || shape.is_empty() {
                return Err(mismatch(format!(
                    "part `{p}` of shape {shape:?} does not stack with shape {first:?}"
                )));
            }
            if let Some(n) = self.interleave_rows {
                if n == 0 || shape[0] % n != 0 || shape[0] / n != first[0] / n {
                    return Err(mismatch(format!(
                        "part `{p}` of shape {shape:?} is not the same number of {n}-row groups \
                         as {first:?}"
                    )));
                }
            }
            rows += shape[0];
        }
        let mut shape = first.clone();
        shape[0] = rows;
        Ok(shape)
    }

    /// The stored tensor made of `parts` (the tensors [`StockTensor::parts`] names, in order).
    pub fn join(&self, parts: Vec<RawTensor>) -> Result<RawTensor> {
        let shapes: Vec<Vec<usize>> = parts.iter().map(|t| t.shape.clone()).collect();
        let shape = self.shape(&shapes)?;
        let dtype = parts.first().map(|t| t.dtype).unwrap_or(crate::DType::F32);
        if let Some(t) = parts.iter().find(|t| t.dtype != dtype) {
            return Err(Error::config(
                format!("tensor `{}`", self.name),
                format!("part `{}` is {:?}, another {dtype:?}", t.name, t.dtype),
            ));
        }
        let mut parts = parts;
        if parts.len() == 1 {
            let mut t = parts.remove(0);
            t.name = self.name.clone();
            return Ok(t);
        }
        let row_bytes = shape[1..].iter().product::<usize>() * dtype.size();
        let mut data = Vec::with_capacity(shape[0] * row_bytes);
        match self.interleave_rows {
            None => parts.iter().for_each(|t| data.extend_from_slice(&t.data)),
            Some(n) => {
                let chunk = n * row_bytes;
                let groups = parts[0].data.len() / chunk.max(1);
                for g in 0..groups {
                    for t in &parts {
                        data.extend_from_slice(&t.data[g * chunk..(g + 1) * chunk]);
                    }
                }
            }
        }
        Ok(RawTensor {
            name: self.name.clone(),
            dtype,
            shape,
            data: Bytes::from_vec(data),
        })
    }
}

/// The tensors of `shared` (under the shared names) in a family's stock layout
/// ([`Family::stock_layout`]): named as stored, fused tensors joined.
pub struct StockView<'a> {
    inner: &'a dyn TensorSource,
    layout: Vec<StockTensor>,
}

impl<'a> StockView<'a> {
    /// The stock layout of the tensors of `shared`, for a model configured by `c`.
    pub fn new(c: &ModelConfig, shared: &'a dyn TensorSource) -> StockView<'a> {
        let mut names = shared.names();
        names.sort();
        StockView {
            layout: c.family().stock_layout(c, &names),
            inner: shared,
        }
    }

    /// The stored tensors and what each is made of.
    pub fn layout(&self) -> &[StockTensor] {
        &self.layout
    }

    fn find(&self, name: &str) -> Option<&StockTensor> {
        self.layout.iter().find(|t| t.name == name)
    }
}

impl TensorSource for StockView<'_> {
    fn names(&self) -> Vec<String> {
        self.layout.iter().map(|t| t.name.clone()).collect()
    }

    fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn get(&self, name: &str) -> Result<RawTensor> {
        let t = self.find(name).ok_or_else(|| {
            Error::config(
                format!("tensor `{name}`"),
                "not in the stock layout of this checkpoint",
            )
        })?;
        let parts = t
            .parts
            .iter()
            .map(|p| self.inner.get(p))
            .collect::<Result<Vec<_>>>()?;
        t.join(parts)
    }
}

/// Keys of config.json that only some families read, in the order they are checked; a family
/// reads them when [`Family::reads_key`] says so, and refuses them otherwise.
pub const FAMILY_KEYS: &[&str] = &[
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "num_local_experts",
    "num_experts_per_tok",
    "num_experts",
    "moe_intermediate_size",
];

/// The family that a GGUF file's metadata describes.
pub(crate) fn family_of_gguf(g: &GgufFacts<'_>, origin: &str) -> Result<&'static dyn Family> {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.claims_gguf(g))
        .ok_or_else(|| {
            let mut names: Vec<&str> = FAMILIES.iter().filter_map(|f| f.gguf_arch()).collect();
            names.dedup();
            Error::unsupported(
                origin,
                format!(
                    "GGUF architecture `{}` (supported: {})",
                    g.arch,
                    names.join(", ")
                ),
            )
        })
}

/// Whether the family of a GGUF file (as far as `g` describes it) supports `what`: the family's
/// own answer and reason ([`Family::supports`]), asked of a configuration with `g`'s sizes; `Err`
/// names the architecture when no family reads it.
pub(crate) fn gguf_support(g: &GgufFacts<'_>, what: Capability, origin: &str) -> Support {
    let f = family_of_gguf(g, origin).map_err(|e| e.to_string())?;
    f.supports(&ModelConfig::stand_in(f, g), what)
}

/// How tensors of a GGUF file of `general.architecture` `arch` are stored (the rules of the
/// first family stored under that name; `deci` files are Llama blocks in llama.cpp's order).
pub fn gguf_tensor_rules(arch: &str) -> GgufTensorRules {
    if arch == "deci" {
        return GgufTensorRules {
            stacked_experts: false,
            deci: DeciRule::Refused,
            ..GgufTensorRules::LLAMA
        };
    }
    FAMILIES
        .iter()
        .find(|f| f.gguf_arch() == Some(arch))
        .map_or(GgufTensorRules::NEOX, |f| f.gguf_tensors())
}

/// The tokenizer quirks of a GGUF file of `general.architecture` `arch`.
pub fn gguf_tokenizer_quirks(arch: &str) -> TokenizerQuirks {
    FAMILIES
        .iter()
        .find(|f| f.gguf_arch() == Some(arch))
        .map_or(TokenizerQuirks::NONE, |f| f.tokenizer())
}

/// Every `make-tiny --like` preset, in registry order, with its family.
pub fn like_presets() -> Vec<(&'static dyn Family, &'static LikePreset)> {
    FAMILIES
        .iter()
        .flat_map(|f| f.like_presets().iter().map(move |p| (*f, p)))
        .collect()
}

// Shared parsing pieces the family modules use.

/// `layer_types` of config.json: one `full_attention` or `sliding_attention` per layer.
pub(crate) fn parse_layer_types(names: &[String], origin: &str) -> Result<Vec<LayerAttention>> {
    names
        .iter()
        .map(|n| match n.as_str() {
            "full_attention" => Ok(LayerAttention::Full),
            "sliding_attention" => Ok(LayerAttention::Sliding),
            other => Err(Error::config(
                origin,
                format!(
                    "layer_types: unknown `{other}` (expected full_attention or sliding_attention)"
                ),
            )),
        })
        .collect()
}

/// Layers of which every `period`-th (counting from 1) is global and the others sliding.
pub(crate) fn periodic_layers(layers: usize, period: usize) -> Vec<LayerAttention> {
    (0..layers.min(MAX_LAYERS))
        .map(|i| {
            if (i + 1) % period == 0 {
                LayerAttention::Full
            } else {
                LayerAttention::Sliding
            }
        })
        .collect()
}

/// The `layer_types` of config.json.
pub(crate) fn layer_type_names(types: &[LayerAttention]) -> Vec<&'static str> {
    types
        .iter()
        .map(|t| match t {
            LayerAttention::Full => "full_attention",
            LayerAttention::Sliding => "sliding_attention",
        })
        .collect()
}

/// `Some(p)` when layer `i` is global exactly when `(i + 1) % p == 0`.
pub(crate) fn regular_pattern(types: &[LayerAttention]) -> Option<usize> {
    let p = types.iter().position(|t| *t == LayerAttention::Full)? + 1;
    types
        .iter()
        .enumerate()
        .all(|(i, t)| (*t == LayerAttention::Full) == ((i + 1) % p == 0))
        .then_some(p)
}

/// A positive count from config.json, or its default.
pub(crate) fn positive_or(
    origin: &str,
    name: &str,
    v: Option<usize>,
    default: usize,
) -> Result<usize> {
    match v.unwrap_or(default) {
        0 => Err(Error::config(
            origin,
            format!("`{name}` must be positive, got 0"),
        )),
        n => Ok(n),
    }
}

/// The refusal of a Nemotron-NAS export for a family whose blocks are not Llama blocks.
pub(crate) fn not_nas(c: &ModelConfig, why: &str) -> Support {
    Err(format!(
        "{} cannot be written as DeciLMForCausalLM, whose blocks are Llama blocks \
         (SwiGLU FFN, RMSNorm, no sliding window, QK-norm or sandwich norms){why}",
        c.architecture.model_type()
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The configurations of the tiny golden models (`data/golden/tiny/*/config.json`).
    fn golden_configs() -> Vec<(String, ModelConfig)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/golden/tiny");
        let mut out: Vec<(String, ModelConfig)> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("config.json").is_file())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let c = ModelConfig::from_json_file(&e.path().join("config.json")).unwrap();
                (name, c)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn every_family_has_a_golden_model_that_round_trips_its_config() {
        let golden = golden_configs();
        for f in FAMILIES {
            assert!(
                golden
                    .iter()
                    .any(|(_, c)| c.architecture == f.architecture()),
                "{} has no tiny golden model",
                f.name()
            );
        }
        for (name, c) in &golden {
            let text = c.to_hf_json().to_string();
            let (back, unknown) = ModelConfig::parse_json_str(&text, name).unwrap();
            assert_eq!(&back, c, "{name}");
            assert!(unknown.is_empty(), "{name}: {unknown:?}");
        }
    }

    #[test]
    fn refusals_name_the_family() {
        for (name, c) in golden_configs() {
            for what in [
                Capability::SliceGpt,
                Capability::DeciGguf,
                Capability::NemotronNas,
            ] {
                if let Err(why) = c.supports(what) {
                    let f = c.family();
                    assert!(
                        why.contains(f.model_types()[0]) || why.contains(f.name()),
                        "{name} {what:?}: {why}"
                    );
                }
            }
        }
    }
}
