//! Exported pruned models load back with the logits of the pruned model in memory: the `deci`
//! GGUF (Llama and Qwen2, also dequantised with `--outtype`) and the Nemotron-NAS layout (Llama,
//! Qwen2); Gemma 3, Qwen3 and mixture-of-experts GGUFs with sublayers removed are refused with a
//! reason.

use std::collections::{BTreeSet, HashMap};

use finercut_format::gguf::deci::{absent_sublayers, deci_layers, kept_blocks};
use finercut_format::gguf::{
    permute_rows, pruned_from_gguf, write_gguf, GgmlType, GgufTensorOut, Value,
};
use finercut_format::nas::{config_from_str, nas_config_json};
use finercut_format::{DType, GgufFile, GgufStore, ModelConfig, TensorSource};
use finercut_model::{Model, Plan};
use finercut_tensor::Device;

use crate::reference::{Arch, MemSource, Tiny};

fn logits(model: &Model, plan: &Plan) -> Vec<f32> {
    let tokens = vec![vec![3u32, 17, 99, 42, 5, 8, 64], vec![1, 2, 3, 4, 5, 6, 7]];
    model.forward(&tokens, plan).unwrap().to_vec_f32().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Little-endian `f32`s.
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The llama.cpp name of a Hugging Face tensor of the Llama layout.
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (b, tail) = rest.split_once('.').unwrap();
    let part = match tail.rsplit_once('.').unwrap().0 {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        other => panic!("no GGUF name for {other}"),
    };
    let suffix = tail.rsplit_once('.').unwrap().1;
    format!("blk.{b}.{part}.{suffix}")
}

/// The tiny model as a llama.cpp GGUF (F32, Q/K rows permuted as the converter does).
fn tiny_gguf(t: &Tiny, arch: &str, path: &std::path::Path) {
    let c = &t.config;
    let meta = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        (
            format!("{arch}.block_count"),
            Value::U32(c.num_hidden_layers as u32),
        ),
        (format!("{arch}.context_length"), Value::U32(2048)),
        (
            format!("{arch}.embedding_length"),
            Value::U32(c.hidden_size as u32),
        ),
        (
            format!("{arch}.feed_forward_length"),
            Value::U32(c.intermediate_size as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(c.num_attention_heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(c.num_key_value_heads as u32),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(c.rms_norm_eps as f32),
        ),
        (
            format!("{arch}.rope.freq_base"),
            Value::F32(c.rope_theta as f32),
        ),
    ];
    let mut tensors = Vec::new();
    for name in t.source.names() {
        let (shape, data) = &t.source.tensors[&name];
        // llama.cpp's converter interleaves a Llama's Q/K rows; Qwen2 keeps them (NeoX RoPE).
        let data = if arch == "llama" && (name.contains(".q_proj.") || name.contains(".k_proj.")) {
            let groups = if name.contains(".q_proj.") {
                c.num_attention_heads
            } else {
                c.num_key_value_heads
            };
            permute_rows(data, shape[0], shape[1], groups)
        } else {
            data.clone()
        };
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        tensors.push(GgufTensorOut::f32(gguf_name(&name), dims, data));
    }
    write_gguf(path, &meta, &tensors).unwrap();
}

fn load_gguf(path: &std::path::Path) -> (Model, BTreeSet<usize>) {
    let file = std::sync::Arc::new(GgufFile::open(path).unwrap());
    let config = ModelConfig::from_gguf(&file).unwrap();
    let absent = if file.architecture().unwrap() == "deci" {
        absent_sublayers(&deci_layers(&file).unwrap().0)
    } else {
        BTreeSet::new()
    };
    let store = GgufStore::new(file).unwrap();
    let model = Model::load_pruned(&config, &store, &Device::Cpu, &absent).unwrap();
    (model, absent)
}

/// The plans: an FFN-only removal (the block keeps attention), a whole block, an attention-only
/// removal; and the first block without attention (llama.cpp's layer-0 case).
fn plans() -> Vec<BTreeSet<usize>> {
    vec![
        BTreeSet::from([1, 2, 3, 4]),
        BTreeSet::from([0]),
        BTreeSet::from([0, 1, 3, 5]),
    ]
}

#[test]
fn deci_gguf_gives_the_pruned_logits() {
    for (arch, name) in [(Arch::Llama, "llama"), (Arch::Qwen2, "qwen2")] {
        deci_gguf_of(arch, name);
    }
}

/// A tiny `name` GGUF exported as `deci` under every plan gives the pruned model's logits.
fn deci_gguf_of(arch: Arch, name: &str) {
    let t = Tiny::new(arch, 11);
    let dir = tempfile::tempdir().unwrap();
    let dense_path = dir.path().join("dense.gguf");
    tiny_gguf(&t, name, &dense_path);
    let (dense, _) = load_gguf(&dense_path);
    let memory = Model::load(&t.config, &t.source, &Device::Cpu).unwrap();
    assert!(
        max_diff(
            &logits(&dense, &Plan::dense()),
            &logits(&memory, &Plan::dense())
        ) < 1e-5
    );
    let src = GgufFile::open(&dense_path).unwrap();

    // Nothing removed: the file's own architecture, the same tensors.
    let same = pruned_from_gguf(&src, &BTreeSet::new()).unwrap();
    assert_eq!(same.metadata, src.metadata());
    assert_eq!(same.tensors.len(), src.tensors().len());

    for removed in plans() {
        let out = pruned_from_gguf(&src, &removed).unwrap();
        let p = dir.path().join("pruned.gguf");
        out.write(&p).unwrap();
        let (pruned, absent) = load_gguf(&p);
        let kept = kept_blocks(3, &removed);
        let want_absent =
            absent_sublayers(&kept.iter().map(|k| (k.attn, k.ffn)).collect::<Vec<_>>());
        assert_eq!(absent, want_absent, "{removed:?}");
        let file = GgufFile::open(&p).unwrap();
        assert_eq!(file.architecture().unwrap(), "deci");
        assert_eq!(
            file.get_u64("deci.block_count").unwrap(),
            Some(kept.len() as u64)
        );
        let a = logits(&pruned, &Plan::from_removed(absent.iter().copied()));
        let b = logits(&memory, &Plan::from_removed(removed.iter().copied()));
        assert!(
            max_diff(&a, &b) < 1e-5,
            "{name} {removed:?}: {}",
            max_diff(&a, &b)
        );
        if name == "qwen2" {
            // The Q/K rows and biases are reordered into llama.cpp's interleaved order (what
            // its converter writes for a Llama); everything else is copied.
            let heads = t.config.num_attention_heads;
            let kv = t.config.num_key_value_heads;
            let first = kept.iter().position(|k| k.attn).unwrap();
            let b0 = kept[first].source;
            for (part, hf, groups) in [("attn_q", "q_proj", heads), ("attn_k", "k_proj", kv)] {
                let (shape, w) =
                    &t.source.tensors[&format!("model.layers.{b0}.self_attn.{hf}.weight")];
                let want = permute_rows(w, shape[0], shape[1], groups);
                let got = f32s(
                    &file
                        .tensor_bytes(&format!("blk.{first}.{part}.weight"))
                        .unwrap(),
                );
                assert_eq!(got, want, "{part}");
                let (shape, bias) =
                    &t.source.tensors[&format!("model.layers.{b0}.self_attn.{hf}.bias")];
                let want = permute_rows(bias, shape[0], 1, groups);
                let got = f32s(
                    &file
                        .tensor_bytes(&format!("blk.{first}.{part}.bias"))
                        .unwrap(),
                );
                assert_eq!(got, want, "{part} bias");
            }
        }
        // Kept tensors are byte-for-byte copies.
        assert_eq!(
            &*file.tensor_bytes("token_embd.weight").unwrap(),
            &*src.tensor_bytes("token_embd.weight").unwrap()
        );
    }
}

#[test]
fn outtype_stores_matrices_as_asked_and_keeps_the_logits() {
    let t = Tiny::new(Arch::Llama, 12);
    let dir = tempfile::tempdir().unwrap();
    let dense_path = dir.path().join("dense.gguf");
    tiny_gguf(&t, "llama", &dense_path);
    let memory = Model::load(&t.config, &t.source, &Device::Cpu).unwrap();
    let removed = BTreeSet::from([1, 2, 3, 4]);
    let src = GgufFile::open(&dense_path).unwrap();
    let mut half = pruned_from_gguf(&src, &removed).unwrap();
    half.store_floats_as(DType::F16, &dense_path).unwrap();
    let half_path = dir.path().join("f16.gguf");
    half.write(&half_path).unwrap();
    let file = GgufFile::open(&half_path).unwrap();
    assert_eq!(file.get_u64("general.file_type").unwrap(), Some(1));
    for info in file.tensors() {
        let want = if info.dims.len() < 2 {
            GgmlType::F32
        } else {
            GgmlType::F16
        };
        assert_eq!(info.ggml_type, want, "{}", info.name);
    }
    let (pruned, absent) = load_gguf(&half_path);
    let plan = Plan::from_removed(absent.iter().copied());
    let a = logits(&pruned, &plan);
    let b = logits(&memory, &Plan::from_removed(removed.iter().copied()));
    assert!(max_diff(&a, &b) < 2e-2, "{}", max_diff(&a, &b));
    // Back to f32 from the f16 file: exact.
    let src16 = GgufFile::open(&half_path).unwrap();
    let mut full = pruned_from_gguf(&src16, &BTreeSet::new()).unwrap();
    full.store_floats_as(DType::F32, &half_path).unwrap();
    let full_path = dir.path().join("f32.gguf");
    full.write(&full_path).unwrap();
    assert_eq!(
        GgufFile::open(&full_path)
            .unwrap()
            .get_u64("general.file_type")
            .unwrap(),
        Some(0)
    );
    let (back, _) = load_gguf(&full_path);
    assert_eq!(logits(&back, &plan), a);
}

#[test]
fn gemma3_qwen3_and_moe_ggufs_with_removals_are_refused() {
    for (arch, name, experts, why) in [
        (Arch::Gemma3, "gemma3", 0, "gemma3"),
        (Arch::Llama, "qwen3", 0, "qwen3"),
        // Mixtral's GGUF says `llama` and counts experts.
        (Arch::Llama, "llama", 8, "mixture-of-experts"),
    ] {
        let t = Tiny::new(arch, 3);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        let mut meta = vec![
            (
                "general.architecture".to_string(),
                Value::String(name.into()),
            ),
            (
                format!("{name}.block_count"),
                Value::U32(t.config.num_hidden_layers as u32),
            ),
        ];
        if experts > 0 {
            meta.push((format!("{name}.expert_count"), Value::U32(experts)));
        }
        write_gguf(&p, &meta, &[]).unwrap();
        let f = GgufFile::open(&p).unwrap();
        let e = pruned_from_gguf(&f, &BTreeSet::from([1]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why) && e.contains("deci"), "{e}");
        assert!(pruned_from_gguf(&f, &BTreeSet::new()).is_ok());
    }
}

/// The tiny model's tensors for a Nemotron-NAS export: removed sublayers gone, blocks renumbered.
fn nas_source(t: &Tiny, removed: &BTreeSet<usize>) -> MemSource {
    let kept = kept_blocks(t.config.num_hidden_layers, removed);
    let mut tensors = HashMap::new();
    for (name, v) in &t.source.tensors {
        let Some(rest) = name.strip_prefix("model.layers.") else {
            tensors.insert(name.clone(), v.clone());
            continue;
        };
        let (b, tail) = rest.split_once('.').unwrap();
        let b: usize = b.parse().unwrap();
        let attn = tail.starts_with("self_attn") || tail.starts_with("input_layernorm");
        if removed.contains(&if attn { 2 * b } else { 2 * b + 1 }) {
            continue;
        }
        let Some(nb) = kept.iter().position(|k| k.source == b) else {
            continue;
        };
        tensors.insert(format!("model.layers.{nb}.{tail}"), v.clone());
    }
    MemSource {
        tensors,
        bf16: false,
    }
}

#[test]
fn nemotron_nas_layout_gives_the_pruned_logits() {
    for arch in [Arch::Llama, Arch::Qwen2] {
        let t = Tiny::new(arch, 5);
        let memory = Model::load(&t.config, &t.source, &Device::Cpu).unwrap();
        for removed in plans() {
            let kept = kept_blocks(3, &removed);
            let blocks: Vec<(bool, bool)> = kept.iter().map(|k| (k.attn, k.ffn)).collect();
            let json = nas_config_json(&t.config, &blocks).unwrap();
            let (config, unknown, absent) = config_from_str(&json.to_string(), "nas").unwrap();
            assert!(unknown.is_empty(), "{unknown:?}");
            assert_eq!(absent, absent_sublayers(&blocks));
            assert_eq!(config.architecture, t.config.architecture);
            let source = nas_source(&t, &removed);
            let pruned = Model::load_pruned(&config, &source, &Device::Cpu, &absent).unwrap();
            let a = logits(&pruned, &Plan::from_removed(absent.iter().copied()));
            let b = logits(&memory, &Plan::from_removed(removed.iter().copied()));
            assert!(max_diff(&a, &b) < 1e-5, "{arch:?} {removed:?}");
        }
    }
    let g = Tiny::new(Arch::Gemma3, 5);
    let e = nas_config_json(&g.config, &[(true, true)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("gemma3"), "{e}");
}
