//! Nemotron-NAS (`DeciLMForCausalLM`, `model_type: "nemotron-nas"`) configurations: the Hugging
//! Face layout of models whose blocks may lack attention or FFN, which vLLM serves
//! (`vllm/model_executor/models/nemotron_nas.py`) and llama.cpp converts (`conversion/deci.py`).
//!
//! The schema, as in NVIDIA's Llama-3_1-Nemotron checkpoints: a Llama `config.json` with
//! `intermediate_size` and `num_key_value_heads` set to `null` and one `block_configs` entry per
//! block:
//!
//! ```json
//! {"attention": {"n_heads_in_group": 3, "no_op": false, "num_sink_tokens": null,
//!                "replace_with_linear": false, "sparsify": null, "unshifted_sink": false,
//!                "use_prefill_window_in_sink_attention": false, "window_length": null},
//!  "ffn": {"ffn_mult": 4.0, "no_op": false, "replace_with_linear": false, "sparsify": null}}
//! ```
//!
//! `n_heads_in_group` is `num_attention_heads / num_key_value_heads`; the FFN width is
//! `_ffn_mult_to_intermediate_size(ffn_mult, hidden_size)`, i.e. `int(2 * ffn_mult * hidden / 3)`
//! rounded up to a multiple of 256. A width that is not a multiple of 256 cannot be written as an
//! `ffn_mult`; vLLM then reads `ffn.intermediate_size` instead (its `hasattr(ffn, "ffn_mult")`
//! branch), which is written in its place. A removed sublayer is `no_op: true` with
//! `n_heads_in_group` / `ffn_mult` `null`, and its tensors (including its norm) are absent.
//! Qwen2-style q/k/v biases without an `o_proj` bias are `attention_bias: false, qkv_bias: true`,
//! which vLLM's DeciLM attention reads.
//!
//! transformers has no built-in class for `nemotron-nas`, so the export also writes a small
//! `configuration_decilm.py` (named in `auto_map`), and vLLM loads the directory with
//! `--trust-remote-code`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value as Json};

use crate::config::ModelConfig;
use crate::error::IoResultExt;
use crate::family::Capability;
use crate::{Error, Result};

/// The `model_type` of Nemotron-NAS configurations.
pub const NAS_MODEL_TYPE: &str = "nemotron-nas";

/// The `configuration_decilm.py` written next to a Nemotron-NAS `config.json`: a `LlamaConfig`
/// whose `block_configs` entries are attribute-accessible, as vLLM's `nemotron_nas.py` reads them.
pub const NAS_CONFIGURATION_PY: &str = r#"# Configuration of a Nemotron-NAS (DeciLMForCausalLM) checkpoint written by finercut.
# Licensed under the Apache License, Version 2.0.
from types import SimpleNamespace

from transformers import LlamaConfig


def _namespace(value):
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    return value


def _plain(value):
    if isinstance(value, SimpleNamespace):
        return {k: _plain(v) for k, v in vars(value).items()}
    return value


def _ffn_width(ffn, hidden):
    if getattr(ffn, "ffn_mult", None) is not None:
        n = int(2 * ffn.ffn_mult * hidden / 3)
        return n if n % 256 == 0 else n + 256 - n % 256
    return ffn.intermediate_size


class DeciLMConfig(LlamaConfig):
    model_type = "nemotron-nas"

    def __init__(self, block_configs=None, **kwargs):
        blocks = [_namespace(b) for b in (block_configs or [])]
        # The per-block settings are the real ones; the Llama fields get the first block's values.
        heads = kwargs.get("num_attention_heads")
        if kwargs.get("num_key_value_heads") is None and heads:
            groups = [b.attention.n_heads_in_group for b in blocks if not b.attention.no_op]
            kwargs["num_key_value_heads"] = heads // groups[0] if groups else heads
        hidden = kwargs.get("hidden_size")
        if kwargs.get("intermediate_size") is None and hidden:
            widths = [_ffn_width(b.ffn, hidden) for b in blocks if not b.ffn.no_op]
            kwargs["intermediate_size"] = widths[0] if widths else 1
        super().__init__(**kwargs)
        self.block_configs = blocks

    def to_dict(self):
        out = super().to_dict()
        out["block_configs"] = [_plain(b) for b in self.block_configs]
        return out
"#;

/// The FFN width vLLM and llama.cpp compute from `ffn_mult` (`_ffn_mult_to_intermediate_size`).
pub fn ffn_mult_to_intermediate_size(ffn_mult: f64, hidden: usize) -> usize {
    let n = (2.0 * ffn_mult * hidden as f64 / 3.0) as usize;
    n.div_ceil(256) * 256
}

/// The Nemotron-NAS `config.json` of `config` with `blocks` (`(attention kept, FFN kept)`, one
/// entry per block of the exported model). Llama, Mistral without a sliding window, and Qwen2
/// can be written; Gemma 3 and Mixtral cannot (their blocks are not Llama blocks).
pub fn nas_config_json(config: &ModelConfig, blocks: &[(bool, bool)]) -> Result<Json> {
    let origin = "Nemotron-NAS export";
    config
        .supports(Capability::NemotronNas)
        .map_err(|why| Error::unsupported(origin, why))?;
    if blocks.is_empty() {
        return Err(Error::config(origin, "no blocks left to write"));
    }
    let group = config.num_attention_heads / config.num_key_value_heads.max(1);
    let inter = config.intermediate_size;
    let mult = 3.0 * inter as f64 / (2.0 * config.hidden_size as f64);
    let by_mult = ffn_mult_to_intermediate_size(mult, config.hidden_size) == inter;
    let block_configs: Vec<Json> = blocks
        .iter()
        .map(|&(attn, ffn)| {
            let ffn_json = match (ffn, by_mult) {
                (false, _) => json!({"ffn_mult": null, "no_op": true,
                    "replace_with_linear": false, "sparsify": null}),
                (true, true) => json!({"ffn_mult": mult, "no_op": false,
                    "replace_with_linear": false, "sparsify": null}),
                (true, false) => json!({"intermediate_size": inter, "no_op": false,
                    "replace_with_linear": false, "sparsify": null}),
            };
            json!({
                "attention": {
                    "n_heads_in_group": if attn { json!(group) } else { Json::Null },
                    "no_op": !attn,
                    "num_sink_tokens": null,
                    "replace_with_linear": false,
                    "sparsify": null,
                    "unshifted_sink": false,
                    "use_prefill_window_in_sink_attention": false,
                    "window_length": null,
                },
                "ffn": ffn_json,
            })
        })
        .collect();
    let mut c = config.clone();
    c.num_hidden_layers = blocks.len();
    c.layer_types = vec![crate::config::LayerAttention::Full; blocks.len()];
    let mut j = c.to_hf_json();
    let Some(obj) = j.as_object_mut() else {
        return Err(Error::config(origin, "config is not a JSON object"));
    };
    for k in [
        "use_sliding_window",
        "sliding_window",
        "max_window_layers",
        "mlp_bias",
    ] {
        obj.remove(k);
    }
    obj.insert("architectures".into(), json!(["DeciLMForCausalLM"]));
    obj.insert("model_type".into(), json!(NAS_MODEL_TYPE));
    obj.insert(
        "auto_map".into(),
        json!({"AutoConfig": "configuration_decilm.DeciLMConfig"}),
    );
    obj.insert("intermediate_size".into(), Json::Null);
    obj.insert("num_key_value_heads".into(), Json::Null);
    // Qwen2's biases are on q/k/v only (DeciLM's `qkv_bias`), Llama's on o_proj too.
    let qwen = config.attention_bias && !config.o_proj_bias();
    obj.insert(
        "attention_bias".into(),
        json!(config.attention_bias && !qwen),
    );
    if qwen {
        obj.insert("qkv_bias".into(), json!(config.attention_bias));
    }
    obj.insert("block_configs".into(), json!(block_configs));
    Ok(j)
}

/// Reads a `config.json`: a Nemotron-NAS one gives the Llama (or Qwen2) configuration of its
/// present sublayers and the set of absent ones; any other is read by
/// [`ModelConfig::read_json_file`] with nothing absent. The keys ignored as unknown
/// ([`crate::RawConfig::unknown_keys`]) come second.
pub fn read_config(path: &Path) -> Result<(ModelConfig, Vec<String>, BTreeSet<usize>)> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    config_from_str(&text, &path.display().to_string())
}

/// [`read_config`] on config.json text; `origin` names it in errors.
pub fn config_from_str(
    text: &str,
    origin: &str,
) -> Result<(ModelConfig, Vec<String>, BTreeSet<usize>)> {
    let (text, origin) = (text.to_string(), origin.to_string());
    let json: Json = serde_json::from_str(&text)
        .map_err(|e| Error::config(&origin, format!("invalid config.json: {e}")))?;
    if json.get("model_type").and_then(Json::as_str) != Some(NAS_MODEL_TYPE) {
        let (config, unknown) = ModelConfig::parse_json_str(&text, &origin)?;
        return Ok((config, unknown, BTreeSet::new()));
    }
    parse_nas(json, &origin)
}

fn parse_nas(mut json: Json, origin: &str) -> Result<(ModelConfig, Vec<String>, BTreeSet<usize>)> {
    let bad = |msg: String| Error::config(origin, msg);
    let hidden = json
        .get("hidden_size")
        .and_then(Json::as_u64)
        .ok_or_else(|| bad("`hidden_size` is missing".into()))? as usize;
    let heads = json
        .get("num_attention_heads")
        .and_then(Json::as_u64)
        .ok_or_else(|| bad("`num_attention_heads` is missing".into()))? as usize;
    let blocks = json
        .get("block_configs")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("`block_configs` is missing or not a list".into()))?
        .clone();
    let mut absent = BTreeSet::new();
    let (mut groups, mut widths) = (BTreeSet::new(), BTreeSet::new());
    for (b, bc) in blocks.iter().enumerate() {
        let flag = |part: &str, k: &str| -> Result<bool> {
            match bc.get(part).and_then(|p| p.get(k)) {
                None | Some(Json::Null) => Ok(false),
                Some(Json::Bool(v)) => Ok(*v),
                Some(v) => Err(bad(format!(
                    "block_configs[{b}].{part}.{k} is {v}, not a bool"
                ))),
            }
        };
        for part in ["attention", "ffn"] {
            if flag(part, "replace_with_linear")? {
                return Err(Error::unsupported(
                    origin,
                    format!("block_configs[{b}].{part}.replace_with_linear (a linear layer in place of the sublayer)"),
                ));
            }
        }
        if flag("attention", "no_op")? {
            absent.insert(2 * b);
        } else {
            let g = bc["attention"]
                .get("n_heads_in_group")
                .and_then(Json::as_u64)
                .filter(|&g| g > 0)
                .ok_or_else(|| {
                    bad(format!(
                        "block_configs[{b}].attention.n_heads_in_group is missing or not a positive integer"
                    ))
                })?;
            groups.insert(g as usize);
        }
        if flag("ffn", "no_op")? {
            absent.insert(2 * b + 1);
        } else {
            let ffn = &bc["ffn"];
            let width = match ffn.get("ffn_mult").and_then(Json::as_f64) {
                Some(m) => ffn_mult_to_intermediate_size(m, hidden),
                None => ffn
                    .get("intermediate_size")
                    .and_then(Json::as_u64)
                    .ok_or_else(|| {
                        bad(format!(
                            "block_configs[{b}].ffn has neither `ffn_mult` nor `intermediate_size`"
                        ))
                    })? as usize,
            };
            widths.insert(width);
        }
    }
    if groups.len() > 1 || widths.len() > 1 {
        return Err(Error::unsupported(
            origin,
            format!(
                "blocks with different attention groups {groups:?} or FFN widths {widths:?}; finercut models have one of each"
            ),
        ));
    }
    let group = groups.into_iter().next().unwrap_or(1);
    if !heads.is_multiple_of(group) {
        return Err(bad(format!(
            "n_heads_in_group {group} does not divide num_attention_heads {heads}"
        )));
    }
    let width = widths.into_iter().next().unwrap_or(1);
    let qkv_bias = json.get("qkv_bias").and_then(Json::as_bool);
    let attention_bias = json
        .get("attention_bias")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let Some(obj) = json.as_object_mut() else {
        return Err(bad("config.json is not an object".into()));
    };
    let model_type = match qkv_bias {
        Some(true) if !attention_bias => "qwen2",
        _ => "llama",
    };
    if model_type == "qwen2" {
        obj.insert("attention_bias".into(), json!(true));
    }
    obj.insert("model_type".into(), json!(model_type));
    obj.insert("num_hidden_layers".into(), json!(blocks.len()));
    obj.insert("num_key_value_heads".into(), json!(heads / group));
    obj.insert("intermediate_size".into(), json!(width));
    // Read above, or only the remote-code class name.
    for k in ["block_configs", "qkv_bias", "auto_map"] {
        obj.remove(k);
    }
    let raw: crate::RawConfig = serde_json::from_value(json)
        .map_err(|e| Error::config(origin, format!("invalid config.json: {e}")))?;
    let unknown = raw.unknown_keys();
    Ok((ModelConfig::from_raw(raw, origin)?, unknown, absent))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Architecture;

    const LLAMA: &str = r#"{"model_type":"llama","vocab_size":10,"hidden_size":576,
        "intermediate_size":1536,"num_hidden_layers":3,"num_attention_heads":9,
        "num_key_value_heads":3,"rms_norm_eps":1e-5,"rope_theta":100000.0,"tie_word_embeddings":true}"#;

    #[test]
    fn ffn_mult_matches_the_reference_formula() {
        // SmolLM2: 2 * 4.0 * 576 / 3 = 1536, already a multiple of 256.
        assert_eq!(ffn_mult_to_intermediate_size(4.0, 576), 1536);
        // Llama-3_1-Nemotron-51B: hidden 8192, ffn_mult 5.25 -> 28672.
        assert_eq!(ffn_mult_to_intermediate_size(5.25, 8192), 28672);
        assert_eq!(ffn_mult_to_intermediate_size(1.0, 100), 256);
    }

    #[test]
    fn config_round_trips_with_absent_sublayers() {
        let c = ModelConfig::from_json_str(LLAMA, "t").unwrap();
        let j = nas_config_json(&c, &[(true, true), (true, false), (false, true)]).unwrap();
        assert_eq!(j["model_type"], "nemotron-nas");
        assert_eq!(j["architectures"][0], "DeciLMForCausalLM");
        assert_eq!(j["block_configs"][1]["ffn"]["no_op"], true);
        assert_eq!(j["block_configs"][1]["ffn"]["ffn_mult"], Json::Null);
        assert_eq!(j["block_configs"][0]["ffn"]["ffn_mult"], 4.0);
        assert_eq!(
            j["block_configs"][2]["attention"]["n_heads_in_group"],
            Json::Null
        );
        assert_eq!(j["block_configs"][0]["attention"]["n_heads_in_group"], 3);
        let (back, unknown, absent) = parse_nas(j, "t").unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(absent, BTreeSet::from([3, 4]));
        assert_eq!(back.num_hidden_layers, 3);
        assert_eq!(back.num_key_value_heads, 3);
        assert_eq!(back.intermediate_size, 1536);
        assert_eq!(back.rope_theta, 100000.0);
        assert_eq!(back.architecture, Architecture::Llama);
    }

    #[test]
    fn odd_widths_use_intermediate_size_and_gemma_is_refused() {
        let mut c = ModelConfig::from_json_str(LLAMA, "t").unwrap();
        c.intermediate_size = 100;
        let j = nas_config_json(&c, &[(true, true)]).unwrap();
        assert_eq!(j["block_configs"][0]["ffn"]["intermediate_size"], 100);
        assert!(j["block_configs"][0]["ffn"].get("ffn_mult").is_none());
        assert_eq!(parse_nas(j, "t").unwrap().0.intermediate_size, 100);
        c.architecture = Architecture::Gemma3;
        let e = nas_config_json(&c, &[(true, true)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("gemma3"), "{e}");
    }
}
