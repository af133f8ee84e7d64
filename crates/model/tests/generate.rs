//! Incremental decoding on key/value caches against the full forward, batching, and greedy
//! generation's stopping rules, on the tiny models of every family (`data/golden/tiny/`): each
//! property case runs on every golden model, so every registered family is covered.

use crate::families::{golden_models, load_family};
use crate::reference::assert_close_f32;
use finercut_model::{
    Error, GenerateOptions, Generated, Model, Plan, Sequence, StopReason, Tensor,
};
use proptest::prelude::*;

/// Vocabulary of the tiny family models.
const VOCAB: usize = 256;

fn ids(n: usize, seed: u64) -> Vec<u32> {
    (0..n)
        .map(|j| ((seed as usize * 37 + j * 11 + j * j) % VOCAB) as u32)
        .collect()
}

fn plan_from_mask(mask: u8) -> Plan {
    Plan::from_removed((0..8).filter(|i| mask & (1 << i) != 0))
}

/// Row `pos` of the full forward of `seq` under `plan`.
fn forward_row(model: &Model, seq: &[u32], pos: usize, plan: &Plan) -> Vec<f32> {
    let logits = model.forward(&[seq.to_vec()], plan).unwrap();
    logits.as_slice_f32().unwrap()[pos * VOCAB..(pos + 1) * VOCAB].to_vec()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.as_slice_f32()
        .unwrap()
        .chunks_exact(t.cols())
        .map(<[f32]>::to_vec)
        .collect()
}

/// Greedy continuation by re-running the whole forward for every token (the definition).
fn naive_greedy(model: &Model, prompt: &[u32], plan: &Plan, n: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let row = forward_row(model, &seq, seq.len() - 1, plan);
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        seq.push(best as u32);
    }
    seq[prompt.len()..].to_vec()
}

/// Whether sequences of up to `len` tokens stay within the original context of a LongRoPE model
/// (always true for other models). LongRoPE chooses its factors per call, by the largest position
/// in it, and keys cached before a switch keep the short ones (as in transformers' cache): past
/// the original context, incremental steps differ from the full forward (whose keys all use the
/// long factors) and batched calls from single ones, so those properties hold only within it.
fn within_long_rope_context(model: &Model, len: usize) -> bool {
    model
        .config()
        .long_rope
        .as_ref()
        .is_none_or(|l| len <= l.original_max_position_embeddings)
}

thread_local! {
    /// The golden models loaded so far on this thread (every property case runs on all of them).
    static MODELS: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<Model>>> =
        Default::default();
}

/// The golden model `family`, loaded once per thread.
fn cached_model(family: &str) -> std::rc::Rc<Model> {
    MODELS.with(|m| {
        m.borrow_mut()
            .entry(family.to_string())
            .or_insert_with(|| std::rc::Rc::new(load_family(family)))
            .clone()
    })
}

/// Each case runs on every golden model: 6 cases give each family 6 random cases.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 6,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every incremental step's logits equal the full forward's at that position, with or without
    /// a shared base state, for every family (Mistral and Gemma 3 with sliding windows shorter than
    /// the sequences) under random plans.
    #[test]
    fn decode_steps_equal_the_full_forward(
        mask in 0u8..=255,
        base_len in 0usize..6,
        prompt_len in 1usize..6,
        steps in 1usize..9,
        seed in 0u64..1000,
    ) {
        for family in golden_models() {
        let model = cached_model(&family);
        let total = base_len + prompt_len + steps;
        if !within_long_rope_context(&model, total) {
            continue;
        }
        let plan = plan_from_mask(mask);
        let all = ids(total, seed);
        let base = (base_len > 0).then(|| model.prefix_state(&all[..base_len], &plan).unwrap());
        // A small reserve makes the caches grow during the steps.
        let mut seq = model.start_sequence(base.as_ref(), &plan, 2).unwrap();
        prop_assert_eq!(seq.len(), base_len);
        let mut fed = base_len + prompt_len;
        let logits = model
            .decode(&mut [&mut seq], &[all[base_len..fed].to_vec()], &plan)
            .unwrap();
        prop_assert_eq!(logits.shape(), &[1, VOCAB]);
        let want = forward_row(&model, &all[..fed], fed - 1, &plan);
        assert_close_f32(logits.as_slice_f32().unwrap(), &want, 1e-4, "prefill");
        for _ in 0..steps {
            let logits = model.decode(&mut [&mut seq], &[vec![all[fed]]], &plan).unwrap();
            fed += 1;
            prop_assert_eq!(seq.len(), fed);
            let want = forward_row(&model, &all[..fed], fed - 1, &plan);
            assert_close_f32(
                logits.as_slice_f32().unwrap(),
                &want,
                1e-4,
                &format!("{family} step at {fed}"),
            );
        }
        }
    }

    /// Decoding sequences of different lengths together gives each the logits it gets alone.
    #[test]
    fn batched_decoding_equals_unbatched(
        mask in 0u8..=255,
        lens in proptest::collection::vec(1usize..7, 2..5),
        steps in 1usize..5,
        seed in 0u64..1000,
    ) {
        for family in golden_models() {
        let model = cached_model(&family);
        if !within_long_rope_context(&model, lens.iter().max().unwrap_or(&0) + steps) {
            continue;
        }
        let plan = plan_from_mask(mask);
        let seqs_ids: Vec<Vec<u32>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| ids(n + steps, seed + 3 * i as u64))
            .collect();
        let mut together: Vec<Sequence> = lens
            .iter()
            .map(|_| model.start_sequence(None, &plan, 1).unwrap())
            .collect();
        let mut alone: Vec<Sequence> = lens
            .iter()
            .map(|_| model.start_sequence(None, &plan, 1).unwrap())
            .collect();
        for step in 0..=steps {
            let feed: Vec<Vec<u32>> = seqs_ids
                .iter()
                .zip(&lens)
                .map(|(s, &n)| if step == 0 { s[..n].to_vec() } else { vec![s[n + step - 1]] })
                .collect();
            let got = {
                let mut refs: Vec<&mut Sequence> = together.iter_mut().collect();
                rows(&model.decode(&mut refs, &feed, &plan).unwrap())
            };
            for (i, seq) in alone.iter_mut().enumerate() {
                let want = rows(&model.decode(&mut [seq], &feed[i..=i], &plan).unwrap());
                assert_close_f32(&got[i], &want[0], 1e-4, &format!("{family} batched vs alone"));
            }
        }
        }
    }

    /// Greedy generation, batched with refilled slots, equals re-running the forward per token.
    #[test]
    fn greedy_generation_equals_naive_greedy(
        mask in 0u8..=255,
        lens in proptest::collection::vec(1usize..6, 1..5),
        batch_size in 1usize..4,
        seed in 0u64..1000,
    ) {
        for family in golden_models() {
        let model = cached_model(&family);
        if !within_long_rope_context(&model, lens.iter().max().unwrap_or(&0) + 6) {
            continue;
        }
        let plan = plan_from_mask(mask);
        let prompts: Vec<Vec<u32>> = lens.iter().enumerate().map(|(i, &n)| ids(n, seed + i as u64)).collect();
        let options = GenerateOptions { max_new_tokens: 6, eos: Vec::new(), batch_size };
        let mut finished = Vec::new();
        let (got, stats) = model
            .generate_greedy_with(None, &prompts, &plan, &options, &mut |_, _| false, &mut |i, g| {
                finished.push((i, g.clone()));
            })
            .unwrap();
        // Every prompt is reported once, as it finishes.
        finished.sort_by_key(|f| f.0);
        prop_assert_eq!(finished.len(), prompts.len());
        for (k, (i, g)) in finished.iter().enumerate() {
            prop_assert_eq!(*i, k);
            prop_assert_eq!(g, &got[k]);
        }
        prop_assert_eq!(stats.prefill_tokens, lens.iter().sum::<usize>());
        prop_assert_eq!(stats.generated_tokens, 6 * prompts.len());
        prop_assert_eq!(stats.decode_tokens, 5 * prompts.len());
        for (p, g) in prompts.iter().zip(&got) {
            prop_assert_eq!(g.stop, StopReason::MaxTokens);
            prop_assert_eq!(g.prompt_tokens, p.len());
            prop_assert_eq!(&g.tokens, &naive_greedy(&model, p, &plan, 6), "{}", family);
        }
        }
    }
}

#[test]
fn generation_continues_a_shared_base() {
    let model = load_family("qwen2");
    let plan = Plan::from_removed([3]);
    let header = ids(7, 1);
    let questions = [ids(3, 2), ids(5, 3), ids(1, 4)];
    let base = model.prefix_state(&header, &plan).unwrap();
    let options = GenerateOptions {
        max_new_tokens: 5,
        eos: Vec::new(),
        batch_size: 2,
    };
    let (got, _) = model
        .generate_greedy(Some(&base), &questions, &plan, &options, &mut |_, _| false)
        .unwrap();
    for (q, g) in questions.iter().zip(&got) {
        let whole: Vec<u32> = header.iter().chain(q).copied().collect();
        assert_eq!(g.tokens, naive_greedy(&model, &whole, &plan, 5));
        assert_eq!(g.prompt_tokens, q.len());
    }
}

#[test]
fn generation_stops_at_eos_stop_tests_max_tokens_and_the_context() {
    let model = load_family("llama3");
    let plan = Plan::dense();
    let prompt = vec![ids(4, 9)];
    let free = naive_greedy(&model, &prompt[0], &plan, 8);
    let run =
        |options: &GenerateOptions, stop: &mut dyn FnMut(usize, &[u32]) -> bool| -> Generated {
            model
                .generate_greedy(None, &prompt, &plan, options, stop)
                .unwrap()
                .0
                .remove(0)
        };
    let options = GenerateOptions {
        max_new_tokens: 8,
        eos: Vec::new(),
        batch_size: 4,
    };
    let g = run(&options, &mut |_, _| false);
    assert_eq!(
        (g.tokens.clone(), g.stop),
        (free.clone(), StopReason::MaxTokens)
    );
    // EOS: the first occurrence of the third generated token ends generation, kept.
    let eos = free[2];
    let first = free.iter().position(|&t| t == eos).unwrap();
    let g = run(
        &GenerateOptions {
            eos: vec![eos],
            ..options.clone()
        },
        &mut |_, _| false,
    );
    assert_eq!(
        (g.tokens, g.stop),
        (free[..=first].to_vec(), StopReason::Eos)
    );
    // A stop test sees the tokens so far.
    let mut seen = Vec::new();
    let g = run(&options, &mut |i, toks| {
        seen.push((i, toks.len()));
        toks.len() == 3
    });
    assert_eq!((g.tokens, g.stop), (free[..3].to_vec(), StopReason::Stop));
    assert_eq!(seen, vec![(0, 1), (0, 2), (0, 3)]);
    // No tokens asked for.
    let g = run(
        &GenerateOptions {
            max_new_tokens: 0,
            ..options.clone()
        },
        &mut |_, _| false,
    );
    assert_eq!((g.tokens.len(), g.stop), (0, StopReason::MaxTokens));
    // The context (256 positions): a 250-token prompt leaves room for 6 fed tokens, and generates
    // one more from the last position.
    let long = vec![ids(250, 5)];
    let (got, _) = model
        .generate_greedy(
            None,
            &long,
            &plan,
            &GenerateOptions {
                max_new_tokens: 20,
                ..options.clone()
            },
            &mut |_, _| false,
        )
        .unwrap();
    assert_eq!((got[0].tokens.len(), got[0].stop), (7, StopReason::Context));
    assert!(matches!(
        model.generate_greedy(None, &[ids(257, 1)], &plan, &options, &mut |_, _| false),
        Err(Error::Context {
            needed: 257,
            max: 256
        })
    ));
}

#[test]
fn decode_checks_its_inputs() {
    let model = load_family("mistral");
    let plan = Plan::from_removed([0]);
    let mut seq = model.start_sequence(None, &plan, 4).unwrap();
    assert!(seq.is_empty());
    // Another plan, an empty token list, mismatched counts, out-of-vocabulary ids.
    assert!(model
        .decode(&mut [&mut seq], &[vec![1]], &Plan::dense())
        .is_err());
    assert!(model.decode(&mut [&mut seq], &[vec![]], &plan).is_err());
    assert!(model
        .decode(&mut [&mut seq], &[vec![1], vec![2]], &plan)
        .is_err());
    assert!(model
        .decode(&mut [&mut seq], &[vec![VOCAB as u32]], &plan)
        .is_err());
    assert!(model.decode(&mut [], &[], &plan).is_err());
    let base = model.prefix_state(&[1, 2], &Plan::dense()).unwrap();
    assert!(model.start_sequence(Some(&base), &plan, 4).is_err());
    assert!(model
        .generate_greedy(
            None,
            &[vec![]],
            &plan,
            &GenerateOptions::default(),
            &mut |_, _| false
        )
        .is_err());
    // Nothing was fed by the failed calls.
    assert_eq!(seq.len(), 0);
    model.decode(&mut [&mut seq], &[vec![1, 2]], &plan).unwrap();
    assert_eq!(seq.len(), 2);
}
