//! Model configuration: Hugging Face `config.json` of the Llama family, GGUF metadata, and back.
//!
//! A serde struct with `Option`s mirrors `config.json` ([`RawConfig`], as candle's `LlamaConfig`);
//! it is converted once into the checked [`ModelConfig`], where every default is resolved and
//! nothing is optional except what is genuinely absent (token ids, a sliding window, softcaps).
//! Defaults are those of the transformers config classes (`LlamaConfig`, `MistralConfig`,
//! `Qwen2Config`, `MixtralConfig`, `Gemma3TextConfig`), except that sizes (`hidden_size`,
//! `num_hidden_layers`, …) must be stated: a checkpoint without them is broken, not small.
//! Both spellings of RoPE settings are read: `rope_theta` + `rope_scaling` (transformers 4) and
//! `rope_parameters` (transformers 5). [`ModelConfig::to_hf_json`] writes the transformers 4
//! spelling, which both versions load.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::error::IoResultExt;
use crate::family::{
    BlockRecipe, Capability, Family, GgufFacts, Support, FAMILY_KEYS, SUPPORTED_MODEL_TYPES,
};
use crate::gguf::GgufFile;
use crate::tensor::DType;
use crate::{Error, Result};

/// Model families this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// `llama` (Llama 1-3, SmolLM, TinyLlama, …).
    Llama,
    /// `mistral`: Llama with an optional sliding window.
    Mistral,
    /// `qwen2`: Llama with biases on the q/k/v projections.
    Qwen2,
    /// `qwen3`: Llama with an RMSNorm over every query and key head before RoPE (no q/k/v biases
    /// by default; `head_dim` need not be `hidden_size / num_attention_heads`).
    Qwen3,
    /// `mixtral`: Mistral with a mixture-of-experts FFN.
    Mixtral,
    /// `gemma3_text` (and the text part of `gemma3`): GeGLU, QK-norm, sandwich norms, local/global
    /// attention.
    Gemma3,
    /// `gemma2`: Gemma 3's block without QK-norm, with attention soft-capping.
    Gemma2,
    /// `olmo2`: norms after each branch instead of before, QK-norm over whole projections.
    Olmo2,
    /// `qwen3_moe`: Qwen3 attention with a sparse mixture of experts as every FFN.
    Qwen3Moe,
    /// `phi3` (Phi-3, Phi-4, Phi-4-mini): Llama blocks with fused `qkv_proj` and `gate_up_proj`,
    /// LongRoPE scaling and partial rotary embeddings.
    Phi3,
    /// `gpt_neox` (Pythia): LayerNorm with biases, fused QKV, ungated GELU MLP, partial rotary,
    /// parallel residual blocks.
    GptNeox,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: positions divided by `factor`.
    Linear {
        /// Scaling factor.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling (`rope_type: "llama3"`).
    Llama3 {
        /// Scaling factor for low frequencies.
        factor: f64,
        /// Wavelengths longer than `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths shorter than `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context length of pre-training.
        original_max_position_embeddings: usize,
    },
    /// The inverse frequencies divided by per-frequency factors stored with the weights, in the
    /// tensor [`ROPE_FREQS_TENSOR`] (`head_dim / 2` values), as llama.cpp applies the
    /// `rope_freqs` tensor of a GGUF file (Llama 3.1's scaling, written out by its converter).
    Factors,
}

/// LongRoPE scaling (`"rope_type": "longrope"`, Phi-3): RoPE's inverse frequencies divided by
/// per-frequency factors, the short set for a forward call whose positions all lie within the
/// pre-training context and the long set otherwise, with `cos` and `sin` multiplied by an
/// attention factor.
#[derive(Debug, Clone, PartialEq)]
pub struct LongRope {
    /// Divisors within the original context (`rotary_dim / 2` values).
    pub short_factor: Vec<f64>,
    /// Divisors past it (`rotary_dim / 2` values).
    pub long_factor: Vec<f64>,
    /// Context length of pre-training: a call with a position `p`, `p + 1` above it, uses
    /// `long_factor`.
    pub original_max_position_embeddings: usize,
    /// The factor of `cos` and `sin` (transformers' `attention_scaling`), resolved.
    pub attention_factor: f64,
}

/// The name under which a source serves the RoPE frequency factors of [`RopeScaling::Factors`]
/// (the GGUF tensor's own name: Hugging Face checkpoints have no such tensor).
pub const ROPE_FREQS_TENSOR: &str = "rope_freqs.weight";

/// The FFN gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (SwiGLU): `silu`, `swish`.
    Silu,
    /// GELU, tanh approximation (GeGLU): `gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`.
    GeluTanh,
    /// Exact GELU with the error function: `gelu` (GPT-NeoX, Pythia).
    Gelu,
}

impl Activation {
    /// The name written to config.json.
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
            Activation::Gelu => "gelu",
        }
    }
}

/// The attention span of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerAttention {
    /// Every earlier position.
    Full,
    /// The last [`ModelConfig::sliding_window`] positions.
    Sliding,
}

/// Mixture-of-experts settings (Mixtral).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeParams {
    /// Experts per layer.
    pub num_local_experts: usize,
    /// Experts routed to per token.
    pub num_experts_per_tok: usize,
    /// Whether the chosen experts' probabilities are renormalised to sum to 1 (Mixtral always;
    /// Qwen3-MoE's `norm_topk_prob`).
    pub norm_topk_prob: bool,
}

/// Gemma 3 settings (and Gemma 2's, whose local layers use the global RoPE base).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemma3Params {
    /// Queries are scaled by `query_pre_attn_scalar ** -0.5` (not `head_dim ** -0.5`).
    pub query_pre_attn_scalar: f64,
    /// RoPE base of the sliding-window (local) layers; `rope_theta` is that of the global layers,
    /// and [`ModelConfig::rope_scaling`] applies to the global layers only.
    pub rope_local_base_freq: f64,
    /// `tanh` softcap of the final logits.
    pub final_logit_softcapping: Option<f64>,
    /// `tanh` softcap of the attention logits.
    pub attn_logit_softcapping: Option<f64>,
}

/// GPT-NeoX settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeoxParams {
    /// Attention and MLP read the same block input (`use_parallel_residual`).
    pub use_parallel_residual: bool,
    /// The rotated part of each head (`rotary_pct`, `partial_rotary_factor`).
    pub partial_rotary_factor: f64,
}

/// A SliceGPT model (Ashkboos et al., arXiv 2401.15024): a Llama-family model whose residual
/// stream was rotated and sliced from `original_hidden_size` to `hidden_size` dimensions.
///
/// Its RMSNorms still divide by the original width (`x / sqrt(Σx² / original_hidden_size + eps)`),
/// and every sublayer carries a residual shortcut matrix (`model.layers.N.attn_shortcut_Q`,
/// `model.layers.N.mlp_shortcut_Q`, `[hidden_size, hidden_size]`): the stream becomes
/// `h·Q + branch(h)`. Read from the `slicegpt` object of config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceParams {
    /// The residual width before slicing (the divisor of the RMSNorms).
    pub original_hidden_size: usize,
}

/// Settings that only some architectures have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArchParams {
    /// Llama, Mistral, Qwen2: nothing more.
    Dense,
    /// A sliced Llama, Mistral, Qwen2 or Qwen3 (SliceGPT).
    Sliced(SliceParams),
    /// Mixtral.
    Mixtral(MoeParams),
    /// Gemma 3.
    Gemma3(Gemma3Params),
    /// GPT-NeoX.
    GptNeox(NeoxParams),
}

/// A checked model configuration with every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Model family.
    pub architecture: Architecture,
    /// Rows of the embedding (and of the LM head).
    pub vocab_size: usize,
    /// Residual width `d`.
    pub hidden_size: usize,
    /// FFN inner width (per expert for Mixtral).
    pub intermediate_size: usize,
    /// Decoder blocks `L`.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (divides `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// The norms' epsilon (RMSNorm's, or LayerNorm's `layer_norm_eps` for GPT-NeoX).
    pub rms_norm_eps: f64,
    /// RoPE base (of the global layers for Gemma 3).
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// The fraction of each head that rotates (`partial_rotary_factor`; 1 for most families): the
    /// first [`ModelConfig::rotary_dim`] values.
    pub partial_rotary_factor: f64,
    /// LongRoPE scaling (Phi-3), in place of [`ModelConfig::rope_scaling`] (which is then
    /// `None`).
    pub long_rope: Option<LongRope>,
    /// Longest context the model was configured for.
    pub max_position_embeddings: usize,
    /// Whether the LM head is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// FFN activation.
    pub hidden_act: Activation,
    /// Whether q/k/v carry biases. For Llama and Mistral `o_proj` has one too (transformers'
    /// `attention_bias`); Qwen2 never has one on `o_proj` (see [`ModelConfig::o_proj_bias`]).
    pub attention_bias: bool,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token (the first one when config.json lists several).
    pub eos_token_id: Option<u32>,
    /// Every end-of-sequence token config.json lists.
    pub eos_token_ids: Vec<u32>,
    /// Padding token.
    pub pad_token_id: Option<u32>,
    /// Window of the [`LayerAttention::Sliding`] layers.
    pub sliding_window: Option<usize>,
    /// Attention span of every layer (`num_hidden_layers` entries).
    pub layer_types: Vec<LayerAttention>,
    /// The dtype the weights are stored in (`torch_dtype`).
    pub torch_dtype: DType,
    /// Architecture-specific settings.
    pub arch: ArchParams,
}

/// Token ids may be an int, a list of ints, or null; negative means none.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(crate) enum Ids {
    One(i64),
    Many(Vec<i64>),
}

impl Ids {
    pub(crate) fn list(&self) -> Vec<u32> {
        match self {
            Ids::One(v) => u32::try_from(*v).ok().into_iter().collect(),
            Ids::Many(v) => v.iter().filter_map(|&x| u32::try_from(x).ok()).collect(),
        }
    }
}

/// config.json as written by transformers, every field optional.
#[derive(Deserialize, Debug, Default, Clone)]
pub struct RawConfig {
    pub(crate) model_type: Option<String>,
    pub(crate) vocab_size: Option<usize>,
    pub(crate) hidden_size: Option<usize>,
    pub(crate) intermediate_size: Option<usize>,
    pub(crate) num_hidden_layers: Option<usize>,
    pub(crate) num_attention_heads: Option<usize>,
    pub(crate) num_key_value_heads: Option<usize>,
    pub(crate) head_dim: Option<usize>,
    pub(crate) rms_norm_eps: Option<f64>,
    pub(crate) rope_theta: Option<f64>,
    pub(crate) rope_scaling: Option<Json>,
    pub(crate) rope_parameters: Option<Json>,
    pub(crate) max_position_embeddings: Option<usize>,
    pub(crate) tie_word_embeddings: Option<bool>,
    pub(crate) hidden_act: Option<String>,
    pub(crate) hidden_activation: Option<String>,
    pub(crate) attention_bias: Option<bool>,
    pub(crate) mlp_bias: Option<bool>,
    pub(crate) bos_token_id: Option<Ids>,
    pub(crate) eos_token_id: Option<Ids>,
    pub(crate) pad_token_id: Option<Ids>,
    pub(crate) sliding_window: Option<usize>,
    pub(crate) use_sliding_window: Option<bool>,
    pub(crate) max_window_layers: Option<usize>,
    pub(crate) layer_types: Option<Vec<String>>,
    pub(crate) sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    pub(crate) sliding_window_pattern_private: Option<usize>,
    pub(crate) query_pre_attn_scalar: Option<f64>,
    pub(crate) rope_local_base_freq: Option<f64>,
    /// `None` when absent, `Some(None)` when `null` (families whose default is a cap tell them
    /// apart).
    #[serde(default, deserialize_with = "present")]
    pub(crate) final_logit_softcapping: Option<Option<f64>>,
    /// As `final_logit_softcapping`.
    #[serde(default, deserialize_with = "present")]
    pub(crate) attn_logit_softcapping: Option<Option<f64>>,
    pub(crate) num_local_experts: Option<usize>,
    pub(crate) num_experts_per_tok: Option<usize>,
    pub(crate) torch_dtype: Option<String>,
    pub(crate) dtype: Option<String>,
    pub(crate) text_config: Option<Json>,
    /// The SliceGPT section of a sliced model ([`SliceParams`]).
    pub(crate) slicegpt: Option<Json>,
    /// LongRoPE settings, set by a family that reads them ([`Family::canonical`]).
    #[serde(skip)]
    pub(crate) long_rope: Option<LongRope>,
    /// Every other key, with its value: checked by `check_unimplemented_keys` and reported by
    /// [`RawConfig::unknown_keys`].
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, Json>,
}

/// A key that is present (possibly `null`): `Some(value)`; serde leaves an absent one `None`.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Keys of config.json that are known and do not change what the model computes: training
/// settings, bookkeeping, the vision tower of a multimodal Gemma 3, and the `finercut` section of
/// an export (read by the `finercut` tool). They are ignored without a warning.
const IGNORED_KEYS: &[&str] = &[
    "_name_or_path",
    "architectures",
    "transformers_version",
    "initializer_range",
    "use_cache",
    "attention_dropout",
    // Splits the projections into slices whose products are summed: the same function.
    "pretraining_tp",
    "is_llama_config",
    "output_router_logits",
    "router_aux_loss_coef",
    "router_jitter_noise",
    "id2label",
    "label2id",
    "return_dict",
    "output_attentions",
    "output_hidden_states",
    "tokenizer_class",
    "cache_implementation",
    "vision_config",
    "mm_tokens_per_image",
    "boi_token_index",
    "eoi_token_index",
    "image_token_index",
    "finercut",
];

/// Keys that would change what the model computes and are not implemented: accepted only with
/// the value that leaves the computation as implemented (see `check_unimplemented_keys`).
const CHECKED_KEYS: &[&str] = &[
    "rope_interleaved",
    "use_bidirectional_attention",
    "partial_rotary_factor",
    "quantization_config",
];

impl RawConfig {
    /// Keys of the config.json that this crate neither reads nor knows to be harmless, sorted;
    /// keys of a nested `text_config` are listed as `text_config.KEY`. They are ignored: a caller
    /// should show them to the user (a key that changes the computation and is not implemented
    /// is an error, not an unknown key).
    pub fn unknown_keys(&self) -> Vec<String> {
        let own: &[&str] = self
            .model_type
            .as_deref()
            .and_then(Architecture::from_model_type)
            .map_or(&[], |a| a.family().extra_keys());
        let mut keys: Vec<String> = self
            .other
            .keys()
            .filter(|k| !IGNORED_KEYS.contains(&k.as_str()) && !CHECKED_KEYS.contains(&k.as_str()))
            .filter(|k| !own.contains(&k.as_str()) && !FAMILY_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        if let Some(inner) = self
            .text_config
            .as_ref()
            .and_then(|t| serde_json::from_value::<RawConfig>(t.clone()).ok())
        {
            keys.extend(
                inner
                    .unknown_keys()
                    .into_iter()
                    .map(|k| format!("text_config.{k}")),
            );
        }
        keys.sort();
        keys
    }
}

/// Refuses settings that would change what the model computes in a way this crate does not
/// implement; the error names the key. Settings of another architecture count too (softcaps
/// outside Gemma 3, experts outside Mixtral): ignoring them would compute a different model.
fn check_unimplemented_keys(raw: &RawConfig, arch: Architecture, origin: &str) -> Result<()> {
    let unsupported = |key: &str, value: &Json| {
        Err(Error::unsupported(
            origin,
            format!("`{key}` = {value} is not implemented"),
        ))
    };
    for (key, value) in &raw.other {
        let harmless = match key.as_str() {
            "rope_interleaved" | "use_bidirectional_attention" => {
                value.is_null() || value == &Json::Bool(false)
            }
            "partial_rotary_factor" => {
                arch.family().reads_key(key) || value.is_null() || value.as_f64() == Some(1.0)
            }
            "quantization_config" => value.is_null(),
            _ => true,
        };
        if !harmless {
            return unsupported(key, value);
        }
    }
    let family = arch.family();
    let value_of = |key: &str| -> Option<Json> {
        match key {
            "final_logit_softcapping" => raw.final_logit_softcapping.flatten().map(|x| json!(x)),
            "attn_logit_softcapping" => raw.attn_logit_softcapping.flatten().map(|x| json!(x)),
            "num_local_experts" => raw.num_local_experts.map(|n| json!(n)),
            "num_experts_per_tok" => raw.num_experts_per_tok.map(|n| json!(n)),
            other => raw.other.get(other).filter(|v| !v.is_null()).cloned(),
        }
    };
    for key in FAMILY_KEYS.iter().filter(|k| !family.reads_key(k)) {
        if let Some(value) = value_of(key) {
            return Err(Error::unsupported(
                origin,
                format!(
                    "`{key}` = {value} is not implemented for model_type `{}`",
                    arch.model_type()
                ),
            ));
        }
    }
    Ok(())
}

/// `rope_scaling` / `rope_parameters` as transformers' `ROPE_INIT_FUNCTIONS` read them; a `llama3`
/// scaling without `original_max_position_embeddings` falls back to `max_position_embeddings`, as
/// `_compute_llama3_parameters` does.
fn parse_rope(
    v: &Json,
    origin: &str,
    key: &str,
    max_position_embeddings: Option<usize>,
) -> Result<RopeScaling> {
    if v.is_null() {
        return Ok(RopeScaling::None);
    }
    let obj = v
        .as_object()
        .ok_or_else(|| Error::config(origin, format!("`{key}` is not an object")))?;
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Json::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        obj.get(k).and_then(Json::as_f64).ok_or_else(|| {
            Error::config(
                origin,
                format!("`{key}` of type `{kind}` needs a number `{k}`"),
            )
        })
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: match obj.get("original_max_position_embeddings") {
                None => max_position_embeddings.ok_or_else(|| {
                    Error::config(
                        origin,
                        format!("`{key}` of type `llama3` needs `original_max_position_embeddings` (or `max_position_embeddings`)"),
                    )
                })?,
                Some(_) => {
                    let v = num("original_max_position_embeddings")?;
                    if !(v >= 1.0 && v.fract() == 0.0) {
                        return Err(Error::config(
                            origin,
                            format!("`{key}`: original_max_position_embeddings {v} is not a positive integer"),
                        ));
                    }
                    v as usize
                }
            },
        }),
        other => Err(Error::unsupported(
            origin,
            format!("`{key}` type `{other}` (supported: default, linear, llama3)"),
        )),
    }
}

/// Most blocks a configuration may declare. Per-layer settings are allocated from this number
/// before any weight confirms it; the largest published models have a few hundred blocks.
pub(crate) const MAX_LAYERS: usize = 1 << 16;

/// Checks a block count against [`MAX_LAYERS`].
fn layer_count(origin: &str, name: &str, n: usize) -> Result<usize> {
    if n > MAX_LAYERS {
        return Err(Error::config(
            origin,
            format!("`{name}` = {n} exceeds the limit of {MAX_LAYERS} blocks"),
        ));
    }
    Ok(n)
}

fn positive(origin: &str, name: &str, v: Option<usize>) -> Result<usize> {
    match v {
        Some(0) => Err(Error::config(
            origin,
            format!("`{name}` must be positive, got 0"),
        )),
        Some(v) => Ok(v),
        None => Err(Error::config(origin, format!("`{name}` is missing"))),
    }
}

impl ModelConfig {
    /// Reads and checks a Hugging Face config.json.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        Ok(Self::read_json_file(path)?.0)
    }

    /// Reads and checks a Hugging Face config.json, and lists the keys it ignored as unknown
    /// ([`RawConfig::unknown_keys`]).
    pub fn read_json_file(path: &Path) -> Result<(Self, Vec<String>)> {
        let text = std::fs::read_to_string(path).with_path(path)?;
        Self::parse_json_str(&text, &path.display().to_string())
    }

    /// Parses and checks config.json text; `origin` names it in errors.
    pub fn from_json_str(s: &str, origin: &str) -> Result<Self> {
        Ok(Self::parse_json_str(s, origin)?.0)
    }

    /// Parses and checks config.json text, and lists the keys it ignored as unknown
    /// ([`RawConfig::unknown_keys`]); `origin` names the text in errors.
    /// A config marked with one of finercut's own `model_type`s is read as its source's
    /// ([`crate::own_types`]).
    pub fn parse_json_str(s: &str, origin: &str) -> Result<(Self, Vec<String>)> {
        let unmarked = crate::own_types::unmarked_text(s, origin)?;
        let s = unmarked.as_deref().unwrap_or(s);
        let raw: RawConfig = serde_json::from_str(s)
            .map_err(|e| Error::config(origin, format!("invalid config.json: {e}")))?;
        let unknown = raw.unknown_keys();
        Ok((Self::from_raw(raw, origin)?, unknown))
    }

    /// Resolves defaults and checks a [`RawConfig`].
    pub fn from_raw(raw: RawConfig, origin: &str) -> Result<Self> {
        let model_type = raw.model_type.clone().ok_or_else(|| {
            Error::config(
                origin,
                format!(
                    "`model_type` is missing; supported: {}",
                    SUPPORTED_MODEL_TYPES.join(", ")
                ),
            )
        })?;
        let arch = Architecture::from_model_type(&model_type).ok_or_else(|| {
            Error::config(
                origin,
                format!(
                    "unknown model_type `{model_type}`; supported: {}",
                    SUPPORTED_MODEL_TYPES.join(", ")
                ),
            )
        })?;
        let family = arch.family();
        let defaults = family.hf_defaults();
        check_unimplemented_keys(&raw, arch, origin)?;
        let raw = family.canonical(raw, origin)?;
        check_unimplemented_keys(&raw, arch, origin)?;

        let vocab_size = positive(origin, "vocab_size", raw.vocab_size)?;
        let hidden_size = positive(origin, "hidden_size", raw.hidden_size)?;
        let intermediate_size = positive(origin, "intermediate_size", raw.intermediate_size)?;
        let num_hidden_layers = layer_count(
            origin,
            "num_hidden_layers",
            positive(origin, "num_hidden_layers", raw.num_hidden_layers)?,
        )?;
        let num_attention_heads = positive(origin, "num_attention_heads", raw.num_attention_heads)?;
        let num_key_value_heads = positive(
            origin,
            "num_key_value_heads",
            raw.num_key_value_heads.or(Some(num_attention_heads)),
        )?;
        let head_dim = match raw.head_dim.or(defaults.head_dim) {
            Some(h) => positive(origin, "head_dim", Some(h))?,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(Error::config(
                        origin,
                        format!(
                            "hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_attention_heads}) and no head_dim is given"
                        ),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };

        // RoPE: transformers 5 `rope_parameters`, else `rope_theta` + `rope_scaling`.
        let mut rope_theta = raw.rope_theta;
        let mut rope_scaling = match &raw.rope_scaling {
            Some(v) => parse_rope(v, origin, "rope_scaling", raw.max_position_embeddings)?,
            None => RopeScaling::None,
        };
        let mut local_theta = raw.rope_local_base_freq;
        if let Some(params) = &raw.rope_parameters {
            let full = params.get("full_attention");
            let main = full.unwrap_or(params);
            if !main.is_null() {
                rope_scaling =
                    parse_rope(main, origin, "rope_parameters", raw.max_position_embeddings)?;
                rope_theta = main.get("rope_theta").and_then(Json::as_f64).or(rope_theta);
            }
            if let Some(local) = params.get("sliding_attention") {
                local_theta = local
                    .get("rope_theta")
                    .and_then(Json::as_f64)
                    .or(local_theta);
            }
        }
        let rope_theta = rope_theta.unwrap_or(defaults.rope_theta);
        let partial_rotary_factor = match raw.other.get("partial_rotary_factor") {
            None | Some(Json::Null) => 1.0,
            Some(v) => v.as_f64().ok_or_else(|| {
                Error::config(
                    origin,
                    format!("`partial_rotary_factor` = {v} is not a number"),
                )
            })?,
        };

        let named_act = if defaults.reads_hidden_activation {
            raw.hidden_activation.clone().or(raw.hidden_act.clone())
        } else {
            raw.hidden_act.clone()
        };
        let hidden_act_name = named_act.unwrap_or_else(|| defaults.hidden_act.into());
        let hidden_act = match hidden_act_name.as_str() {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            other => {
                return Err(Error::unsupported(
                    origin,
                    format!(
                    "hidden_act `{other}` (supported: silu, swish, gelu, gelu_pytorch_tanh, gelu_new, gelu_fast)"
                ),
                ))
            }
        };
        if raw.mlp_bias == Some(true) {
            return Err(Error::unsupported(origin, "mlp_bias = true"));
        }
        let attention_bias = family.attention_bias(&raw);

        let eos_token_ids = raw.eos_token_id.as_ref().map(Ids::list).unwrap_or_default();
        let first = |ids: &Option<Ids>| ids.as_ref().and_then(|i| i.list().first().copied());

        let (sliding_window, layer_types) = family.hf_layers(&raw, num_hidden_layers, origin)?;
        let arch_params = family.hf_params(&raw, rope_theta, local_theta, origin)?;
        if raw.slicegpt.is_some() && !matches!(arch_params, ArchParams::Sliced(_)) {
            return Err(Error::unsupported(
                origin,
                format!(
                    "a `slicegpt` section for model_type `{}`: SliceGPT applies to pre-norm dense models only",
                    arch.model_type()
                ),
            ));
        }

        let dtype_name = raw.torch_dtype.clone().or(raw.dtype.clone());
        let torch_dtype = match dtype_name.as_deref() {
            None => DType::F32,
            Some(s) => DType::from_torch_name(s).ok_or_else(|| {
                Error::unsupported(
                    origin,
                    format!("torch_dtype `{s}` (supported: float32, float16, bfloat16)"),
                )
            })?,
        };

        let config = ModelConfig {
            architecture: arch,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(defaults.rms_norm_eps),
            rope_theta,
            rope_scaling,
            partial_rotary_factor,
            long_rope: raw.long_rope.clone(),
            max_position_embeddings: raw
                .max_position_embeddings
                .unwrap_or(defaults.max_position_embeddings),
            tie_word_embeddings: raw
                .tie_word_embeddings
                .unwrap_or(defaults.tie_word_embeddings),
            hidden_act,
            attention_bias,
            bos_token_id: first(&raw.bos_token_id),
            eos_token_id: eos_token_ids.first().copied(),
            eos_token_ids,
            pad_token_id: first(&raw.pad_token_id),
            sliding_window,
            layer_types,
            torch_dtype,
            arch: arch_params,
        };
        config.validate(origin)?;
        Ok(config)
    }

    /// The sizes that fix every tensor's shape, by their `config.json` names: two configurations
    /// with equal sizes (and architecture) describe copies of one network.
    pub fn shape(&self) -> [(&'static str, usize); 7] {
        [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ]
    }

    /// Checks the consistency of the settings; `origin` names the configuration in errors.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |msg: String| Err(Error::config(origin, msg));
        let context = ("max_position_embeddings", self.max_position_embeddings);
        for (name, v) in self.shape().into_iter().chain([context]) {
            if v == 0 {
                return bad(format!("`{name}` must be positive, got 0"));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return bad(format!(
                "rms_norm_eps ({}) must be a positive number",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return bad(format!(
                "rope_theta ({}) must be a positive number",
                self.rope_theta
            ));
        }
        match self.rope_scaling {
            RopeScaling::None | RopeScaling::Factors => {}
            RopeScaling::Linear { factor } if factor > 0.0 => {}
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } if factor > 0.0
                && low_freq_factor > 0.0
                && high_freq_factor > low_freq_factor
                && original_max_position_embeddings > 0 => {}
            other => return bad(format!("invalid rope_scaling {other:?}")),
        }
        let f = self.partial_rotary_factor;
        let rot = self.rotary_dim();
        if !(f > 0.0 && f <= 1.0) || rot == 0 || !rot.is_multiple_of(2) {
            return bad(format!(
                "partial_rotary_factor {f} gives {rot} rotary dimensions of head_dim {} (an even, \
                 positive number is needed)",
                self.head_dim
            ));
        }
        if let Some(l) = &self.long_rope {
            let ok = |v: &[f64]| v.len() == rot / 2 && v.iter().all(|x| x.is_finite() && *x > 0.0);
            if !ok(&l.short_factor) || !ok(&l.long_factor) {
                return bad(format!(
                    "longrope short_factor and long_factor need {} positive values each (rotary \
                     dimensions {rot}), got {} and {}",
                    rot / 2,
                    l.short_factor.len(),
                    l.long_factor.len()
                ));
            }
            if l.original_max_position_embeddings == 0
                || !(l.attention_factor.is_finite() && l.attention_factor > 0.0)
            {
                return bad(format!(
                    "longrope original_max_position_embeddings {} and attention_factor {} must be \
                     positive",
                    l.original_max_position_embeddings, l.attention_factor
                ));
            }
            if self.rope_scaling != RopeScaling::None {
                return bad("longrope together with another rope_scaling".into());
            }
        }
        if self.layer_types.len() != self.num_hidden_layers {
            return bad(format!(
                "layer_types has {} entries for {} layers",
                self.layer_types.len(),
                self.num_hidden_layers
            ));
        }
        if self.layer_types.contains(&LayerAttention::Sliding)
            && self.sliding_window.is_none_or(|w| w == 0)
        {
            return bad("sliding layers need a positive sliding_window".into());
        }
        for (name, id) in [
            ("bos_token_id", self.bos_token_id),
            ("pad_token_id", self.pad_token_id),
        ]
        .into_iter()
        .chain(
            self.eos_token_ids
                .iter()
                .map(|&e| ("eos_token_id", Some(e))),
        ) {
            if let Some(id) = id {
                if id as usize >= self.vocab_size {
                    return bad(format!(
                        "{name} {id} is outside the vocabulary of {}",
                        self.vocab_size
                    ));
                }
            }
        }
        match self.arch {
            ArchParams::Mixtral(m) if m.num_experts_per_tok > m.num_local_experts => bad(format!(
                "num_experts_per_tok ({}) exceeds num_local_experts ({})",
                m.num_experts_per_tok, m.num_local_experts
            )),
            ArchParams::Gemma3(g)
                if g.query_pre_attn_scalar.is_nan() || g.query_pre_attn_scalar <= 0.0 =>
            {
                bad(format!(
                    "query_pre_attn_scalar ({}) must be positive",
                    g.query_pre_attn_scalar
                ))
            }
            ArchParams::Sliced(p) if p.original_hidden_size < self.hidden_size => bad(format!(
                "slicegpt.original_hidden_size ({}) is smaller than hidden_size ({})",
                p.original_hidden_size, self.hidden_size
            )),
            _ => Ok(()),
        }
    }

    /// A configuration of family `f` with the sizes `g` states and defaults for the rest (one
    /// layer at least), for asking the family what it supports before a file's metadata is
    /// complete.
    pub(crate) fn stand_in(f: &dyn Family, g: &GgufFacts<'_>) -> ModelConfig {
        let layers = g.layers.max(1);
        let heads = g.heads.max(1);
        let head_dim = g.head_dim.max(2);
        let parts = crate::family::GgufParts::dense(layers);
        ModelConfig {
            architecture: f.architecture(),
            vocab_size: 1,
            hidden_size: g.hidden_size.max(1),
            intermediate_size: 1,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: heads,
            head_dim,
            rms_norm_eps: 1e-6,
            rope_theta: parts.default_rope_theta,
            rope_scaling: RopeScaling::None,
            partial_rotary_factor: 1.0,
            long_rope: None,
            max_position_embeddings: 2048,
            tie_word_embeddings: false,
            hidden_act: parts.hidden_act,
            attention_bias: g.q_bias,
            bos_token_id: None,
            eos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            sliding_window: parts.sliding_window,
            layer_types: parts.layer_types,
            torch_dtype: DType::F32,
            arch: if g.experts > 0 {
                ArchParams::Mixtral(MoeParams {
                    num_local_experts: g.experts,
                    num_experts_per_tok: 1,
                    norm_topk_prob: true,
                })
            } else {
                parts.arch
            },
        }
    }

    /// The values of each head that rotate: `int(head_dim · partial_rotary_factor)`, as
    /// transformers computes it.
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim as f64 * self.partial_rotary_factor) as usize
    }

    /// The SliceGPT settings, if this is a sliced model.
    pub fn slicing(&self) -> Option<&SliceParams> {
        match &self.arch {
            ArchParams::Sliced(p) => Some(p),
            _ => None,
        }
    }

    /// Whether `o_proj` carries a bias.
    pub fn o_proj_bias(&self) -> bool {
        self.recipe().o_proj_bias
    }

    /// The block this configuration builds ([`Family::block`]).
    pub fn recipe(&self) -> BlockRecipe {
        self.family().block(self)
    }

    /// The family module of this configuration's architecture.
    pub fn family(&self) -> &'static dyn Family {
        self.architecture.family()
    }

    /// Whether this model supports `what` ([`Family::supports`]); `Err` says why not.
    pub fn supports(&self, what: Capability) -> Support {
        self.family().supports(self, what)
    }

    /// The Gemma 3 settings, if this is Gemma 3.
    pub fn gemma3(&self) -> Option<&Gemma3Params> {
        match &self.arch {
            ArchParams::Gemma3(g) => Some(g),
            _ => None,
        }
    }

    /// The mixture-of-experts settings, if this is Mixtral.
    pub fn moe(&self) -> Option<&MoeParams> {
        match &self.arch {
            ArchParams::Mixtral(m) => Some(m),
            _ => None,
        }
    }

    /// The configuration of a GGUF file, from its `{arch}.*` metadata and tensors.
    ///
    /// GGUF keeps fewer settings than config.json; what it lacks is filled in as llama.cpp does:
    /// `head_dim` = `attention.key_length` or `hidden / heads`; tied embeddings when there is no
    /// `output.weight`; for Gemma 3 a local RoPE base of 10000, every 6th layer global and
    /// `query_pre_attn_scalar = head_dim` (llama.cpp `llama-model.cpp`).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let origin = file.path().display().to_string();
        let arch_name = file.architecture()?.to_string();
        let key = |k: &str| format!("{arch_name}.{k}");
        let req = |k: &str| -> Result<usize> {
            match file.get_u64(&key(k))? {
                Some(v) => Ok(v as usize),
                None => Err(Error::config(
                    &origin,
                    format!("metadata `{}` is missing", key(k)),
                )),
            }
        };
        let n_expert = file.get_u64(&key("expert_count"))?.unwrap_or(0) as usize;
        // A `deci` file (a pruned Llama, see `gguf::deci`) has per-layer head counts and FFN
        // widths; the present sublayers share one value, which is what the config holds.
        let deci = if arch_name == "deci" {
            Some(crate::gguf::deci::deci_layers(file)?)
        } else {
            None
        };
        let has_bias = |part: &str| {
            let suffix = format!(".{part}.bias");
            file.tensors()
                .iter()
                .any(|t| t.name.starts_with("blk.") && t.name.ends_with(&suffix))
        };
        // Llama 3.1's scaling is stored as per-frequency divisors (llama.cpp `convert_hf_to_gguf.py`,
        // `LlamaModel.generate_extra_tensors`), applied by the model from the tensor itself.
        let freq_factors = file.tensor(ROPE_FREQS_TENSOR).is_some();
        let hidden_size = req("embedding_length")?;
        let (heads, kv_heads, intermediate_size) = match &deci {
            Some((_, h, kv, f)) => (*h, *kv, *f),
            None => {
                let heads = req("attention.head_count")?;
                let kv_heads = file
                    .get_u64(&key("attention.head_count_kv"))?
                    .map_or(heads, |v| v as usize);
                (heads, kv_heads, req("feed_forward_length")?)
            }
        };
        // A pruned file may have no attention (or no FFN) left at all; any positive value then
        // builds the same model, since those sublayers are never looked up.
        let (heads, kv_heads, intermediate_size) = match &deci {
            Some(_) => (heads.max(1), kv_heads.max(1), intermediate_size.max(1)),
            None => (heads, kv_heads, intermediate_size),
        };
        let head_dim = match file.get_u64(&key("attention.key_length"))? {
            Some(v) => v as usize,
            None if heads > 0 => hidden_size / heads,
            None => 0,
        };
        if let Some(rot) = file.get_u64(&key("rope.dimension_count"))? {
            if rot as usize != head_dim {
                return Err(Error::unsupported(
                    &origin,
                    format!("partial rotary embeddings (rope.dimension_count {rot} < head_dim {head_dim})"),
                ));
            }
        }
        let layers = layer_count(&origin, &key("block_count"), req("block_count")?)?;
        let vocab_size = match file.get_u64(&key("vocab_size"))? {
            Some(v) => v as usize,
            None => match file.tensor("token_embd.weight") {
                Some(t) => t.dims.get(1).copied().unwrap_or(0) as usize,
                None => file
                    .get_array("tokenizer.ggml.tokens")?
                    .map_or(0, <[_]>::len),
            },
        };
        let rms_norm_eps = file
            .get_f64(&key("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| {
                Error::config(
                    &origin,
                    format!(
                        "metadata `{}` is missing",
                        key("attention.layer_norm_rms_epsilon")
                    ),
                )
            })?;
        let rope_scaling = match file.get_str(&key("rope.scaling.type"))? {
            _ if freq_factors => RopeScaling::Factors,
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: file.get_f64(&key("rope.scaling.factor"))?.unwrap_or(1.0),
            },
            Some(other) => {
                return Err(Error::unsupported(
                    &origin,
                    format!("rope.scaling.type `{other}` (supported: none, linear)"),
                ))
            }
        };
        let id = |k: &str| -> Result<Option<u32>> {
            Ok(file.get_u64(k)?.and_then(|v| u32::try_from(v).ok()))
        };
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let facts = GgufFacts {
            arch: &arch_name,
            experts: n_expert,
            q_bias: has_bias("attn_q"),
            o_bias: has_bias("attn_output"),
            layers,
            hidden_size,
            heads,
            head_dim,
        };
        let family = crate::family::family_of_gguf(&facts, &origin)?;
        let architecture = family.architecture();
        let parts = family.gguf_parts(file, &facts, &origin)?;
        let config = ModelConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta: file
                .get_f64(&key("rope.freq_base"))?
                .unwrap_or(parts.default_rope_theta),
            rope_scaling,
            partial_rotary_factor: 1.0,
            long_rope: None,
            max_position_embeddings: file
                .get_u64(&key("context_length"))?
                .map_or(2048, |v| v as usize),
            tie_word_embeddings: file.tensor("output.weight").is_none(),
            hidden_act: parts.hidden_act,
            // Any layer's: layer 0 of a pruned `deci` file may have no attention left.
            attention_bias: facts.q_bias,
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: eos,
            eos_token_ids: eos.into_iter().collect(),
            pad_token_id: id("tokenizer.ggml.padding_token_id")?,
            sliding_window: parts.sliding_window,
            layer_types: parts.layer_types,
            torch_dtype: DType::F32,
            arch: parts.arch,
        };
        config.validate(&origin)?;
        Ok(config)
    }

    /// A config.json that transformers loads as is (`AutoModelForCausalLM.from_pretrained`).
    pub fn to_hf_json(&self) -> Json {
        let rope_scaling = match self.rope_scaling {
            // Not expressible in config.json: `convert_gguf_to_hf` rewrites it as `llama3` scaling
            // or refuses.
            RopeScaling::None | RopeScaling::Factors => Json::Null,
            RopeScaling::Linear { factor } => {
                json!({"rope_type": "linear", "type": "linear", "factor": factor})
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
        };
        let eos = match self.eos_token_ids.as_slice() {
            [] => Json::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let mut j = json!({
            "architectures": [self.architecture.hf_class()],
            "model_type": self.architecture.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.torch_dtype.torch_name(),
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "use_cache": true,
        });
        let Some(obj) = j.as_object_mut() else {
            return j;
        };
        let mut set = |k: &str, v: Json| {
            obj.insert(k.to_string(), v);
        };
        self.family().write_hf(self, &mut set);
        if let Some(p) = self.slicing() {
            set(
                "slicegpt",
                json!({"original_hidden_size": p.original_hidden_size}),
            );
        }
        j
    }
}

/// The `llama3` scaling whose per-frequency divisors are `factors` (a GGUF `rope_freqs` tensor for
/// RoPE base `theta` and heads of `head_dim`), or `None` when no such scaling reproduces them to
/// 1e-4 (relative). `original_max_position_embeddings` is set to 8192, the value llama.cpp's
/// converter assumes; only the ratios of the band edges to it matter.
///
/// llama.cpp's converter writes factor 1 for wavelengths `λ < old / high_freq_factor`, `factor`
/// for `λ > old / low_freq_factor`, and `1 / ((1 − s) / factor + s)` with
/// `s = (old / λ − low_freq_factor) / (high_freq_factor − low_freq_factor)` between: `s` is linear
/// in `1/λ`, so two or more in-between frequencies determine both factors (least squares); with
/// none, the edges are put halfway (geometrically) between the neighbouring wavelengths.
pub(crate) fn llama3_from_rope_factors(
    factors: &[f32],
    theta: f64,
    head_dim: usize,
) -> Option<RopeScaling> {
    const OLD: f64 = 8192.0;
    if head_dim < 2 || factors.len() != head_dim / 2 {
        return None;
    }
    let f: Vec<f64> = factors.iter().map(|&v| f64::from(v)).collect();
    let wavelen: Vec<f64> = (0..f.len())
        .map(|i| 2.0 * std::f64::consts::PI * theta.powf((2 * i) as f64 / head_dim as f64))
        .collect();
    let factor = *f.last()?;
    if !(factor.is_finite() && factor > 1.0) {
        return None;
    }
    let near = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b;
    let middle: Vec<usize> = (0..f.len())
        .filter(|&i| !near(f[i], 1.0) && !near(f[i], factor))
        .collect();
    let (low, high) = if middle.len() >= 2 {
        // s_i = a / λ_i − b, fitted by least squares over the in-between frequencies.
        let pts: Vec<(f64, f64)> = middle
            .iter()
            .map(|&i| {
                (
                    1.0 / wavelen[i],
                    (1.0 / f[i] - 1.0 / factor) / (1.0 - 1.0 / factor),
                )
            })
            .collect();
        let n = pts.len() as f64;
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let a = sxy / sxx;
        let b = a * mx - my;
        // a = old / (high − low), b = low / (high − low).
        let span = OLD / a;
        (b * span, b * span + span)
    } else {
        let last_kept = (0..f.len()).rev().find(|&i| near(f[i], 1.0))?;
        let first_scaled = (0..f.len()).find(|&i| near(f[i], factor))?;
        let high_wavelen = (wavelen[last_kept] * wavelen[last_kept + 1]).sqrt();
        let low_wavelen = (wavelen[first_scaled - 1] * wavelen[first_scaled]).sqrt();
        (OLD / low_wavelen, OLD / high_wavelen)
    };
    if !(low > 0.0 && high > low && low.is_finite() && high.is_finite()) {
        return None;
    }
    let reproduced = wavelen.iter().zip(&f).all(|(&w, &want)| {
        let got = if w < OLD / high {
            1.0
        } else if w > OLD / low {
            factor
        } else {
            let s = (OLD / w - low) / (high - low);
            1.0 / ((1.0 - s) / factor + s)
        };
        (got - want).abs() <= 1e-4 * want
    });
    reproduced.then_some(RopeScaling::Llama3 {
        factor,
        low_freq_factor: low,
        high_freq_factor: high,
        original_max_position_embeddings: OLD as usize,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::family::regular_pattern;

    const TINY: &str = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
        "num_hidden_layers":2,"num_attention_heads":2}"#;

    #[test]
    fn llama_defaults() {
        let c = ModelConfig::from_json_str(TINY, "tiny").unwrap();
        assert_eq!(c.num_key_value_heads, 2);
        assert_eq!(c.head_dim, 4);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.rms_norm_eps, 1e-6);
        assert!(!c.tie_word_embeddings);
        assert_eq!(c.hidden_act, Activation::Silu);
        assert_eq!(c.layer_types, vec![LayerAttention::Full; 2]);
    }

    /// Found by `cargo xtask fuzz`: the per-layer attention types were allocated from
    /// `num_hidden_layers` alone, so a corrupt count aborted the process.
    #[test]
    fn a_huge_block_count_is_an_error() {
        let json = TINY.replace(
            r#""num_hidden_layers":2"#,
            r#""num_hidden_layers":1152921504606846976"#,
        );
        let e = ModelConfig::from_json_str(&json, "huge")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("num_hidden_layers") && e.contains("limit"),
            "{e}"
        );
    }

    /// The divisors llama.cpp's converter writes for a `llama3` scaling.
    fn converter_factors(
        hd: usize,
        theta: f64,
        factor: f64,
        low: f64,
        high: f64,
        old: f64,
    ) -> Vec<f32> {
        (0..hd / 2)
            .map(|i| {
                let w = 2.0 * std::f64::consts::PI * theta.powf((2 * i) as f64 / hd as f64);
                if w < old / high {
                    1.0
                } else if w > old / low {
                    factor as f32
                } else {
                    let s = (old / w - low) / (high - low);
                    (1.0 / ((1.0 - s) / factor + s)) as f32
                }
            })
            .collect()
    }

    #[test]
    fn llama3_parameters_are_recovered_from_gguf_factors() {
        // Llama 3.1 8B: head_dim 128, theta 500000, factor 8, low 1, high 4, context 8192.
        let f = converter_factors(128, 500_000.0, 8.0, 1.0, 4.0, 8192.0);
        let Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) = llama3_from_rope_factors(&f, 500_000.0, 128)
        else {
            panic!("not recognised");
        };
        assert_eq!((factor, original_max_position_embeddings), (8.0, 8192));
        assert!((low_freq_factor - 1.0).abs() < 1e-3, "{low_freq_factor}");
        assert!((high_freq_factor - 4.0).abs() < 1e-3, "{high_freq_factor}");
        // Another original context: only the ratios are recovered, and they reproduce the factors.
        let g = converter_factors(64, 10_000.0, 4.0, 1.0, 4.0, 2048.0);
        let RopeScaling::Llama3 {
            low_freq_factor, ..
        } = llama3_from_rope_factors(&g, 10_000.0, 64).unwrap()
        else {
            panic!("not llama3");
        };
        assert!((low_freq_factor - 4.0).abs() < 1e-3, "{low_freq_factor}");
        // Factors no llama3 scaling produces, and wrong lengths, are not recognised.
        let mut bad = f.clone();
        bad[40] *= 1.5;
        assert_eq!(llama3_from_rope_factors(&bad, 500_000.0, 128), None);
        assert_eq!(llama3_from_rope_factors(&f[1..], 500_000.0, 128), None);
        assert_eq!(
            llama3_from_rope_factors(&vec![1.0; 64], 500_000.0, 128),
            None
        );
    }

    #[test]
    fn pattern_detection() {
        use LayerAttention::*;
        assert_eq!(regular_pattern(&[Sliding, Full, Sliding, Full]), Some(2));
        assert_eq!(regular_pattern(&[Sliding, Full, Full]), None);
        assert_eq!(regular_pattern(&[Sliding, Sliding]), None);
    }
}
