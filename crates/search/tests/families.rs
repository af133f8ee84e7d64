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

/// Every golden directory (`data/golden/tiny/*/` with a `config.json`), sorted: the model
/// crate's tests check that every registered family has one.
fn golden_models() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/golden/tiny");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("config.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no golden model in {}", dir.display());
    names
}

fn family_dir(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/golden/tiny")
        .join(family)
}

#[test]
fn greedy_orders_match_the_transformers_reference() {
    for family in &golden_models() {
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
    for family in &golden_models() {
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

/// The `f32` array and shape of a little-endian `.npy` file (format 1.0, C order).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"));
    let shape = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
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

/// The worst of `|got - want| / (1 + |want|)`, the tolerance of the family goldens.
fn worst_scaled_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - f64::from(w)).abs() / (1.0 + f64::from(w).abs()))
        .fold(0.0, f64::max)
}

/// `export --format hf-compatible` writes exactly the stock files of the family (every tensor
/// transformers saved, under its name: GPT-NeoX's fused `query_key_value` joined back byte for
/// byte) with exactly the output projections zeroed that `zeroed.json` names (a mixture's: every
/// expert's); transformers' logits of those files (`logits_zeroed.npy`) are finercut's logits of
/// the pruned plan, and of the export read back.
#[test]
fn hf_compatible_exports_are_the_stock_files_with_zeroed_projections() {
    use finercut_format::{write_safetensors_streamed, TensorSource, TensorSpec};
    use finercut_model::Plan;
    use finercut_search::export::HfCompatible;
    use std::collections::{BTreeMap, BTreeSet};

    for family in &golden_models() {
        let dir = family_dir(family);
        let config = ModelConfig::from_json_file(&dir.join("config.json")).unwrap();
        let text = std::fs::read_to_string(dir.join("zeroed.json")).unwrap();
        let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
        let removed: BTreeSet<usize> =
            serde_json::from_value(golden["zeroed_sublayers"].clone()).unwrap();
        let mut want_zeroed: Vec<String> =
            serde_json::from_value(golden["zeroed_tensors"].clone()).unwrap();
        want_zeroed.sort();
        let stored = SafetensorsStore::open(&dir).unwrap();
        // transformers 5 reads GPT-NeoX's head as `embed_out` (Pythia's name, which the export
        // writes) or `lm_head` (which it saves).
        let stored_name = |n: &str| {
            if n == "embed_out.weight" && !stored.contains(n) {
                "lm_head.weight".to_string()
            } else {
                n.to_string()
            }
        };
        let weights = config
            .family()
            .weights(&config, Box::new(SafetensorsStore::open(&dir).unwrap()));
        let export = HfCompatible::new(&config, weights.as_ref(), &removed);
        let names = export.names();
        let got: BTreeSet<String> = names.iter().map(|n| stored_name(n)).collect();
        let want: BTreeSet<String> = stored.names().into_iter().collect();
        assert_eq!(got, want, "{family}: the stock tensor names");
        let mut zeroed: Vec<String> = export.zeroed().iter().map(|n| n.to_string()).collect();
        zeroed.sort();
        assert_eq!(zeroed, want_zeroed, "{family}: the zeroed tensors");
        for name in &names {
            let (e, s) = (
                export.get(name).unwrap(),
                stored.get(&stored_name(name)).unwrap(),
            );
            assert_eq!((e.dtype, &e.shape), (s.dtype, &s.shape), "{family}: {name}");
            if zeroed.contains(name) {
                assert!(e.data.iter().all(|&b| b == 0), "{family}: {name} not zero");
            } else {
                assert!(e.data[..] == s.data[..], "{family}: {name} differs");
            }
        }

        // finercut's pruned plan, and the export read back, compute transformers' logits.
        let tokens: Vec<Vec<u32>> = {
            let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            serde_json::from_value(v["tokens"].clone()).unwrap()
        };
        let (shape, want) = read_npy(&dir.join("logits_zeroed.npy"));
        let cpu = finercut_tensor::Device::Cpu;
        let model = Model::load(&config, weights.as_ref(), &cpu).unwrap();
        let planned = model
            .forward(&tokens, &Plan::from_removed(removed.iter().copied()))
            .unwrap();
        assert_eq!(planned.shape(), shape.as_slice(), "{family}");
        let worst = worst_scaled_error(&planned.to_vec_f32().unwrap(), &want);
        assert!(
            worst <= 1e-4,
            "{family}: the pruned plan is {worst:.2e} off"
        );

        let tmp = tempfile::tempdir().unwrap();
        let specs: Vec<TensorSpec> = names
            .iter()
            .map(|n| {
                let t = export.get(n).unwrap();
                TensorSpec {
                    name: n.clone(),
                    dtype: t.dtype,
                    shape: t.shape,
                }
            })
            .collect();
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors_streamed(&tmp.path().join("model.safetensors"), &specs, &meta, |i| {
            Ok(export.get(&names[i])?.data)
        })
        .unwrap();
        let back = config.family().weights(
            &config,
            Box::new(SafetensorsStore::open(tmp.path()).unwrap()),
        );
        let reloaded = Model::load(&config, back.as_ref(), &cpu).unwrap();
        let logits = reloaded.forward(&tokens, &Plan::dense()).unwrap();
        let read_back = worst_scaled_error(&logits.to_vec_f32().unwrap(), &want);
        assert!(
            read_back <= 1e-4,
            "{family}: the export read back is {read_back:.2e} off"
        );
        println!(
            "{family}: {} tensors zeroed; pruned plan {worst:.1e}, export read back \
             {read_back:.1e} from transformers' logits",
            zeroed.len()
        );
    }
}
