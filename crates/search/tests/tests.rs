//! Integration tests of `finercut-search` that need no model: greedy against brute force,
//! checkpoints and resume, the baselines on synthetic states, plans, export and inspect.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

// The kernels an executable gets from `init_blas` (OpenBLAS re-initialised before the harness starts).
finercut_tensor::init_blas_before_main!();

mod common;
mod dist;
mod families;
mod model;

use std::collections::BTreeSet;
use std::path::Path;

use finercut_search::export::{ExportPlan, TensorLayout};
use finercut_search::inspect::Inspection;
use finercut_search::{
    run, BlockStates, Error, FnScorer, HiddenStates, Inputs, Level, Method, Observer, Provenance,
    Result, Scored, Scorer, SearchResult, Settings, Step, Stop, TokenSelection, Unit,
};
use proptest::prelude::*;

fn prov() -> Provenance {
    Provenance {
        model_sha256: "model-hash".into(),
        data_sha256: "data-hash".into(),
    }
}

fn settings(method: Method, level: Level, stop: Stop) -> Settings {
    let mut s = Settings::new(method);
    s.level = level;
    s.stop = stop;
    s
}

/// The result without wall times, which differ between runs.
fn timeless(r: &SearchResult) -> SearchResult {
    let mut r = r.clone();
    r.preparation.wall_s = 0.0;
    for s in &mut r.steps {
        s.wall_s = 0.0;
    }
    r
}

fn run_scorer(s: Settings, blocks: usize, scorer: &mut dyn Scorer) -> SearchResult {
    let mut r = SearchResult::new(s, prov(), blocks).unwrap();
    run(&mut r, Inputs::Scorer(scorer), None, &mut ()).unwrap();
    r
}

fn additive(w: Vec<f64>) -> impl FnMut(&BTreeSet<usize>) -> f64 {
    move |set| set.iter().map(|&i| w[i]).sum()
}

/// Greedy on an additive objective: every prefix is a best set of its size (brute force over
/// all subsets of the level's units), and the order is by (weight, index).
fn check_greedy_vs_brute_force(level: Level, weights: Vec<f64>) {
    let n = weights.len();
    let blocks = n / 2;
    let mut scorer = FnScorer::new(n, additive(weights.clone()));
    let r = run_scorer(
        settings(Method::Finercut, level, Stop::End),
        blocks,
        &mut scorer,
    );
    let units = level.units(blocks);
    assert!(r.complete && r.exhausted);
    assert_eq!(r.steps.len(), units.len());
    let cost = |u: &Unit| u.sublayers().iter().map(|&i| weights[i]).sum::<f64>();
    // Brute force: the least cost of any k units.
    for k in 0..=units.len() {
        let mut best = f64::INFINITY;
        for mask in 0u32..(1 << units.len()) {
            if mask.count_ones() as usize == k {
                let c: f64 = (0..units.len())
                    .filter(|&j| mask & (1 << j) != 0)
                    .map(|j| cost(&units[j]))
                    .sum();
                best = best.min(c);
            }
        }
        let greedy: f64 = r.steps[..k].iter().map(|s| cost(&s.unit)).sum();
        assert_eq!(greedy, best, "prefix {k} of {:?}", r.order());
    }
    let mut expect = units.clone();
    expect.sort_by(|a, b| cost(a).total_cmp(&cost(b)).then(a.index().cmp(&b.index())));
    assert_eq!(r.order(), expect);
    // Scores are the full objective of removed ∪ candidate.
    let mut acc = 0.0;
    for s in &r.steps {
        acc += cost(&s.unit);
        assert_eq!(s.score, acc);
        assert!(s.runners_up.windows(2).all(|w| w[0].score <= w[1].score));
    }
}

proptest! {
    #[test]
    fn greedy_equals_brute_force_on_additive_problems(
        blocks in 1usize..=4,
        raw in proptest::collection::vec(0u8..6, 8),
        level in prop_oneof![Just(Level::Sublayer), Just(Level::Attn), Just(Level::Mlp), Just(Level::Block)],
    ) {
        // Small integer weights make ties common: the tie rule is tested too.
        let weights: Vec<f64> = raw[..2 * blocks].iter().map(|&x| f64::from(x)).collect();
        check_greedy_vs_brute_force(level, weights);
    }

    #[test]
    fn every_ratio_is_a_prefix_of_the_full_run(
        raw in proptest::collection::vec(0.0f64..1.0, 8),
        ratio in 0.05f64..1.0,
    ) {
        // A non-additive objective: pairs interact.
        let f = |set: &BTreeSet<usize>| {
            let v: Vec<usize> = set.iter().copied().collect();
            v.iter().map(|&i| raw[i]).sum::<f64>() + v.windows(2).map(|w| raw[w[0]] * raw[w[1]]).sum::<f64>()
        };
        let full = run_scorer(settings(Method::Finercut, Level::Sublayer, Stop::End), 4, &mut FnScorer::new(8, f));
        let part = run_scorer(settings(Method::Finercut, Level::Sublayer, Stop::Ratio(ratio)), 4, &mut FnScorer::new(8, f));
        let k = finercut_search::ratio_to_sublayers(ratio, 8);
        prop_assert_eq!(part.steps.len(), k);
        prop_assert_eq!(timeless(&part).steps, timeless(&full).steps[..k].to_vec());
        prop_assert_eq!(part.plan_for_ratio(ratio).unwrap(), full.plan_for_ratio(ratio).unwrap());
    }
}

/// A deterministic non-additive scorer that fails on a chosen call, like an interrupted run.
struct Flaky {
    calls: usize,
    fail_at: Option<usize>,
}

impl Scorer for Flaky {
    fn num_sublayers(&self) -> usize {
        12
    }

    fn score(
        &mut self,
        removed: &[usize],
        candidates: &[Vec<usize>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Scored> {
        self.calls += 1;
        if Some(self.calls) == self.fail_at {
            return Err(Error::Scorer {
                message: "interrupted".into(),
            });
        }
        let scores = candidates
            .iter()
            .map(|c| {
                let set: BTreeSet<usize> = removed.iter().chain(c).copied().collect();
                set.iter()
                    .map(|&i| ((i * 7919) % 13) as f64 / 13.0 + 0.01 * i as f64)
                    .sum::<f64>()
                    + 0.3 * set.iter().filter(|&&i| set.contains(&(i + 1))).count() as f64
            })
            .collect();
        progress(candidates.len());
        Ok(Scored::complete(scores, candidates.len() as f64 * 0.5))
    }
}

#[test]
fn checkpoint_resume_equals_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(Method::Finercut, Level::Sublayer, Stop::End);
    let whole = run_scorer(
        s.clone(),
        6,
        &mut Flaky {
            calls: 0,
            fail_at: None,
        },
    );

    // Interrupted at the 4th step: the checkpoint holds 3 steps.
    let path = dir.path().join("run.json");
    let mut r = SearchResult::new(s.clone(), prov(), 6).unwrap();
    let err = run(
        &mut r,
        Inputs::Scorer(&mut Flaky {
            calls: 0,
            fail_at: Some(4),
        }),
        Some(&path),
        &mut (),
    );
    assert!(err.is_err());
    let saved = SearchResult::load(&path).unwrap();
    assert_eq!(saved.steps.len(), 3);
    assert!(!saved.complete);
    assert_eq!(timeless(&saved).steps, timeless(&whole).steps[..3].to_vec());

    let mut resumed = SearchResult::resume(&path, &s, &prov(), 6).unwrap();
    run(
        &mut resumed,
        Inputs::Scorer(&mut Flaky {
            calls: 0,
            fail_at: None,
        }),
        Some(&path),
        &mut (),
    )
    .unwrap();
    assert_eq!(timeless(&resumed), timeless(&whole));
    assert_eq!(
        timeless(&SearchResult::load(&path).unwrap()),
        timeless(&whole)
    );
    assert!(!dir.path().join("run.json.tmp").exists());
}

#[test]
fn stopped_run_continues_to_a_larger_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    let s3 = settings(Method::Finercut, Level::Sublayer, Stop::Ratio(0.25));
    let mut r = SearchResult::new(s3.clone(), prov(), 6).unwrap();
    run(
        &mut r,
        Inputs::Scorer(&mut Flaky {
            calls: 0,
            fail_at: None,
        }),
        Some(&path),
        &mut (),
    )
    .unwrap();
    assert_eq!(r.steps.len(), 3);
    assert!(r.complete && !r.exhausted);
    assert!(matches!(
        r.plan_for_ratio(0.5),
        Err(Error::RatioNotCovered { .. })
    ));

    let s_end = settings(Method::Finercut, Level::Sublayer, Stop::End);
    let mut resumed = SearchResult::resume(&path, &s_end, &prov(), 6).unwrap();
    assert!(!resumed.complete);
    run(
        &mut resumed,
        Inputs::Scorer(&mut Flaky {
            calls: 0,
            fail_at: None,
        }),
        Some(&path),
        &mut (),
    )
    .unwrap();
    let whole = run_scorer(
        s_end,
        6,
        &mut Flaky {
            calls: 0,
            fail_at: None,
        },
    );
    assert_eq!(timeless(&resumed), timeless(&whole));
}

#[test]
fn corrupt_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    let s = settings(Method::Finercut, Level::Sublayer, Stop::Ratio(0.25));
    let mut r = SearchResult::new(s.clone(), prov(), 6).unwrap();
    run(
        &mut r,
        Inputs::Scorer(&mut Flaky {
            calls: 0,
            fail_at: None,
        }),
        Some(&path),
        &mut (),
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();

    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let err = SearchResult::resume(&path, &s, &prov(), 6).unwrap_err();
    assert!(matches!(err, Error::CorruptCheckpoint { .. }), "{err}");
    assert!(err.to_string().contains("truncated or corrupt"), "{err}");

    std::fs::write(&path, "").unwrap();
    assert!(matches!(
        SearchResult::load(&path),
        Err(Error::CorruptCheckpoint { .. })
    ));

    // Valid JSON, impossible content: a unit outside the model, a unit twice.
    let bad = text.replacen("\"unit\": \"L", "\"unit\": \"L9", 1);
    std::fs::write(&path, bad).unwrap();
    let err = SearchResult::load(&path).unwrap_err().to_string();
    assert!(err.contains("outside"), "{err}");
    let mut twice = r.clone();
    twice.steps.push(twice.steps[0].clone());
    std::fs::write(&path, serde_json::to_string(&twice).unwrap()).unwrap();
    assert!(SearchResult::load(&path)
        .unwrap_err()
        .to_string()
        .contains("twice"));

    let err = SearchResult::load(&dir.path().join("missing.json")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn front_exclusion_holds_front_blocks_back() {
    // Front units are the cheapest, so only the exclusion keeps them out.
    let n = 12;
    let w: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
    let mut s = settings(Method::Finercut, Level::Sublayer, Stop::End);
    s.front_exclusion = Some(0.4);
    let r = run_scorer(s, 6, &mut FnScorer::new(n, additive(w)));
    // 12 sublayers, x = 0.4: blocks 0..3 held out until int(4.8)+1 = 5 removed.
    let (blocks, until) = finercut_search::front_exclusion(n, 0.4);
    assert_eq!((blocks, until), (3, 5));
    let order = r.order();
    assert!(
        order[..until].iter().all(|u| u.block() >= blocks),
        "{order:?}"
    );
    assert_eq!(order[until], Unit::Sublayer(0));
    assert_eq!(order.len(), n);
}

#[test]
fn sleb_never_removes_first_or_last_block() {
    let w: Vec<f64> = vec![0.0, 0.0, 5.0, 5.0, 1.0, 1.0, 3.0, 3.0, 0.0, 0.0];
    let r = run_scorer(
        Settings::new(Method::Sleb),
        5,
        &mut FnScorer::new(10, additive(w)),
    );
    assert_eq!(
        r.order(),
        vec![Unit::Block(2), Unit::Block(3), Unit::Block(1)]
    );
    assert!(r.exhausted);
    assert_eq!(r.plan_for_ratio(0.4).unwrap(), BTreeSet::from([4, 5, 6, 7]));
    assert!(matches!(
        r.plan_for_ratio(0.8),
        Err(Error::RatioBeyondLevel { .. })
    ));
}

#[test]
fn blockpruner_and_levels() {
    let w: Vec<f64> = vec![3.0, 1.0, 2.0, 0.5];
    let r = run_scorer(
        Settings::new(Method::Blockpruner),
        2,
        &mut FnScorer::new(4, additive(w.clone())),
    );
    assert_eq!(
        r.order(),
        vec![
            Unit::Sublayer(3),
            Unit::Sublayer(1),
            Unit::Sublayer(2),
            Unit::Sublayer(0)
        ]
    );
    let r = run_scorer(
        settings(Method::Finercut, Level::Attn, Stop::End),
        2,
        &mut FnScorer::new(4, additive(w)),
    );
    assert_eq!(r.order(), vec![Unit::Sublayer(2), Unit::Sublayer(0)]);
    assert!(r.plan_for_ratio(0.5).is_ok());
    assert!(matches!(
        r.plan_for_ratio(0.75),
        Err(Error::RatioBeyondLevel { .. })
    ));
}

#[test]
fn one_shot_orders_by_single_scores() {
    let w: Vec<f64> = vec![0.3, 0.1, 0.2, 0.1];
    let mut calls = 0;
    let mut scorer = FnScorer::new(4, |set: &BTreeSet<usize>| {
        calls += 1;
        set.iter().map(|&i| w[i]).sum::<f64>()
    });
    let r = run_scorer(Settings::new(Method::FinercutOneshot), 2, &mut scorer);
    assert_eq!(calls, 4);
    assert_eq!(
        r.order(),
        vec![
            Unit::Sublayer(1),
            Unit::Sublayer(3),
            Unit::Sublayer(2),
            Unit::Sublayer(0)
        ]
    );
    assert_eq!(r.steps[0].forward_equivalents, 4.0);
    assert_eq!(r.steps[1].runners_up.len(), 2);
    assert!(r.complete && r.exhausted);
}

#[test]
fn random_is_seeded_permutation() {
    let mk = |seed| {
        let mut s = Settings::new(Method::Random);
        s.seed = Some(seed);
        let mut r = SearchResult::new(s, prov(), 8).unwrap();
        run(&mut r, Inputs::Nothing, None, &mut ()).unwrap();
        r.order()
    };
    let a = mk(1);
    assert_eq!(a, mk(1));
    assert_ne!(a, mk(2));
    let set: BTreeSet<Unit> = a.iter().copied().collect();
    assert_eq!(set.len(), 16);
}

struct Synthetic(BlockStates);

impl HiddenStates for Synthetic {
    fn num_blocks(&self) -> usize {
        self.0.num_blocks()
    }
    fn block_states(&mut self) -> Result<BlockStates> {
        Ok(self.0.clone())
    }
}

/// States of 5 blocks, 2 sequences × 3 tokens × dim 4: block 2 is the identity, block 3 nearly.
fn synthetic_states() -> BlockStates {
    let n = 2 * 3 * 4;
    let mut states = vec![(0..n)
        .map(|i| ((i * 37) % 11) as f32 - 5.0)
        .collect::<Vec<f32>>()];
    for b in 0..5 {
        let prev = states[b].clone();
        let next: Vec<f32> = prev
            .iter()
            .enumerate()
            .map(|(i, &x)| match b {
                2 => x,
                3 => x + 0.01 * ((i % 3) as f32),
                _ => x + ((i * (b + 3)) % 7) as f32 - 3.0,
            })
            .collect();
        states.push(next);
    }
    BlockStates {
        num_sequences: 2,
        seq_len: 3,
        dim: 4,
        states,
        forward_equivalents: 1.0,
    }
}

fn oracle_angular(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    (dot / (na * nb)).clamp(-1.0, 1.0).acos() / std::f64::consts::PI
}

#[test]
fn shortgpt_removes_lowest_block_influence_first() {
    let mut src = Synthetic(synthetic_states());
    let mut r = SearchResult::new(Settings::new(Method::Shortgpt), prov(), 5).unwrap();
    run(&mut r, Inputs::HiddenStates(&mut src), None, &mut ()).unwrap();
    assert_eq!(r.order()[..2], [Unit::Block(2), Unit::Block(3)]);
    assert!(r.steps[0].score.abs() < 1e-12);
    assert_eq!(r.preparation.forward_equivalents, 1.0);
    assert_eq!(r.steps.len(), 5);
}

#[test]
fn deeper_layers_picks_best_window_per_size() {
    for sel in [TokenSelection::Last, TokenSelection::All] {
        let states = synthetic_states();
        let mut s = Settings::new(Method::DeeperLayers);
        s.token_selection = sel;
        let mut r = SearchResult::new(s, prov(), 5).unwrap();
        run(
            &mut r,
            Inputs::HiddenStates(&mut Synthetic(states.clone())),
            None,
            &mut (),
        )
        .unwrap();
        assert_eq!(r.windows.len(), 5);
        let (t, d) = (3, 4);
        for w in &r.windows {
            // Brute force over windows with the plain oracle.
            let dist = |start: usize| {
                let rows: Vec<(usize, usize)> = match sel {
                    TokenSelection::Last => (0..2).map(|s| (s * t + t - 1, 1)).collect(),
                    TokenSelection::All => vec![(0, 6)],
                };
                let mut all = Vec::new();
                for (first, count) in rows {
                    for row in first..first + count {
                        let a = &states.states[start][row * d..(row + 1) * d];
                        let b = &states.states[start + w.blocks][row * d..(row + 1) * d];
                        all.push(oracle_angular(a, b));
                    }
                }
                all.iter().sum::<f64>() / all.len() as f64
            };
            let best = (0..=5 - w.blocks).map(dist).fold(f64::INFINITY, f64::min);
            // acos near 1 amplifies rounding (√ε ≈ 1e-8), hence the tolerance.
            assert!((w.distance - best).abs() < 1e-7, "{sel:?} n={}", w.blocks);
            assert!((dist(w.start) - best).abs() < 1e-7);
        }
        assert_eq!(r.windows[0].start, 2);
        // Ratio 0.4 of 10 sublayers: 4 sublayers, the best window of 2 blocks.
        let w2 = &r.windows[1];
        let plan = r.plan_for_ratio(0.4).unwrap();
        assert_eq!(plan, (2 * w2.start..2 * (w2.start + 2)).collect());
    }
}

#[test]
fn wrong_inputs_are_errors() {
    let mut r = SearchResult::new(Settings::new(Method::Shortgpt), prov(), 2).unwrap();
    assert!(run(&mut r, Inputs::Nothing, None, &mut ()).is_err());
    let mut r = SearchResult::new(Settings::new(Method::Finercut), prov(), 2).unwrap();
    let mut wrong = FnScorer::new(6, |_: &BTreeSet<usize>| 0.0);
    assert!(matches!(
        run(&mut r, Inputs::Scorer(&mut wrong), None, &mut ()),
        Err(Error::ModelMismatch { .. })
    ));
}

#[derive(Default)]
struct Recorder {
    started: Vec<(usize, usize)>,
    scored: usize,
    finished: Vec<usize>,
}

impl Observer for Recorder {
    fn step_started(&mut self, step: usize, candidates: usize) {
        self.started.push((step, candidates));
    }
    fn candidates_scored(&mut self, _step: usize, _done: usize, _total: usize) {
        self.scored += 1;
    }
    fn step_finished(&mut self, step: usize, _record: &Step) {
        self.finished.push(step);
    }
}

#[test]
fn observer_sees_every_step() {
    let mut obs = Recorder::default();
    let mut r = SearchResult::new(
        settings(Method::Finercut, Level::Sublayer, Stop::End),
        prov(),
        2,
    )
    .unwrap();
    let mut scorer = FnScorer::new(4, |s: &BTreeSet<usize>| s.len() as f64);
    run(&mut r, Inputs::Scorer(&mut scorer), None, &mut obs).unwrap();
    assert_eq!(obs.started, vec![(0, 4), (1, 3), (2, 2), (3, 1)]);
    assert_eq!(obs.scored, 10);
    assert_eq!(obs.finished, vec![0, 1, 2, 3]);
}

#[test]
fn result_file_records_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let mut s = settings(Method::Finercut, Level::Sublayer, Stop::End);
    s.front_exclusion = Some(0.25);
    s.threads = 2;
    let mut r = SearchResult::new(s, prov(), 6).unwrap();
    run(
        &mut r,
        Inputs::Scorer(&mut Flaky {
            calls: 0,
            fail_at: None,
        }),
        Some(Path::new(&path)),
        &mut (),
    )
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["tool_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["settings"]["method"], "finercut");
    assert_eq!(v["settings"]["metric"], "js");
    assert_eq!(v["settings"]["level"], "sublayer");
    assert_eq!(v["settings"]["front_exclusion"], 0.25);
    assert_eq!(v["settings"]["threads"], 2);
    assert_eq!(v["provenance"]["model_sha256"], "model-hash");
    let step = &v["steps"][0];
    assert!(step["unit"].as_str().unwrap().starts_with('L'));
    assert_eq!(step["runners_up"].as_array().unwrap().len(), 5);
    assert!(step["forward_equivalents"].is_number() && step["wall_s"].is_number());
    assert_eq!(SearchResult::load(&path).unwrap(), r);
}

#[test]
fn export_and_inspect_a_result() {
    let w: Vec<f64> = vec![9.0, 1.0, 2.0, 8.0, 3.0, 7.0];
    let r = run_scorer(
        Settings::new(Method::Finercut),
        3,
        &mut FnScorer::new(6, additive(w)),
    );
    // Order: L0.mlp (1), L1.attn (2), L2.attn (3), …
    let plan = ExportPlan::new(&r, 0.5, TensorLayout::Llama).unwrap();
    assert_eq!(
        plan.removed_units,
        vec![Unit::Sublayer(1), Unit::Sublayer(2), Unit::Sublayer(4)]
    );
    assert_eq!(
        plan.tensor_prefixes,
        vec![
            "model.layers.0.mlp.",
            "model.layers.0.post_attention_layernorm.",
            "model.layers.1.self_attn.",
            "model.layers.1.input_layernorm.",
            "model.layers.2.self_attn.",
            "model.layers.2.input_layernorm.",
        ]
    );
    let i = Inspection::of_result(&r, 0.5).unwrap();
    assert!(i.whole_blocks.is_empty());
    assert_eq!(i.merged_blocks, vec![0]);
    assert_eq!(i.attn_runs.len(), 1);
    assert!(i.text().contains("attn  .##"));
}

#[test]
fn a_nan_score_stops_the_search_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    for exhaustive in [false, true] {
        // Additive weights, except that removing sublayer 5 on top of two others gives NaN:
        // step 2 (one sublayer removed) is fine, step 3 sees NaN for L2.mlp.
        let mut scorer = FnScorer::new(8, |set: &BTreeSet<usize>| {
            if set.len() == 3 && set.contains(&5) {
                f64::NAN
            } else {
                set.iter().map(|&i| 1.0 + i as f64).sum()
            }
        });
        let mut s = settings(Method::Finercut, Level::Sublayer, Stop::End);
        s.exhaustive = exhaustive;
        let mut r = SearchResult::new(s, prov(), 4).unwrap();
        let err = run(&mut r, Inputs::Scorer(&mut scorer), Some(&path), &mut ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("step 3"), "{err}");
        assert!(err.contains("L2.mlp (NaN)"), "{err}");
        assert!(!err.contains("L3.attn"), "{err}");
        let saved = SearchResult::load(&path).unwrap();
        assert_eq!(saved.steps.len(), 2);
        assert!(!saved.complete);
        assert_eq!(saved.order(), vec![Unit::Sublayer(0), Unit::Sublayer(1)]);
    }
    // An infinite score too.
    let mut scorer = FnScorer::new(4, |set: &BTreeSet<usize>| {
        if set.contains(&3) {
            f64::INFINITY
        } else {
            set.len() as f64
        }
    });
    let mut r = SearchResult::new(
        settings(Method::Finercut, Level::Sublayer, Stop::End),
        prov(),
        2,
    )
    .unwrap();
    let err = run(&mut r, Inputs::Scorer(&mut scorer), None, &mut ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("step 1") && err.contains("L1.mlp (inf)"),
        "{err}"
    );
}
