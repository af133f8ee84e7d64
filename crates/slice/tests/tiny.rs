//! Tiny random models of every family: the rotation is exact at full width, parameter
//! accounting, saving and loading, refusals, and plans on a sliced model.

use finercut_format::{
    f32_to_bytes, Bytes, Checkpoint, DType, ModelConfig, Overwrite, RawTensor, SafetensorsStore,
    TensorSource,
};
use finercut_model::{Model, Plan};
use finercut_slice::{
    check_supported, dim_for_ratio, dim_for_removed_params, removed_params, slice_model,
    sliced_param_count, Error, SliceSettings,
};
use finercut_tensor::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const VOCAB: usize = 50;
const HIDDEN: usize = 16;
const FFN: usize = 24;
const BLOCKS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 6;

/// In-memory weights.
struct Mem(BTreeMap<String, RawTensor>);

impl TensorSource for Mem {
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn get(&self, name: &str) -> finercut_format::Result<RawTensor> {
        Ok(self.0[name].clone())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Family {
    Llama {
        tied: bool,
    },
    /// Llama with `attention_bias`: biases on q/k/v and on `o_proj`.
    LlamaBias,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma3,
    Mixtral,
}

fn config(f: Family) -> ModelConfig {
    let (model_type, extra) = match f {
        Family::Llama { tied } => ("llama", format!(r#""tie_word_embeddings": {tied}"#)),
        Family::LlamaBias => (
            "llama",
            r#""tie_word_embeddings": false, "attention_bias": true"#.to_string(),
        ),
        Family::Mistral => (
            "mistral",
            r#""tie_word_embeddings": false, "sliding_window": 3"#.to_string(),
        ),
        Family::Qwen2 => ("qwen2", r#""tie_word_embeddings": true"#.to_string()),
        Family::Qwen3 => ("qwen3", r#""tie_word_embeddings": true"#.to_string()),
        Family::Gemma3 => ("gemma3_text", r#""tie_word_embeddings": true"#.to_string()),
        Family::Mixtral => (
            "mixtral",
            r#""tie_word_embeddings": false, "num_local_experts": 2, "num_experts_per_tok": 1"#
                .to_string(),
        ),
    };
    let json = format!(
        r#"{{"model_type": "{model_type}", "vocab_size": {VOCAB}, "hidden_size": {HIDDEN},
        "intermediate_size": {FFN}, "num_hidden_layers": {BLOCKS}, "num_attention_heads": {HEADS},
        "num_key_value_heads": {KV_HEADS}, "head_dim": {HEAD_DIM}, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 64, {extra}}}"#
    );
    ModelConfig::from_json_str(&json, "tiny").unwrap()
}

/// Random weights: matrices in ±0.5, norm weights in 1 ± 0.4 (so folding them matters), biases
/// in ±0.3.
fn weights(c: &ModelConfig, seed: u64) -> BTreeMap<String, RawTensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, center: f32, spread: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| center + rng.gen_range(-spread..spread))
            .collect();
        out.insert(
            name.clone(),
            RawTensor {
                name,
                dtype: DType::F32,
                shape,
                data: Bytes::from_f32_vec(v),
            },
        );
    };
    let d = c.hidden_size;
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    add("model.embed_tokens.weight".into(), vec![VOCAB, d], 0.0, 1.0);
    add("model.norm.weight".into(), vec![d], 1.0, 0.4);
    if !c.tie_word_embeddings {
        add("lm_head.weight".into(), vec![VOCAB, d], 0.0, 0.5);
    }
    let gemma = c.gemma3().is_some();
    for b in 0..BLOCKS {
        let l = |s: &str| format!("model.layers.{b}.{s}");
        let norm_center = if gemma { 0.0 } else { 1.0 };
        add(l("input_layernorm.weight"), vec![d], norm_center, 0.4);
        add(
            l("post_attention_layernorm.weight"),
            vec![d],
            norm_center,
            0.4,
        );
        if gemma {
            add(l("pre_feedforward_layernorm.weight"), vec![d], 0.0, 0.4);
            add(l("post_feedforward_layernorm.weight"), vec![d], 0.0, 0.4);
        }
        for (p, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            add(l(&format!("self_attn.{p}.weight")), vec![rows, d], 0.0, 0.5);
            if c.attention_bias {
                add(l(&format!("self_attn.{p}.bias")), vec![rows], 0.0, 0.3);
            }
        }
        add(l("self_attn.o_proj.weight"), vec![d, q], 0.0, 0.5);
        if c.o_proj_bias() {
            add(l("self_attn.o_proj.bias"), vec![d], 0.0, 0.3);
        }
        if gemma || c.architecture == finercut_format::Architecture::Qwen3 {
            add(l("self_attn.q_norm.weight"), vec![HEAD_DIM], 1.0, 0.3);
            add(l("self_attn.k_norm.weight"), vec![HEAD_DIM], 1.0, 0.3);
        }
        if let Some(m) = c.moe() {
            add(
                l("block_sparse_moe.gate.weight"),
                vec![m.num_local_experts, d],
                0.0,
                0.5,
            );
            for e in 0..m.num_local_experts {
                let x = |s: &str| l(&format!("block_sparse_moe.experts.{e}.{s}.weight"));
                add(x("w1"), vec![FFN, d], 0.0, 0.5);
                add(x("w3"), vec![FFN, d], 0.0, 0.5);
                add(x("w2"), vec![d, FFN], 0.0, 0.5);
            }
        } else {
            add(l("mlp.gate_proj.weight"), vec![FFN, d], 0.0, 0.5);
            add(l("mlp.up_proj.weight"), vec![FFN, d], 0.0, 0.5);
            add(l("mlp.down_proj.weight"), vec![d, FFN], 0.0, 0.5);
        }
    }
    out
}

fn tiny(f: Family, seed: u64) -> Model {
    let c = config(f);
    Model::load(&c, &Mem(weights(&c, seed)), &Device::Cpu).unwrap()
}

fn tokens(n: usize, t: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..t).map(|_| rng.gen_range(0..VOCAB as u32)).collect())
        .collect()
}

/// Largest difference relative to the largest magnitude of `want`.
fn max_rel_diff(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (&a, &b)| m.max(f64::from(a - b).abs()));
    diff / scale.max(1e-30)
}

const SUPPORTED: [Family; 6] = [
    Family::Llama { tied: true },
    Family::Llama { tied: false },
    Family::LlamaBias,
    Family::Mistral,
    Family::Qwen2,
    Family::Qwen3,
];

#[test]
fn full_width_rotation_computes_the_dense_function() {
    for (i, f) in SUPPORTED.into_iter().enumerate() {
        let model = tiny(f, 10 + i as u64);
        let calib = tokens(3, 8, 1);
        let sliced = slice_model(&model, &calib, &SliceSettings { dim: HIDDEN }).unwrap();
        let rotated = sliced.to_model(&Device::Cpu).unwrap();
        let toks = tokens(2, 7, 2);
        let want = model.forward(&toks, &Plan::dense()).unwrap();
        let got = rotated.forward(&toks, &Plan::dense()).unwrap();
        let rel = max_rel_diff(got.as_slice_f32().unwrap(), want.as_slice_f32().unwrap());
        assert!(rel < 1e-5, "{f:?}: logits differ by {rel:e} (relative)");
        // The rotation is not the identity: the weights did change.
        let e0 = model.weight("model.embed_tokens.weight").unwrap();
        let e1 = rotated.weight("model.embed_tokens.weight").unwrap();
        assert!(max_rel_diff(e1.as_slice_f32().unwrap(), e0.as_slice_f32().unwrap()) > 1e-2);
    }
}

/// `x Q Qᵀ` for rows `x` of width `d`.
fn project(x: &[f32], q: &finercut_slice::Dense) -> Vec<f32> {
    let (d, k) = (q.rows, q.cols);
    x.chunks(d)
        .flat_map(|row| {
            let c: Vec<f64> = (0..k)
                .map(|j| (0..d).map(|i| f64::from(row[i]) * q.data[i * k + j]).sum())
                .collect();
            (0..d)
                .map(|i| (0..k).map(|j| c[j] * q.data[i * k + j]).sum::<f64>() as f32)
                .collect::<Vec<f32>>()
        })
        .collect()
}

#[test]
fn a_sliced_model_is_the_dense_model_on_projected_streams() {
    // In the original basis, the sliced network is the dense one with the stream projected onto
    // the kept directions before every sublayer and before the final norm (its norms divide by
    // the original width): checks the rotations, shortcuts and divisors at d' < d.
    for (f, dim) in [
        (Family::Llama { tied: true }, 11),
        (Family::Qwen3, 7),
        (Family::LlamaBias, 13),
    ] {
        let model = tiny(f, 31);
        let sliced = slice_model(&model, &tokens(3, 8, 4), &SliceSettings { dim }).unwrap();
        let q = sliced.bases();
        assert_eq!(q.len(), 2 * BLOCKS + 1);
        let toks = tokens(2, 6, 5);
        let (n, t) = (toks.len(), toks[0].len());
        let embed = model
            .weight("model.embed_tokens.weight")
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let mut x: Vec<f32> = toks
            .iter()
            .flatten()
            .flat_map(|&id| embed[id as usize * HIDDEN..(id as usize + 1) * HIDDEN].to_vec())
            .collect();
        for (p, basis) in q.iter().enumerate().take(2 * BLOCKS) {
            let state = finercut_tensor::Tensor::from_vec(
                project(&x, basis),
                &[n, t, HIDDEN],
                &Device::Cpu,
            )
            .unwrap();
            x = model
                .advance(&state, p, p + 1, &Plan::dense())
                .unwrap()
                .to_vec_f32()
                .unwrap();
        }
        let state = finercut_tensor::Tensor::from_vec(
            project(&x, &q[2 * BLOCKS]),
            &[n, t, HIDDEN],
            &Device::Cpu,
        )
        .unwrap();
        let want = model.resume(&state, 2 * BLOCKS, &Plan::dense()).unwrap();
        let got = sliced
            .into_model()
            .unwrap()
            .forward(&toks, &Plan::dense())
            .unwrap();
        let rel = max_rel_diff(got.as_slice_f32().unwrap(), want.as_slice_f32().unwrap());
        assert!(rel < 1e-5, "{f:?} at {dim}: {rel:e}");
    }
}

#[test]
fn full_width_rotation_keeps_every_removal_plan() {
    // h_{p+1} = h_p S_p for a removed sublayer: at full width this is the dense removal, rotated.
    let model = tiny(Family::Qwen2, 5);
    let sliced = slice_model(&model, &tokens(2, 9, 3), &SliceSettings { dim: HIDDEN })
        .unwrap()
        .into_model()
        .unwrap();
    let toks = tokens(2, 6, 4);
    for removed in [vec![0], vec![1], vec![3], vec![0, 2, 3], vec![0, 1, 2, 3]] {
        let plan = Plan::from_removed(removed.iter().copied());
        let want = model.forward(&toks, &plan).unwrap();
        let got = sliced.forward(&toks, &plan).unwrap();
        let rel = max_rel_diff(got.as_slice_f32().unwrap(), want.as_slice_f32().unwrap());
        assert!(rel < 1e-5, "plan {plan}: {rel:e}");
    }
}

#[test]
fn sliced_models_run_under_plans_and_every_path_agrees() {
    let model = tiny(Family::Llama { tied: true }, 7);
    let calib = tokens(4, 8, 5);
    let sliced = slice_model(&model, &calib, &SliceSettings { dim: 11 })
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(sliced.config().hidden_size, 11);
    let toks = tokens(2, 6, 6);
    let dense = sliced.forward(&toks, &Plan::dense()).unwrap();
    let plan = Plan::from_removed([1]);
    let pruned = sliced.forward(&toks, &plan).unwrap();
    assert!(pruned.as_slice_f32().unwrap().iter().all(|v| v.is_finite()));
    assert_ne!(
        pruned.as_slice_f32().unwrap(),
        dense.as_slice_f32().unwrap()
    );
    // The streamed candidates, resuming from a trace and continuations agree with forward.
    let candidates = vec![vec![0], vec![1], vec![2, 3], vec![]];
    let vocab = VOCAB;
    let mut streamed: Vec<Vec<f32>> = vec![Vec::new(); candidates.len()];
    sliced
        .stream_candidates(&toks, &Plan::dense(), &candidates, &mut |c, _, rows| {
            streamed[c].extend_from_slice(rows);
            Ok(())
        })
        .unwrap();
    for (c, removed) in candidates.iter().enumerate() {
        let want = sliced
            .forward(&toks, &Plan::from_removed(removed.iter().copied()))
            .unwrap();
        let rel = max_rel_diff(&streamed[c], want.as_slice_f32().unwrap());
        assert!(rel < 1e-5, "candidate {removed:?}: {rel:e}");
    }
    let states = sliced.trace(&toks, &plan).unwrap();
    let resumed = sliced.resume(&states[1], 1, &plan).unwrap();
    let rel = max_rel_diff(
        resumed.as_slice_f32().unwrap(),
        pruned.as_slice_f32().unwrap(),
    );
    assert!(rel < 1e-5, "resume: {rel:e}");
    let cont = sliced
        .continuation_logits(&toks[0][..3], &[toks[0][3..].to_vec()], &plan)
        .unwrap();
    let full = pruned.as_slice_f32().unwrap();
    let mut want = Vec::new();
    for pos in 2..5 {
        let row = &full[pos * vocab..(pos + 1) * vocab];
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let z: f64 = row.iter().map(|&v| f64::from(v - m).exp()).sum();
        want.extend(row.iter().map(|&v| (f64::from(v - m) - z.ln()) as f32));
    }
    let rel = max_rel_diff(cont[0].as_slice_f32().unwrap(), &want);
    assert!(rel < 1e-4, "continuation: {rel:e}");
}

#[test]
fn parameter_formula_matches_the_model_and_the_saved_file() {
    for (i, f) in SUPPORTED.into_iter().enumerate() {
        let model = tiny(f, 20 + i as u64);
        let c = model.config().clone();
        for dim in [HIDDEN, 9] {
            let sliced = slice_model(&model, &tokens(2, 8, 1), &SliceSettings { dim }).unwrap();
            let want = sliced_param_count(&c, dim);
            assert_eq!(sliced.param_count(), want, "{f:?} at {dim}");
            assert_eq!(sliced.to_model(&Device::Cpu).unwrap().param_count(), want);
            let dir = tempfile::tempdir().unwrap();
            sliced
                .save(
                    dir.path(),
                    Overwrite::Refuse,
                    None,
                    &BTreeMap::new(),
                    DType::F32,
                )
                .unwrap();
            let store = SafetensorsStore::open(dir.path()).unwrap();
            let saved: usize = store
                .names()
                .iter()
                .map(|n| store.shape(n).unwrap().iter().product::<usize>())
                .sum();
            assert_eq!(saved, want, "{f:?} at {dim}: saved file");
            assert_eq!(
                removed_params(&c, model.param_count(), dim),
                model.param_count() as i64 - want as i64
            );
        }
    }
}

#[test]
fn widths_for_a_ratio_and_for_a_parameter_target() {
    let model = tiny(Family::Llama { tied: false }, 3);
    let c = model.config();
    let dense = model.param_count();
    assert_eq!(dim_for_ratio(16, 0.25).unwrap(), 12);
    assert_eq!(dim_for_ratio(16, 0.0).unwrap(), 16);
    assert!(dim_for_ratio(16, 1.0).is_err());
    assert!(dim_for_ratio(16, -0.1).is_err());
    assert!(dim_for_ratio(1, 0.5).is_err());
    for target in [1usize, 500, 1500, 3000] {
        let k = dim_for_removed_params(c, dense, target).unwrap();
        assert!(
            removed_params(c, dense, k) >= target as i64,
            "target {target}"
        );
        if k < HIDDEN {
            assert!(
                removed_params(c, dense, k + 1) < target as i64,
                "target {target}"
            );
        }
    }
    let e = dim_for_removed_params(c, dense, dense).unwrap_err();
    assert!(e.to_string().contains("no residual width"), "{e}");
}

#[test]
fn save_and_load_give_bit_identical_logits() {
    let model = tiny(Family::Qwen2, 8);
    let sliced = slice_model(&model, &tokens(3, 8, 2), &SliceSettings { dim: 10 }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sliced");
    let extra = BTreeMap::from([("source_model_sha256".to_string(), serde_json::json!("abc"))]);
    sliced
        .save(&out, Overwrite::Refuse, None, &extra, DType::F32)
        .unwrap();
    let (config, unknown) = ModelConfig::read_json_file(&out.join("config.json")).unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    assert_eq!(&config, sliced.config());
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Stock loaders refuse it: the weights are not in `model.safetensors` and their `format`
    // names the layout; the source's model_type is kept for finercut.
    assert!(!out.join("model.safetensors").exists());
    let weights =
        finercut_format::SafetensorsStore::open(&out.join("finercut-slicegpt.safetensors"))
            .unwrap();
    assert_eq!(weights.metadata()["format"], "finercut-slicegpt");
    assert_eq!(json["model_type"], "finercut-slicegpt");
    assert_eq!(json["slicegpt"]["model_type"], "qwen2");
    assert_eq!(json["slicegpt"]["architectures"][0], "Qwen2ForCausalLM");
    assert_eq!(json["hidden_size"], 10);
    assert_eq!(json["head_dim"], HEAD_DIM);
    assert_eq!(json["tie_word_embeddings"], false);
    assert_eq!(json["slicegpt"]["original_hidden_size"], HIDDEN);
    assert_eq!(json["slicegpt"]["calibration"]["samples"], 3);
    assert_eq!(json["slicegpt"]["source_model_sha256"], "abc");
    let store = SafetensorsStore::open(&out).unwrap();
    assert!(store.contains("model.layers.1.attn_shortcut_Q"));
    assert!(store.contains("model.layers.1.mlp_shortcut_Q"));
    let loaded = Model::load(&config, &store, &Device::Cpu).unwrap();
    let toks = tokens(2, 5, 9);
    let a = sliced
        .to_model(&Device::Cpu)
        .unwrap()
        .forward(&toks, &Plan::dense())
        .unwrap();
    let b = loaded.forward(&toks, &Plan::dense()).unwrap();
    assert_eq!(a.as_slice_f32().unwrap(), b.as_slice_f32().unwrap());

    // Saved in bf16: every tensor is the f32 weight rounded to nearest even, the config says
    // so, and the model loads and gives logits close to the f32 ones.
    let half = dir.path().join("sliced-bf16");
    sliced
        .save(
            &half,
            Overwrite::Refuse,
            None,
            &BTreeMap::new(),
            DType::BF16,
        )
        .unwrap();
    let json16: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(half.join("config.json")).unwrap()).unwrap();
    assert_eq!(json16["torch_dtype"], "bfloat16");
    let store16 = SafetensorsStore::open(&half).unwrap();
    assert_eq!(store16.names(), store.names());
    for name in store.names() {
        let full = store.get(&name).unwrap();
        let rounded = store16.get(&name).unwrap();
        assert_eq!(rounded.dtype, DType::BF16, "{name}");
        assert_eq!(rounded.shape, full.shape, "{name}");
        let want = f32_to_bytes(&full.to_f32_vec().unwrap(), DType::BF16);
        assert_eq!(&rounded.data[..], &want[..], "{name}");
    }
    let (config16, _) = ModelConfig::read_json_file(&half.join("config.json")).unwrap();
    let c = Model::load(&config16, &store16, &Device::Cpu)
        .unwrap()
        .forward(&toks, &Plan::dense())
        .unwrap();
    let (a, c) = (a.as_slice_f32().unwrap(), c.as_slice_f32().unwrap());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(c).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= 0.05 * scale,
        "bf16 logits off by {worst} (scale {scale})"
    );

    // A second save into the same directory is refused unless it may replace the checkpoint.
    let e = sliced
        .save(&out, Overwrite::Refuse, None, &BTreeMap::new(), DType::F32)
        .unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    sliced
        .save(&out, Overwrite::Replace, None, &BTreeMap::new(), DType::F32)
        .unwrap();

    // A config whose width does not match the weights names the tensor.
    let bad = text.replace("\"hidden_size\": 10", "\"hidden_size\": 9");
    assert_ne!(bad, text);
    let config = ModelConfig::from_json_str(&bad, "edited").unwrap();
    let e = Model::load(&config, &store, &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("model.embed_tokens.weight"), "{e}");
    // So does a missing shortcut matrix.
    let mut w: BTreeMap<String, RawTensor> = store
        .names()
        .into_iter()
        .map(|n| (n.clone(), store.get(&n).unwrap()))
        .collect();
    w.remove("model.layers.0.mlp_shortcut_Q");
    let e = Model::load(sliced.config(), &Mem(w), &Device::Cpu).unwrap_err();
    assert!(
        e.to_string().contains("model.layers.0.mlp_shortcut_Q"),
        "{e}"
    );
    // And `Checkpoint::open` reads the directory (here without a tokenizer: an error naming it).
    assert!(Checkpoint::open(&out).is_err());
}

#[test]
fn gemma3_mixtral_and_sliced_models_are_refused() {
    for (f, word) in [(Family::Gemma3, "gemma3"), (Family::Mixtral, "mixtral")] {
        let model = tiny(f, 1);
        let e = slice_model(&model, &tokens(1, 4, 1), &SliceSettings { dim: 8 }).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert!(e.to_string().contains(word), "{e}");
        assert!(check_supported(model.config()).is_err());
    }
    let model = tiny(Family::Llama { tied: true }, 1);
    let sliced = slice_model(&model, &tokens(1, 4, 1), &SliceSettings { dim: 8 })
        .unwrap()
        .into_model()
        .unwrap();
    let e = slice_model(&sliced, &tokens(1, 4, 1), &SliceSettings { dim: 4 }).unwrap_err();
    assert!(e.to_string().contains("already sliced"), "{e}");
    // Widths outside 1..=d and empty calibration sets are input errors.
    for dim in [0, HIDDEN + 1] {
        let e = slice_model(&model, &tokens(1, 4, 1), &SliceSettings { dim }).unwrap_err();
        assert!(matches!(e, Error::Input(_)), "{e}");
    }
    assert!(slice_model(&model, &[], &SliceSettings { dim: 8 }).is_err());
    // A `slicegpt` section on a Gemma 3 or Mixtral config is refused when parsing.
    let e = ModelConfig::from_json_str(
        r#"{"model_type": "mixtral", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "slicegpt": {"original_hidden_size": 16}}"#,
        "x",
    )
    .unwrap_err();
    assert!(e.to_string().contains("mixtral"), "{e}");
}

#[test]
fn slicing_does_not_depend_on_the_thread_count() {
    let model = tiny(Family::Qwen3, 4);
    // Enough calibration rows for several covariance blocks and product blocks.
    let calib = tokens(20, 60, 3);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let sliced = slice_model(&model, &calib, &SliceSettings { dim: 9 }).unwrap();
            let m = sliced.to_model(&Device::Cpu).unwrap();
            let logits = m.forward(&tokens(2, 5, 1), &Plan::dense()).unwrap();
            (sliced.eigenvalues().to_vec(), logits.to_vec_f32().unwrap())
        })
    };
    assert_eq!(run(1), run(3));
}
