//! The benchmark tasks: names, the metric each reports, and their documents as prompts.
//!
//! Each task follows its lm-evaluation-harness 0.4 YAML (and `utils.py`): see [`prompts`] for the
//! templates, with the upstream text quoted next to each builder.

pub mod prompts;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use self::prompts::{Prompt, Request};
use crate::data::{self, MMLU_SUBJECTS};
use crate::error::{Error, Result};

/// A benchmark task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskName {
    /// ARC-Easy, test split.
    ArcEasy,
    /// ARC-Challenge, test split.
    ArcChallenge,
    /// BoolQ (SuperGLUE), validation split.
    Boolq,
    /// HellaSwag, validation split.
    Hellaswag,
    /// OpenBookQA, test split.
    Openbookqa,
    /// PIQA, validation split.
    Piqa,
    /// WinoGrande (winogrande_xl), validation split, partial scoring.
    Winogrande,
    /// COPA (SuperGLUE), validation split.
    Copa,
    /// LAMBADA (OpenAI version), test split: last-word prediction.
    LambadaOpenai,
    /// MMLU, 57 subjects, test split, 5-shot from the dev split.
    Mmlu,
}

/// How a task's documents are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    /// Several choices; the prediction is the argmax log-likelihood (lm-eval `multiple_choice`).
    MultipleChoice,
    /// One continuation; accuracy is whether it is the greedy continuation (lm-eval `loglikelihood`).
    Loglikelihood,
}

impl TaskName {
    /// Every task, in report order.
    pub const ALL: [TaskName; 10] = [
        TaskName::ArcEasy,
        TaskName::ArcChallenge,
        TaskName::Boolq,
        TaskName::Hellaswag,
        TaskName::Openbookqa,
        TaskName::Piqa,
        TaskName::Winogrande,
        TaskName::Copa,
        TaskName::LambadaOpenai,
        TaskName::Mmlu,
    ];

    /// The nine benchmarks of the FinerCut paper (selected by the name `paper`).
    pub const PAPER: [TaskName; 9] = [
        TaskName::ArcEasy,
        TaskName::ArcChallenge,
        TaskName::Boolq,
        TaskName::Hellaswag,
        TaskName::Openbookqa,
        TaskName::Piqa,
        TaskName::Winogrande,
        TaskName::LambadaOpenai,
        TaskName::Mmlu,
    ];

    /// lm-eval's task name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskName::ArcEasy => "arc_easy",
            TaskName::ArcChallenge => "arc_challenge",
            TaskName::Boolq => "boolq",
            TaskName::Hellaswag => "hellaswag",
            TaskName::Openbookqa => "openbookqa",
            TaskName::Piqa => "piqa",
            TaskName::Winogrande => "winogrande",
            TaskName::Copa => "copa",
            TaskName::LambadaOpenai => "lambada_openai",
            TaskName::Mmlu => "mmlu",
        }
    }

    /// The metric reported for the task: `acc_norm` where lm-eval computes it, else `acc`.
    pub fn headline_metric(self) -> &'static str {
        if self.has_acc_norm() {
            "acc_norm"
        } else {
            "acc"
        }
    }

    /// Whether lm-eval's YAML lists `acc_norm` for the task.
    pub fn has_acc_norm(self) -> bool {
        matches!(
            self,
            TaskName::ArcEasy
                | TaskName::ArcChallenge
                | TaskName::Hellaswag
                | TaskName::Openbookqa
                | TaskName::Piqa
        )
    }

    /// How the task is scored.
    pub fn output_type(self) -> OutputType {
        if self == TaskName::LambadaOpenai {
            OutputType::Loglikelihood
        } else {
            OutputType::MultipleChoice
        }
    }

    /// Few-shot examples per prompt (the paper's setting: MMLU 5-shot, the rest zero-shot).
    pub fn num_fewshot(self) -> usize {
        if self == TaskName::Mmlu {
            5
        } else {
            0
        }
    }

    /// The split lm-eval evaluates.
    pub fn lm_eval_split(self) -> &'static str {
        match self {
            TaskName::ArcEasy
            | TaskName::ArcChallenge
            | TaskName::Openbookqa
            | TaskName::LambadaOpenai
            | TaskName::Mmlu => "test",
            _ => "validation",
        }
    }

    /// Known names for messages: every task, then `paper`.
    pub fn known_names() -> String {
        let mut names: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
        names.push("paper");
        names.join(", ")
    }

    /// Parses a comma-separated list of task names; `paper` expands to [`TaskName::PAPER`].
    /// Duplicates are dropped, first occurrence kept.
    pub fn parse_list(list: &str) -> Result<Vec<TaskName>> {
        let mut out: Vec<TaskName> = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let expanded: Vec<TaskName> = if name == "paper" {
                Self::PAPER.to_vec()
            } else {
                vec![name.parse()?]
            };
            for task in expanded {
                if !out.contains(&task) {
                    out.push(task);
                }
            }
        }
        if out.is_empty() {
            return Err(Error::UnknownTask {
                name: list.to_string(),
                known: Self::known_names(),
            });
        }
        Ok(out)
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::UnknownTask {
                name: s.to_string(),
                known: Self::known_names(),
            })
    }
}

/// One document of a task, turned into lm-eval requests.
#[derive(Clone, Debug)]
pub struct TaskDoc {
    /// Index of the document in its split (within its subject for MMLU).
    pub index: usize,
    /// The MMLU subject, else `None`.
    pub subtask: Option<String>,
    /// The requests, or why the document cannot be scored.
    pub prompt: std::result::Result<Prompt, String>,
}

/// A task's documents, ready to score.
#[derive(Clone, Debug)]
pub struct TaskDocs {
    /// The task.
    pub task: TaskName,
    /// The split used.
    pub split: String,
    /// Where the documents came from, relative to the data directory.
    pub source: String,
    /// Set when the split differs from lm-eval's.
    pub note: Option<String>,
    /// The documents, in split order (MMLU: subject by subject).
    pub docs: Vec<TaskDoc>,
}

/// Loads the first `limit` documents of `task` (per subject for MMLU, as lm-eval's `--limit`) and
/// builds their prompts.
pub fn load_task(task: TaskName, data_dir: &Path, limit: Option<usize>) -> Result<TaskDocs> {
    let take = limit.unwrap_or(usize::MAX);
    if task == TaskName::Mmlu {
        let mut docs = Vec::new();
        for subject in MMLU_SUBJECTS {
            let (test, dev) = data::load_mmlu_subject(subject, data_dir)?;
            let shots = prompts::mmlu_fewshot_prefix(subject, &dev, task.num_fewshot());
            for (index, row) in test.iter().take(take).enumerate() {
                let prompt = shots
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|prefix| prompts::mmlu(prefix, row));
                docs.push(TaskDoc {
                    index,
                    subtask: Some(subject.to_string()),
                    prompt,
                });
            }
        }
        return Ok(TaskDocs {
            task,
            split: "test".into(),
            source: data::mmlu_rel("<subject>", "test"),
            note: None,
            docs,
        });
    }
    let rows = data::load_task_rows(task, data_dir)?;
    let docs = rows
        .rows
        .iter()
        .take(take)
        .enumerate()
        .map(|(index, row)| TaskDoc {
            index,
            subtask: None,
            prompt: row
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|r| prompts::build(task, r)),
        })
        .collect();
    Ok(TaskDocs {
        task,
        split: rows.split,
        source: rows.source,
        note: rows.note,
        docs,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in TaskName::ALL {
            assert_eq!(t.as_str().parse::<TaskName>().unwrap(), t);
        }
        let err = "arc".parse::<TaskName>().unwrap_err().to_string();
        assert!(err.contains("arc_easy") && err.contains("paper"), "{err}");
    }

    #[test]
    fn paper_expands() {
        let list = TaskName::parse_list("copa, paper,arc_easy").unwrap();
        assert_eq!(list.len(), 10);
        assert_eq!(list[0], TaskName::Copa);
        assert!(!list[1..].contains(&TaskName::Copa));
        assert!(TaskName::parse_list("").is_err());
        assert!(TaskName::parse_list("piqa,nope").is_err());
    }

    #[test]
    fn headline_metrics() {
        assert_eq!(TaskName::Piqa.headline_metric(), "acc_norm");
        assert_eq!(TaskName::Boolq.headline_metric(), "acc");
        assert_eq!(TaskName::LambadaOpenai.headline_metric(), "acc");
        assert_eq!(TaskName::Mmlu.headline_metric(), "acc");
    }
}
