//! Running a method: greedy search (FinerCut, SLEB, BlockPruner), one-shot FinerCut, the
//! hidden-state baselines (ShortGPT, DeeperLayers) and the seeded random order.

use std::path::Path;
use std::time::Instant;

use finercut_metrics::similarity;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::result::{Candidate, Cost, Step, Window, RUNNERS_UP};
use crate::settings::ratio_to_sublayers;
use crate::{
    BlockStates, Error, Family, HiddenStates, Method, Observer, Result, Scorer, SearchResult,
    TokenSelection, Unit,
};

/// What a method needs to run.
pub enum Inputs<'a> {
    /// For greedy and one-shot methods.
    Scorer(&'a mut dyn Scorer),
    /// For ShortGPT and DeeperLayers.
    HiddenStates(&'a mut dyn HiddenStates),
    /// For the random method.
    Nothing,
}

/// Runs (or continues) the method of `result.settings` until its stop, filling `result`.
///
/// With `checkpoint`, the result is written there atomically after every greedy step and at the
/// end; a run interrupted at any point continues from that file
/// ([`SearchResult::resume`]) to the same result.
pub fn run(
    result: &mut SearchResult,
    inputs: Inputs<'_>,
    checkpoint: Option<&Path>,
    observer: &mut dyn Observer,
) -> Result<()> {
    result.settings.validate()?;
    let method = result.settings.method;
    match (method.family(), inputs) {
        (Family::Greedy, Inputs::Scorer(s)) => greedy(result, s, checkpoint, observer)?,
        (Family::OneShot, Inputs::Scorer(s)) if !result.complete => one_shot(result, s, observer)?,
        (Family::HiddenStates, Inputs::HiddenStates(h)) if !result.complete => {
            if h.num_blocks() != result.num_blocks {
                return Err(Error::ModelMismatch {
                    expected: result.num_sublayers(),
                    got: 2 * h.num_blocks(),
                });
            }
            let t0 = Instant::now();
            let states = h.block_states()?;
            let cost = Cost {
                forward_equivalents: states.forward_equivalents,
                wall_s: t0.elapsed().as_secs_f64(),
            };
            if method == Method::Shortgpt {
                shortgpt(result, &states)?;
            } else {
                deeper_layers(result, &states)?;
            }
            result.preparation = cost;
        }
        (Family::Random, Inputs::Nothing) if !result.complete => random(result),
        (_, Inputs::Scorer(_) | Inputs::HiddenStates(_) | Inputs::Nothing) if result.complete => {}
        (family, _) => {
            return Err(Error::InvalidSetting {
                setting: "method",
                message: format!("method {method} ({family:?}) was given the wrong kind of inputs"),
            })
        }
    }
    result.complete = true;
    if let Some(path) = checkpoint {
        result.save(path)?;
    }
    Ok(())
}

/// FinerCut's front exclusion for `x` on `num_sublayers = 2L` sublayers, as the reference code
/// computes it: `(blocks, until)`, the first `int(2L·x/2) + 1` blocks are held out while fewer
/// than `int(2L·x) + 1` sublayers are removed.
pub fn front_exclusion(num_sublayers: usize, x: f64) -> (usize, usize) {
    let blocks = (num_sublayers as f64 * x / 2.0).floor() as usize + 1;
    let until = ratio_to_sublayers(x, num_sublayers) + 1;
    (blocks, until)
}

/// Units a greedy method may ever remove (SLEB: never the first or last block).
fn allowed_units(result: &SearchResult) -> Vec<Unit> {
    let l = result.num_blocks;
    let units = result.settings.level.units(l);
    if result.settings.method == Method::Sleb {
        units
            .into_iter()
            .filter(|u| u.block() != 0 && u.block() + 1 != l)
            .collect()
    } else {
        units
    }
}

/// Indices of `scores` best first: ascending score, NaN last, ties to the lowest unit index.
fn ranking(units: &[Unit], scores: &[f64]) -> Vec<usize> {
    let key = |x: f64| if x.is_nan() { f64::INFINITY } else { x + 0.0 };
    let mut idx: Vec<usize> = (0..units.len()).collect();
    idx.sort_by(|&a, &b| {
        key(scores[a])
            .total_cmp(&key(scores[b]))
            .then(units[a].index().cmp(&units[b].index()))
    });
    idx
}

/// The first [`RUNNERS_UP`] of `ranked`, each marked as a lower bound where `stopped(i)` says
/// candidate `i` was stopped early.
fn runners_up(
    units: &[Unit],
    scores: &[f64],
    stopped: &dyn Fn(usize) -> Option<usize>,
    ranked: &[usize],
) -> Vec<Candidate> {
    ranked
        .iter()
        .take(RUNNERS_UP)
        .map(|&i| Candidate {
            unit: units[i],
            score: scores[i],
            stopped_after_rows: stopped(i),
        })
        .collect()
}

/// Checks that the scorer kept its contract, and that no score is NaN or infinite: a step is
/// never decided on a broken score (`step` counts from 1 in the message).
fn check_scores(scored: &crate::Scored, units: &[Unit], step: usize) -> Result<()> {
    let n = units.len();
    if scored.scores.len() != n {
        return Err(Error::Scorer {
            message: format!("{} scores for {n} candidates", scored.scores.len()),
        });
    }
    if !scored.stopped_after_rows.is_empty() && scored.stopped_after_rows.len() != n {
        return Err(Error::Scorer {
            message: format!(
                "{} stop marks for {n} candidates",
                scored.stopped_after_rows.len()
            ),
        });
    }
    let bad: Vec<String> = units
        .iter()
        .zip(&scored.scores)
        .filter(|(_, s)| !s.is_finite())
        .map(|(u, s)| format!("{u} ({s})"))
        .collect();
    if !bad.is_empty() {
        return Err(Error::NonFiniteScores {
            step: step + 1,
            candidates: bad.join(", "),
        });
    }
    Ok(())
}

fn greedy(
    result: &mut SearchResult,
    scorer: &mut dyn Scorer,
    checkpoint: Option<&Path>,
    observer: &mut dyn Observer,
) -> Result<()> {
    let n = result.num_sublayers();
    if scorer.num_sublayers() != n {
        return Err(Error::ModelMismatch {
            expected: n,
            got: scorer.num_sublayers(),
        });
    }
    let target = result.settings.stop.target_sublayers(n);
    let exclusion = result
        .settings
        .front_exclusion
        .map(|x| front_exclusion(n, x));
    let allowed = allowed_units(result);
    loop {
        let removed = result.removed_sublayers();
        let count = removed.len();
        let remaining: Vec<Unit> = allowed
            .iter()
            .copied()
            .filter(|u| !result.steps.iter().any(|s| s.unit == *u))
            .collect();
        result.exhausted = remaining.is_empty();
        let fitting: Vec<Unit> = remaining
            .into_iter()
            .filter(|u| count + u.sublayers().len() <= target)
            .collect();
        let mut candidates: Vec<Unit> = match exclusion {
            Some((blocks, until)) if count < until => fitting
                .iter()
                .copied()
                .filter(|u| u.block() >= blocks)
                .collect(),
            _ => fitting.clone(),
        };
        if candidates.is_empty() {
            // The exclusion alone would stop the search (tiny models, large x): lift it.
            candidates = fitting;
        }
        if candidates.is_empty() {
            return Ok(());
        }
        let step_index = result.steps.len();
        let total = candidates.len();
        observer.step_started(step_index, total);
        let t0 = Instant::now();
        let sets: Vec<Vec<usize>> = candidates.iter().map(|u| u.sublayers()).collect();
        let mut progress = |done| observer.candidates_scored(step_index, done, total);
        let scored = if result.settings.exhaustive {
            scorer.score(&removed, &sets, &mut progress)?
        } else {
            scorer.score_eliminating(&removed, &sets, &mut progress)?
        };
        check_scores(&scored, &candidates, step_index)?;
        let ranked = ranking(&candidates, &scored.scores);
        let best = ranked[0];
        if let Some(rows) = scored.stopped(best) {
            return Err(Error::Scorer {
                message: format!(
                    "step {}: the best candidate {} was stopped after {rows} rows",
                    step_index + 1,
                    candidates[best]
                ),
            });
        }
        let step = Step {
            unit: candidates[best],
            score: scored.scores[best],
            runners_up: runners_up(
                &candidates,
                &scored.scores,
                &|i| scored.stopped(i),
                &ranked[1..],
            ),
            candidates: total,
            forward_equivalents: scored.forward_equivalents,
            wall_s: t0.elapsed().as_secs_f64(),
            elimination: scored.elimination.clone(),
        };
        result.steps.push(step);
        result.complete = false;
        if let Some(path) = checkpoint {
            result.save(path)?;
        }
        observer.step_finished(step_index, &result.steps[step_index]);
    }
}

/// Steps of a removal order computed in one go: step `k` removes `ranked[k]`, with the next
/// units of the ranking as its runners-up; the whole cost goes on the first step.
fn order_steps(units: &[Unit], scores: &[f64], cost: &Cost) -> Vec<Step> {
    let ranked = ranking(units, scores);
    ranked
        .iter()
        .enumerate()
        .map(|(k, &i)| Step {
            unit: units[i],
            score: scores[i],
            runners_up: runners_up(units, scores, &|_| None, &ranked[k + 1..]),
            candidates: if k == 0 { units.len() } else { 0 },
            forward_equivalents: if k == 0 {
                cost.forward_equivalents
            } else {
                0.0
            },
            wall_s: if k == 0 { cost.wall_s } else { 0.0 },
            elimination: None,
        })
        .collect()
}

/// One-shot FinerCut: every unit of the level scored once against the dense model. The whole
/// order is recorded whatever the stop, since it costs nothing more.
fn one_shot(
    result: &mut SearchResult,
    scorer: &mut dyn Scorer,
    observer: &mut dyn Observer,
) -> Result<()> {
    let n = result.num_sublayers();
    if scorer.num_sublayers() != n {
        return Err(Error::ModelMismatch {
            expected: n,
            got: scorer.num_sublayers(),
        });
    }
    let units = result.settings.level.units(result.num_blocks);
    let total = units.len();
    observer.step_started(0, total);
    let t0 = Instant::now();
    let sets: Vec<Vec<usize>> = units.iter().map(|u| u.sublayers()).collect();
    let scored = scorer.score(&[], &sets, &mut |done| {
        observer.candidates_scored(0, done, total)
    })?;
    check_scores(&scored, &units, 0)?;
    let cost = Cost {
        forward_equivalents: scored.forward_equivalents,
        wall_s: t0.elapsed().as_secs_f64(),
    };
    result.steps = order_steps(&units, &scored.scores, &cost);
    result.exhausted = true;
    if let Some(first) = result.steps.first() {
        observer.step_finished(0, first);
    }
    Ok(())
}

/// ShortGPT: Block Influence `1 − mean_tokens cos(h_b, h_{b+1})` of every block, removed in
/// ascending order.
fn shortgpt(result: &mut SearchResult, states: &BlockStates) -> Result<()> {
    states.validate()?;
    let bi: Vec<f64> = (0..states.num_blocks())
        .map(|b| similarity::block_influence(&states.states[b], &states.states[b + 1], states.dim))
        .collect::<std::result::Result<_, _>>()?;
    let units = crate::Level::Block.units(states.num_blocks());
    result.steps = order_steps(&units, &bi, &Cost::default());
    result.exhausted = true;
    Ok(())
}

/// Rows of `[n, t, dim]` states that DeeperLayers compares: the last position of each sequence,
/// or every position.
fn selected_rows(states: &BlockStates, sel: TokenSelection, b: usize) -> Vec<f32> {
    let (t, d) = (states.seq_len, states.dim);
    match sel {
        TokenSelection::All => states.states[b].clone(),
        TokenSelection::Last => (0..states.num_sequences)
            .flat_map(|s| {
                states.states[b][(s * t + t - 1) * d..(s * t + t) * d]
                    .iter()
                    .copied()
            })
            .collect(),
    }
}

/// DeeperLayers: for each `n = 1..=L`, the window `start..start+n` minimising the mean angular
/// distance `(1/π)·acos(cos(h_start, h_{start+n}))` (ties: lowest start).
fn deeper_layers(result: &mut SearchResult, states: &BlockStates) -> Result<()> {
    states.validate()?;
    let l = states.num_blocks();
    let sel = result.settings.token_selection;
    let rows: Vec<Vec<f32>> = (0..=l).map(|b| selected_rows(states, sel, b)).collect();
    let mut windows = Vec::with_capacity(l);
    for n in 1..=l {
        let mut best: Option<(usize, f64)> = None;
        for start in 0..=l - n {
            let d =
                similarity::mean_row_angular_distance(&rows[start], &rows[start + n], states.dim)?;
            let d_key = if d.is_nan() { f64::INFINITY } else { d };
            if best.is_none_or(|(_, b)| d_key < b) {
                best = Some((start, d_key));
            }
        }
        if let Some((start, _)) = best {
            let distance =
                similarity::mean_row_angular_distance(&rows[start], &rows[start + n], states.dim)?;
            windows.push(Window {
                blocks: n,
                start,
                distance,
            });
        }
    }
    result.steps.clear();
    result.windows = windows;
    result.exhausted = true;
    Ok(())
}

/// Random order: every unit of the level gets a uniform key from ChaCha8 seeded with the
/// recorded seed; units are removed in ascending key order (the key is the step's score).
fn random(result: &mut SearchResult) {
    let seed = result.settings.seed.unwrap_or(0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let units = result.settings.level.units(result.num_blocks);
    let keys: Vec<f64> = units.iter().map(|_| rng.gen::<f64>()).collect();
    result.steps = order_steps(&units, &keys, &Cost::default());
    result.exhausted = true;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn front_exclusion_matches_reference_formula() {
        // 30 blocks, x = 0.4: int(60·0.4/2)+1 = 13 blocks until int(24)+1 = 25 removed.
        assert_eq!(front_exclusion(60, 0.4), (13, 25));
        // x = 0 still holds block 0 out of the first step.
        assert_eq!(front_exclusion(60, 0.0), (1, 1));
        // 32 blocks, x = 0.4: int(25.6/2)+1 = 13, int(25.6)+1 = 26.
        assert_eq!(front_exclusion(64, 0.4), (13, 26));
    }

    #[test]
    fn ranking_breaks_ties_low_and_puts_nan_last() {
        let units = [
            Unit::Sublayer(3),
            Unit::Sublayer(1),
            Unit::Sublayer(2),
            Unit::Sublayer(0),
        ];
        let scores = [0.5, 0.5, f64::NAN, -0.0];
        assert_eq!(ranking(&units, &scores), vec![3, 1, 0, 2]);
        let scores = [0.0, -0.0, 1.0, 2.0];
        assert_eq!(ranking(&units, &scores), vec![1, 0, 2, 3]);
    }
}
