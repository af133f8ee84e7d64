//! A tiny random Llama with a byte-level tokenizer, written as a Hugging Face directory: the
//! model of `reproduce --smoke`, which runs the whole pipeline in seconds.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Context, Result};
use finercut_format::{write_safetensors, DType, Overwrite, StagedDir};
use serde_json::json;

/// Shape of the tiny model.
pub struct TinySpec {
    pub blocks: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            blocks: 4,
            hidden: 64,
            intermediate: 128,
            heads: 4,
            kv_heads: 2,
            seed: 7,
        }
    }
}

/// GPT-2's byte → printable character table, which byte-level BPE vocabularies are written in.
fn byte_chars() -> Vec<char> {
    let printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut chars = vec!['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        if printable.contains(&b) {
            chars[b as usize] = char::from_u32(b).unwrap_or('?');
        } else {
            chars[b as usize] = char::from_u32(256 + extra).unwrap_or('?');
            extra += 1;
        }
    }
    chars
}

/// A byte-level BPE `tokenizer.json` without merges: one token per byte (ids 0..=255) and the
/// special `<|endoftext|>` as `eos`.
pub fn byte_tokenizer(eos: u32) -> serde_json::Value {
    let chars = byte_chars();
    let mut vocab_map = serde_json::Map::new();
    for (i, c) in chars.iter().enumerate() {
        vocab_map.insert(c.to_string(), json!(i));
    }
    vocab_map.insert("<|endoftext|>".into(), json!(eos));
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": eos, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab_map, "merges": []
        }
    })
}

/// A deterministic generator (SplitMix64) for the weights.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    fn uniform(&mut self, scale: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * scale
    }
}

/// Writes the tiny model into `dir` (config.json, tokenizer.json, model.safetensors), replacing a
/// checkpoint there: written beside `dir` and renamed into place ([`StagedDir`]).
pub fn write_tiny_model(dir: &Path, spec: &TinySpec) -> Result<()> {
    let staged = StagedDir::begin(dir, Overwrite::Replace)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = staged.path();
    let vocab = 257usize;
    let eos = 256u32;
    let head_dim = spec.hidden / spec.heads;
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.blocks,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    });
    crate::write_json_atomic(&dir.join("config.json"), &config)?;

    let tokenizer = byte_tokenizer(eos);
    crate::write_json_atomic(&dir.join("tokenizer.json"), &tokenizer)?;

    let mut rng = SplitMix(spec.seed);
    let d = spec.hidden;
    let kv = spec.kv_heads * head_dim;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    fn rand(rng: &mut SplitMix, shape: Vec<usize>, scale: f32) -> (Vec<usize>, Vec<f32>) {
        let n = shape.iter().product();
        (shape, (0..n).map(|_| rng.uniform(scale)).collect())
    }
    let (s, v) = rand(&mut rng, vec![vocab, d], 1.0);
    tensors.push(("model.embed_tokens.weight".into(), s, v));
    let w = 1.7 / (d as f32).sqrt();
    for b in 0..spec.blocks {
        let p = format!("model.layers.{b}");
        for (name, shape) in [
            ("self_attn.q_proj", vec![d, d]),
            ("self_attn.k_proj", vec![kv, d]),
            ("self_attn.v_proj", vec![kv, d]),
            ("self_attn.o_proj", vec![d, d]),
            ("mlp.gate_proj", vec![spec.intermediate, d]),
            ("mlp.up_proj", vec![spec.intermediate, d]),
            ("mlp.down_proj", vec![d, spec.intermediate]),
        ] {
            let (s, v) = rand(&mut rng, shape, w);
            tensors.push((format!("{p}.{name}.weight"), s, v));
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            let v = (0..d).map(|_| 1.0 + rng.uniform(0.1)).collect();
            tensors.push((format!("{p}.{norm}.weight"), vec![d], v));
        }
    }
    tensors.push(("model.norm.weight".into(), vec![d], vec![1.0; d]));
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let list: Vec<(String, DType, Vec<usize>, &[u8])> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), DType::F32, s.clone(), b.as_slice()))
        .collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&dir.join("model.safetensors"), &list, &meta)?;
    staged.commit()?;
    Ok(())
}
