//! Model-backed scorers on a tiny random Llama: the streaming scorer gives the same removal
//! order and scores as the naive one (one full forward per candidate), for every metric; with
//! elimination, the same order and bit-identical scores of the removed units as exhaustively.

use std::collections::BTreeMap;

use finercut_format::{Bytes, DType, ModelConfig, RawTensor};
use finercut_metrics::Metric;
use finercut_model::Model;
use finercut_search::model_scorer::{ModelHiddenStates, NaiveScorer, StreamingScorer};
use finercut_search::{
    run, Inputs, Level, Method, Provenance, Scorer, SearchResult, Settings, Stop,
};
use rand::{Rng, SeedableRng};

use crate::common::MemSource;

const VOCAB: usize = 40;
const HIDDEN: usize = 16;
const FFN: usize = 24;
pub(crate) const BLOCKS: usize = 4;

fn tiny_config() -> ModelConfig {
    let json = format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": {VOCAB},
        "hidden_size": {HIDDEN}, "intermediate_size": {FFN}, "num_hidden_layers": {BLOCKS},
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": false,
        "hidden_act": "silu"}}"#
    );
    ModelConfig::from_json_str(&json, "tiny test config").unwrap()
}

pub(crate) fn tiny_model(seed: u64) -> Model {
    tiny_model_part(seed, None)
}

/// [`tiny_model`], or the part of it holding sublayers `part` (a pipeline stage's window).
pub(crate) fn tiny_model_part(seed: u64, part: Option<std::ops::Range<usize>>) -> Model {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut tensors = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, center: f32, spread: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| center + rng.gen_range(-spread..spread))
            .collect();
        tensors.insert(
            name.clone(),
            RawTensor {
                name,
                dtype: DType::F32,
                shape,
                data: Bytes::from_f32_vec(v),
            },
        );
    };
    let (kv, hd) = (2, HIDDEN / 4);
    add(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, HIDDEN],
        0.0,
        1.0,
    );
    for b in 0..BLOCKS {
        let p = format!("model.layers.{b}.");
        add(
            format!("{p}self_attn.q_proj.weight"),
            vec![HIDDEN, HIDDEN],
            0.0,
            0.5,
        );
        add(
            format!("{p}self_attn.k_proj.weight"),
            vec![kv * hd, HIDDEN],
            0.0,
            0.5,
        );
        add(
            format!("{p}self_attn.v_proj.weight"),
            vec![kv * hd, HIDDEN],
            0.0,
            0.5,
        );
        add(
            format!("{p}self_attn.o_proj.weight"),
            vec![HIDDEN, HIDDEN],
            0.0,
            0.5,
        );
        add(
            format!("{p}mlp.gate_proj.weight"),
            vec![FFN, HIDDEN],
            0.0,
            0.5,
        );
        add(
            format!("{p}mlp.up_proj.weight"),
            vec![FFN, HIDDEN],
            0.0,
            0.5,
        );
        add(
            format!("{p}mlp.down_proj.weight"),
            vec![HIDDEN, FFN],
            0.0,
            0.5,
        );
        add(format!("{p}input_layernorm.weight"), vec![HIDDEN], 1.0, 0.2);
        add(
            format!("{p}post_attention_layernorm.weight"),
            vec![HIDDEN],
            1.0,
            0.2,
        );
    }
    add("model.norm.weight".into(), vec![HIDDEN], 1.0, 0.2);
    add("lm_head.weight".into(), vec![VOCAB, HIDDEN], 0.0, 1.0);
    let device = finercut_tensor::Device::Cpu;
    let options = finercut_model::LoadOptions {
        sublayers: part,
        ..finercut_model::LoadOptions::default()
    };
    Model::load_with_options(&tiny_config(), &MemSource(tensors), &device, &options).unwrap()
}

pub(crate) fn tiny_config_for_stages() -> ModelConfig {
    tiny_config()
}

pub(crate) fn tokens(seed: u64, n: usize, t: usize) -> Vec<Vec<u32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..t).map(|_| rng.gen_range(0..VOCAB as u32)).collect())
        .collect()
}

pub(crate) fn prov() -> Provenance {
    Provenance {
        model_sha256: "tiny".into(),
        data_sha256: "random".into(),
    }
}

fn search(settings: Settings, scorer: &mut dyn Scorer) -> SearchResult {
    let mut r = SearchResult::new(settings, prov(), BLOCKS).unwrap();
    run(&mut r, Inputs::Scorer(scorer), None, &mut ()).unwrap();
    r
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()) + 1e-12
}

#[test]
fn streaming_scorer_equals_naive_scorer() {
    let model = tiny_model(11);
    let calib = tokens(5, 3, 7);
    for metric in Metric::ALL {
        for (method, level) in [
            (Method::Finercut, Level::Sublayer),
            (Method::Finercut, Level::Block),
            (Method::FinercutOneshot, Level::Sublayer),
        ] {
            if metric == Metric::Ppl && method != Method::Finercut {
                continue;
            }
            let mut s = Settings::new(method);
            s.metric = Some(metric);
            s.level = level;
            s.stop = Stop::End;
            s.exhaustive = true;
            let mut fast = StreamingScorer::new(&model, calib.clone(), metric).unwrap();
            let mut slow = NaiveScorer::new(&model, calib.clone(), metric).unwrap();
            let a = search(s.clone(), &mut fast);
            let b = search(s, &mut slow);
            assert_eq!(a.order(), b.order(), "{metric} {method} {level}");
            for (x, y) in a.steps.iter().zip(&b.steps) {
                assert!(
                    close(x.score, y.score),
                    "{metric} {method} {level}: {} vs {}",
                    x.score,
                    y.score
                );
                for (p, q) in x.runners_up.iter().zip(&y.runners_up) {
                    assert_eq!(p.unit, q.unit);
                    assert!(close(p.score, q.score));
                }
            }
            // Streaming does less work than a full forward per candidate.
            if method == Method::Finercut && level == Level::Sublayer {
                assert!(a.total_forward_equivalents() < b.total_forward_equivalents());
            }
        }
    }
}

#[test]
fn dense_candidate_scores_zero() {
    // Removing nothing in addition to nothing is the dense model: divergence 0.
    let model = tiny_model(3);
    let calib = tokens(9, 2, 5);
    let mut s = StreamingScorer::new(&model, calib, Metric::Js).unwrap();
    let scored = s.score(&[], &[vec![], vec![0]], &mut |_| {}).unwrap();
    assert!(scored.scores[0].abs() < 1e-9, "{}", scored.scores[0]);
    assert!(scored.scores[1] > 0.0);
}

#[test]
fn hidden_state_baselines_run_on_a_model() {
    let model = tiny_model(7);
    let calib = tokens(1, 2, 6);
    for method in [Method::Shortgpt, Method::DeeperLayers] {
        let mut src = ModelHiddenStates::new(&model, calib.clone()).unwrap();
        let mut r = SearchResult::new(Settings::new(method), prov(), BLOCKS).unwrap();
        run(&mut r, Inputs::HiddenStates(&mut src), None, &mut ()).unwrap();
        assert!(r.complete);
        assert!(r.plan_for_ratio(0.5).unwrap().len() == 4);
    }
}

#[test]
fn ragged_calibration_is_an_error() {
    let model = tiny_model(7);
    assert!(StreamingScorer::new(&model, vec![vec![1, 2], vec![3]], Metric::Js).is_err());
    assert!(NaiveScorer::new(&model, vec![], Metric::Js).is_err());
    assert!(ModelHiddenStates::new(&model, vec![vec![]]).is_err());
}

/// Every (method, metric, level) a greedy search runs with.
pub(crate) fn greedy_configurations() -> Vec<(Method, Metric, Level)> {
    let mut out = Vec::new();
    for metric in Metric::ALL {
        for level in [Level::Sublayer, Level::Attn, Level::Mlp, Level::Block] {
            out.push((Method::Finercut, metric, level));
        }
    }
    out.push((Method::Sleb, Metric::Ppl, Level::Block));
    for level in [Level::Sublayer, Level::Attn, Level::Mlp] {
        out.push((Method::Blockpruner, Metric::Ppl, level));
    }
    out
}

/// Checks that elimination gives the exhaustive search's order, bit-identical scores of the
/// removed units, complete runners-up equal to the exhaustive ones and bounds below them;
/// returns (rows scored, rows an exhaustive search scores) over the run.
fn check_elimination(
    model: &Model,
    calib: &[Vec<u32>],
    method: Method,
    metric: Metric,
    level: Level,
) -> (usize, usize) {
    let mut s = Settings::new(method);
    s.metric = Some(metric);
    s.level = level;
    s.stop = Stop::End;
    let what = format!("{method} {metric} {level}");
    let mut fast = StreamingScorer::new(model, calib.to_vec(), metric)
        .unwrap()
        .with_group_rows(1);
    let elim = search(s.clone(), &mut fast);
    s.exhaustive = true;
    let mut all = StreamingScorer::new(model, calib.to_vec(), metric).unwrap();
    let full = search(s, &mut all);
    assert_eq!(elim.order(), full.order(), "{what}");
    let (mut scored, mut total) = (0, 0);
    for (k, (e, f)) in elim.steps.iter().zip(&full.steps).enumerate() {
        assert_eq!(
            e.score.to_bits(),
            f.score.to_bits(),
            "{what} step {}: {} vs {}",
            k + 1,
            e.score,
            f.score
        );
        assert!(f.elimination.is_none());
        let stats = e.elimination.as_ref().unwrap();
        assert_eq!(stats.groups, calib.len(), "{what}");
        assert!(stats.completed >= 1 && stats.completed <= e.candidates);
        scored += stats.rows_scored;
        total += stats.rows * e.candidates;
        let exhaustive: BTreeMap<String, f64> = f
            .runners_up
            .iter()
            .map(|c| (c.unit.to_string(), c.score))
            .collect();
        for c in &e.runners_up {
            let Some(&complete) = exhaustive.get(&c.unit.to_string()) else {
                assert!(
                    c.is_bound(),
                    "{what}: complete runner-up {} unknown",
                    c.unit
                );
                continue;
            };
            match c.stopped_after_rows {
                None => assert_eq!(c.score.to_bits(), complete.to_bits(), "{what} {}", c.unit),
                Some(rows) => {
                    assert!(rows < stats.rows, "{what}");
                    assert!(
                        c.score <= complete && c.score > e.score,
                        "{what} {}: bound {} vs score {complete}, best {}",
                        c.unit,
                        c.score,
                        e.score
                    );
                }
            }
        }
    }
    (scored, total)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]

    #[test]
    fn elimination_equals_exhaustive_search(
        model_seed in 0u64..1000,
        calib_seed in 0u64..1000,
        samples in 2usize..5,
        seq_len in 2usize..7,
    ) {
        let model = tiny_model(model_seed);
        let calib = tokens(calib_seed, samples, seq_len);
        for (method, metric, level) in greedy_configurations() {
            check_elimination(&model, &calib, method, metric, level);
        }
    }
}

#[test]
fn elimination_stops_most_candidates_early() {
    // A fixed case where elimination must save work, so that a driver that scores everything
    // fails here.
    let model = tiny_model(21);
    let calib = tokens(4, 6, 8);
    let (mut scored, mut total) = (0, 0);
    for (method, metric, level) in greedy_configurations() {
        let (s, t) = check_elimination(&model, &calib, method, metric, level);
        scored += s;
        total += t;
    }
    assert!(
        (scored as f64) < 0.9 * total as f64,
        "{scored} of {total} rows scored"
    );
}

#[test]
fn elimination_result_resumes_to_the_uninterrupted_run() {
    let model = tiny_model(5);
    let calib = tokens(6, 4, 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    let mut s = Settings::new(Method::Finercut);
    s.stop = Stop::End;
    let mut scorer = StreamingScorer::new(&model, calib.clone(), Metric::Js)
        .unwrap()
        .with_group_rows(1);
    let full = search(s.clone(), &mut scorer);
    assert!(full.steps.iter().any(|st| st
        .runners_up
        .iter()
        .any(finercut_search::Candidate::is_bound)));

    let mut part = s.clone();
    part.stop = Stop::Ratio(0.4);
    let mut r = SearchResult::new(part, prov(), BLOCKS).unwrap();
    run(&mut r, Inputs::Scorer(&mut scorer), Some(&path), &mut ()).unwrap();
    assert_eq!(r.steps.len(), 3);
    let mut r = SearchResult::resume(&path, &s, &prov(), BLOCKS).unwrap();
    run(&mut r, Inputs::Scorer(&mut scorer), Some(&path), &mut ()).unwrap();
    let back = SearchResult::load(&path).unwrap();
    let timeless = |r: &SearchResult| {
        let mut r = r.clone();
        r.preparation.wall_s = 0.0;
        r.steps.iter_mut().for_each(|st| st.wall_s = 0.0);
        r
    };
    assert_eq!(timeless(&back), timeless(&full));
}

#[test]
fn elimination_does_not_depend_on_the_thread_count() {
    let model = tiny_model(8);
    let calib = tokens(2, 4, 6);
    let mut s = Settings::new(Method::Finercut);
    s.stop = Stop::End;
    let runs: Vec<SearchResult> = [1, 3]
        .into_iter()
        .map(|threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut scorer = StreamingScorer::new(&model, calib.clone(), Metric::Kl)
                    .unwrap()
                    .with_group_rows(1);
                let mut r = search(s.clone(), &mut scorer);
                r.preparation.wall_s = 0.0;
                r.steps.iter_mut().for_each(|st| st.wall_s = 0.0);
                r
            })
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
}
