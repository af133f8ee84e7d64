//! Shared-prefix scoring: run a context once, then score many continuations of it.
//!
//! The prefix runs once, keeping the keys and values (after RoPE) of every attention sublayer; the
//! suffixes are then stacked into batches and attend to those cached keys plus their own. Each
//! suffix's rows only see the prefix and themselves.

use crate::layers::{Batch, Branch, Kv, KvMode, Part};
use crate::model::CHUNK_ROWS;
use crate::{Error, Model, Plan, Result};
use finercut_tensor::Tensor;

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
        if prefix.is_empty() {
            return Err(Error::Input(
                "continuation_logits needs a non-empty prefix".into(),
            ));
        }
        self.check_ids(prefix)?;
        for s in suffixes {
            self.check_ids(s)?;
        }
        self.check_plan(plan)?;
        let (count, vocab, p) = (self.num_sublayers(), self.config.vocab_size, prefix.len());

        // The prefix, once, keeping keys and values.
        let mut x = self.embed_ids(prefix)?;
        let mut cache: Vec<Option<Kv>> = (0..count).map(|_| None).collect();
        let batch = Batch::uniform(1, p, 0);
        for (s, slot) in cache.iter_mut().enumerate() {
            if plan.is_removed(s) {
                continue;
            }
            let sub = &self.sublayers[s];
            let mode = match sub.branch {
                Branch::Attn(_) => KvMode::Store(slot),
                Branch::Mlp(_) | Branch::Absent => KvMode::Plain,
            };
            sub.apply(
                &mut [Part {
                    x: &mut x,
                    row: 0,
                    rows: p,
                }],
                &batch,
                mode,
            )?;
        }
        let first = self.logits(&x.slice_rows(p - 1, 1)?)?.log_softmax_last()?;
        drop(x);

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
                Some(self.continue_group(group, p, &cache, plan)?)
            } else {
                None
            };
            let mut off = 0;
            for s in group {
                let m = s.len();
                let mut t = Tensor::zeros(&[m, vocab], &self.device)?;
                if m > 0 {
                    t.copy_rows_from(0, &first, 0, 1)?;
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
            if plan.is_removed(s) {
                continue;
            }
            let sub = &self.sublayers[s];
            let mode = match sub.branch {
                Branch::Attn(_) => KvMode::Continue(
                    kv.as_ref()
                        .ok_or_else(|| Error::Input(format!("no cached keys for sublayer {s}")))?,
                ),
                Branch::Mlp(_) | Branch::Absent => KvMode::Plain,
            };
            sub.apply(
                &mut [Part {
                    x: &mut y,
                    row: 0,
                    rows,
                }],
                &batch,
                mode,
            )?;
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
