//! Parity with Hugging Face transformers on SmolLM2-135M-Instruct (the golden files in
//! `data/golden`, produced in float32 on the CPU): top-10 logits and log-sum-exp at every position
//! of three prompts, and all 49,152 logits at the last position of prompt 1. Tolerance 1e-3 (transformers'
//! own `sdpa` and `eager` attention differ by up to 1.4e-4).

use finercut_format::{cache, Checkpoint};
use finercut_model::{Model, Plan, WeightDtype};
use finercut_tensor::Device;
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-3;

/// The golden files committed to the repository (`data/golden/README.md` says how they were made).
fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/golden")
}

/// The model and golden directory; `None` only when the model is absent and
/// `FINERCUT_SKIP_DOWNLOADED_TESTS` is set (otherwise an absent model fails the test).
fn setup() -> Option<(Model, PathBuf)> {
    let path = cache::require_downloaded(cache::default_model_path())?;
    let ckpt = Checkpoint::open(&path).unwrap();
    let model = Model::load(&ckpt.config, ckpt.weights.as_ref(), &Device::Cpu).unwrap();
    Some((model, golden_dir()))
}

/// The `f32` array of a little-endian `.npy` file (format 1.0 or 2.0, C order).
fn read_npy_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not an .npy file");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn smollm2_matches_transformers() {
    let Some((model, golden)) = setup() else {
        return;
    };
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden.join("smollm2_logits_prompts.json")).unwrap(),
    )
    .unwrap();
    let vocab = model.config().vocab_size;
    for prompt in json["prompts"].as_array().unwrap() {
        let name = prompt["name"].as_str().unwrap();
        let ids: Vec<u32> = prompt["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let logits = model
            .forward(std::slice::from_ref(&ids), &Plan::dense())
            .unwrap();
        let logits = logits.as_slice_f32().unwrap();
        let mut worst = 0f64;
        for pos in prompt["positions"].as_array().unwrap() {
            let p = pos["pos"].as_u64().unwrap() as usize;
            let row = &logits[p * vocab..(p + 1) * vocab];
            let top: Vec<usize> = pos["top10_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let vals: Vec<f64> = pos["top10_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            for (&id, &want) in top.iter().zip(&vals) {
                worst = worst.max((f64::from(row[id]) - want).abs());
            }
            let argmax = (0..vocab)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            assert_eq!(argmax, top[0], "{name}: top-1 at position {p}");
            let m = row
                .iter()
                .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let lse = m + row
                .iter()
                .map(|&v| (f64::from(v) - m).exp())
                .sum::<f64>()
                .ln();
            worst = worst.max((lse - pos["logsumexp"].as_f64().unwrap()).abs());
        }
        println!(
            "{name}: {} positions, max |Δ| of top-10 logits and log-sum-exp = {worst:.2e}",
            ids.len()
        );
        assert!(worst <= TOL, "{name}: max difference {worst:e} > {TOL:e}");
        if name == "prompt1" {
            let want = read_npy_f32(&golden.join("smollm2_prompt1_last_logits.npy"));
            assert_eq!(want.len(), vocab);
            let last = &logits[(ids.len() - 1) * vocab..];
            let diff = last
                .iter()
                .zip(&want)
                .map(|(&a, &b)| f64::from((a - b).abs()))
                .fold(0f64, f64::max);
            println!("prompt1 last position: max |Δ| over all {vocab} logits = {diff:.2e}");
            assert!(diff <= TOL, "prompt1 last logits: max difference {diff:e}");
        }
    }
}

/// SmolLM2's quantised GGUF blocks kept as stored and widened inside the GEMM give the logits of
/// dequantising every tensor at load, bit for bit (dense forward and a pruned plan).
#[test]
fn smollm2_stored_blocks_match_dequantising_at_load() {
    let Some(path) = cache::require_downloaded(cache::default_model_path()) else {
        return;
    };
    let ckpt = Checkpoint::open(&path).unwrap();
    let ids: Vec<Vec<u32>> = vec![(0..40).map(|i| (i * 997 + 13) % 49_152).collect(); 2];
    let logits = |dtype, plan: &Plan| {
        let model = Model::load_as(
            &ckpt.config,
            ckpt.weights.as_ref(),
            &Device::Cpu,
            &Default::default(),
            dtype,
        )
        .unwrap();
        if dtype == WeightDtype::Stored {
            assert!(model.weight_storage().keys().all(|t| t != "f32"));
        }
        model.forward(&ids, plan).unwrap().to_vec_f32().unwrap()
    };
    for plan in [Plan::dense(), Plan::from_removed([3, 10, 41])] {
        assert!(logits(WeightDtype::Stored, &plan) == logits(WeightDtype::F32, &plan));
    }
}
