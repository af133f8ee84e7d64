//! GPT-NeoX and Pythia (`gpt_neox`, `GPTNeoXForCausalLM`): LayerNorms with weight and bias,
//! biases on every projection, a fused `query_key_value` projection, an ungated GELU MLP
//! (`dense_h_to_4h`, `dense_4h_to_h`), partial rotary embeddings, untied `embed_in` / `embed_out`
//! and, by default, parallel residual blocks.
//!
//! **Parallel residual** (`use_parallel_residual`, transformers' default and Pythia's): a block
//! computes `x + attn(ln1(x)) + mlp(ln2(x))`, both branches reading the block input `x`; with
//! `false` it is the sequential `h = x + attn(ln1(x))`, `h + mlp(ln2(h))`. FinerCut's candidates
//! stay the 2L sublayers. In a parallel block, removing the attention sublayer leaves
//! `x + mlp(ln2(x))` and removing the MLP leaves `x + attn(ln1(x))`: the remaining branch still
//! reads the block input, exactly as transformers computes the block with the removed branch's
//! output zeroed. Removing both leaves `x`. The shared transformer runs a parallel block's
//! attention together with its MLP, at the MLP sublayer, so the residual stream entering the MLP
//! sublayer is the block input (`Model::trace`).
//!
//! **Tensors.** Checkpoints store `gpt_neox.embed_in`, `gpt_neox.layers.N.{input_layernorm,
//! post_attention_layernorm, attention.query_key_value, attention.dense, mlp.dense_h_to_4h,
//! mlp.dense_4h_to_h}`, `gpt_neox.final_layer_norm` and `embed_out` (`lm_head` in checkpoints
//! transformers 5 writes). [`Family::weights`] presents them under the shared names
//! (`model.layers.N.self_attn.q_proj` …, the MLP as `mlp.up_proj` / `mlp.down_proj`), splitting
//! `query_key_value`, whose rows are laid out per head as `[heads, 3, head_dim]` (each head's
//! query, key and value rows in turn), into `q_proj`, `k_proj` and `v_proj`. Tensors already under
//! the shared names (finercut's own `dropped` export) are read as they are.
//!
//! **Configuration.** transformers 5.24 reads RoPE settings from `rope_parameters` (or an old
//! `rope_scaling`) first, then Pythia's `rotary_emb_base` and `rotary_pct`, with defaults 10000
//! and 0.25; a top-level `rope_theta` or `partial_rotary_factor` is not read by it, so one that
//! disagrees with those is refused. The rotated width is `int(head_dim · partial_rotary_factor)`.
//! The norms' epsilon is `layer_norm_eps` (default 1e-5); `attention_bias` (default true) puts
//! biases on `query_key_value` and `dense`; the MLP always has them. `hidden_act` is `gelu`
//! (exact, Pythia's) or a tanh approximation (`gelu_new`, `gelu_fast`, `gelu_pytorch_tanh`).
//!
//! **Exports.** `dropped` is written under the shared tensor names, which finercut reads back.
//! `hf-compatible` and `make-tiny --like` write the stock layout ([`GptNeox::stock_layout`]): the
//! stored names above, `query_key_value` joined back from `q_proj`, `k_proj` and `v_proj` in its
//! `[heads, 3, head_dim]` row order, the head as `embed_out`; a removed sublayer is its zeroed
//! output projection, weight and bias (`attention.dense` or `mlp.dense_4h_to_h`), so its branch adds
//! exactly zero: in a parallel block the other branch still reads the block input, and in a
//! sequential one the next branch reads the block input, what finercut computes for the removed
//! candidate.
//! Refused, with the reason in [`GptNeox::supports`]: SliceGPT (LayerNorm's mean subtraction and
//! bias, and the parallel block, do not fold into a rotation of the residual stream), llama.cpp
//! `deci` GGUF and Nemotron-NAS (their blocks are sequential Llama blocks with RMSNorm and a gated
//! MLP). GGUF files of GPT-NeoX are not read.

use serde_json::{json, Value as Json};

use super::{
    BlockRecipe, Capability, Family, FfnTensors, HfDefaults, HfTensors, LikePreset, NormScale,
    StockTensor, Support,
};
use crate::config::{ArchParams, Architecture, ModelConfig, NeoxParams, RawConfig};
use crate::tensor::{Bytes, RawTensor, TensorSource};
use crate::{Error, Result};

/// The GPT-NeoX family.
pub struct GptNeox;

/// The shared names of the MLP's two projections.
const TENSORS: HfTensors = HfTensors {
    ffn_kind: FfnTensors::Plain {
        up: "up_proj",
        down: "down_proj",
    },
    ..HfTensors::LLAMA
};

/// Pythia 160M's shape, the base of the other presets.
const PYTHIA_160M: LikePreset = LikePreset {
    name: "pythia-160m",
    vocab: 50_304,
    hidden: 768,
    intermediate: 3072,
    blocks: 12,
    heads: 12,
    kv_heads: 12,
    rope_theta: 10_000.0,
    rms_norm_eps: 1e-5,
    max_position: 2048,
    tie_embeddings: false,
    qkv_bias: true,
    experts: None,
    sliding_window: None,
    llama3_rope: false,
    hidden_act: "gelu",
};

impl Family for GptNeox {
    fn architecture(&self) -> Architecture {
        Architecture::GptNeox
    }
    fn name(&self) -> &'static str {
        "GPT-NeoX"
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["gpt_neox"]
    }
    fn hf_class(&self) -> &'static str {
        "GPTNeoXForCausalLM"
    }
    fn hf_defaults(&self) -> HfDefaults {
        HfDefaults {
            head_dim: None,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 2048,
            tie_word_embeddings: false,
            hidden_act: "gelu",
            reads_hidden_activation: false,
        }
    }
    fn reads_key(&self, key: &str) -> bool {
        key == "partial_rotary_factor"
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        &[
            "use_parallel_residual",
            "rotary_pct",
            "rotary_emb_base",
            "layer_norm_eps",
            "partial_rotary_factor",
            // Training-time settings.
            "hidden_dropout",
            "classifier_dropout",
            "attention_probs_dropout_prob",
            "hidden_dropout_prob",
            "is_decoder",
        ]
    }
    fn canonical(&self, mut raw: RawConfig, origin: &str) -> Result<RawConfig> {
        let number = |raw: &RawConfig, k: &str| -> Result<Option<f64>> {
            match raw.other.get(k) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| Error::config(origin, format!("`{k}` = {v} is not a number"))),
            }
        };
        // RoPE as transformers 5.24's `GPTNeoXConfig.convert_rope_params_to_dict`: the
        // parameters dict (or an old `rope_scaling`), then `rotary_emb_base` / `rotary_pct`.
        let params = raw
            .rope_parameters
            .clone()
            .or_else(|| raw.rope_scaling.clone())
            .filter(|p| !p.is_null());
        let in_params = |k: &str| {
            params
                .as_ref()
                .and_then(|p| p.get(k))
                .and_then(Json::as_f64)
        };
        let theta = in_params("rope_theta")
            .or(number(&raw, "rotary_emb_base")?)
            .unwrap_or(10_000.0);
        let factor = in_params("partial_rotary_factor")
            .or(number(&raw, "rotary_pct")?)
            .unwrap_or(0.25);
        for (key, given, used) in [
            ("rope_theta", raw.rope_theta, theta),
            (
                "partial_rotary_factor",
                number(&raw, "partial_rotary_factor")?,
                factor,
            ),
        ] {
            if given.is_some_and(|g| g != used) {
                return Err(Error::config(
                    origin,
                    format!(
                        "top-level `{key}` = {} disagrees with the {used} that transformers reads \
                         for gpt_neox (from rope_parameters, rotary_emb_base or rotary_pct)",
                        given.unwrap_or(used)
                    ),
                ));
            }
        }
        raw.rope_theta = Some(theta);
        raw.other.remove("rotary_emb_base");
        raw.other.remove("partial_rotary_factor");
        raw.other.insert("rotary_pct".into(), json!(factor));
        raw.rms_norm_eps = number(&raw, "layer_norm_eps")?.or(Some(1e-5));
        Ok(raw)
    }
    fn attention_bias(&self, raw: &RawConfig) -> bool {
        raw.attention_bias.unwrap_or(true)
    }
    fn hf_params(
        &self,
        raw: &RawConfig,
        _rope_theta: f64,
        _local_theta: Option<f64>,
        origin: &str,
    ) -> Result<ArchParams> {
        let factor = raw
            .other
            .get("rotary_pct")
            .and_then(Json::as_f64)
            .unwrap_or(0.25);
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(Error::config(
                origin,
                format!("partial_rotary_factor (rotary_pct) {factor} must be in (0, 1]"),
            ));
        }
        let parallel = match raw.other.get("use_parallel_residual") {
            None | Some(Json::Null) => true,
            Some(v) => v.as_bool().ok_or_else(|| {
                Error::config(
                    origin,
                    format!("`use_parallel_residual` = {v} is not a boolean"),
                )
            })?,
        };
        Ok(ArchParams::GptNeox(NeoxParams {
            use_parallel_residual: parallel,
            partial_rotary_factor: factor,
        }))
    }
    fn write_hf(&self, c: &ModelConfig, set: &mut dyn FnMut(&str, Json)) {
        set("hidden_act", json!(c.hidden_act.hf_name()));
        set("attention_bias", json!(c.attention_bias));
        set("layer_norm_eps", json!(c.rms_norm_eps));
        set("rotary_emb_base", json!(c.rope_theta));
        if let ArchParams::GptNeox(p) = c.arch {
            set("use_parallel_residual", json!(p.use_parallel_residual));
            set("rotary_pct", json!(p.partial_rotary_factor));
        }
    }
    fn tensors(&self) -> HfTensors {
        TENSORS
    }
    fn block(&self, c: &ModelConfig) -> BlockRecipe {
        let p = neox(c);
        BlockRecipe {
            norm_scale: NormScale::LayerNorm,
            mlp_bias: true,
            parallel_residual: p.use_parallel_residual,
            rotary_dim: Some(rotary_dim(c.head_dim, p.partial_rotary_factor)),
            ..BlockRecipe::llama(c)
        }
    }
    fn weights(&self, c: &ModelConfig, store: Box<dyn TensorSource>) -> Box<dyn TensorSource> {
        Box::new(NeoxNames {
            inner: store,
            heads: c.num_attention_heads,
            head_dim: c.head_dim,
        })
    }
    fn stock_layout(&self, c: &ModelConfig, shared: &[String]) -> Vec<StockTensor> {
        shared
            .iter()
            .filter_map(|name| match stored_name(name) {
                None => Some(StockTensor::same(name)),
                Some((stored, Part::Whole)) => Some(StockTensor::renamed(&stored, name)),
                // The fused tensor once, where its query part comes.
                Some((stored, Part::Qkv(0))) => Some(StockTensor {
                    name: stored,
                    parts: ["q_proj", "k_proj", "v_proj"]
                        .iter()
                        .map(|p| name.replacen("q_proj", p, 1))
                        .collect(),
                    interleave_rows: Some(c.head_dim),
                }),
                Some((_, Part::Qkv(_))) => None,
            })
            .collect()
    }
    fn supports(&self, c: &ModelConfig, what: Capability) -> Support {
        match what {
            Capability::SliceGpt => Err(
                "model_type `gpt_neox` (GPT-NeoX) uses LayerNorm, whose mean subtraction and bias \
                 do not fold into a rotation of the residual stream, and parallel blocks"
                    .into(),
            ),
            Capability::DeciGguf => Err(
                "GPT-NeoX's LayerNorms, ungated GELU MLP, partial rotary and parallel blocks are \
                 not llama.cpp `deci` blocks"
                    .into(),
            ),
            Capability::NemotronNas => super::not_nas(
                c,
                "; GPT-NeoX has LayerNorm, an ungated GELU MLP and partial rotary",
            ),
        }
    }
    fn like_presets(&self) -> &'static [LikePreset] {
        &[
            PYTHIA_160M,
            LikePreset {
                name: "pythia-410m",
                hidden: 1024,
                intermediate: 4096,
                blocks: 24,
                heads: 16,
                kv_heads: 16,
                ..PYTHIA_160M
            },
            LikePreset {
                name: "pythia-1b",
                hidden: 2048,
                intermediate: 8192,
                blocks: 16,
                heads: 8,
                kv_heads: 8,
                ..PYTHIA_160M
            },
        ]
    }
}

/// The GPT-NeoX settings of `c` (transformers' defaults for another family's configuration).
fn neox(c: &ModelConfig) -> NeoxParams {
    match c.arch {
        ArchParams::GptNeox(p) => p,
        _ => NeoxParams {
            use_parallel_residual: true,
            partial_rotary_factor: 0.25,
        },
    }
}

/// transformers' rotated width, `int(head_dim · factor)`, made even (RoPE rotates pairs) and at
/// least 2.
fn rotary_dim(head_dim: usize, factor: f64) -> usize {
    let n = (head_dim as f64 * factor) as usize;
    (n - n % 2).max(2).min(head_dim)
}

/// Which rows of the fused `query_key_value` a shared name takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    Qkv(usize),
}

/// The stored tensor behind a shared name, and which of its parts.
fn stored_name(name: &str) -> Option<(String, Part)> {
    match name {
        "model.embed_tokens.weight" => {
            return Some(("gpt_neox.embed_in.weight".into(), Part::Whole))
        }
        "lm_head.weight" => return Some(("embed_out.weight".into(), Part::Whole)),
        _ => {}
    }
    if let Some(rest) = name.strip_prefix("model.norm.") {
        return Some((format!("gpt_neox.final_layer_norm.{rest}"), Part::Whole));
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let (stored, part) = match module {
        "input_layernorm" | "post_attention_layernorm" => (module, Part::Whole),
        "self_attn.q_proj" => ("attention.query_key_value", Part::Qkv(0)),
        "self_attn.k_proj" => ("attention.query_key_value", Part::Qkv(1)),
        "self_attn.v_proj" => ("attention.query_key_value", Part::Qkv(2)),
        "self_attn.o_proj" => ("attention.dense", Part::Whole),
        "mlp.up_proj" => ("mlp.dense_h_to_4h", Part::Whole),
        "mlp.down_proj" => ("mlp.dense_4h_to_h", Part::Whole),
        _ => return None,
    };
    Some((format!("gpt_neox.layers.{layer}.{stored}.{suffix}"), part))
}

/// The shared names of a stored tensor (three for `query_key_value`); `None` for a tensor without
/// one (kept under its own name).
fn shared_names(stored: &str) -> Option<Vec<String>> {
    match stored {
        "gpt_neox.embed_in.weight" => return Some(vec!["model.embed_tokens.weight".into()]),
        "embed_out.weight" | "lm_head.weight" => return Some(vec!["lm_head.weight".into()]),
        _ => {}
    }
    if let Some(rest) = stored.strip_prefix("gpt_neox.final_layer_norm.") {
        return Some(vec![format!("model.norm.{rest}")]);
    }
    let rest = stored.strip_prefix("gpt_neox.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let shared: &[&str] = match module {
        "input_layernorm" => &["input_layernorm"],
        "post_attention_layernorm" => &["post_attention_layernorm"],
        "attention.query_key_value" => {
            &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
        }
        "attention.dense" => &["self_attn.o_proj"],
        "mlp.dense_h_to_4h" => &["mlp.up_proj"],
        "mlp.dense_4h_to_h" => &["mlp.down_proj"],
        _ => return None,
    };
    Some(
        shared
            .iter()
            .map(|m| format!("model.layers.{layer}.{m}.{suffix}"))
            .collect(),
    )
}

/// A GPT-NeoX checkpoint's tensors under the shared names (see the module documentation).
struct NeoxNames {
    inner: Box<dyn TensorSource>,
    heads: usize,
    head_dim: usize,
}

impl NeoxNames {
    /// The stored name behind `name`, trying transformers 5's `lm_head` where `embed_out` is absent.
    fn resolve(&self, name: &str) -> Option<(String, Part)> {
        let (stored, part) = stored_name(name)?;
        if stored == "embed_out.weight" && !self.inner.contains(&stored) {
            return Some(("lm_head.weight".into(), part));
        }
        Some((stored, part))
    }
}

impl TensorSource for NeoxNames {
    fn names(&self) -> Vec<String> {
        self.inner
            .names()
            .into_iter()
            .flat_map(|n| shared_names(&n).unwrap_or_else(|| vec![n]))
            .collect()
    }

    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
            || self
                .resolve(name)
                .is_some_and(|(stored, _)| self.inner.contains(&stored))
    }

    fn get(&self, name: &str) -> Result<RawTensor> {
        if self.inner.contains(name) {
            return self.inner.get(name);
        }
        let Some((stored, part)) = self.resolve(name) else {
            return self.inner.get(name);
        };
        let t = self.inner.get(&stored)?;
        let Part::Qkv(which) = part else {
            return Ok(t);
        };
        // Rows `[heads, 3, head_dim]`: head h's query rows, then its key rows, then its values.
        let (heads, hd) = (self.heads, self.head_dim);
        let rows = 3 * heads * hd;
        let row_elems: usize = t.shape.iter().skip(1).product();
        if t.shape.first() != Some(&rows) {
            return Err(Error::config(
                format!("tensor `{stored}`"),
                format!(
                    "shape {:?}: query_key_value needs {rows} rows (3 · {heads} heads · {hd})",
                    t.shape
                ),
            ));
        }
        let row_bytes = row_elems * t.dtype.size();
        let mut data = Vec::with_capacity(heads * hd * row_bytes);
        for h in 0..heads {
            let start = (3 * h + which) * hd * row_bytes;
            data.extend_from_slice(&t.data[start..start + hd * row_bytes]);
        }
        let mut shape = t.shape.clone();
        shape[0] = heads * hd;
        Ok(RawTensor {
            name: name.to_string(),
            dtype: t.dtype,
            shape,
            data: Bytes::from_vec(data),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (shared, stored) in [
            ("model.embed_tokens.weight", "gpt_neox.embed_in.weight"),
            ("model.norm.bias", "gpt_neox.final_layer_norm.bias"),
            ("lm_head.weight", "embed_out.weight"),
            (
                "model.layers.3.self_attn.o_proj.bias",
                "gpt_neox.layers.3.attention.dense.bias",
            ),
            (
                "model.layers.0.mlp.up_proj.weight",
                "gpt_neox.layers.0.mlp.dense_h_to_4h.weight",
            ),
            (
                "model.layers.11.input_layernorm.weight",
                "gpt_neox.layers.11.input_layernorm.weight",
            ),
        ] {
            assert_eq!(
                stored_name(shared).unwrap(),
                (stored.to_string(), Part::Whole)
            );
            assert_eq!(shared_names(stored).unwrap(), vec![shared.to_string()]);
        }
        assert_eq!(
            stored_name("model.layers.2.self_attn.k_proj.bias").unwrap(),
            (
                "gpt_neox.layers.2.attention.query_key_value.bias".to_string(),
                Part::Qkv(1)
            )
        );
        assert_eq!(
            shared_names("gpt_neox.layers.2.attention.query_key_value.weight")
                .unwrap()
                .len(),
            3
        );
        assert_eq!(shared_names("gpt_neox.layers.0.attention.bias"), None);
    }

    /// The stock layout joins q, k and v back into `query_key_value` (rows `[heads, 3, head_dim]`),
    /// where its query part comes, and names the rest as Pythia's checkpoints do.
    #[test]
    fn stock_layout_fuses_qkv_per_head() {
        let c = config("").unwrap();
        let shared: Vec<String> = [
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.k_proj.bias",
            "model.layers.0.self_attn.q_proj.bias",
            "model.layers.0.self_attn.v_proj.bias",
            "model.layers.0.mlp.down_proj.weight",
            "lm_head.weight",
            "gpt_neox.layers.0.attention.rotary_emb.inv_freq",
        ]
        .map(String::from)
        .to_vec();
        let layout = GptNeox.stock_layout(&c, &shared);
        let names: Vec<&str> = layout.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gpt_neox.embed_in.weight",
                "gpt_neox.layers.0.attention.query_key_value.bias",
                "gpt_neox.layers.0.mlp.dense_4h_to_h.weight",
                "embed_out.weight",
                "gpt_neox.layers.0.attention.rotary_emb.inv_freq",
            ]
        );
        let qkv = &layout[1];
        assert_eq!(qkv.interleave_rows, Some(c.head_dim));
        // Two heads of width 16: rows h0.q h0.k h0.v h1.q h1.k h1.v.
        let part = |p: &str, v: f32| RawTensor {
            name: format!("model.layers.0.self_attn.{p}.bias"),
            dtype: crate::DType::F32,
            shape: vec![32],
            data: Bytes::from_f32_vec((0..32).map(|i| v + (i / 16) as f32 * 10.0).collect()),
        };
        let fused = qkv
            .join(vec![
                part("q_proj", 1.0),
                part("k_proj", 2.0),
                part("v_proj", 3.0),
            ])
            .unwrap();
        assert_eq!(fused.shape, vec![96]);
        let firsts: Vec<f32> = fused
            .to_f32_vec()
            .unwrap()
            .chunks(16)
            .map(|c| c[0])
            .collect();
        assert_eq!(firsts, [1.0, 2.0, 3.0, 11.0, 12.0, 13.0]);
        // A part with another number of heads is refused, naming the tensor.
        let mut short = part("v_proj", 3.0);
        short.shape = vec![16];
        let e = qkv
            .join(vec![part("q_proj", 1.0), part("k_proj", 2.0), short])
            .unwrap_err()
            .to_string();
        assert!(e.contains("query_key_value") && e.contains("v_proj"), "{e}");
    }

    /// The golden models' config.json (Pythia's spelling and transformers 5's) leave no key
    /// unread.
    #[test]
    fn golden_configs_have_no_unknown_keys() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/golden/tiny");
        for (name, parallel, factor) in [
            ("gpt_neox", true, 0.5),
            ("gpt_neox_sequential", false, 0.25),
        ] {
            let text = std::fs::read_to_string(dir.join(name).join("config.json")).unwrap();
            let (c, unknown) = ModelConfig::parse_json_str(&text, name).unwrap();
            assert!(unknown.is_empty(), "{name}: {unknown:?}");
            assert_eq!(
                c.arch,
                ArchParams::GptNeox(NeoxParams {
                    use_parallel_residual: parallel,
                    partial_rotary_factor: factor,
                })
            );
        }
    }

    #[test]
    fn rotary_width_is_transformers_truncation() {
        assert_eq!(rotary_dim(64, 0.25), 16);
        assert_eq!(rotary_dim(128, 0.25), 32);
        assert_eq!(rotary_dim(16, 1.0), 16);
        assert_eq!(rotary_dim(20, 0.25), 4);
    }

    fn config(extra: &str) -> Result<ModelConfig> {
        ModelConfig::from_json_str(
            &format!(
                r#"{{"model_type":"gpt_neox","vocab_size":64,"hidden_size":32,
                "intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":2{extra}}}"#
            ),
            "neox",
        )
    }

    /// Pythia's spellings, transformers 5's `rope_parameters`, and the defaults give the same
    /// settings; a disagreeing top-level key is refused.
    #[test]
    fn both_rope_spellings_are_read() {
        let params = |c: &ModelConfig| match c.arch {
            ArchParams::GptNeox(p) => (
                c.rope_theta,
                p.partial_rotary_factor,
                p.use_parallel_residual,
            ),
            _ => panic!("not gpt_neox"),
        };
        let default = config("").unwrap();
        assert_eq!(params(&default), (10_000.0, 0.25, true));
        assert_eq!(default.rms_norm_eps, 1e-5);
        assert!(default.attention_bias);
        let pythia = config(r#","rotary_emb_base":20000,"rotary_pct":0.5,"use_parallel_residual":false,"layer_norm_eps":1e-6"#).unwrap();
        assert_eq!(params(&pythia), (20_000.0, 0.5, false));
        assert_eq!(pythia.rms_norm_eps, 1e-6);
        let t5 = config(r#","rope_parameters":{"rope_type":"default","rope_theta":20000,"partial_rotary_factor":0.5},"use_parallel_residual":false"#).unwrap();
        assert_eq!(params(&t5), params(&pythia));
        // rope_parameters wins over Pythia's keys, as in transformers.
        let both = config(r#","rope_parameters":{"rope_theta":30000,"partial_rotary_factor":1.0},"rotary_emb_base":20000,"rotary_pct":0.5"#).unwrap();
        assert_eq!(params(&both), (30_000.0, 1.0, true));
        let e = config(r#","rotary_pct":0.5,"partial_rotary_factor":0.25"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("partial_rotary_factor"), "{e}");
        assert!(config(r#","rotary_emb_base":20000,"rope_theta":10000"#).is_err());
        assert!(config(r#","rotary_pct":0"#).is_err());
        // The written config reads back to the same settings.
        let back = ModelConfig::from_json_str(&pythia.to_hf_json().to_string(), "back").unwrap();
        assert_eq!(back, pythia);
    }
}
