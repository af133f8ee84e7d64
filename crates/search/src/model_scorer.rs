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

use std::collections::BTreeSet;
use std::time::Instant;

use finercut_metrics::{next_token_targets, Accumulator, DenseRows, Metric};
use finercut_model::{Model, Plan};

use crate::{BlockStates, Cost, Error, HiddenStates, Result, Scored, Scorer};

/// The model's plan removing `removed` (sublayer indices).
pub fn model_plan(removed: impl IntoIterator<Item = usize>) -> Plan {
    Plan::from_removed(removed)
}

/// The dense rows `metric` needs: the dense model's logits (one forward) unless the metric is
/// perplexity, plus next-token targets for perplexity.
fn dense_rows(model: &Model, tokens: &[Vec<u32>], metric: Metric) -> Result<(DenseRows, Cost)> {
    let vocab = model.config().vocab_size;
    let t0 = Instant::now();
    let mut rows = if metric.needs_dense_logits() {
        let logits = model.forward(tokens, &Plan::dense())?;
        let logits = logits.to_vec_f32().map_err(finercut_model::Error::from)?;
        DenseRows::new(logits, vocab)?
    } else {
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
        Cost {
            forward_equivalents: fe,
            wall_s: t0.elapsed().as_secs_f64(),
        },
    ))
}

/// What both logit scorers hold: the model, the checked calibration tokens, the metric and the
/// dense rows it compares against.
struct Calibrated<'m> {
    model: &'m Model,
    tokens: Vec<Vec<u32>>,
    metric: Metric,
    dense: DenseRows,
    preparation: Cost,
}

impl<'m> Calibrated<'m> {
    /// Checks `tokens` (sequences of equal length, ids in the vocabulary) and runs the dense
    /// model once (except for perplexity, which needs none).
    fn new(model: &'m Model, tokens: Vec<Vec<u32>>, metric: Metric) -> Result<Self> {
        model.check_tokens(&tokens)?;
        let (dense, preparation) = dense_rows(model, &tokens, metric)?;
        Ok(Calibrated {
            model,
            tokens,
            metric,
            dense,
            preparation,
        })
    }
}

/// Candidate-batched streaming scorer (`docs/DESIGN.md`, The cost of the search): exact, and
/// about half a forward per candidate.
pub struct StreamingScorer<'m>(Calibrated<'m>);

impl<'m> StreamingScorer<'m> {
    /// A scorer of `metric` on calibration `tokens` (sequences of equal length); runs the dense
    /// model once (except for perplexity).
    pub fn new(model: &'m Model, tokens: Vec<Vec<u32>>, metric: Metric) -> Result<Self> {
        Ok(StreamingScorer(Calibrated::new(model, tokens, metric)?))
    }

    /// The cost of the dense forward (record it as the result's preparation).
    pub fn preparation(&self) -> &Cost {
        &self.0.preparation
    }

    /// The cached dense rows.
    pub fn dense(&self) -> &DenseRows {
        &self.0.dense
    }
}

impl Scorer for StreamingScorer<'_> {
    fn num_sublayers(&self) -> usize {
        self.0.model.num_sublayers()
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
            .map(|_| Accumulator::new(self.0.metric, &self.0.dense))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut done = 0usize;
        let stats = self.0.model.stream_candidates(
            &self.0.tokens,
            &base,
            candidates,
            &mut |c, first_row, rows| {
                let acc = accs.get_mut(c).ok_or_else(|| {
                    finercut_model::Error::Input(format!(
                        "stream sent candidate {c} of {}",
                        candidates.len()
                    ))
                })?;
                acc.add_rows(first_row, rows)
                    .map_err(finercut_model::Error::sink)?;
                if acc.is_complete() {
                    done += 1;
                    progress(done);
                }
                Ok(())
            },
        )?;
        let scores = accs
            .iter()
            .map(Accumulator::finish)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Scored {
            scores,
            forward_equivalents: stats.forward_equivalents,
        })
    }
}

/// The reference procedure: one full forward per candidate.
pub struct NaiveScorer<'m>(Calibrated<'m>);

impl<'m> NaiveScorer<'m> {
    /// A scorer of `metric` on calibration `tokens`; runs the dense model once.
    pub fn new(model: &'m Model, tokens: Vec<Vec<u32>>, metric: Metric) -> Result<Self> {
        Ok(NaiveScorer(Calibrated::new(model, tokens, metric)?))
    }

    /// The cost of the dense forward.
    pub fn preparation(&self) -> &Cost {
        &self.0.preparation
    }
}

impl Scorer for NaiveScorer<'_> {
    fn num_sublayers(&self) -> usize {
        self.0.model.num_sublayers()
    }

    fn score(
        &mut self,
        removed: &[usize],
        candidates: &[Vec<usize>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Scored> {
        let n = self.0.model.num_sublayers().max(1);
        let mut scores = Vec::with_capacity(candidates.len());
        let mut evals = 0usize;
        for (i, c) in candidates.iter().enumerate() {
            let set: BTreeSet<usize> = removed.iter().chain(c).copied().collect();
            evals += n.saturating_sub(set.len());
            let logits = self
                .0
                .model
                .forward(&self.0.tokens, &Plan::from_removed(set))?;
            let mut acc = Accumulator::new(self.0.metric, &self.0.dense)?;
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
        Ok(Scored {
            scores,
            forward_equivalents: evals as f64 / n as f64,
        })
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
