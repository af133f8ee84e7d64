//! The tiny random models against the naive forward, and the properties of plans, traces, streams
//! and continuations.

use crate::reference::{assert_close, assert_close_f32, Arch, Tiny, EXPERTS, VOCAB};
use finercut_model::{Error, Model, Plan, StreamStats, WeightDtype};
use finercut_tensor::Device;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn load(t: &Tiny) -> Model {
    Model::load(&t.config, &t.source, &Device::Cpu).unwrap()
}

fn tokens(n: usize, t: usize, seed: u64) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            (0..t)
                .map(|j| ((seed as usize * 31 + i * 17 + j * 7) % VOCAB) as u32)
                .collect()
        })
        .collect()
}

fn plan_from_mask(mask: u8) -> Plan {
    Plan::from_removed((0..6).filter(|i| mask & (1 << i) != 0))
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 16,
        ..ProptestConfig::default()
    }
}

fn flat(logits: &[Vec<Vec<f64>>]) -> Vec<f64> {
    logits.iter().flatten().flatten().copied().collect()
}

#[test]
fn tiny_models_match_the_naive_forward() {
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Gemma3, Arch::Mixtral] {
        let tiny = Tiny::new(arch, 1);
        let model = load(&tiny);
        assert_eq!(model.num_sublayers(), 6);
        let toks = tokens(2, 9, 3);
        for mask in [0u8, 0b000001, 0b100110, 0b111111] {
            let plan = plan_from_mask(mask);
            let got = model.forward(&toks, &plan).unwrap();
            assert_eq!(got.shape(), &[2, 9, VOCAB]);
            let want = tiny.naive_forward(&toks, plan.removed());
            assert_close(
                got.as_slice_f32().unwrap(),
                &flat(&want),
                2e-5,
                &format!("{arch:?} plan {plan}"),
            );
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forward_matches_naive_under_any_plan(mask in 0u8..64, n in 1usize..3, t in 1usize..12, seed in 0u64..1000) {
        let arch = [Arch::Llama, Arch::Mixtral][seed as usize % 2];
        let tiny = Tiny::new(arch, seed);
        let model = load(&tiny);
        let toks = tokens(n, t, seed);
        let plan = plan_from_mask(mask);
        let got = model.forward(&toks, &plan).unwrap();
        assert_close(got.as_slice_f32().unwrap(), &flat(&tiny.naive_forward(&toks, plan.removed())), 2e-5, "forward");
        // The empty plan is the dense model.
        if mask == 0 {
            let dense = model.forward(&toks, &Plan::dense()).unwrap();
            prop_assert_eq!(dense.as_slice_f32().unwrap(), got.as_slice_f32().unwrap());
        }
    }

    #[test]
    fn removing_equals_zeroing_the_output_projection(s in 0usize..6, t in 1usize..10, seed in 0u64..1000) {
        // Llama and Mixtral, whose FFN's output projections are every expert's `w2`.
        let arch = [Arch::Llama, Arch::Mixtral][seed as usize % 2];
        let tiny = Tiny::new(arch, seed);
        let model = load(&tiny);
        let mut zeroed = Tiny::new(arch, seed);
        let names: Vec<String> = match (s % 2, arch) {
            (0, _) => vec![format!("model.layers.{}.self_attn.o_proj.weight", s / 2)],
            (_, Arch::Mixtral) => (0..EXPERTS)
                .map(|e| format!("model.layers.{}.block_sparse_moe.experts.{e}.w2.weight", s / 2))
                .collect(),
            _ => vec![format!("model.layers.{}.mlp.down_proj.weight", s / 2)],
        };
        for name in &names {
            zeroed.source.tensors.get_mut(name).unwrap().1.iter_mut().for_each(|v| *v = 0.0);
        }
        let toks = tokens(2, t, seed);
        let removed = model.forward(&toks, &Plan::from_removed([s])).unwrap();
        let zero = load(&zeroed).forward(&toks, &Plan::dense()).unwrap();
        assert_close_f32(removed.as_slice_f32().unwrap(), zero.as_slice_f32().unwrap(), 1e-5, "removed vs zeroed");
    }

    #[test]
    fn resume_from_any_traced_state_equals_forward(mask in 0u8..64, t in 1usize..10, seed in 0u64..1000) {
        let tiny = Tiny::new(Arch::Qwen2, seed);
        let model = load(&tiny);
        let toks = tokens(2, t, seed);
        let plan = plan_from_mask(mask);
        let full = model.forward(&toks, &plan).unwrap();
        let states = model.trace(&toks, &plan).unwrap();
        prop_assert_eq!(states.len(), 7);
        for (s, state) in states.iter().enumerate() {
            prop_assert_eq!(state.shape(), &[2, t, 64]);
            if s > 0 {
                let next = model.advance(&states[s - 1], s - 1, s, &plan).unwrap();
                assert_close_f32(next.as_slice_f32().unwrap(), state.as_slice_f32().unwrap(), 1e-6, "advance");
            }
            let resumed = model.resume(state, s, &plan).unwrap();
            assert_close_f32(resumed.as_slice_f32().unwrap(), full.as_slice_f32().unwrap(), 1e-6, &format!("resume at {s}"));
        }
    }

    #[test]
    fn streamed_candidates_equal_their_forwards(
        base_mask in 0u8..64,
        cands in proptest::collection::vec(proptest::collection::vec(0usize..6, 0..3), 0..8),
        n in 1usize..3,
        t in 1usize..8,
        seed in 0u64..1000,
    ) {
        let arch = [Arch::Llama, Arch::Qwen2, Arch::Gemma3, Arch::Mixtral][seed as usize % 4];
        let tiny = Tiny::new(arch, seed);
        let model = load(&tiny);
        let toks = tokens(n, t, seed);
        let base = plan_from_mask(base_mask);
        let mut got: Vec<Vec<f32>> = vec![Vec::new(); cands.len()];
        let mut next_row = vec![0usize; cands.len()];
        let mut order = Vec::new();
        let stats = model
            .stream_candidates(&toks, &base, &cands, &mut |c, row, rows| {
                assert_eq!(row, next_row[c], "rows arrive in order");
                assert_eq!(rows.len() % VOCAB, 0);
                next_row[c] += rows.len() / VOCAB;
                got[c].extend_from_slice(rows);
                if order.last() != Some(&c) {
                    order.push(c);
                }
                Ok(())
            })
            .unwrap();
        prop_assert_eq!(order, (0..cands.len()).collect::<Vec<_>>());
        for (c, cand) in cands.iter().enumerate() {
            let plan = base.with(cand.iter().copied());
            let want = model.forward(&toks, &plan).unwrap();
            assert_close_f32(&got[c], want.as_slice_f32().unwrap(), 1e-5, &format!("candidate {cand:?} over {base}"));
        }
        prop_assert!(stats.forward_equivalents <= (cands.len() + 1) as f64);
    }

    #[test]
    fn continuations_equal_the_full_forward(
        prefix_len in 1usize..9,
        lens in proptest::collection::vec(0usize..6, 1..5),
        mask in 0u8..64,
        seed in 0u64..1000,
    ) {
        let arch = [Arch::Llama, Arch::Qwen2, Arch::Gemma3, Arch::Mixtral][seed as usize % 4];
        let tiny = Tiny::new(arch, seed);
        let model = load(&tiny);
        let plan = plan_from_mask(mask);
        let prefix = tokens(1, prefix_len, seed).remove(0);
        let suffixes: Vec<Vec<u32>> = lens.iter().enumerate().map(|(i, &m)| tokens(1, m, seed + 1 + i as u64).remove(0)).collect();
        let got = model.continuation_logits(&prefix, &suffixes, &plan).unwrap();
        prop_assert_eq!(got.len(), suffixes.len());
        for (s, out) in suffixes.iter().zip(&got) {
            prop_assert_eq!(out.shape(), &[s.len(), VOCAB]);
            if s.is_empty() {
                continue;
            }
            let full: Vec<u32> = prefix.iter().chain(s).copied().collect();
            let logits = model.forward(&[full], &plan).unwrap();
            let lsm = logits.log_softmax_last().unwrap();
            let rows = &lsm.as_slice_f32().unwrap()[(prefix_len - 1) * VOCAB..(prefix_len - 1 + s.len()) * VOCAB];
            assert_close_f32(out.as_slice_f32().unwrap(), rows, 1e-5, "continuation");
        }
    }

    #[test]
    fn extended_prefix_states_equal_one_prefix(
        head_len in 1usize..7,
        rest_len in 1usize..6,
        lens in proptest::collection::vec(1usize..5, 1..4),
        mask in 0u8..64,
        seed in 0u64..1000,
    ) {
        let arch = [Arch::Llama, Arch::Qwen2, Arch::Gemma3, Arch::Mixtral][seed as usize % 4];
        let model = load(&Tiny::new(arch, seed));
        let plan = plan_from_mask(mask);
        let head = tokens(1, head_len, seed).remove(0);
        let rest = tokens(1, rest_len, seed + 7).remove(0);
        let whole: Vec<u32> = head.iter().chain(&rest).copied().collect();
        let suffixes: Vec<Vec<u32>> = lens.iter().enumerate().map(|(i, &m)| tokens(1, m, seed + 20 + i as u64).remove(0)).collect();
        let base = model.prefix_state(&head, &plan).unwrap();
        let grown = model.extend_prefix(Some(&base), &rest, &plan).unwrap();
        prop_assert_eq!(grown.len(), head_len + rest_len);
        let got = model.continuation_logits_from(&grown, &suffixes, &plan).unwrap();
        let want = model.continuation_logits(&whole, &suffixes, &plan).unwrap();
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!(g.shape(), w.shape());
            assert_close_f32(g.as_slice_f32().unwrap(), w.as_slice_f32().unwrap(), 1e-5, "extended prefix");
        }
        // A state only continues under the plan it was computed with.
        let other = if plan.is_removed(0) { Plan::dense() } else { plan.with([0]) };
        prop_assert!(model.continuation_logits_from(&grown, &suffixes, &other).is_err());
        prop_assert!(model.extend_prefix(Some(&base), &rest, &other).is_err());
        prop_assert!(model.extend_prefix(Some(&base), &[], &plan).is_err());
    }
}

#[test]
fn stream_stats_count_sublayer_evaluations() {
    let tiny = Tiny::new(Arch::Llama, 5);
    let model = load(&tiny);
    let toks = tokens(2, 4, 1);
    let singles: Vec<Vec<usize>> = (0..6).map(|i| vec![i]).collect();
    let stats = model
        .stream_candidates(&toks, &Plan::dense(), &singles, &mut |_, _, _| Ok(()))
        .unwrap();
    // Base: sublayers 0..=4 (the last birth is at 5); candidate c: sublayers c+1..=5.
    assert_eq!(stats.sublayer_evals, 5 + (5 + 4 + 3 + 2 + 1));
    assert_eq!(stats.base_evals, 5);
    assert!((stats.forward_equivalents - 20.0 / 6.0).abs() < 1e-12);
    // With sublayers 0 and 3 removed already, candidate [0] is the base model itself.
    let base = Plan::from_removed([0, 3]);
    let cands = vec![vec![0], vec![1], vec![5]];
    let stats: StreamStats = model
        .stream_candidates(&toks, &base, &cands, &mut |_, _, _| Ok(()))
        .unwrap();
    // Base runs 1, 2, 4, 5 (candidate [0] needs it to the end); [1] runs 2, 4, 5; [5] runs none.
    assert_eq!(stats.sublayer_evals, 4 + 3);
    assert_eq!(stats.base_evals, 4);
}

#[test]
fn sink_errors_stop_the_stream() {
    let model = load(&Tiny::new(Arch::Llama, 2));
    let err = model
        .stream_candidates(
            &tokens(1, 3, 0),
            &Plan::dense(),
            &[vec![1], vec![2]],
            &mut |c, _, _| {
                if c == 1 {
                    Err(Error::sink("metric failed"))
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("metric failed"), "{err}");
}

#[test]
fn bf16_weights_are_converted() {
    let tiny = Tiny::new(Arch::Llama, 9);
    let mut rounded = Tiny::new(Arch::Llama, 9);
    for (_, data) in rounded.source.tensors.values_mut() {
        data.iter_mut()
            .for_each(|v| *v = half::bf16::from_f32(*v).to_f32());
    }
    let mut bf16 = Tiny::new(Arch::Llama, 9);
    bf16.source.bf16 = true;
    let toks = tokens(1, 5, 2);
    let a = load(&bf16).forward(&toks, &Plan::dense()).unwrap();
    let b = load(&rounded).forward(&toks, &Plan::dense()).unwrap();
    assert_eq!(a.as_slice_f32().unwrap(), b.as_slice_f32().unwrap());
    assert_ne!(
        a.as_slice_f32().unwrap(),
        load(&tiny)
            .forward(&toks, &Plan::dense())
            .unwrap()
            .as_slice_f32()
            .unwrap()
    );
}

#[test]
fn weights_are_used_in_place() {
    let model = load(&Tiny::new(Arch::Llama, 4));
    // Parameters: per block attn = norm 64 + q 64·64 + k,v 2·32·64 + o 64·64; mlp = norm 64 + 3·96·64.
    assert_eq!(model.param_count_of(0), 64 + 4096 + 2 * 2048 + 4096);
    assert_eq!(model.param_count_of(1), 64 + 3 * 96 * 64);
    assert_eq!(model.param_count_of(6), 0);
    assert_eq!(model.sublayer(3).to_string(), "L1.mlp");
    assert_eq!(
        model.param_count(),
        101 * 64 * 2 + 3 * (model.param_count_of(0) + model.param_count_of(1)) + 64
    );
}

#[test]
fn errors_name_tensors_and_inputs() {
    let mut tiny = Tiny::new(Arch::Llama, 3);
    tiny.source
        .tensors
        .remove("model.layers.2.mlp.up_proj.weight");
    let err = Model::load(&tiny.config, &tiny.source, &Device::Cpu).unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing weight `model.layers.2.mlp.up_proj.weight`"
    );

    let mut tiny = Tiny::new(Arch::Llama, 3);
    tiny.source
        .tensors
        .get_mut("model.layers.1.self_attn.k_proj.weight")
        .unwrap()
        .0 = vec![64, 32];
    let err = Model::load(&tiny.config, &tiny.source, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::WeightShape { name, expected, actual }
        if name == "model.layers.1.self_attn.k_proj.weight" && expected == &[32, 64] && actual == &[64, 32]),
        "{err}"
    );

    let model = load(&Tiny::new(Arch::Llama, 3));
    assert!(matches!(
        model.forward(&[vec![1, 2], vec![3]], &Plan::dense()),
        Err(Error::Input(_))
    ));
    assert!(matches!(
        model.forward(&[], &Plan::dense()),
        Err(Error::Input(_))
    ));
    assert!(matches!(
        model.forward(&[vec![]], &Plan::dense()),
        Err(Error::Input(_))
    ));
    let err = model
        .forward(&[vec![1, VOCAB as u32]], &Plan::dense())
        .unwrap_err();
    assert!(err.to_string().contains("token id 101"), "{err}");
    assert!(matches!(
        model.forward(&[vec![1]], &Plan::from_removed([6])),
        Err(Error::SublayerIndex { index: 6, count: 6 })
    ));
    assert!(model
        .stream_candidates(
            &[vec![1]],
            &Plan::dense(),
            &[vec![7]],
            &mut |_, _, _| Ok(())
        )
        .is_err());
    assert!(model
        .continuation_logits(&[], &[vec![1]], &Plan::dense())
        .is_err());
    let state = finercut_tensor::Tensor::zeros(&[1, 2, 63], &Device::Cpu).unwrap();
    assert!(model.resume(&state, 0, &Plan::dense()).is_err());
    let state = finercut_tensor::Tensor::zeros(&[1, 2, 64], &Device::Cpu).unwrap();
    assert!(model.resume(&state, 7, &Plan::dense()).is_err());
    assert_eq!(
        model.resume(&state, 6, &Plan::dense()).unwrap().shape(),
        &[1, 2, VOCAB]
    );
}

#[test]
fn mixtral_errors_name_expert_weights() {
    let mut tiny = Tiny::new(Arch::Mixtral, 3);
    tiny.source
        .tensors
        .remove("model.layers.1.block_sparse_moe.experts.3.w3.weight");
    let err = Model::load(&tiny.config, &tiny.source, &Device::Cpu).unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing weight `model.layers.1.block_sparse_moe.experts.3.w3.weight`"
    );
    // A Llama checkpoint is no Mixtral: the router is missing.
    let cfg = Tiny::new(Arch::Mixtral, 0).config;
    let err = Model::load(&cfg, &Tiny::new(Arch::Llama, 0).source, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("block_sparse_moe"), "{err}");
    let _ = BTreeSet::<usize>::new();
}

#[test]
fn mixtral_results_do_not_depend_on_thread_count() {
    let model = load(&Tiny::new(Arch::Mixtral, 8));
    let toks = tokens(4, 150, 5);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            model
                .forward(&toks, &Plan::from_removed([2]))
                .unwrap()
                .to_vec_f32()
                .unwrap()
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let model = load(&Tiny::new(Arch::Gemma3, 8));
    // 800 rows: GEMMs are tiled and attention spans several query blocks.
    let toks = tokens(4, 200, 5);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            model
                .forward(&toks, &Plan::from_removed([3]))
                .unwrap()
                .to_vec_f32()
                .unwrap()
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

/// Found by `cargo xtask fuzz`: a configuration that claims a huge `head_dim` made the loader
/// allocate the rotary tables (`head_dim / 2` values) before any weight confirmed the size.
#[test]
fn a_huge_head_dim_fails_on_a_shape_not_an_allocation() {
    let mut tiny = Tiny::new(Arch::Llama, 5);
    tiny.config.head_dim = 1 << 40;
    let err = Model::load(&tiny.config, &tiny.source, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("q_proj"), "{err}");
    tiny.config.head_dim = usize::MAX - 1;
    let err = Model::load(&tiny.config, &tiny.source, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");
}

proptest! {
    #![proptest_config(config())]

    /// Weight matrices kept as stored (bf16 widened inside the GEMM, or f32 in place) give the
    /// same logits, bit for bit, as widening every matrix at load: widening is exact and each
    /// GEMM tile is the same `sgemm` call on the same `f32` values.
    #[test]
    fn stored_and_f32_weights_give_identical_logits(
        arch in prop::sample::select(vec![Arch::Llama, Arch::Qwen2, Arch::Gemma3, Arch::Mixtral]),
        seed in 0u64..1000,
        bf16 in any::<bool>(),
        mask in 0u8..64,
    ) {
        let mut t = Tiny::new(arch, seed);
        t.source.bf16 = bf16;
        let run = |dtype| {
            let m = Model::load_as(&t.config, &t.source, &Device::Cpu, &BTreeSet::new(), dtype)
                .unwrap();
            m.forward(&tokens(2, 9, seed), &plan_from_mask(mask)).unwrap().to_vec_f32().unwrap()
        };
        let stored = run(WeightDtype::Stored);
        let f32s = run(WeightDtype::F32);
        prop_assert_eq!(stored.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            f32s.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
}
