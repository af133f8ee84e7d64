//! Candidate-batched streaming evaluation (`docs/DESIGN.md`, The cost of the search,
//! points 1-3).
//!
//! One greedy step must score every candidate `c`: the model with `base ∪ c` removed. The reference
//! re-runs the full model per candidate, zeroing the branch. Here:
//!
//! 1. a removed sublayer is skipped, not zeroed;
//! 2. candidate `c` shares the base model's residual stream up to its first removed sublayer `b(c)`:
//!    its stream is born there as a copy of the base stream entering `b(c)`;
//! 3. the sublayers are walked once, in order, carrying the base stream (while later candidates still
//!    need it) and every live candidate stream; at each sublayer the streams that go through it are
//!    stacked into one batch, so each weight matrix is applied to all of them in one GEMM.
//!
//! At the end the final norm and LM head run per candidate on chunks of [`HEAD_ROWS`] rows, and each
//! chunk goes to the caller's sink: no candidate's full logits are ever held.

use crate::layers::{Batch, KvMode, Part};
use crate::model::CHUNK_ROWS;
use crate::{Error, Model, Plan, Result};
use finercut_tensor::Tensor;
use std::collections::BTreeSet;

/// Rows of logits handed to the sink at a time (`HEAD_ROWS × vocab` floats: 50 MB for SmolLM2).
pub const HEAD_ROWS: usize = 256;

/// Work done by [`Model::stream_candidates`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamStats {
    /// Sublayer evaluations, counted per stream (one sublayer applied to the rows of one stream).
    pub sublayer_evals: usize,
    /// `sublayer_evals / 2L`: the work in units of one full forward pass (LM heads not counted).
    pub forward_equivalents: f64,
    /// The part of `sublayer_evals` spent on the base stream (it runs up to the last birth, so a
    /// pass over several sets of candidates evaluates the base as often as the set that needs it
    /// longest: the largest of their counts).
    pub base_evals: usize,
}

/// The sink of [`Model::stream_candidates`]: `(candidate, first_row, rows)` with `rows` holding
/// `nrows × vocab` logits.
pub type Sink<'a> = dyn FnMut(usize, usize, &[f32]) -> Result<()> + Send + 'a;

/// The sink of [`Model::stream_candidate_tensors`]: `(candidate, first_row, logits)` with the
/// logits a `[nrows, vocab]` tensor on the model's device.
pub type TensorSink<'a> = dyn FnMut(usize, usize, &Tensor) -> Result<()> + Send + 'a;

impl Model {
    /// Candidate-batched streaming evaluation (`docs/DESIGN.md`, The cost of the search): for each
    /// candidate (sublayer indices to remove in addition to `base`), the logits of the model
    /// `base ∪ candidate`, delivered in chunks of rows so that no candidate's full logits are ever
    /// materialised.
    ///
    /// Calls `sink(candidate_index, first_row, rows)` where `rows` holds `nrows × vocab` logits; rows
    /// are the flattened (sequence, position) pairs in order, and candidates come one after another in
    /// order. Exact: equal, to float rounding, to `forward(tokens, base ∪ candidate)`.
    pub fn stream_candidates(
        &self,
        tokens: &[Vec<u32>],
        base: &Plan,
        candidates: &[Vec<usize>],
        sink: &mut Sink<'_>,
    ) -> Result<StreamStats> {
        self.stream_candidate_tensors(tokens, base, candidates, &mut |c, r0, t| {
            deliver_rows(sink, c, r0, t)
        })
    }

    /// [`Model::stream_candidates`] with the logits handed over as tensors on the model's device,
    /// so that a GPU caller can reduce them there (e.g. `Tensor::row_divergences`) and copy only
    /// the results to the host.
    pub fn stream_candidate_tensors(
        &self,
        tokens: &[Vec<u32>],
        base: &Plan,
        candidates: &[Vec<usize>],
        sink: &mut TensorSink<'_>,
    ) -> Result<StreamStats> {
        let (n, t) = self.check_tokens(tokens)?;
        self.check_plan(base)?;
        let count = self.num_sublayers();
        if let Some(&index) = candidates.iter().flatten().find(|&&i| i >= count) {
            return Err(Error::SublayerIndex { index, count });
        }
        // Removals beyond the base, and the sublayer where each candidate's stream is born.
        let extra: Vec<BTreeSet<usize>> = candidates
            .iter()
            .map(|c| c.iter().copied().filter(|&i| !base.is_removed(i)).collect())
            .collect();
        let birth: Vec<usize> = extra
            .iter()
            .map(|e| e.first().copied().unwrap_or(count))
            .collect();
        let last_birth = birth.iter().copied().max().unwrap_or(0);

        let ids: Vec<u32> = tokens.iter().flatten().copied().collect();
        let mut base_x = Some(self.embed_ids(&ids)?);
        let mut streams: Vec<Option<Tensor>> = candidates.iter().map(|_| None).collect();
        let mut evals = 0;
        let mut base_evals = 0;
        for s in 0..count {
            for (c, &b) in birth.iter().enumerate() {
                if b == s {
                    streams[c] = base_x.clone();
                }
            }
            if s >= last_birth {
                // Every candidate is born: the base stream is no longer needed.
                base_x = None;
            }
            let base_active = base_x.is_some() && !base.is_removed(s);
            let mut active: Vec<&mut Tensor> = Vec::with_capacity(candidates.len() + 1);
            // Streams that skip sublayer `s` (a sliced model still applies its shortcut to them).
            let mut skipping: Vec<&mut Tensor> = Vec::new();
            if let Some(x) = base_x.as_mut() {
                if base.is_removed(s) {
                    skipping.push(x);
                } else {
                    active.push(x);
                }
            }
            for (c, st) in streams.iter_mut().enumerate() {
                if let Some(x) = st {
                    if base.is_removed(s) || extra[c].contains(&s) {
                        skipping.push(x);
                    } else {
                        active.push(x);
                    }
                }
            }
            evals += active.len();
            base_evals += usize::from(base_active);
            if self.parallel_branches(s, &|_| false).is_some() {
                // A parallel block runs each stream's kept branches at its FFN sublayer (and
                // nothing at its attention sublayer), so every stream goes on its own, under its
                // own plan.
                if let Some(x) = base_x.as_mut() {
                    self.apply_stream(s, x, n, t, &|i| base.is_removed(i))?;
                }
                for (c, st) in streams.iter_mut().enumerate() {
                    if let Some(x) = st {
                        let removed = |i: usize| base.is_removed(i) || extra[c].contains(&i);
                        self.apply_stream(s, x, n, t, &removed)?;
                    }
                }
                continue;
            }
            for x in skipping {
                self.apply_stream(s, x, n, t, &|_| true)?;
            }
            if active.is_empty() {
                continue;
            }
            self.apply_streams(s, &mut active, n, t)?;
        }
        // Candidates that remove nothing beyond the base are the base model.
        for (c, &b) in birth.iter().enumerate() {
            if b == count {
                streams[c] = base_x.clone();
            }
        }
        drop(base_x);
        self.stream_heads(&mut streams, sink)?;
        Ok(StreamStats {
            sublayer_evals: evals,
            forward_equivalents: evals as f64 / count as f64,
            base_evals,
        })
    }

    /// Applies sublayer `s` to several streams of `n × t` rows: as many whole streams per batch as fit
    /// in [`CHUNK_ROWS`] rows, or one stream at a time in chunks of sequences when a stream is larger.
    fn apply_streams(
        &self,
        s: usize,
        streams: &mut [&mut Tensor],
        n: usize,
        t: usize,
    ) -> Result<()> {
        let rows = n * t;
        if rows >= CHUNK_ROWS {
            for x in streams.iter_mut() {
                self.apply_stream(s, x, n, t, &|_| false)?;
            }
            return Ok(());
        }
        for group in streams.chunks_mut(CHUNK_ROWS / rows) {
            let batch = Batch::uniform(n * group.len(), t, 0);
            let mut parts: Vec<Part<'_>> =
                group.iter_mut().map(|x| Part { x, row: 0, rows }).collect();
            self.sublayers[s].apply(&mut parts, &batch, KvMode::Plain)?;
        }
        Ok(())
    }

    /// Final norm and LM head of every stream in chunks of [`HEAD_ROWS`] rows, handed to `sink`; each
    /// stream is freed once its last chunk is computed.
    ///
    /// Double-buffered: the LM head of the next chunk runs (`rayon::join`) while the sink consumes the
    /// previous one, so the GEMM's tiles and the sink's rows share the worker threads instead of
    /// alternating (each finishing with idle threads). The chunks and the order of the sink calls
    /// are the same as without the overlap.
    fn stream_heads(
        &self,
        streams: &mut [Option<Tensor>],
        sink: &mut TensorSink<'_>,
    ) -> Result<()> {
        let (d, vocab) = (self.config.hidden_size, self.config.vocab_size);
        let w = self.head_weight()?;
        // Free `(normed rows, logits)` buffer pairs: two per chunk size in use (one being filled,
        // one being consumed), no allocation per chunk.
        let mut free: Vec<(Tensor, Tensor)> = Vec::with_capacity(4);
        // The chunk computed last and not yet handed to the sink: `(candidate, first_row, buffers)`.
        let mut pending: Option<(usize, usize, (Tensor, Tensor))> = None;
        for (c, slot) in streams.iter_mut().enumerate() {
            let Some(x) = slot.take() else { continue };
            let rows = x.rows();
            let mut r0 = 0;
            while r0 < rows {
                let k = HEAD_ROWS.min(rows - r0);
                let (mut h, mut out) = match free.iter().position(|(h, _)| h.rows() == k) {
                    Some(i) => free.swap_remove(i),
                    None => (
                        Tensor::empty(&[k, d], &self.device)?,
                        Tensor::empty(&[k, vocab], &self.device)?,
                    ),
                };
                let mut head = || -> Result<()> {
                    self.final_norm()?.rows_into(&x, r0, k, &mut h, 0)?;
                    w.matmul_t_into(&h, &mut out)?;
                    if let Some(cap) = self.final_softcap {
                        out.softcap_in_place(cap)?;
                    }
                    Ok(())
                };
                let (computed, consumed) = match &pending {
                    Some((pc, pr0, (_, pout))) => {
                        let deliver = || -> Result<()> { sink(*pc, *pr0, pout) };
                        rayon::join(head, deliver)
                    }
                    None => (head(), Ok(())),
                };
                consumed?;
                computed?;
                if let Some((_, _, bufs)) = pending.replace((c, r0, (h, out))) {
                    free.push(bufs);
                }
                r0 += k;
            }
        }
        if let Some((c, r0, (_, out))) = pending {
            sink(c, r0, &out)?;
        }
        Ok(())
    }
}

/// Hands logits to the sink: in place on the CPU, after a copy to the host from a device.
fn deliver_rows(sink: &mut Sink<'_>, c: usize, r0: usize, out: &Tensor) -> Result<()> {
    if out.device().is_cpu() {
        sink(c, r0, out.as_slice_f32()?)
    } else {
        sink(c, r0, &out.to_vec_f32()?)
    }
}
