//! Shared-prefix scoring: run a context once, then score many continuations of it.
//!
//! The prefix runs once, keeping the keys and values (after RoPE) of every attention sublayer; the
//! suffixes are then stacked into batches and attend to those cached keys plus their own. Each
//! suffix's rows only see the prefix and themselves.

use crate::layers::{apply_parallel, Batch, Branch, Kv, KvMode, Part};
use crate::model::CHUNK_ROWS;
use crate::{Error, Model, Plan, Result};
use finercut_tensor::Tensor;

/// The state a model reaches after a token prefix under one plan: the keys and values of every
/// attention sublayer, and the log-probabilities it predicts for the next token.
///
/// Built by [`Model::prefix_state`], grown by [`Model::extend_prefix`] (for example a few-shot
/// header shared by many questions, then each question) and continued by
/// [`Model::continuation_logits_from`].
pub struct PrefixState {
    pub(crate) tokens: usize,
    pub(crate) plan: Plan,
    pub(crate) kv: Vec<Option<Kv>>,
    next: Tensor,
}

impl PrefixState {
    /// Number of prefix tokens.
    pub fn len(&self) -> usize {
        self.tokens
    }

    /// Whether the prefix is empty (never: states are built from at least one token).
    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }

    /// Log-softmax `[1, vocab]` of the prediction after the prefix's last token.
    pub fn next_logprobs(&self) -> &Tensor {
        &self.next
    }
}

impl Model {
    /// Shared-prefix scoring for evaluation: runs `prefix` once, then every suffix continuing it.
    ///
    /// Returns, for each suffix, log-softmax rows `[suffix.len(), vocab]` for positions
    /// `prefix.len()-1 .. prefix.len()+suffix.len()-1`: row `j` is the predicted distribution of
    /// suffix token `j`. The prefix must not be empty.
    pub fn continuation_logits(
        &self,
        prefix: &[u32],
        suffixes: &[Vec<u32>],
        plan: &Plan,
    ) -> Result<Vec<Tensor>> {
        for s in suffixes {
            self.check_ids(s)?;
        }
        let state = self.prefix_state(prefix, plan)?;
        self.continuation_logits_from(&state, suffixes, plan)
    }

    /// Runs `prefix` (not empty) under `plan` and keeps its state.
    pub fn prefix_state(&self, prefix: &[u32], plan: &Plan) -> Result<PrefixState> {
        self.extend_prefix(None, prefix, plan)
    }

    /// The state after `base`'s prefix (none: the empty prefix) followed by `tokens` (not empty).
    ///
    /// Equal, up to float rounding, to [`Model::prefix_state`] of the whole token sequence; the
    /// base's tokens are not run again.
    pub fn extend_prefix(
        &self,
        base: Option<&PrefixState>,
        tokens: &[u32],
        plan: &Plan,
    ) -> Result<PrefixState> {
        if tokens.is_empty() {
            return Err(Error::Input(
                "a prefix state needs at least one new token".into(),
            ));
        }
        self.check_ids(tokens)?;
        self.check_plan(plan)?;
        if let Some(b) = base {
            check_state_plan(b, plan)?;
        }
        let count = self.num_sublayers();
        let (p0, n) = (base.map_or(0, PrefixState::len), tokens.len());
        let mut x = self.embed_ids(tokens)?;
        let mut kv: Vec<Option<Kv>> = (0..count).map(|_| None).collect();
        let batch = Batch {
            seq_lens: vec![n],
            positions: (p0..p0 + n).collect(),
        };
        for (s, slot) in kv.iter_mut().enumerate() {
            let sub = &self.sublayers[s];
            if sub.parallel && s % 2 == 1 {
                // Run with the block's attention (below).
                continue;
            }
            if plan.is_removed(s) && !sub.parallel {
                sub.bypass(&mut [Part {
                    x: &mut x,
                    row: 0,
                    rows: n,
                }])?;
                continue;
            }
            let mode = match (&sub.branch, base) {
                _ if plan.is_removed(s) => KvMode::Plain,
                (Branch::Attn(_), None) => KvMode::Store(slot),
                (Branch::Attn(_), Some(b)) => KvMode::Extend(
                    b.kv[s]
                        .as_ref()
                        .ok_or_else(|| Error::Input(format!("no cached keys for sublayer {s}")))?,
                    slot,
                ),
                (Branch::Mlp(_) | Branch::Moe(_) | Branch::Absent, _) => KvMode::Plain,
            };
            let mut parts = [Part {
                x: &mut x,
                row: 0,
                rows: n,
            }];
            if sub.parallel {
                apply_parallel(self.parallel_run(s, plan, mode), &mut parts, &batch)?;
            } else {
                sub.apply(&mut parts, &batch, mode)?;
            }
        }
        let next = self.logits(&x.slice_rows(n - 1, 1)?)?.log_softmax_last()?;
        Ok(PrefixState {
            tokens: p0 + n,
            plan: plan.clone(),
            kv,
            next,
        })
    }

    /// [`Model::continuation_logits`] from a stored prefix state (computed under the same `plan`).
    pub fn continuation_logits_from(
        &self,
        state: &PrefixState,
        suffixes: &[Vec<u32>],
        plan: &Plan,
    ) -> Result<Vec<Tensor>> {
        for s in suffixes {
            self.check_ids(s)?;
        }
        self.check_plan(plan)?;
        check_state_plan(state, plan)?;
        let (vocab, p) = (self.config.vocab_size, state.len());
        let mut out: Vec<Tensor> = Vec::with_capacity(suffixes.len());
        let mut start = 0;
        while start < suffixes.len() {
            // A group of suffixes with at most CHUNK_ROWS rows (at least one suffix).
            let mut end = start + 1;
            let mut rows = suffixes[start].len();
            while end < suffixes.len() && rows + suffixes[end].len() <= CHUNK_ROWS {
                rows += suffixes[end].len();
                end += 1;
            }
            let group = &suffixes[start..end];
            let logp = if rows > 0 {
                Some(self.continue_group(group, p, &state.kv, plan)?)
            } else {
                None
            };
            let mut off = 0;
            for s in group {
                let m = s.len();
                let mut t = Tensor::zeros(&[m, vocab], &self.device)?;
                if m > 0 {
                    t.copy_rows_from(0, &state.next, 0, 1)?;
                    if let Some(l) = &logp {
                        t.copy_rows_from(1, l, off, m - 1)?;
                    }
                    off += m - 1;
                }
                out.push(t);
            }
            start = end;
        }
        Ok(out)
    }

    /// Log-softmax rows of a group of suffixes continuing a cached prefix of length `p`: for each
    /// suffix, the rows of its tokens but the last, concatenated.
    fn continue_group(
        &self,
        group: &[Vec<u32>],
        p: usize,
        cache: &[Option<Kv>],
        plan: &Plan,
    ) -> Result<Tensor> {
        let d = self.config.hidden_size;
        let ids: Vec<u32> = group.iter().flatten().copied().collect();
        let rows = ids.len();
        let mut y = self.embed_ids(&ids)?;
        let lens: Vec<usize> = group.iter().map(Vec::len).collect();
        let batch = Batch {
            positions: lens.iter().flat_map(|&m| p..p + m).collect(),
            seq_lens: lens,
        };
        for (s, kv) in cache.iter().enumerate() {
            let sub = &self.sublayers[s];
            if sub.parallel && s % 2 == 1 {
                // Run with the block's attention (below).
                continue;
            }
            if plan.is_removed(s) && !sub.parallel {
                sub.bypass(&mut [Part {
                    x: &mut y,
                    row: 0,
                    rows,
                }])?;
                continue;
            }
            let mode = match sub.branch {
                _ if plan.is_removed(s) => KvMode::Plain,
                Branch::Attn(_) => KvMode::Continue(
                    kv.as_ref()
                        .ok_or_else(|| Error::Input(format!("no cached keys for sublayer {s}")))?,
                ),
                Branch::Mlp(_) | Branch::Moe(_) | Branch::Absent => KvMode::Plain,
            };
            let mut parts = [Part {
                x: &mut y,
                row: 0,
                rows,
            }];
            if sub.parallel {
                apply_parallel(self.parallel_run(s, plan, mode), &mut parts, &batch)?;
            } else {
                sub.apply(&mut parts, &batch, mode)?;
            }
        }
        // Every row but each suffix's last predicts a suffix token.
        let keep: usize = batch.seq_lens.iter().map(|&m| m.saturating_sub(1)).sum();
        let mut sel = Tensor::empty(&[keep, d], &self.device)?;
        let (mut src, mut dst) = (0, 0);
        for &m in &batch.seq_lens {
            if m > 1 {
                sel.copy_rows_from(dst, &y, src, m - 1)?;
                dst += m - 1;
            }
            src += m;
        }
        drop(y);
        Ok(self.logits(&sel)?.log_softmax_last()?)
    }
}

/// A state is only valid under the plan it was computed with.
pub(crate) fn check_state_plan(state: &PrefixState, plan: &Plan) -> Result<()> {
    if &state.plan != plan {
        return Err(Error::Input(format!(
            "prefix state computed with {} removed sublayers used under a plan with {}",
            state.plan.len(),
            plan.len()
        )));
    }
    Ok(())
}
