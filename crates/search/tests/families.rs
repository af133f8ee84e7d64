//! The greedy FinerCut search on the tiny random model of every family (`data/golden/tiny/`) removes
//! the same six sublayers, in the same order, as `benches/reference/make_tiny_families.py` computes
//! with transformers and forward hooks that zero a branch (`js-reference` over all positions of two
//! sequences of 16 tokens). Scores agree to 1e-4 relative.

use std::path::{Path, PathBuf};

use finercut_format::{ModelConfig, SafetensorsStore};
use finercut_metrics::Metric;
use finercut_model::Model;
use finercut_search::export::{is_removed_tensor, TensorLayout};
use finercut_search::model_scorer::StreamingScorer;
use finercut_search::{run, Inputs, Method, Provenance, SearchResult, Settings, Stop};

const FAMILIES: [&str; 14] = [
    "llama3",
    "mistral",
    "qwen2",
    "gemma3",
    "qwen3",
    "mixtral",
    "gemma2",
    "olmo2",
    "qwen3_moe",
    "phi3",
    "phi3_longrope",
    "phi4_mini",
    "gpt_neox",
    "gpt_neox_sequential",
];

fn family_dir(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/golden/tiny")
        .join(family)
}

#[test]
fn greedy_orders_match_the_transformers_reference() {
    for family in FAMILIES {
        let dir = family_dir(family);
        let config = ModelConfig::from_json_file(&dir.join("config.json")).unwrap();
        let store = SafetensorsStore::open(&dir).unwrap();
        let weights = config.family().weights(&config, Box::new(store));
        let model = Model::load(&config, weights.as_ref(), &finercut_tensor::Device::Cpu).unwrap();
        let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
        let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(expected["metric"], "js-reference");
        let tokens: Vec<Vec<u32>> = serde_json::from_value(expected["tokens"].clone()).unwrap();
        let steps = expected["greedy"].as_array().unwrap();
        let want: Vec<usize> = steps
            .iter()
            .map(|s| s["removed"].as_u64().unwrap() as usize)
            .collect();

        let n = model.num_sublayers();
        let mut settings = Settings::new(Method::Finercut);
        settings.metric = Some(Metric::JsReference);
        settings.stop = Stop::Ratio(want.len() as f64 / n as f64);
        settings.samples = tokens.len();
        settings.seq_len = tokens[0].len();
        let prov = Provenance {
            model_sha256: family.into(),
            data_sha256: "fixed tokens".into(),
        };
        let mut result = SearchResult::new(settings, prov, n / 2).unwrap();
        let mut scorer = StreamingScorer::new(&model, tokens, Metric::JsReference).unwrap();
        run(&mut result, Inputs::Scorer(&mut scorer), None, &mut ()).unwrap();
        assert_eq!(result.removed_sublayers(), want, "{family}");
        let mut worst = 0f64;
        for (got, step) in result.steps.iter().zip(steps) {
            let score = step["score"].as_f64().unwrap();
            worst = worst.max((got.score - score).abs() / score);
            assert!(
                (got.score - score).abs() <= 1e-4 * score,
                "{family}: step score {} against transformers' {score}",
                got.score
            );
        }
        println!("{family}: order {want:?}, worst relative score difference {worst:.1e}");
    }
}

#[test]
fn every_block_tensor_belongs_to_exactly_one_sublayer() {
    // What `finercut export` drops for a removed sublayer covers each family's tensors once.
    for family in FAMILIES {
        let dir = family_dir(family);
        let config = ModelConfig::from_json_file(&dir.join("config.json")).unwrap();
        let layout = TensorLayout::for_architecture(config.architecture.model_type()).unwrap();
        let store = SafetensorsStore::open(&dir).unwrap();
        // Under the shared names, as `finercut export` sees them.
        let weights = config.family().weights(&config, Box::new(store));
        for name in weights.names() {
            let owners: Vec<usize> = (0..2 * config.num_hidden_layers)
                .filter(|&i| is_removed_tensor(&name, &layout.sublayer_prefixes(i)))
                .collect();
            let in_block = name.starts_with("model.layers.");
            assert_eq!(
                owners.len(),
                usize::from(in_block),
                "{family}: {name} in {owners:?}"
            );
        }
    }
}
