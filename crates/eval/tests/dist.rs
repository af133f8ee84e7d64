//! Evaluation on several ranks (`Local`: k ranks as threads) against one process: multiple
//! choice, GSM8K and perplexity give the same per-document outcomes and metrics bit for bit,
//! whichever ranks scored which documents; a failing rank ends every rank's evaluation with an error naming it.

use std::path::PathBuf;

use finercut_dist::{Local, Transport};
use finercut_eval::gsm8k::{evaluate_docs_on, Gsm8kData, Gsm8kDoc, Gsm8kOptions, Gsm8kReport};
use finercut_eval::tasks::{TaskDoc, TaskDocs};
use finercut_eval::{
    perplexity_of_tokens, perplexity_of_tokens_on, score_docs, score_docs_on, ContinuationScore,
    Error, EvalOptions, LanguageModel, ModelLm, PerplexityOptions, PerplexityReport, Prompt,
    Request, ScoreGroup, TaskName, TaskResult,
};
use finercut_model::Plan;

use crate::model::{tiny_model, tiny_tokenizer};

/// Runs `f` on every rank of a `k`-rank in-process group and returns each rank's answer.
fn on_ranks<T: Send>(k: usize, f: impl Fn(&Local) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = Local::group(k)
            .into_iter()
            .map(|t| {
                let f = &f;
                s.spawn(move || f(&t))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Twelve PIQA-like documents: even ones are several continuations of one context behind a
/// shared 40-token header (clustered by the model), odd ones one continuation after two contexts
/// (stacked sequences).
fn docs() -> TaskDocs {
    let header: String = (0..40)
        .map(|i| format!("w{}", (i * 7) % 25))
        .collect::<Vec<_>>()
        .join(" ");
    let docs = (0..12)
        .map(|i| {
            let prompt = if i % 2 == 0 {
                let choices = vec!["w5".to_string(), "w6 w7".into(), format!("w{}", i + 1)];
                Prompt {
                    requests: choices
                        .iter()
                        .map(|c| Request {
                            context: format!("{header} w{} w{}", i % 30, (i * 7) % 30),
                            continuation: format!(" {c}"),
                        })
                        .collect(),
                    choices,
                    gold: i % 3,
                }
            } else {
                Prompt {
                    requests: [i, i + 1]
                        .iter()
                        .map(|j| Request {
                            context: format!("w{j} w3 w{}", (j * 3) % 30),
                            continuation: " w9 w10".into(),
                        })
                        .collect(),
                    choices: vec!["w9 w10".into(), "w9 w10".into()],
                    gold: i % 2,
                }
            };
            TaskDoc {
                index: i,
                subtask: None,
                prompt: Ok(prompt),
            }
        })
        .collect();
    TaskDocs {
        task: TaskName::Piqa,
        split: "validation".into(),
        source: "hand-made".into(),
        note: None,
        docs,
    }
}

fn options() -> EvalOptions {
    let mut o = EvalOptions::new(PathBuf::from("/nonexistent"), None);
    o.batch_size = 3;
    o.record_docs = 100;
    o
}

/// Every `f64` of a task result as bits, with everything else, for an exact comparison.
fn bits(r: &TaskResult) -> String {
    let logliks: Vec<Vec<u64>> = r
        .docs
        .iter()
        .map(|d| d.loglik.iter().map(|x| x.to_bits()).collect())
        .collect();
    format!(
        "{logliks:?} {:?} {} {:?}",
        r.docs,
        r.value.to_bits(),
        r.metrics
    )
}

#[test]
fn multiple_choice_on_ranks_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = tiny_tokenizer(dir.path());
    let model = tiny_model();
    let lm = ModelLm::new(&model, Plan::from_removed([1]), &tokenizer).unwrap();
    let one = score_docs(&lm, docs(), &options(), &mut |_| {}).unwrap();
    assert_eq!(one.n, 12);
    for k in 1..=4 {
        let got = on_ranks(k, |t| {
            let mut seen = 0;
            let r = score_docs_on(t, &lm, docs(), &options(), &mut |p| seen = p.done).unwrap();
            (r, seen)
        });
        // Every continuation was scored by exactly one rank.
        assert_eq!(got.iter().map(|(_, s)| s).sum::<usize>(), 30, "{k} ranks");
        for (rank, (r, _)) in got.iter().enumerate() {
            assert_eq!(bits(r), bits(&one), "{k} ranks, rank {rank}");
        }
    }
}

/// A model that fails on the rank that holds it.
struct Failing<'a>(&'a ModelLm<'a>);

impl LanguageModel for Failing<'_> {
    fn encode(&self, text: &str) -> finercut_eval::Result<Vec<u32>> {
        self.0.encode(text)
    }
    fn prefix_token(&self) -> u32 {
        self.0.prefix_token()
    }
    fn max_length(&self) -> usize {
        self.0.max_length()
    }
    fn score(&self, _: &[ScoreGroup]) -> finercut_eval::Result<Vec<Vec<ContinuationScore>>> {
        Err(Error::Model("out of memory on this rank".into()))
    }
}

#[test]
fn a_failing_rank_ends_every_rank_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = tiny_tokenizer(dir.path());
    let model = tiny_model();
    let lm = ModelLm::new(&model, Plan::dense(), &tokenizer).unwrap();
    let failing = Failing(&lm);
    let got = on_ranks(3, |t| {
        let model: &dyn LanguageModel = if t.rank() == 1 { &failing } else { &lm };
        score_docs_on(t, model, docs(), &options(), &mut |_| {}).map(|_| ())
    });
    for (rank, r) in got.iter().enumerate() {
        let message = r.as_ref().unwrap_err().to_string();
        if rank == 1 {
            assert!(message.contains("out of memory"), "{message}");
        } else {
            assert!(message.contains("rank 1 aborted"), "{message}");
            assert!(message.contains("out of memory"), "{message}");
        }
    }
}

/// Seven questions behind a shared 8-token beginning, of different lengths.
fn questions() -> Gsm8kData {
    let docs = (0..7)
        .map(|i| Gsm8kDoc {
            doc_id: i,
            question: format!("q{i}"),
            answer: "#### 3".into(),
            short_answer: "3".into(),
            context: format!(
                "w0 w1 w2 w3 w4 w5 w6 w7 w{} {}",
                8 + i,
                (0..i)
                    .map(|j| format!("w{}", (j * 5 + i) % 30))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        })
        .collect();
    Gsm8kData {
        docs,
        stop_sequences: vec!["w20".into()],
        max_gen_toks: 6,
        regexes_to_ignore: vec![",".into()],
    }
}

fn gsm8k_options(batch_size: usize) -> Gsm8kOptions {
    let mut o = Gsm8kOptions::new(PathBuf::from("/nonexistent"));
    o.batch_size = batch_size;
    o
}

/// What must not depend on how the questions were spread: outcomes, metrics and token counts.
fn outcome(r: &Gsm8kReport) -> String {
    format!(
        "{:?} {:?} {} {} {} {} {}",
        r.docs,
        r.metrics,
        r.value.to_bits(),
        r.shared_prefix_tokens,
        r.prefill_tokens,
        r.generated_tokens,
        r.decode_tokens
    )
}

#[test]
fn gsm8k_on_ranks_equals_one_process_whatever_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = tiny_tokenizer(dir.path());
    let model = tiny_model();
    let lm = ModelLm::new(&model, Plan::from_removed([2]), &tokenizer).unwrap();
    let data = questions();
    let one = evaluate_docs_on(
        &finercut_dist::Alone,
        &lm,
        &data,
        &gsm8k_options(2),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(one.n, 7);
    assert_eq!(one.shared_prefix_tokens, 8);
    assert!(one.generated_tokens > 7, "{}", one.generated_tokens);
    // A question's generation does not depend on the questions decoded with it.
    for batch in [1, 3, 7] {
        let other = evaluate_docs_on(
            &finercut_dist::Alone,
            &lm,
            &data,
            &gsm8k_options(batch),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(outcome(&other), outcome(&one), "batch {batch}");
    }
    for k in 1..=4 {
        let got = on_ranks(k, |t| {
            evaluate_docs_on(t, &lm, &data, &gsm8k_options(2), &mut |_, _| {}).unwrap()
        });
        for (rank, r) in got.iter().enumerate() {
            assert_eq!(outcome(r), outcome(&one), "{k} ranks, rank {rank}");
        }
    }
}

/// Every field of a perplexity report, its `f64`s as bits.
fn ppl_bits(r: &PerplexityReport) -> String {
    let nlls: Vec<(usize, u64)> = r
        .windows
        .iter()
        .map(|w| (w.window, w.nll.to_bits()))
        .collect();
    format!(
        "{nlls:?} {} {} {:?}",
        r.perplexity.to_bits(),
        r.mean_nll.to_bits(),
        (
            r.seq_len,
            r.n_tokens,
            r.windows_total,
            r.windows_scored,
            r.predicted_tokens,
            r.excluded_range,
            &r.excluded_windows
        )
    )
}

#[test]
fn perplexity_on_ranks_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = tiny_tokenizer(dir.path());
    let model = tiny_model();
    let lm = ModelLm::new(&model, Plan::from_removed([1]), &tokenizer).unwrap();
    let tokens: Vec<u32> = (0..131u32).map(|i| (i * 13 + 5) % 30).collect();
    let mut options = PerplexityOptions::new(9);
    options.batch_size = 2;
    options.exclude = Some(30..40);
    let one = perplexity_of_tokens(&lm, &tokens, &options, &mut |_| {}).unwrap();
    // 14 windows, 4 and 3 overlap the excluded range: 12 scored, in 6 batches.
    assert_eq!(one.windows_scored, 12);
    assert_eq!(one.excluded_windows, vec![3, 4]);
    for k in 1..=4 {
        let got = on_ranks(k, |t| {
            let mut seen = 0;
            let r =
                perplexity_of_tokens_on(t, &lm, &tokens, &options, &mut |p| seen = p.done).unwrap();
            (r, seen)
        });
        // Every window was scored by exactly one rank.
        assert_eq!(got.iter().map(|(_, s)| s).sum::<usize>(), 12, "{k} ranks");
        for (rank, (r, _)) in got.iter().enumerate() {
            assert_eq!(ppl_bits(r), ppl_bits(&one), "{k} ranks, rank {rank}");
        }
    }
}

#[test]
fn a_failing_rank_ends_every_rank_perplexity_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = tiny_tokenizer(dir.path());
    let model = tiny_model();
    let lm = ModelLm::new(&model, Plan::dense(), &tokenizer).unwrap();
    let failing = Failing(&lm);
    let tokens: Vec<u32> = (0..64u32).map(|i| i % 30).collect();
    let mut options = PerplexityOptions::new(8);
    options.batch_size = 1;
    let got = on_ranks(2, |t| {
        let model: &dyn LanguageModel = if t.rank() == 1 { &failing } else { &lm };
        perplexity_of_tokens_on(t, model, &tokens, &options, &mut |_| {}).map(|_| ())
    });
    for (rank, r) in got.iter().enumerate() {
        let message = r.as_ref().unwrap_err().to_string();
        assert!(message.contains("out of memory"), "rank {rank}: {message}");
        if rank == 0 {
            assert!(message.contains("rank 1 aborted"), "{message}");
        }
    }
}
