//! The small interfaces the search runs over: [`Scorer`] (score candidate removals),
//! [`HiddenStates`] (dense block-boundary states for ShortGPT and DeeperLayers) and
//! [`Observer`] (progress). None of them knows about tensors.

use std::collections::BTreeSet;

use crate::{Elimination, Error, Result, Step};

/// Scores of one batch of candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// One score per candidate, in the order given; lower is better. A lower bound of the
    /// complete score where `stopped_after_rows` says the candidate was stopped.
    pub scores: Vec<f64>,
    /// Per candidate: `None` when its score is complete, `Some(rows)` when it was stopped after
    /// `rows` calibration rows because it could no longer be the best ([`crate::eliminate()`]).
    /// Empty when every score is complete.
    pub stopped_after_rows: Vec<Option<usize>>,
    /// Work done, in forward-equivalents (sublayer evaluations ÷ 2L).
    pub forward_equivalents: f64,
    /// How elimination went, where it was used.
    pub elimination: Option<Elimination>,
}

impl Scored {
    /// Complete scores of every candidate.
    pub fn complete(scores: Vec<f64>, forward_equivalents: f64) -> Self {
        Scored {
            scores,
            stopped_after_rows: Vec::new(),
            forward_equivalents,
            elimination: None,
        }
    }

    /// Where candidate `i` was stopped (`None`: its score is complete).
    pub fn stopped(&self, i: usize) -> Option<usize> {
        self.stopped_after_rows.get(i).copied().flatten()
    }
}

/// Scores candidate removals: the model with `removed ∪ candidate` taken out, against the dense
/// model (or by perplexity).
pub trait Scorer {
    /// Number of sublayers of the model, 2L.
    fn num_sublayers(&self) -> usize;

    /// Scores each candidate (a set of sublayer indices removed in addition to `removed`, which
    /// lists the sublayers already removed, in removal order). Calls `progress(done)` as
    /// candidates finish (`done` counts finished candidates, up to `candidates.len()`).
    fn score(
        &mut self,
        removed: &[usize],
        candidates: &[Vec<usize>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Scored>;

    /// Like [`Scorer::score`], but only the best candidate needs its complete score: a candidate
    /// may be stopped once it provably cannot be the best (its lower bound is strictly above
    /// another candidate's complete score; [`crate::eliminate()`]). The best candidate, its score
    /// and every candidate that ties with it are complete and equal, bit for bit, to what
    /// [`Scorer::score`] gives. The default scores every candidate completely.
    fn score_eliminating(
        &mut self,
        removed: &[usize],
        candidates: &[Vec<usize>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Scored> {
        self.score(removed, candidates, progress)
    }
}

/// A [`Scorer`] from a function of the full removed set; each evaluation costs one forward.
/// For tests, examples and toy objectives.
pub struct FnScorer<F> {
    num_sublayers: usize,
    f: F,
}

impl<F: FnMut(&BTreeSet<usize>) -> f64> FnScorer<F> {
    /// A scorer over `num_sublayers` sublayers scoring a removed set with `f`.
    pub fn new(num_sublayers: usize, f: F) -> Self {
        FnScorer { num_sublayers, f }
    }
}

impl<F: FnMut(&BTreeSet<usize>) -> f64> Scorer for FnScorer<F> {
    fn num_sublayers(&self) -> usize {
        self.num_sublayers
    }

    fn score(
        &mut self,
        removed: &[usize],
        candidates: &[Vec<usize>],
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Scored> {
        let mut scores = Vec::with_capacity(candidates.len());
        for (i, c) in candidates.iter().enumerate() {
            let set: BTreeSet<usize> = removed.iter().chain(c).copied().collect();
            scores.push((self.f)(&set));
            progress(i + 1);
        }
        Ok(Scored::complete(scores, candidates.len() as f64))
    }
}

/// Hidden states of the dense model at block boundaries, for the ShortGPT and DeeperLayers
/// baselines.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockStates {
    /// Number of calibration sequences.
    pub num_sequences: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Hidden size.
    pub dim: usize,
    /// `L + 1` states, each `[num_sequences, seq_len, dim]` row-major: `states[b]` enters block
    /// `b`; `states[L]` leaves the last block (before the final norm).
    pub states: Vec<Vec<f32>>,
    /// Work spent computing them, in forward-equivalents.
    pub forward_equivalents: f64,
}

impl BlockStates {
    /// Number of blocks, L.
    pub fn num_blocks(&self) -> usize {
        self.states.len().saturating_sub(1)
    }

    /// Checks the shapes.
    pub fn validate(&self) -> Result<()> {
        let n = self.num_sequences * self.seq_len * self.dim;
        if self.states.len() < 2 || n == 0 {
            return Err(Error::Scorer {
                message: format!(
                    "block states: {} states of {}×{}×{}; need at least 2 non-empty",
                    self.states.len(),
                    self.num_sequences,
                    self.seq_len,
                    self.dim
                ),
            });
        }
        if let Some(b) = self.states.iter().position(|s| s.len() != n) {
            return Err(Error::Scorer {
                message: format!(
                    "block state {b} has {} values, expected {n}",
                    self.states[b].len()
                ),
            });
        }
        Ok(())
    }
}

/// A source of dense block-boundary hidden states.
pub trait HiddenStates {
    /// Number of blocks, L.
    fn num_blocks(&self) -> usize;

    /// The dense model's states at every block boundary on the calibration set.
    fn block_states(&mut self) -> Result<BlockStates>;
}

/// Progress callbacks of a run; every method has a default that does nothing.
/// `Send`, because streaming scorers report progress from inside the model's streaming pass.
/// Rates and ETAs are the caller's to compute from these.
pub trait Observer: Send {
    /// Step `step` (0-based) starts scoring `candidates` candidates.
    fn step_started(&mut self, step: usize, candidates: usize) {
        let _ = (step, candidates);
    }

    /// `done` of `total` candidates of step `step` are scored.
    fn candidates_scored(&mut self, step: usize, done: usize, total: usize) {
        let _ = (step, done, total);
    }

    /// Step `step` finished (and was checkpointed, where a checkpoint path was given).
    fn step_finished(&mut self, step: usize, record: &Step) {
        let _ = (step, record);
    }
}

/// An observer that ignores everything.
impl Observer for () {}
