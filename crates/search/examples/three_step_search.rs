//! Three steps of the FinerCut search on a tiny random Llama, using only `finercut-model` and
//! `finercut-search`: writes the model (config.json and model.safetensors) to a directory, loads it,
//! removes the three sublayers that move the logits least, and prints them.
//!
//! `cargo run -p finercut-search --example three_step_search [DIR]` (DIR defaults to a fresh
//! directory under the system's temporary directory). The same file builds as a crate outside the
//! workspace (`cargo xtask outside-crate`).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use finercut_model::format::{write_safetensors, DType, ModelConfig, SafetensorsStore};
use finercut_model::tensor::Device;
use finercut_model::Model;
use finercut_search::model_scorer::StreamingScorer;
use finercut_search::{run, Inputs, Method, Metric, Provenance, SearchResult, Settings, Stop};

const VOCAB: usize = 64;
const HIDDEN: usize = 32;
const FFN: usize = 64;
const BLOCKS: usize = 4;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;

fn main() -> Result<(), Box<dyn Error>> {
    // SAFETY: first thing in `main`, before any thread starts.
    unsafe { finercut_model::tensor::init_blas() };
    let dir = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("finercut-tiny-{}", std::process::id())),
    };
    write_tiny_llama(&dir, 7)?;

    // Load it: the configuration, and the weights memory-mapped from model.safetensors.
    let config_path = dir.join("config.json");
    let config = ModelConfig::from_json_str(
        &std::fs::read_to_string(&config_path)?,
        &config_path.display().to_string(),
    )?;
    let weights = SafetensorsStore::open(&dir)?;
    let model = Model::load(&config, &weights, &Device::Cpu)?;

    // Calibration tokens: four sequences of 16 pseudo-random ids.
    let mut rng = SplitMix(11);
    let tokens: Vec<Vec<u32>> = (0..4)
        .map(|_| {
            (0..16)
                .map(|_| (rng.next() % VOCAB as u64) as u32)
                .collect()
        })
        .collect();

    // Three greedy steps: 3 of the 2·4 = 8 sublayers, a ratio of 3/8.
    let mut settings = Settings::new(Method::Finercut);
    settings.metric = Some(Metric::Js);
    settings.stop = Stop::Ratio(3.0 / 8.0);
    let provenance = Provenance {
        model_sha256: "tiny random llama".into(),
        data_sha256: "pseudo-random tokens".into(),
    };
    let mut result = SearchResult::new(settings, provenance, BLOCKS)?;
    let mut scorer = StreamingScorer::new(&model, tokens, Metric::Js)?;
    run(&mut result, Inputs::Scorer(&mut scorer), None, &mut ())?;

    println!(
        "model: {} ({} sublayers)",
        dir.display(),
        model.num_sublayers()
    );
    for (i, step) in result.steps.iter().enumerate() {
        println!(
            "step {}: removed {} (JS divergence {:.6})",
            i + 1,
            step.unit,
            step.score
        );
    }
    Ok(())
}

/// Writes a random Llama with `BLOCKS` blocks to `dir`: config.json and model.safetensors (f32).
fn write_tiny_llama(dir: &Path, seed: u64) -> Result<(), Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let head_dim = HIDDEN / HEADS;
    let config = format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": {VOCAB},
        "hidden_size": {HIDDEN}, "intermediate_size": {FFN}, "num_hidden_layers": {BLOCKS},
        "num_attention_heads": {HEADS}, "num_key_value_heads": {KV_HEADS}, "head_dim": {head_dim},
        "hidden_act": "silu", "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": true, "torch_dtype": "float32"}}"#
    );
    std::fs::write(dir.join("config.json"), config)?;

    let mut rng = SplitMix(seed);
    let mut random = |shape: Vec<usize>, center: f32, spread: f32| {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| center + spread * rng.uniform()).collect();
        (shape, values)
    };
    let kv = KV_HEADS * head_dim;
    let w = 1.7 / (HIDDEN as f32).sqrt();
    let mut tensors = vec![(
        "model.embed_tokens.weight".to_string(),
        random(vec![VOCAB, HIDDEN], 0.0, 1.0),
    )];
    for b in 0..BLOCKS {
        for (name, shape) in [
            ("self_attn.q_proj", vec![HIDDEN, HIDDEN]),
            ("self_attn.k_proj", vec![kv, HIDDEN]),
            ("self_attn.v_proj", vec![kv, HIDDEN]),
            ("self_attn.o_proj", vec![HIDDEN, HIDDEN]),
            ("mlp.gate_proj", vec![FFN, HIDDEN]),
            ("mlp.up_proj", vec![FFN, HIDDEN]),
            ("mlp.down_proj", vec![HIDDEN, FFN]),
        ] {
            tensors.push((
                format!("model.layers.{b}.{name}.weight"),
                random(shape, 0.0, w),
            ));
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            let t = random(vec![HIDDEN], 1.0, 0.1);
            tensors.push((format!("model.layers.{b}.{norm}.weight"), t));
        }
    }
    tensors.push((
        "model.norm.weight".to_string(),
        random(vec![HIDDEN], 1.0, 0.0),
    ));

    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, (_, v))| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let list: Vec<(String, DType, Vec<usize>, &[u8])> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, (shape, _)), b)| (name.clone(), DType::F32, shape.clone(), b.as_slice()))
        .collect();
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&dir.join("model.safetensors"), &list, &metadata)?;
    Ok(())
}

/// A small deterministic generator (SplitMix64), so the example needs no random-number crate.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
