//! [`Scorer`] and [`HiddenStates`] backed by a `finercut_model::Model`: the only module of this
//! crate that touches the model.
//!
//! - [`StreamingScorer`]: one candidate-batched streaming pass per step
//!   (`Model::stream_candidates`, design.md §2); logits arrive in chunks of rows and go straight
//!   into one [`Accumulator`] per candidate, so no candidate's logits are ever materialised.
//! - [`NaiveScorer`]: the reference procedure, one full `Model::forward` per candidate; slow,
//!   kept to check the streaming scorer (same removal order and scores).
//! - [`ModelHiddenStates`]: dense block-boundary states from `Model::trace` for ShortGPT and
//!   DeeperLayers.

use std::collections::BTreeSet;
use std::time::Instant;

use finercut_metrics::{next_token_targets, Accumulator, DenseRows, Metric};
use finercut_model::{DenseLogits, Model, Plan, RowMetric};

use crate::{BlockStates, Cost, Error, HiddenStates, Result, Scored, Scorer};

/// The model's plan removing `removed` (sublayer indices).
pub fn model_plan(removed: impl IntoIterator<Item = usize>) -> Plan {
    Plan::from_removed(removed)
}

/// Checks calibration sequences: at least one, all of the same non-zero length.
fn check_tokens(tokens: &[Vec<u32>]) -> Result<(usize, usize)> {
    let t = tokens.first().map_or(0, Vec::len);
    if t == 0 || tokens.iter().any(|s| s.len() != t) {
        return Err(Error::InvalidSetting {
            setting: "calibration",
            message: format!(
                "need at least one sequence and all of the same non-zero length; got lengths {:?}",
                tokens.iter().map(Vec::len).take(8).collect::<Vec<_>>()
            ),
        });
    }
    Ok((tokens.len(), t))
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

/// Candidate-batched streaming scorer (design.md §2): exact, and about half a forward per
/// candidate.
///
/// On a GPU the logits never leave the device: each chunk of rows is reduced there by the
/// divergence kernels and only one value per row comes back.
pub struct StreamingScorer<'m> {
    model: &'m Model,
    tokens: Vec<Vec<u32>>,
    metric: Metric,
    dense: DenseRows,
    /// The dense logits on the model's device, when it is not the CPU.
    device_dense: Option<DenseLogits>,
    preparation: Cost,
}

impl<'m> StreamingScorer<'m> {
    /// A scorer of `metric` on calibration `tokens` (sequences of equal length); runs the dense
    /// model once (except for perplexity).
    pub fn new(model: &'m Model, tokens: Vec<Vec<u32>>, metric: Metric) -> Result<Self> {
        check_tokens(&tokens)?;
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
        })
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
        let mut done = 0usize;
        if let Some(dense_dev) = &self.device_dense {
            let kernel = row_metric(self.metric);
            let stats = self.model.stream_candidate_tensors(
                &self.tokens,
                &base,
                candidates,
                &mut |c, first_row, logits| {
                    let acc = accs.get_mut(c).ok_or_else(|| {
                        finercut_model::Error::Input(format!(
                            "stream sent candidate {c} of {}",
                            candidates.len()
                        ))
                    })?;
                    let values = logits.row_divergences(dense_dev, first_row, kernel)?;
                    acc.add_row_values(first_row, &values)
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
            return Ok(Scored {
                scores,
                forward_equivalents: stats.forward_equivalents,
            });
        }
        let stats = self.model.stream_candidates(
            &self.tokens,
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
        check_tokens(&tokens)?;
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
        check_tokens(&tokens)?;
        Ok(ModelHiddenStates { model, tokens })
    }
}

impl HiddenStates for ModelHiddenStates<'_> {
    fn num_blocks(&self) -> usize {
        self.model.num_sublayers() / 2
    }

    fn block_states(&mut self) -> Result<BlockStates> {
        let (n, t) = check_tokens(&self.tokens)?;
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
