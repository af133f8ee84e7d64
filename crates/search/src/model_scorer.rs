//! [`Scorer`] and [`HiddenStates`] backed by a `finercut_model::Model`: the only module of this
//! crate that touches the model.
//!
//! - [`StreamingScorer`]: one candidate-batched streaming pass per step
//!   (`Model::stream_candidates`, `docs/DESIGN.md`, The cost of the search); logits arrive in
//!   chunks of rows and go straight into one [`Accumulator`] per candidate, so no candidate's
//!   logits are ever materialised.
//! - [`NaiveScorer`]: the reference procedure, one full `Model::forward` per candidate; slow,
//!   kept to check the streaming scorer (same removal order and scores).
//! - [`ModelHiddenStates`]: dense block-boundary states from `Model::trace` for ShortGPT and
//!   DeeperLayers.
//!
//! Across ranks ([`StreamingScorer::with_transport`]), every scoring pass deals its candidates to
//! the ranks by cost (`finercut_dist::deal` of `2L − birth`, the sublayers a candidate's stream
//! runs), each rank streams its share, and the per-row values of every candidate are gathered to
//! every rank, which fills the same accumulators as one process would: the elimination then runs
//! on the same numbers everywhere. A row's value does not depend on which other streams share
//! its GEMMs (the CPU GEMM is batch-invariant, `docs/ARCHITECTURE.md`), so the scores are those of
//! one process bit for bit, and so is the work counted (the base stream once, as far as the
//! candidate born last needs it).

use std::collections::BTreeSet;
use std::time::Instant;

use finercut_dist::Transport;
use finercut_metrics::{next_token_targets, Accumulator, DenseRows, Metric};
use finercut_model::{DenseLogits, Model, Plan, RowMetric, StageStreams, Tensor};

use crate::stages::{decode_streams, encode_streams, Stages};
use crate::{
    eliminate, BlockStates, Cost, Error, GroupScoring, HiddenStates, Result, Scored, Scorer,
};

/// `len` little-endian `f32`s sent by `rank`.
fn f32s(rank: usize, bytes: &[u8], len: usize) -> Result<Vec<f32>> {
    if bytes.len() != len * 4 {
        return Err(Error::Scorer {
            message: format!(
                "rank {rank} sent {} bytes, expected {len} f32 values",
                bytes.len()
            ),
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The model's plan removing `removed` (sublayer indices).
pub fn model_plan(removed: impl IntoIterator<Item = usize>) -> Plan {
    Plan::from_removed(removed)
}

/// The per-row kernel of `metric` on a device (the same formulas as `finercut-metrics`).
fn row_metric(metric: Metric) -> RowMetric {
    match metric {
        Metric::Js => RowMetric::Js,
        Metric::JsReference => RowMetric::JsReference,
        Metric::Kl => RowMetric::Kl,
        Metric::Angular => RowMetric::Angular,
        Metric::Euclidean => RowMetric::Euclidean,
        Metric::Ppl => RowMetric::Ppl,
    }
}

/// The dense rows `metric` needs: the dense model's logits (one forward) unless the metric is
/// perplexity, plus next-token targets for perplexity.
fn dense_rows(model: &Model, tokens: &[Vec<u32>], metric: Metric) -> Result<(DenseRows, Cost)> {
    let (rows, _, cost) = dense_rows_on(model, tokens, metric)?;
    Ok((rows, cost))
}

/// [`dense_rows`], plus, for a model on a device, the dense logits kept there for the device's
/// divergence kernels.
fn dense_rows_on(
    model: &Model,
    tokens: &[Vec<u32>],
    metric: Metric,
) -> Result<(DenseRows, Option<finercut_model::Tensor>, Cost)> {
    let vocab = model.config().vocab_size;
    let t0 = Instant::now();
    let mut on_device = None;
    let mut rows = if metric.needs_dense_logits() {
        let logits = model.forward(tokens, &Plan::dense())?;
        let values = logits.to_vec_f32().map_err(finercut_model::Error::from)?;
        if !model.device().is_cpu() {
            on_device = Some(logits);
        }
        DenseRows::new(values, vocab)?
    } else {
        // Perplexity needs no dense logits; on a device its rows come to the host (one value per
        // row would do, but the kernel path is kept for the divergences).
        DenseRows::targets_only(next_token_targets(tokens), vocab)?
    };
    if metric.needs_targets() && rows.targets().is_none() {
        rows = rows.with_targets(next_token_targets(tokens))?;
    }
    let fe = if metric.needs_dense_logits() {
        1.0
    } else {
        0.0
    };
    Ok((
        rows,
        on_device,
        Cost {
            forward_equivalents: fe,
            wall_s: t0.elapsed().as_secs_f64(),
        },
    ))
}

/// Rows a group of calibration sequences holds at least under elimination (as few whole
/// sequences as reach it). One sequence of 128 or more tokens is a group: the live candidates'
/// streams are stacked into each sublayer's GEMM, so the GEMMs stay large however small a group
/// is, and the smaller the first group, the less a candidate that is stopped after it costs.
pub const GROUP_ROWS: usize = 128;

/// Candidate-batched streaming scorer (`docs/DESIGN.md`, The cost of the search): exact, and
/// about half a forward per candidate; with elimination ([`Scorer::score_eliminating`]) most
/// candidates are scored on the first group of calibration sequences only.
///
/// On a GPU the logits never leave the device: each chunk of rows is reduced there by the
/// divergence kernels and only one value per row comes back (elimination included).
pub struct StreamingScorer<'m> {
    model: &'m Model,
    tokens: Vec<Vec<u32>>,
    metric: Metric,
    dense: DenseRows,
    /// The dense logits on the model's device, when it is not the CPU.
    device_dense: Option<DenseLogits>,
    preparation: Cost,
    group_rows: usize,
    /// The ranks this scorer shares its candidates with, if any.
    dist: Option<&'m dyn Transport>,
    /// Bytes this rank has contributed to gathers so far.
    sent_bytes: u64,
    /// The pipeline the ranks form, when the model is split into stages.
    stages: Option<&'m Stages>,
    /// Bytes of residual streams this rank has handed to the next stage so far.
    handed_bytes: u64,
}

impl<'m> StreamingScorer<'m> {
    /// A scorer of `metric` on calibration `tokens` (sequences of equal length); runs the dense
    /// model once (except for perplexity).
    pub fn new(model: &'m Model, tokens: Vec<Vec<u32>>, metric: Metric) -> Result<Self> {
        model.check_tokens(&tokens)?;
        let (dense, on_device, preparation) = dense_rows_on(model, &tokens, metric)?;
        let device_dense = match on_device {
            Some(logits) => {
                let n = dense.num_rows();
                let lse: Vec<f64> = (0..n)
                    .map(|r| dense.log_sum_exp(r).unwrap_or(f64::NAN))
                    .collect();
                let targets = dense.targets().map(<[_]>::to_vec).unwrap_or_default();
                Some(
                    DenseLogits::new(&logits, &lse, &targets)
                        .map_err(finercut_model::Error::from)?,
                )
            }
            None => None,
        };
        Ok(StreamingScorer {
            model,
            tokens,
            metric,
            dense,
            device_dense,
            preparation,
            group_rows: GROUP_ROWS,
            dist: None,
            sent_bytes: 0,
            stages: None,
            handed_bytes: 0,
        })
    }

    /// A scorer on one rank of a pipeline (`stages`, [`crate::stages`]): `model` holds this rank's
    /// window of sublayers ([`Stages::window`]), every rank of `dist` makes the same calls. The
    /// dense logits are computed stage after stage by replica 0 (the same arithmetic as
    /// `Model::forward`) and broadcast from its last stage, so every rank holds them (`rows ×
    /// vocab` floats). A collective; results are those of one process bit for bit.
    pub fn staged(
        model: &'m Model,
        tokens: Vec<Vec<u32>>,
        metric: Metric,
        dist: &'m dyn Transport,
        stages: &'m Stages,
    ) -> Result<Self> {
        let (n, t) = model.check_tokens(&tokens)?;
        stages.check_same(dist)?;
        let vocab = model.config().vocab_size;
        let t0 = Instant::now();
        let mut dense = if metric.needs_dense_logits() {
            let (replica, stage) = stages.place(dist.rank());
            let cuts = stages.first_boundaries();
            let last = stages.count - 1;
            let d = model.config().hidden_size;
            let mut logits = Vec::new();
            if replica == 0 {
                let dense_plan = Plan::dense();
                let state = if stage == 0 {
                    model.embed_tokens(&tokens)?
                } else {
                    let bytes = dist.recv_bytes(dist.rank() - 1)?;
                    let values = f32s(dist.rank() - 1, &bytes, n * t * d)?;
                    Tensor::from_vec(values, &[n, t, d], &model.device())
                        .map_err(finercut_model::Error::from)?
                };
                if stage < last {
                    let x = model.advance(&state, cuts[stage], cuts[stage + 1], &dense_plan)?;
                    let values = x.to_vec_f32().map_err(finercut_model::Error::from)?;
                    dist.send_bytes(
                        dist.rank() + 1,
                        &values
                            .iter()
                            .flat_map(|v| v.to_le_bytes())
                            .collect::<Vec<u8>>(),
                    )?;
                } else {
                    logits = model
                        .resume(&state, cuts[stage], &dense_plan)?
                        .to_vec_f32()
                        .map_err(finercut_model::Error::from)?;
                }
            }
            let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
            let all = dist.broadcast_bytes(last, &bytes)?;
            DenseRows::new(f32s(last, &all, n * t * vocab)?, vocab)?
        } else {
            DenseRows::targets_only(next_token_targets(&tokens), vocab)?
        };
        if metric.needs_targets() && dense.targets().is_none() {
            dense = dense.with_targets(next_token_targets(&tokens))?;
        }
        let preparation = Cost {
            forward_equivalents: if metric.needs_dense_logits() {
                1.0
            } else {
                0.0
            },
            wall_s: t0.elapsed().as_secs_f64(),
        };
        Ok(StreamingScorer {
            model,
            tokens,
            metric,
            dense,
            device_dense: None,
            preparation,
            group_rows: GROUP_ROWS,
            dist: Some(dist),
            sent_bytes: 0,
            stages: Some(stages),
            handed_bytes: 0,
        })
    }

    /// Bytes of residual streams this rank has handed to the next pipeline stage so far.
    pub fn handed_bytes(&self) -> u64 {
        self.handed_bytes
    }

    /// Shares every scoring pass with the other ranks of `dist` (see the module docs); every rank
    /// must make the same calls with the same model, calibration and settings. Changes the speed,
    /// never a result.
    pub fn with_transport(mut self, dist: &'m dyn Transport) -> Self {
        self.dist = Some(dist);
        self
    }

    /// Bytes of per-row values and counts this rank has sent to the others so far (0 in one
    /// process).
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Sets the rows a group of sequences holds at least under elimination (default
    /// [`GROUP_ROWS`]; 1 makes every sequence a group). Changes the speed, never a result.
    pub fn with_group_rows(mut self, rows: usize) -> Self {
        self.group_rows = rows.max(1);
        self
    }

    /// The cost of the dense forward (record it as the result's preparation).
    pub fn preparation(&self) -> &Cost {
        &self.preparation
    }

    /// The cached dense rows.
    pub fn dense(&self) -> &DenseRows {
        &self.dense
    }
}

impl Scorer for StreamingScorer<'_> {
    fn num_sublayers(&self) -> usize {
        self.model.num_sublayers()
    }

    fn score(
        &mut self,
        removed: &[usize],
        candidates: &[Vec<usize>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Scored> {
        let base = Plan::from_removed(removed.iter().copied());
        let mut accs = candidates
            .iter()
            .map(|_| Accumulator::new(self.metric, &self.dense))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let which: Vec<usize> = (0..candidates.len()).collect();
        let pass = Pass {
            model: self.model,
            tokens: &self.tokens,
            first_row: 0,
            base: &base,
            candidates,
            feed: ChunkFeed::new(self.metric, self.device_dense.as_ref()),
            dist: self.dist,
            stages: self.stages,
        };
        let stats = pass.run(&which, &mut accs, progress)?;
        self.sent_bytes += stats.sent_bytes;
        self.handed_bytes += stats.handed_bytes;
        let scores = accs
            .iter()
            .map(Accumulator::finish)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Scored::complete(scores, stats.forward_equivalents))
    }

    fn score_eliminating(
        &mut self,
        removed: &[usize],
        candidates: &[Vec<usize>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Scored> {
        let t = self.tokens.first().map_or(1, Vec::len).max(1);
        let group_seqs = self
            .group_rows
            .div_ceil(t)
            .clamp(1, self.tokens.len().max(1));
        let accs = candidates
            .iter()
            .map(|_| Accumulator::new(self.metric, &self.dense))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut step = GroupedStep {
            model: self.model,
            tokens: &self.tokens,
            base: Plan::from_removed(removed.iter().copied()),
            candidates,
            accs,
            group_seqs,
            seq_len: t,
            feed: ChunkFeed::new(self.metric, self.device_dense.as_ref()),
            forward_equivalents: 0.0,
            dist: self.dist,
            stages: self.stages,
            sent_bytes: 0,
            handed_bytes: 0,
        };
        let outcome = eliminate(&mut step, progress)?;
        self.sent_bytes += step.sent_bytes;
        self.handed_bytes += step.handed_bytes;
        Ok(Scored {
            scores: outcome.scores,
            stopped_after_rows: outcome.stopped_after_rows,
            forward_equivalents: step.forward_equivalents,
            elimination: Some(outcome.stats),
        })
    }
}

/// How a chunk of a candidate's logits reaches its accumulator: the logits themselves when they
/// are on the host, or, on a device holding the dense logits, only their per-row values from the
/// divergence kernels (the same formulas as `finercut-metrics`). Used by the exhaustive and the
/// eliminating step alike, so both see the same values.
#[derive(Clone, Copy)]
struct ChunkFeed<'d> {
    metric: RowMetric,
    device_dense: Option<&'d DenseLogits>,
}

impl<'d> ChunkFeed<'d> {
    fn new(metric: Metric, device_dense: Option<&'d DenseLogits>) -> Self {
        ChunkFeed {
            metric: row_metric(metric),
            device_dense,
        }
    }

    /// Adds `logits` (`[rows, vocab]`), the calibration rows `first_row ..`, to `acc`.
    fn add(
        &self,
        acc: &mut Accumulator<'_>,
        first_row: usize,
        logits: &Tensor,
    ) -> finercut_model::Result<()> {
        match self.device_dense {
            Some(dense) => {
                let values = logits.row_divergences(dense, first_row, self.metric)?;
                acc.add_row_values(first_row, &values)
            }
            None => match logits.as_slice_f32() {
                Ok(rows) => acc.add_rows(first_row, rows),
                Err(_) => acc.add_rows(first_row, &logits.to_vec_f32()?),
            },
        }
        .map_err(finercut_model::Error::sink)
    }
}

/// One step of [`StreamingScorer::score_eliminating`]: the candidates' accumulators, filled
/// group by group of calibration sequences by candidate-batched streaming passes.
struct GroupedStep<'s, 'm> {
    model: &'m Model,
    tokens: &'s [Vec<u32>],
    base: Plan,
    candidates: &'s [Vec<usize>],
    accs: Vec<Accumulator<'s>>,
    /// Sequences per group (the last group may hold fewer).
    group_seqs: usize,
    seq_len: usize,
    feed: ChunkFeed<'s>,
    forward_equivalents: f64,
    dist: Option<&'s dyn Transport>,
    stages: Option<&'s Stages>,
    sent_bytes: u64,
    handed_bytes: u64,
}

impl GroupedStep<'_, '_> {
    fn sequences(&self, group: usize) -> std::ops::Range<usize> {
        let start = (group * self.group_seqs).min(self.tokens.len());
        start..(start + self.group_seqs).min(self.tokens.len())
    }
}

impl GroupScoring for GroupedStep<'_, '_> {
    fn num_candidates(&self) -> usize {
        self.candidates.len()
    }

    fn num_groups(&self) -> usize {
        self.tokens.len().div_ceil(self.group_seqs).max(1)
    }

    fn group_rows(&self, group: usize) -> usize {
        self.sequences(group).len() * self.seq_len
    }

    fn score_group(&mut self, which: &[usize], group: usize) -> Result<()> {
        let seqs = self.sequences(group);
        let share = seqs.len() as f64 / self.tokens.len().max(1) as f64;
        let pass = Pass {
            model: self.model,
            tokens: &self.tokens[seqs.clone()],
            first_row: seqs.start * self.seq_len,
            base: &self.base,
            candidates: self.candidates,
            feed: self.feed,
            dist: self.dist,
            stages: self.stages,
        };
        let stats = pass.run(which, &mut self.accs, &mut |_| {})?;
        self.forward_equivalents += stats.forward_equivalents * share;
        self.sent_bytes += stats.sent_bytes;
        self.handed_bytes += stats.handed_bytes;
        Ok(())
    }

    fn bound(&self, c: usize) -> f64 {
        self.accs.get(c).map_or(f64::NAN, Accumulator::lower_bound)
    }

    fn score(&self, c: usize) -> Result<f64> {
        let acc = self.accs.get(c).ok_or_else(|| Error::Scorer {
            message: format!("no candidate {c} of {}", self.accs.len()),
        })?;
        Ok(acc.finish()?)
    }
}

/// Work of one [`Pass`].
struct PassStats {
    /// The work one process would have done, in forward-equivalents.
    forward_equivalents: f64,
    /// Bytes this rank sent to the gathers.
    sent_bytes: u64,
    /// Bytes of streams this rank handed to the next stage.
    handed_bytes: u64,
}

/// One streaming pass of some candidates over some calibration sequences, filling their
/// accumulators; shared by the ranks of `dist` when there are several.
struct Pass<'p, 's> {
    model: &'p Model,
    /// The sequences of the pass.
    tokens: &'p [Vec<u32>],
    /// Calibration row of the first token of `tokens`.
    first_row: usize,
    base: &'p Plan,
    candidates: &'p [Vec<usize>],
    feed: ChunkFeed<'s>,
    dist: Option<&'p dyn Transport>,
    stages: Option<&'p Stages>,
}

impl Pass<'_, '_> {
    /// Streams candidates `which` (ascending indices into `candidates`) into `accs` (indexed by
    /// candidate); `progress(done)` after candidates complete.
    fn run(
        &self,
        which: &[usize],
        accs: &mut [Accumulator<'_>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<PassStats> {
        let count = self.model.num_sublayers().max(1);
        let Some(dist) = self.dist.filter(|d| d.size() > 1) else {
            let stats = self.stream(which, accs, progress)?;
            return Ok(PassStats {
                forward_equivalents: stats.forward_equivalents,
                sent_bytes: 0,
                handed_bytes: 0,
            });
        };
        if let Some(stages) = self.stages {
            return self.run_staged(dist, stages, which, accs, progress);
        }
        // Deal by cost: the sublayers from the candidate's birth to the end.
        let costs: Vec<usize> = which
            .iter()
            .map(|&c| {
                let birth = self.candidates[c]
                    .iter()
                    .copied()
                    .filter(|&i| !self.base.is_removed(i))
                    .min()
                    .unwrap_or(count);
                count.saturating_sub(birth)
            })
            .collect();
        let owner = finercut_dist::deal(&costs, dist.size());
        let share = |rank: usize| -> Vec<usize> {
            which
                .iter()
                .zip(&owner)
                .filter(|(_, &o)| o == rank)
                .map(|(&c, _)| c)
                .collect()
        };
        let me = dist.rank();
        let mine = share(me);
        let stats = if mine.is_empty() {
            finercut_model::StreamStats::default()
        } else {
            self.stream(&mine, accs, &mut |_| {})?
        };
        let msg = self.share_message(&stats, &mine, accs, true);
        let all = dist.all_gather_bytes(&msg)?;
        let (mut base_evals, mut cand_evals) = (0usize, 0usize);
        for (rank, bytes) in all.iter().enumerate() {
            let theirs = share(rank);
            let (base, cand) =
                self.take_share(rank, None, bytes, &theirs, (true, rank != me), accs)?;
            base_evals = base_evals.max(base);
            cand_evals += cand;
        }
        progress(which.len());
        Ok(PassStats {
            forward_equivalents: (base_evals + cand_evals) as f64 / count as f64,
            sent_bytes: msg.len() as u64,
            handed_bytes: 0,
        })
    }

    /// [`Pass::run`] on a pipeline: the candidates are dealt to the replicas by cost; in each
    /// replica the first stage embeds, every stage runs its range of sublayers (balanced for the
    /// replica's candidates, [`Stages::boundaries`]) and hands the streams to the next, and the
    /// last stage runs the LM heads into the accumulators, one micro-batch of candidates at a time
    /// ([`Stages::micro_batches`]), so that the stages overlap; the per-row values of the last
    /// stages and every rank's work are then gathered to every rank.
    fn run_staged(
        &self,
        dist: &dyn Transport,
        stages: &Stages,
        which: &[usize],
        accs: &mut [Accumulator<'_>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<PassStats> {
        let count = self.model.num_sublayers().max(1);
        let costs: Vec<usize> = which
            .iter()
            .map(|&c| {
                let birth = self.candidates[c]
                    .iter()
                    .copied()
                    .filter(|&i| !self.base.is_removed(i))
                    .min()
                    .unwrap_or(count);
                count.saturating_sub(birth)
            })
            .collect();
        let owner = finercut_dist::deal(&costs, stages.replicas);
        let share = |replica: usize| -> Vec<usize> {
            which
                .iter()
                .zip(&owner)
                .filter(|(_, &o)| o == replica)
                .map(|(&c, _)| c)
                .collect()
        };
        let me = dist.rank();
        let (replica, stage) = stages.place(me);
        let last = stages.count - 1;
        let mine = share(replica);
        let rows = self.rows();
        let mut stats = finercut_model::StreamStats::default();
        let mut handed = 0u64;
        if !mine.is_empty() {
            let (n, t) = self.model.check_tokens(self.tokens)?;
            let d = self.model.config().hidden_size;
            let sets: Vec<Vec<usize>> = mine.iter().map(|&c| self.candidates[c].clone()).collect();
            let cuts = stages.boundaries(self.base, &sets);
            // Micro-batches (groups of this replica's candidates) go from stage to stage one by
            // one, so the stages overlap; each is an independent pass of its own streams.
            for group in stages.micro_batches(self.base, &sets, &cuts) {
                let group_sets: Vec<Vec<usize>> = group.iter().map(|&k| sets[k].clone()).collect();
                let mut streams = if stage == 0 {
                    StageStreams::new(self.model, self.tokens, group.len())?
                } else {
                    let bytes = dist.recv_bytes(me - 1)?;
                    decode_streams(&bytes, me - 1, group.len(), rows, d, self.model)?
                };
                let done = self.model.stream_stage(
                    n,
                    t,
                    self.base,
                    &group_sets,
                    cuts[stage]..cuts[stage + 1],
                    &mut streams,
                )?;
                // The base stream runs once in one process, as far as the latest birth needs it:
                // the largest of the groups' base work, not their sum.
                stats.sublayer_evals += done.sublayer_evals - done.base_evals;
                stats.base_evals = stats.base_evals.max(done.base_evals);
                if stage < last {
                    let bytes = encode_streams(&streams)?;
                    drop(streams);
                    dist.send_bytes(me + 1, &bytes)?;
                    handed += bytes.len() as u64;
                } else {
                    let (feed, first_row) = (&self.feed, self.first_row);
                    self.model.stream_stage_heads(
                        self.base,
                        &group_sets,
                        streams,
                        &mut |k, row, logits| {
                            let acc = group
                                .get(k)
                                .and_then(|&j| mine.get(j))
                                .and_then(|&c| accs.get_mut(c))
                                .ok_or_else(|| {
                                    finercut_model::Error::Input(format!(
                                        "stream sent candidate {k} of {}",
                                        group.len()
                                    ))
                                })?;
                            feed.add(acc, first_row + row, logits)
                        },
                    )?;
                }
            }
            stats.sublayer_evals += stats.base_evals;
        }
        // Only a last stage's message carries row values.
        let msg = self.share_message(&stats, &mine, accs, stage == last);
        let all = dist.all_gather_bytes(&msg)?;
        let mut base_per_replica = vec![0usize; stages.replicas];
        let mut cand_evals = 0usize;
        for (rank, bytes) in all.iter().enumerate() {
            let (their_replica, their_stage) = stages.place(rank);
            let theirs = share(their_replica);
            let (base, cand) = self.take_share(
                rank,
                Some((their_replica, their_stage)),
                bytes,
                &theirs,
                (their_stage == last, rank != me),
                accs,
            )?;
            base_per_replica[their_replica] += base;
            cand_evals += cand;
        }
        progress(which.len());
        let base_evals = base_per_replica.into_iter().max().unwrap_or(0);
        Ok(PassStats {
            forward_equivalents: (base_evals + cand_evals) as f64 / count as f64,
            sent_bytes: msg.len() as u64,
            handed_bytes: handed,
        })
    }

    /// Calibration rows of this scorer's group (every token of every sequence).
    fn rows(&self) -> usize {
        self.tokens.iter().map(Vec::len).sum()
    }

    /// A rank's message after streaming its share `mine` of a pass: its base and candidate
    /// sublayer evaluations, then, `with_values`, each candidate's per-row values.
    fn share_message(
        &self,
        stats: &finercut_model::StreamStats,
        mine: &[usize],
        accs: &[Accumulator<'_>],
        with_values: bool,
    ) -> Vec<u8> {
        let rows = self.rows();
        let n = if with_values { mine.len() } else { 0 };
        let mut msg: Vec<u8> = Vec::with_capacity(16 + n * rows * 8);
        msg.extend((stats.base_evals as u64).to_le_bytes());
        msg.extend(((stats.sublayer_evals - stats.base_evals) as u64).to_le_bytes());
        for &c in &mine[..n] {
            let values = &accs[c].row_values()[self.first_row..self.first_row + rows];
            msg.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
        msg
    }

    /// Reads the message `bytes` of `rank` (at `(replica, stage)` on a pipeline), whose share was `theirs`
    /// ([`StreamingScorer::share_message`]): checks its length, adds its per-row values to the
    /// accumulators when `(it carries them, they are to be added)` says so, and returns its base
    /// and candidate sublayer evaluations.
    fn take_share(
        &self,
        rank: usize,
        place: Option<(usize, usize)>,
        bytes: &[u8],
        theirs: &[usize],
        (carries_values, add): (bool, bool),
        accs: &mut [Accumulator<'_>],
    ) -> Result<(usize, usize)> {
        let rows = self.rows();
        let want = 16
            + if carries_values {
                theirs.len() * rows * 8
            } else {
                0
            };
        if bytes.len() != want {
            let who = match place {
                Some((replica, stage)) => {
                    format!("rank {rank} (stage {stage} of replica {replica})")
                }
                None => format!("rank {rank}"),
            };
            return Err(Error::Scorer {
                message: format!(
                    "{who} sent {} bytes for {} candidates of {rows} rows, expected {want}",
                    bytes.len(),
                    theirs.len()
                ),
            });
        }
        let count_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b) as usize
        };
        if carries_values && add {
            let values = finercut_dist::f64s_from_bytes(rank, &bytes[16..])?;
            for (k, &c) in theirs.iter().enumerate() {
                accs[c].add_row_values(self.first_row, &values[k * rows..(k + 1) * rows])?;
            }
        }
        Ok((count_at(0), count_at(8)))
    }

    /// Streams candidates `which` on this rank.
    fn stream(
        &self,
        which: &[usize],
        accs: &mut [Accumulator<'_>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<finercut_model::StreamStats> {
        let sets: Vec<Vec<usize>> = which.iter().map(|&c| self.candidates[c].clone()).collect();
        let (feed, first_row) = (&self.feed, self.first_row);
        let mut done = 0usize;
        Ok(self.model.stream_candidate_tensors(
            self.tokens,
            self.base,
            &sets,
            &mut |k, row, logits| {
                let acc = which.get(k).and_then(|&c| accs.get_mut(c)).ok_or_else(|| {
                    finercut_model::Error::Input(format!(
                        "stream sent candidate {k} of {}",
                        which.len()
                    ))
                })?;
                feed.add(acc, first_row + row, logits)?;
                if acc.is_complete() {
                    done += 1;
                    progress(done);
                }
                Ok(())
            },
        )?)
    }
}

/// The reference procedure: one full forward per candidate.
pub struct NaiveScorer<'m> {
    model: &'m Model,
    tokens: Vec<Vec<u32>>,
    metric: Metric,
    dense: DenseRows,
    preparation: Cost,
}

impl<'m> NaiveScorer<'m> {
    /// A scorer of `metric` on calibration `tokens`; runs the dense model once.
    pub fn new(model: &'m Model, tokens: Vec<Vec<u32>>, metric: Metric) -> Result<Self> {
        model.check_tokens(&tokens)?;
        let (dense, preparation) = dense_rows(model, &tokens, metric)?;
        Ok(NaiveScorer {
            model,
            tokens,
            metric,
            dense,
            preparation,
        })
    }

    /// The cost of the dense forward.
    pub fn preparation(&self) -> &Cost {
        &self.preparation
    }
}

impl Scorer for NaiveScorer<'_> {
    fn num_sublayers(&self) -> usize {
        self.model.num_sublayers()
    }

    fn score(
        &mut self,
        removed: &[usize],
        candidates: &[Vec<usize>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Scored> {
        let n = self.model.num_sublayers().max(1);
        let mut scores = Vec::with_capacity(candidates.len());
        let mut evals = 0usize;
        for (i, c) in candidates.iter().enumerate() {
            let set: BTreeSet<usize> = removed.iter().chain(c).copied().collect();
            evals += n.saturating_sub(set.len());
            let logits = self.model.forward(&self.tokens, &Plan::from_removed(set))?;
            let mut acc = Accumulator::new(self.metric, &self.dense)?;
            match logits.as_slice_f32() {
                Ok(rows) => acc.add_rows(0, rows)?,
                Err(_) => {
                    let rows = logits.to_vec_f32().map_err(finercut_model::Error::from)?;
                    acc.add_rows(0, &rows)?;
                }
            }
            scores.push(acc.finish()?);
            progress(i + 1);
        }
        Ok(Scored::complete(scores, evals as f64 / n as f64))
    }
}

/// Dense block-boundary states from `Model::trace`: the state entering each block's attention
/// sublayer, and the last block's output.
pub struct ModelHiddenStates<'m> {
    model: &'m Model,
    tokens: Vec<Vec<u32>>,
}

impl<'m> ModelHiddenStates<'m> {
    /// A source of states of `model` on calibration `tokens` (sequences of equal length).
    pub fn new(model: &'m Model, tokens: Vec<Vec<u32>>) -> Result<Self> {
        model.check_tokens(&tokens)?;
        Ok(ModelHiddenStates { model, tokens })
    }
}

impl HiddenStates for ModelHiddenStates<'_> {
    fn num_blocks(&self) -> usize {
        self.model.num_sublayers() / 2
    }

    fn block_states(&mut self) -> Result<BlockStates> {
        let (n, t) = self.model.check_tokens(&self.tokens)?;
        let trace = self.model.trace(&self.tokens, &Plan::dense())?;
        let expected = self.model.num_sublayers() + 1;
        if trace.len() != expected {
            return Err(Error::Scorer {
                message: format!("trace gave {} states, expected {expected}", trace.len()),
            });
        }
        let dim = self.model.config().hidden_size;
        let states = trace
            .iter()
            .step_by(2)
            .map(|s| {
                s.to_vec_f32()
                    .map_err(|e| Error::from(finercut_model::Error::from(e)))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = BlockStates {
            num_sequences: n,
            seq_len: t,
            dim,
            states,
            forward_equivalents: 1.0,
        };
        out.validate()?;
        Ok(out)
    }
}
