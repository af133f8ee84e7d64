//! Parity with Hugging Face transformers on a tiny random model of every family (the files in
//! `data/golden/tiny/`, written by `benches/reference/make_tiny_families.py`): Llama with `llama3`
//! RoPE scaling, Mistral with a sliding window shorter than the sequence, Qwen2, Gemma 3, Qwen3 with
//! q/k norms, Mixtral's sparse mixture of experts, Gemma 2, OLMo 2, Qwen3-MoE, Phi-3 (fused
//! projections, LongRoPE on both sides of its original context, partial rotary with tied
//! embeddings) and GPT-NeoX with parallel and with sequential blocks. Every logit of two sequences
//! of 16 tokens
//! agrees to `1e-4 · (1 + |want|)` (absolute 1e-4 near zero, relative 1e-4 for large logits).

use finercut_format::{ModelConfig, SafetensorsStore};
use finercut_model::{Model, Plan};
use finercut_tensor::Device;
use std::path::{Path, PathBuf};

/// The families with a golden directory each.
const TOL: f64 = 1e-4;

/// Every golden directory (`data/golden/tiny/*/` with a `config.json`), sorted. Every registered
/// family has at least one (`golden_models_cover_every_registered_family`), so a test that
/// iterates these covers every family of the registry, later ones included.
pub fn golden_models() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/golden/tiny");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("config.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn golden_models_cover_every_registered_family() {
    let archs: Vec<_> = golden_models()
        .iter()
        .map(|m| {
            ModelConfig::from_json_file(&family_dir(m).join("config.json"))
                .unwrap()
                .architecture
        })
        .collect();
    for f in finercut_format::FAMILIES {
        assert!(
            archs.contains(&f.architecture()),
            "{} has no golden model",
            f.name()
        );
    }
}

/// `data/golden/tiny/<family>`.
pub fn family_dir(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/golden/tiny")
        .join(family)
}

/// The model of a golden directory (config.json + model.safetensors; no tokenizer needed).
pub fn load_family(family: &str) -> Model {
    let dir = family_dir(family);
    let config = ModelConfig::from_json_file(&dir.join("config.json")).unwrap();
    let store = SafetensorsStore::open(&dir).unwrap();
    // The family's view of the stored tensors (GPT-NeoX renames and splits them).
    let weights = config.family().weights(&config, Box::new(store));
    Model::load(&config, weights.as_ref(), &Device::Cpu).unwrap()
}

/// The calibration tokens of a golden directory's `expected.json`.
pub fn family_tokens(family: &str) -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(family_dir(family).join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["tokens"].clone()).unwrap()
}

/// The `f32` array and shape of a little-endian `.npy` file (format 1.0, C order).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"));
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data = bytes[10 + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

#[test]
fn tiny_families_match_transformers() {
    for family in &golden_models() {
        let model = load_family(family);
        let tokens = family_tokens(family);
        let (shape, want) = read_npy(&family_dir(family).join("logits.npy"));
        let got = model.forward(&tokens, &Plan::dense()).unwrap();
        assert_eq!(got.shape(), shape.as_slice(), "{family}");
        let got = got.as_slice_f32().unwrap();
        let (mut worst, mut at) = (0.0f64, 0);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let err = (f64::from(g) - f64::from(w)).abs() / (1.0 + f64::from(w).abs());
            if err > worst {
                (worst, at) = (err, i);
            }
        }
        println!("{family}: worst scaled logit error {worst:.2e} at {at}");
        assert!(
            worst <= TOL,
            "{family}: logit {at} is {} against transformers' {} (scaled error {worst:.2e})",
            got[at],
            want[at]
        );
    }
}

#[test]
fn prefixes_match_transformers_where_the_reference_has_them() {
    // `logits_short.npy`: the logits of the first tokens of each sequence (LongRoPE's short
    // factors, where the whole sequences use the long ones).
    let mut checked = 0;
    for family in &golden_models() {
        let path = family_dir(family).join("logits_short.npy");
        if !path.exists() {
            continue;
        }
        let model = load_family(family);
        let (shape, want) = read_npy(&path);
        let tokens: Vec<Vec<u32>> = family_tokens(family)
            .into_iter()
            .map(|t| t[..shape[1]].to_vec())
            .collect();
        let got = model.forward(&tokens, &Plan::dense()).unwrap();
        assert_eq!(got.shape(), shape.as_slice(), "{family}");
        let worst = got
            .as_slice_f32()
            .unwrap()
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (f64::from(g) - f64::from(w)).abs() / (1.0 + f64::from(w).abs()))
            .fold(0.0f64, f64::max);
        println!("{family} prefix: worst scaled logit error {worst:.2e}");
        assert!(worst <= TOL, "{family} prefix: scaled error {worst:.2e}");
        checked += 1;
    }
    assert!(checked >= 1, "no reference has prefix logits");
}

#[test]
fn fused_projections_split_at_load_read_back_whole() {
    // Phi-3's `qkv_proj` and `gate_up_proj` are held as their parts; `Model::weight` of the
    // fused name stacks them again, bit for bit, and the parts' own names are not weights of it.
    use finercut_format::TensorSource;
    let dir = family_dir("phi4_mini");
    let store = SafetensorsStore::open(&dir).unwrap();
    let model = load_family("phi4_mini");
    for name in [
        "model.layers.1.self_attn.qkv_proj.weight",
        "model.layers.2.mlp.gate_up_proj.weight",
        "model.layers.3.mlp.down_proj.weight",
    ] {
        let raw = store.get(name).unwrap();
        let got = model.weight(name).unwrap();
        assert_eq!(got.shape(), raw.shape.as_slice(), "{name}");
        let want: Vec<f32> = raw
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got.to_vec_f32().unwrap(), want, "{name}");
    }
    assert!(model
        .weight("model.layers.1.self_attn.q_proj.weight")
        .is_err());
}

#[test]
fn tiny_mixtral_has_its_experts() {
    let model = load_family("mixtral");
    let c = model.config();
    let moe = c.moe().unwrap();
    assert_eq!((moe.num_local_experts, moe.num_experts_per_tok), (4, 2));
    let (d, ffn) = (c.hidden_size, c.intermediate_size);
    // The FFN sublayer holds its norm, the router and every expert.
    assert_eq!(
        model.param_count_of(1),
        d + moe.num_local_experts * d + moe.num_local_experts * 3 * d * ffn
    );
}

/// The tiny model of `family` written as llama.cpp's converter would (architecture `llama`, Q/K rows
/// permuted, Mixtral's experts stacked into 3-D tensors, Llama 3.1 scaling as the `rope_freqs`
/// divisors), read back through `GgufStore`.
mod gguf {
    use super::*;
    use finercut_format::gguf::{permute_rows, Value};
    use finercut_format::{
        Bytes, GgmlType, GgufFile, GgufStore, RopeScaling, TensorSource, ROPE_FREQS_TENSOR,
    };
    use std::sync::Arc;

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// A GGUF v3 file of F32 tensors (shapes given row-major, as Hugging Face writes them) and
    /// numeric or string metadata.
    fn gguf_bytes(meta: &[(&str, Value)], tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in meta {
            put_str(&mut out, k);
            out.extend_from_slice(&v.gguf_type().to_le_bytes());
            match v {
                Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::String(s) => put_str(&mut out, s),
                other => panic!("test writer: {other:?}"),
            }
        }
        let align = |n: usize| n.div_ceil(32) * 32;
        let mut offset = 0;
        for (name, shape, data) in tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&GgmlType::F32.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = align(offset + 4 * data.len());
        }
        out.resize(align(out.len()), 0);
        for (_, _, data) in tensors {
            out.extend(data.iter().flat_map(|v| v.to_le_bytes()));
            out.resize(align(out.len()), 0);
        }
        out
    }

    /// llama.cpp's `rope_freqs` for a `llama3` scaling (`LlamaModel.generate_extra_tensors`).
    fn rope_freqs(hd: usize, theta: f64, scaling: RopeScaling) -> Vec<f32> {
        let RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old,
        } = scaling
        else {
            panic!("not llama3: {scaling:?}");
        };
        let old = old as f64;
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

    fn to_gguf(family: &str) -> Vec<u8> {
        let dir = family_dir(family);
        let c = ModelConfig::from_json_file(&dir.join("config.json")).unwrap();
        let st = SafetensorsStore::open(&dir).unwrap();
        let get = |n: &str| st.get(n).unwrap().to_f32_vec().unwrap();
        let (d, hd, heads, kvh, ffn) = (
            c.hidden_size,
            c.head_dim,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.intermediate_size,
        );
        let mut meta = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(c.num_hidden_layers as u32)),
            (
                "llama.context_length",
                Value::U32(c.max_position_embeddings as u32),
            ),
            ("llama.embedding_length", Value::U32(d as u32)),
            ("llama.feed_forward_length", Value::U32(ffn as u32)),
            ("llama.attention.head_count", Value::U32(heads as u32)),
            ("llama.attention.head_count_kv", Value::U32(kvh as u32)),
            ("llama.rope.freq_base", Value::F32(c.rope_theta as f32)),
            (
                "llama.attention.layer_norm_rms_epsilon",
                Value::F32(c.rms_norm_eps as f32),
            ),
            ("llama.rope.dimension_count", Value::U32(hd as u32)),
        ];
        let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        t.push((
            "token_embd.weight".into(),
            vec![c.vocab_size, d],
            get("model.embed_tokens.weight"),
        ));
        if let Some(m) = c.moe() {
            meta.push(("llama.expert_count", Value::U32(m.num_local_experts as u32)));
            meta.push((
                "llama.expert_used_count",
                Value::U32(m.num_experts_per_tok as u32),
            ));
        }
        for b in 0..c.num_hidden_layers {
            let p = format!("model.layers.{b}");
            let g = |n: &str| get(&format!("{p}.{n}.weight"));
            t.push((
                format!("blk.{b}.attn_norm.weight"),
                vec![d],
                g("input_layernorm"),
            ));
            t.push((
                format!("blk.{b}.attn_q.weight"),
                vec![heads * hd, d],
                permute_rows(&g("self_attn.q_proj"), heads * hd, d, heads),
            ));
            t.push((
                format!("blk.{b}.attn_k.weight"),
                vec![kvh * hd, d],
                permute_rows(&g("self_attn.k_proj"), kvh * hd, d, kvh),
            ));
            t.push((
                format!("blk.{b}.attn_v.weight"),
                vec![kvh * hd, d],
                g("self_attn.v_proj"),
            ));
            t.push((
                format!("blk.{b}.attn_output.weight"),
                vec![d, heads * hd],
                g("self_attn.o_proj"),
            ));
            t.push((
                format!("blk.{b}.ffn_norm.weight"),
                vec![d],
                g("post_attention_layernorm"),
            ));
            match c.moe() {
                Some(m) => {
                    let e = m.num_local_experts;
                    t.push((
                        format!("blk.{b}.ffn_gate_inp.weight"),
                        vec![e, d],
                        g("block_sparse_moe.gate"),
                    ));
                    for (gguf, hf, shape) in [
                        ("gate", "w1", [ffn, d]),
                        ("up", "w3", [ffn, d]),
                        ("down", "w2", [d, ffn]),
                    ] {
                        let stacked = (0..e)
                            .flat_map(|x| g(&format!("block_sparse_moe.experts.{x}.{hf}")))
                            .collect();
                        t.push((
                            format!("blk.{b}.ffn_{gguf}_exps.weight"),
                            vec![e, shape[0], shape[1]],
                            stacked,
                        ));
                    }
                }
                None => {
                    for (gguf, hf, shape) in [
                        ("gate", "gate_proj", [ffn, d]),
                        ("up", "up_proj", [ffn, d]),
                        ("down", "down_proj", [d, ffn]),
                    ] {
                        t.push((
                            format!("blk.{b}.ffn_{gguf}.weight"),
                            shape.to_vec(),
                            g(&format!("mlp.{hf}")),
                        ));
                    }
                }
            }
        }
        t.push((
            "output_norm.weight".into(),
            vec![d],
            get("model.norm.weight"),
        ));
        if !c.tie_word_embeddings {
            t.push((
                "output.weight".into(),
                vec![c.vocab_size, d],
                get("lm_head.weight"),
            ));
        }
        if c.rope_scaling != RopeScaling::None {
            t.push((
                ROPE_FREQS_TENSOR.into(),
                vec![hd / 2],
                rope_freqs(hd, c.rope_theta, c.rope_scaling),
            ));
        }
        gguf_bytes(&meta, &t)
    }

    #[test]
    fn gguf_with_rope_freqs_and_stacked_experts_matches_transformers() {
        for family in ["llama3", "mixtral"] {
            let file =
                GgufFile::from_bytes(format!("{family}.gguf"), Bytes::from_vec(to_gguf(family)))
                    .unwrap();
            let file = Arc::new(file);
            let config = ModelConfig::from_gguf(&file).unwrap();
            if family == "llama3" {
                assert_eq!(config.rope_scaling, RopeScaling::Factors);
            }
            assert_eq!(config.moe().is_some(), family == "mixtral");
            let store = GgufStore::new(file).unwrap();
            let model = Model::load(&config, &store, &Device::Cpu).unwrap();
            let tokens = family_tokens(family);
            let (_, want) = read_npy(&family_dir(family).join("logits.npy"));
            let got = model.forward(&tokens, &Plan::dense()).unwrap();
            // The GGUF rows kept as stored (row maps for the Q/K permutation and the stacked
            // experts) give the logits of widening at load, bit for bit.
            let widened = Model::load_as(
                &config,
                &store,
                &Device::Cpu,
                &Default::default(),
                finercut_model::WeightDtype::F32,
            )
            .unwrap();
            assert_eq!(
                got.to_vec_f32().unwrap(),
                widened
                    .forward(&tokens, &Plan::dense())
                    .unwrap()
                    .to_vec_f32()
                    .unwrap()
            );
            let worst = got
                .as_slice_f32()
                .unwrap()
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (f64::from(g) - f64::from(w)).abs() / (1.0 + f64::from(w).abs()))
                .fold(0.0, f64::max);
            assert!(
                worst <= TOL,
                "{family} from GGUF: scaled logit error {worst:.2e}"
            );
        }
        // Without the factors, the Llama 3.1 model is a different model.
        let bytes = to_gguf("llama3");
        let file = Arc::new(GgufFile::from_bytes("x.gguf", Bytes::from_vec(bytes)).unwrap());
        let mut config = ModelConfig::from_gguf(&file).unwrap();
        config.rope_scaling = RopeScaling::None;
        let store = GgufStore::new(file).unwrap();
        let plain = Model::load(&config, &store, &Device::Cpu).unwrap();
        let (_, want) = read_npy(&family_dir("llama3").join("logits.npy"));
        let got = plain
            .forward(&family_tokens("llama3"), &Plan::dense())
            .unwrap();
        let worst = got
            .as_slice_f32()
            .unwrap()
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (f64::from(g) - f64::from(w)).abs())
            .fold(0.0, f64::max);
        assert!(worst > 1e-2, "scaling makes no difference ({worst:e})");
    }
}
