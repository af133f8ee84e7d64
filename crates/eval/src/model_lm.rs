//! [`ModelLm`]: a `finercut_model::Model` under a removal `Plan`, with its tokenizer, as a
//! [`LanguageModel`].
//!
//! Groups with several continuations go through `Model::continuation_logits_from`, which runs the
//! shared context once and every continuation from its state; consecutive groups whose contexts
//! begin with the same tokens (MMLU's five-shot header) also share the state of that beginning.
//! Groups with a single continuation (perplexity windows, WinoGrande) are plain sequences: those of equal
//! length are stacked into one `Model::forward` call, and their log-probabilities are taken in float64
//! from the float32 logits.
//! Work items run in parallel over the cores.

use finercut_format::Tokenizer;
use finercut_model::{Model, Plan};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::lm::{
    argmax, continuation_score, logprob_and_argmax, ContinuationScore, LanguageModel, ScoreGroup,
};

/// Logit values one `forward` call may return (about 256 MiB of `f32`); at least one sequence is
/// always run.
const LOGITS_BUDGET: usize = 64 << 20;

/// A pruned model ready to score requests.
pub struct ModelLm<'a> {
    model: &'a Model,
    plan: Plan,
    tokenizer: &'a Tokenizer,
    add_bos: bool,
    prefix_token: u32,
    max_length: usize,
}

impl<'a> ModelLm<'a> {
    /// Wraps `model` with the sublayers of `plan` removed.
    ///
    /// As lm-eval 0.4's Hugging Face backend: requests are encoded without special tokens except for
    /// Gemma models, which get a BOS; an empty context is replaced by BOS (else EOS); the maximum length is
    /// the config's `max_position_embeddings`.
    pub fn new(model: &'a Model, plan: Plan, tokenizer: &'a Tokenizer) -> Result<Self> {
        let config = model.config();
        let prefix_token = tokenizer
            .bos_id()
            .or(tokenizer.eos_id())
            .or(config.bos_token_id)
            .or(config.eos_token_id)
            .ok_or_else(|| {
                Error::Tokenizer("no BOS or EOS token to stand in for an empty context".into())
            })?;
        Ok(ModelLm {
            model,
            plan,
            tokenizer,
            add_bos: config.family().tokenizer().add_bos,
            prefix_token,
            max_length: config.max_position_embeddings,
        })
    }

    /// Whether requests start with the BOS token (default: only for Gemma, as lm-eval).
    pub fn with_bos(mut self, add_bos: bool) -> Self {
        self.add_bos = add_bos;
        self
    }

    /// Overrides the maximum sequence length (longer requests lose context from the left).
    pub fn with_max_length(mut self, max_length: usize) -> Self {
        self.max_length = max_length;
        self
    }

    /// The removal plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The model.
    pub fn model(&self) -> &'a Model {
        self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &'a Tokenizer {
        self.tokenizer
    }

    /// One sequence per group, scored by a batched forward pass.
    fn score_sequences(&self, groups: &[&ScoreGroup]) -> Result<Vec<ContinuationScore>> {
        let inputs: Vec<Vec<u32>> = groups
            .iter()
            .map(|g| {
                let cont = &g.continuations[0];
                let mut seq = Vec::with_capacity(g.context.len() + cont.len() - 1);
                seq.extend_from_slice(&g.context);
                seq.extend_from_slice(&cont[..cont.len() - 1]);
                seq
            })
            .collect();
        let t = inputs[0].len();
        let logits = self.model.forward(&inputs, &self.plan)?;
        let host;
        let data = if logits.device().is_cpu() {
            logits.as_slice_f32()?
        } else {
            host = logits.to_vec_f32()?;
            &host[..]
        };
        let vocab = logits.shape().last().copied().unwrap_or(0);
        if data.len() != inputs.len() * t * vocab || vocab == 0 {
            return Err(Error::Model(format!(
                "forward returned logits of shape {:?} for {} sequences of {t} tokens",
                logits.shape(),
                inputs.len()
            )));
        }
        groups
            .iter()
            .enumerate()
            .map(|(b, g)| {
                let first = b * t + g.context.len() - 1;
                let cont = &g.continuations[0];
                let mut logprob = 0.0;
                let mut is_greedy = true;
                for (k, &token) in cont.iter().enumerate() {
                    let row = &data[(first + k) * vocab..(first + k + 1) * vocab];
                    let (lp, best) = logprob_and_argmax(row, token)?;
                    logprob += lp;
                    is_greedy &= best == token;
                }
                Ok(ContinuationScore { logprob, is_greedy })
            })
            .collect()
    }

    /// Groups with several continuations whose contexts start with the same `prefix` tokens:
    /// the prefix runs once, then each context's remaining tokens from its state, then the
    /// continuations from each context's state.
    fn score_cluster(
        &self,
        prefix: usize,
        members: &[&ScoreGroup],
    ) -> Result<Vec<Vec<ContinuationScore>>> {
        let first = members
            .first()
            .ok_or_else(|| Error::Model("empty group of shared contexts".into()))?;
        let base = self
            .model
            .prefix_state(&first.context[..prefix], &self.plan)?;
        members
            .par_iter()
            .map(|g| {
                let rest = g.context.get(prefix..).ok_or_else(|| {
                    Error::Model(format!(
                        "context of {} tokens shorter than its shared prefix of {prefix}",
                        g.context.len()
                    ))
                })?;
                let own;
                let state = if rest.is_empty() {
                    &base
                } else {
                    own = self.model.extend_prefix(Some(&base), rest, &self.plan)?;
                    &own
                };
                let rows =
                    self.model
                        .continuation_logits_from(state, &g.continuations, &self.plan)?;
                score_rows(&rows, &g.continuations)
            })
            .collect()
    }
}

/// Scores continuations from their log-softmax rows (`[len, vocab]` each).
fn score_rows(
    rows: &[finercut_tensor::Tensor],
    continuations: &[Vec<u32>],
) -> Result<Vec<ContinuationScore>> {
    if rows.len() != continuations.len() {
        return Err(Error::Model(format!(
            "continuation_logits returned {} results for {} continuations",
            rows.len(),
            continuations.len()
        )));
    }
    rows.iter()
        .zip(continuations)
        .map(|(t, cont)| {
            let host;
            let data = if t.device().is_cpu() {
                t.as_slice_f32()?
            } else {
                host = t.to_vec_f32()?;
                &host[..]
            };
            let vocab = t.shape().last().copied().unwrap_or(0);
            if vocab == 0 || data.len() != cont.len() * vocab {
                return Err(Error::Model(format!(
                    "continuation_logits returned shape {:?} for {} tokens",
                    t.shape(),
                    cont.len()
                )));
            }
            if let Some(&bad) = cont.iter().find(|&&c| c as usize >= vocab) {
                return Err(Error::Model(format!(
                    "token {bad} outside a vocabulary of {vocab}"
                )));
            }
            let row = |i: usize| &data[i * vocab..(i + 1) * vocab];
            Ok(continuation_score(
                cont,
                |i, tok| f64::from(row(i)[tok as usize]),
                |i| argmax(row(i)),
            ))
        })
        .collect()
}

/// Length of the longest common prefix of two token sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Shortest token prefix that consecutive multi-continuation groups must share to run it once
/// (MMLU's five-shot header is several hundred tokens; a few words in common are not worth a state).
const MIN_SHARED_PREFIX: usize = 32;

/// Clusters consecutive groups (indices into `groups`) whose contexts share at least
/// [`MIN_SHARED_PREFIX`] tokens; returns `(shared prefix length, members)`. A group alone gets its
/// whole context as the prefix.
fn cluster_shared(groups: &[ScoreGroup], shared: &[usize]) -> Vec<(usize, Vec<usize>)> {
    let mut out: Vec<(usize, Vec<usize>)> = Vec::new();
    for &i in shared {
        let ctx = &groups[i].context;
        if let Some((prefix, members)) = out.last_mut() {
            let head = &groups[members[0]].context[..*prefix];
            let l = common_prefix(head, ctx);
            if l >= MIN_SHARED_PREFIX {
                *prefix = l;
                members.push(i);
                continue;
            }
        }
        out.push((ctx.len(), vec![i]));
    }
    out
}

/// A unit of parallel work: a stack of single-continuation groups of equal length, or one shared group.
enum Work {
    Sequences(Vec<usize>),
    /// Multi-continuation groups sharing a context prefix of the given length.
    Shared(usize, Vec<usize>),
}

impl LanguageModel for ModelLm<'_> {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_text(text)?;
        if self.add_bos {
            if let Some(bos) = self.tokenizer.bos_id() {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    fn prefix_token(&self) -> u32 {
        self.prefix_token
    }

    fn max_length(&self) -> usize {
        self.max_length
    }

    fn score(&self, groups: &[ScoreGroup]) -> Result<Vec<Vec<ContinuationScore>>> {
        let vocab = self.model.config().vocab_size.max(1);
        for g in groups {
            if g.context.is_empty() || g.continuations.iter().any(Vec::is_empty) {
                return Err(Error::Model("empty context or continuation".into()));
            }
        }
        // Stack single-continuation groups of equal input length, within the logits budget.
        let mut work = Vec::new();
        let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> =
            std::collections::BTreeMap::new();
        let mut shared = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            if g.continuations.len() == 1 {
                by_len
                    .entry(g.context.len() + g.continuations[0].len() - 1)
                    .or_default()
                    .push(i);
            } else {
                shared.push(i);
            }
        }
        work.extend(
            cluster_shared(groups, &shared)
                .into_iter()
                .map(|(prefix, members)| Work::Shared(prefix, members)),
        );
        for (len, members) in by_len {
            let per_call = (LOGITS_BUDGET / (len * vocab).max(1)).max(1);
            work.extend(
                members
                    .chunks(per_call)
                    .map(|c| Work::Sequences(c.to_vec())),
            );
        }
        let done: Vec<Vec<(usize, Vec<ContinuationScore>)>> = work
            .par_iter()
            .map(|w| match w {
                Work::Shared(prefix, members) => {
                    let refs: Vec<&ScoreGroup> = members.iter().map(|&i| &groups[i]).collect();
                    let scores = self.score_cluster(*prefix, &refs)?;
                    Ok(members.iter().copied().zip(scores).collect())
                }
                Work::Sequences(members) => {
                    let refs: Vec<&ScoreGroup> = members.iter().map(|&i| &groups[i]).collect();
                    let scores = self.score_sequences(&refs)?;
                    Ok(members
                        .iter()
                        .zip(scores)
                        .map(|(&i, s)| (i, vec![s]))
                        .collect())
                }
            })
            .collect::<Result<_>>()?;
        let mut out: Vec<Vec<ContinuationScore>> = vec![Vec::new(); groups.len()];
        for (i, scores) in done.into_iter().flatten() {
            out[i] = scores;
        }
        Ok(out)
    }
}
