//! Exact elimination of candidates that can no longer win a greedy step.
//!
//! Every score the greedy search uses is a monotone function of a sum of per-row terms that are
//! never negative (the divergences, and BlockPruner's and SLEB's per-token negative
//! log-likelihood), and rows of different calibration sequences are computed independently
//! (attention mixes rows only inside a sequence). So a candidate's score over the groups of
//! sequences scored so far is a lower bound of its complete score (in floating point too:
//! `finercut_metrics::Accumulator::lower_bound`). Once that bound is strictly larger than the
//! complete score of another candidate, the candidate cannot be the step's minimum, nor tie with
//! it, and is not computed further.
//!
//! [`eliminate`] runs a step group by group:
//! 1. every candidate is scored on the first group (one candidate-batched, prefix-shared pass);
//! 2. the candidate with the smallest bound is scored on every other group: its complete score
//!    is the first upper bound `U` of the step's minimum;
//! 3. on each next group, only candidates whose bound is at most `U` are scored; a candidate that
//!    completes with a smaller score lowers `U`.
//!
//! Which candidates complete is decided from the values alone, so the outcome does not depend
//! on the thread count. The candidates that complete are scored on every row exactly as in the
//! exhaustive search, so the minimum, its score (bit for bit) and the tie rule (lowest unit on an
//! exact tie) are those of the exhaustive search; a candidate that ties with the minimum is never
//! stopped, because stopping needs a bound strictly above a complete score.

use serde::{Deserialize, Serialize};

use crate::Result;

/// Scoring of one step's candidates on groups of calibration rows, driven by [`eliminate`].
pub trait GroupScoring {
    /// Number of candidates of the step.
    fn num_candidates(&self) -> usize;

    /// Number of groups the calibration rows are split into (at least 1).
    fn num_groups(&self) -> usize;

    /// Number of calibration rows of `group`.
    fn group_rows(&self, group: usize) -> usize;

    /// Scores candidates `which` (ascending candidate indices) on `group`. Each listed
    /// candidate has been scored on every group before `group` and on no other.
    fn score_group(&mut self, which: &[usize], group: usize) -> Result<()>;

    /// A lower bound of candidate `c`'s complete score from the groups scored so far.
    fn bound(&self, c: usize) -> f64;

    /// The complete score of candidate `c`; called only once it is scored on every group.
    fn score(&self, c: usize) -> Result<f64>;
}

/// How a step's candidates were scored under elimination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elimination {
    /// Groups the calibration rows were split into.
    pub groups: usize,
    /// Calibration rows of a complete score.
    pub rows: usize,
    /// Candidates scored on every row.
    pub completed: usize,
    /// Candidates stopped right after the first group.
    pub stopped_after_first_group: usize,
    /// Rows scored, summed over the candidates (`rows × candidates` without elimination).
    pub rows_scored: usize,
}

/// What [`eliminate`] found for each candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Complete scores, or lower bounds where `stopped_after_rows` is set.
    pub scores: Vec<f64>,
    /// Per candidate: `None` when it was scored on every row, `Some(rows)` when it was stopped
    /// after `rows` calibration rows.
    pub stopped_after_rows: Vec<Option<usize>>,
    /// Totals of the step.
    pub stats: Elimination,
}

/// Key for picking minima: NaN counts as +∞ (a NaN candidate is never preferred).
fn key(x: f64) -> f64 {
    if x.is_nan() {
        f64::INFINITY
    } else {
        x
    }
}

/// Runs one step with elimination (see the module docs). Calls `progress(done)` as candidates
/// are completed or stopped.
pub fn eliminate(
    s: &mut dyn GroupScoring,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Outcome> {
    let n = s.num_candidates();
    let groups = s.num_groups().max(1);
    let rows: usize = (0..groups).map(|g| s.group_rows(g)).sum();
    // Groups scored per candidate.
    let mut done_groups = vec![0usize; n];
    let mut stopped: Vec<Option<usize>> = vec![None; n];
    let mut finished = 0usize;
    let mut rows_scored = 0usize;
    if n == 0 {
        return Ok(Outcome {
            scores: Vec::new(),
            stopped_after_rows: Vec::new(),
            stats: Elimination {
                groups,
                rows,
                ..Elimination::default()
            },
        });
    }

    let mut score_group =
        |s: &mut dyn GroupScoring, which: &[usize], g: usize, done: &mut [usize]| -> Result<()> {
            if which.is_empty() {
                return Ok(());
            }
            s.score_group(which, g)?;
            for &c in which {
                done[c] += 1;
            }
            rows_scored += which.len() * s.group_rows(g);
            Ok(())
        };

    // 1. Every candidate on the first group.
    let all: Vec<usize> = (0..n).collect();
    score_group(s, &all, 0, &mut done_groups)?;
    let mut stopped_after_first = 0usize;
    if groups > 1 {
        // 2. The most promising candidate on every group: the first upper bound.
        let first = (0..n)
            .min_by(|&a, &b| key(s.bound(a)).total_cmp(&key(s.bound(b))).then(a.cmp(&b)))
            .unwrap_or(0);
        for g in 1..groups {
            score_group(s, &[first], g, &mut done_groups)?;
        }
        let mut upper = s.score(first)?;
        finished += 1;
        progress(finished);

        // 3. The others, group by group, while they can still reach the bound.
        let mut live: Vec<usize> = (0..n).filter(|&c| c != first).collect();
        for g in 1..groups {
            // Stop every candidate whose bound is strictly above the best complete score.
            let mut keep = Vec::with_capacity(live.len());
            for &c in &live {
                if s.bound(c) > upper {
                    stopped[c] = Some((0..done_groups[c]).map(|k| s.group_rows(k)).sum());
                    if g == 1 {
                        stopped_after_first += 1;
                    }
                    finished += 1;
                    progress(finished);
                } else {
                    keep.push(c);
                }
            }
            live = keep;
            if live.is_empty() {
                break;
            }
            score_group(s, &live, g, &mut done_groups)?;
        }
        // Whoever is still live has been scored on every group.
        for &c in &live {
            let score = s.score(c)?;
            if key(score) < key(upper) {
                upper = score;
            }
            finished += 1;
            progress(finished);
        }
    } else {
        finished = n;
        progress(finished);
    }

    let scores = (0..n)
        .map(|c| match stopped[c] {
            Some(_) => Ok(s.bound(c)),
            None => s.score(c),
        })
        .collect::<Result<Vec<f64>>>()?;
    let completed = stopped.iter().filter(|x| x.is_none()).count();
    Ok(Outcome {
        scores,
        stopped_after_rows: stopped,
        stats: Elimination {
            groups,
            rows,
            completed,
            stopped_after_first_group: stopped_after_first,
            rows_scored,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Candidates with fixed non-negative per-group sums.
    struct Table {
        sums: Vec<Vec<f64>>,
        done: Vec<usize>,
        calls: Vec<(Vec<usize>, usize)>,
    }

    impl Table {
        fn new(sums: Vec<Vec<f64>>) -> Self {
            let n = sums.len();
            Table {
                sums,
                done: vec![0; n],
                calls: Vec::new(),
            }
        }
    }

    impl GroupScoring for Table {
        fn num_candidates(&self) -> usize {
            self.sums.len()
        }
        fn num_groups(&self) -> usize {
            self.sums[0].len()
        }
        fn group_rows(&self, _group: usize) -> usize {
            10
        }
        fn score_group(&mut self, which: &[usize], group: usize) -> Result<()> {
            for &c in which {
                assert_eq!(self.done[c], group, "candidate {c} skipped a group");
                self.done[c] += 1;
            }
            self.calls.push((which.to_vec(), group));
            Ok(())
        }
        fn bound(&self, c: usize) -> f64 {
            self.sums[c][..self.done[c]].iter().sum()
        }
        fn score(&self, c: usize) -> Result<f64> {
            assert_eq!(self.done[c], self.sums[c].len());
            Ok(self.bound(c))
        }
    }

    #[test]
    fn a_misleading_first_group_still_gives_the_true_winner() {
        // Candidate 0 looks best on the first group but loses overall; candidate 2 wins.
        let mut t = Table::new(vec![
            vec![0.1, 5.0, 5.0],
            vec![9.0, 0.0, 0.0],
            vec![1.0, 1.0, 1.0],
            vec![50.0, 0.0, 0.0],
        ]);
        let out = eliminate(&mut t, &mut |_| {}).unwrap();
        let best = (0..4)
            .filter(|&c| out.stopped_after_rows[c].is_none())
            .min_by(|&a, &b| out.scores[a].total_cmp(&out.scores[b]))
            .unwrap();
        assert_eq!(best, 2);
        assert_eq!(out.scores[2], 3.0);
        assert_eq!(out.scores[0], 10.1);
        // The misleading candidate sets a loose bound (10.1): only candidate 3 is stopped.
        assert_eq!(out.stopped_after_rows, vec![None, None, None, Some(10)]);
        assert_eq!(out.scores[3], 50.0);
        assert_eq!(out.stats.stopped_after_first_group, 1);
        assert_eq!(out.stats.completed, 3);
        assert_eq!(out.stats.rows_scored, 4 * 10 + 2 * 10 + 2 * 10 + 2 * 10);
        assert_eq!(t.calls[0], (vec![0, 1, 2, 3], 0));
        assert_eq!(t.calls[1], (vec![0], 1));
    }

    #[test]
    fn ties_are_never_stopped() {
        let mut t = Table::new(vec![vec![1.0, 1.0], vec![2.0, 0.0], vec![2.5, 0.0]]);
        let out = eliminate(&mut t, &mut |_| {}).unwrap();
        assert_eq!(out.stopped_after_rows, vec![None, None, Some(10)]);
        assert_eq!(out.scores, vec![2.0, 2.0, 2.5]);
    }

    #[test]
    fn one_group_scores_everything_once() {
        let mut t = Table::new(vec![vec![3.0], vec![1.0], vec![2.0]]);
        let mut seen = 0;
        let out = eliminate(&mut t, &mut |d| seen = d).unwrap();
        assert_eq!(out.scores, vec![3.0, 1.0, 2.0]);
        assert_eq!(out.stopped_after_rows, vec![None; 3]);
        assert_eq!(seen, 3);
        assert_eq!(t.calls, vec![(vec![0, 1, 2], 0)]);
    }

    #[test]
    fn progress_counts_every_candidate() {
        let mut t = Table::new(vec![
            vec![0.0, 1.0, 1.0],
            vec![5.0, 0.0, 0.0],
            vec![0.5, 0.5, 0.5],
        ]);
        let mut last = 0;
        eliminate(&mut t, &mut |d| {
            assert!(d > last);
            last = d;
        })
        .unwrap();
        assert_eq!(last, 3);
    }
}
