//! Inspecting a plan: the Figure-4 style grid (blocks × {attn, mlp}) and the patterns worth
//! reporting, as data ([`Inspection`]) and as text.
//!
//! Definitions used:
//! - a *run of attention removals* is a maximal range of consecutive blocks whose attention
//!   sublayers are all removed;
//! - a *whole block* is a block whose attention and FFN are both removed;
//! - blocks `b` and `b+1` are *merged* when `L{b}.mlp` and `L{b+1}.attn` are removed while
//!   `L{b}.attn` and `L{b+1}.mlp` are kept: what remains, block `b`'s attention followed by block
//!   `b+1`'s FFN, computes like one block.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::{Result, SearchResult};

/// Blocks (of a model of `num_blocks`) whose two sublayers are both in `removed`, ascending.
pub fn whole_blocks(removed: &BTreeSet<usize>, num_blocks: usize) -> Vec<usize> {
    (0..num_blocks)
        .filter(|b| removed.contains(&(2 * b)) && removed.contains(&(2 * b + 1)))
        .collect()
}

/// A range of consecutive blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// First block.
    pub start: usize,
    /// Number of blocks.
    pub len: usize,
}

/// Removed-sublayer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Attention sublayers removed.
    pub attn: usize,
    /// FFN sublayers removed.
    pub mlp: usize,
    /// Both together.
    pub total: usize,
    /// Blocks in the model (each has one of each).
    pub num_blocks: usize,
}

/// Which sublayers a plan removes, and the patterns in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    /// Blocks in the model.
    pub num_blocks: usize,
    /// Per block: attention removed.
    pub attn_removed: Vec<bool>,
    /// Per block: FFN removed.
    pub mlp_removed: Vec<bool>,
    /// Counts by type.
    pub counts: Counts,
    /// Maximal runs of consecutive blocks with attention removed (length ≥ 1), in block order.
    pub attn_runs: Vec<Run>,
    /// Blocks removed whole.
    pub whole_blocks: Vec<usize>,
    /// Blocks `b` merged with `b+1` (see the module docs).
    pub merged_blocks: Vec<usize>,
}

impl Inspection {
    /// Inspects the plan `removed` (sublayer indices) of a model of `num_blocks` blocks; indices
    /// beyond the model are ignored.
    pub fn new(num_blocks: usize, removed: &BTreeSet<usize>) -> Self {
        let attn_removed: Vec<bool> = (0..num_blocks)
            .map(|b| removed.contains(&(2 * b)))
            .collect();
        let mlp_removed: Vec<bool> = (0..num_blocks)
            .map(|b| removed.contains(&(2 * b + 1)))
            .collect();
        let attn = attn_removed.iter().filter(|&&r| r).count();
        let mlp = mlp_removed.iter().filter(|&&r| r).count();
        let mut attn_runs = Vec::new();
        let mut b = 0;
        while b < num_blocks {
            if attn_removed[b] {
                let start = b;
                while b < num_blocks && attn_removed[b] {
                    b += 1;
                }
                attn_runs.push(Run {
                    start,
                    len: b - start,
                });
            } else {
                b += 1;
            }
        }
        let whole_blocks = whole_blocks(removed, num_blocks);
        let merged_blocks = (0..num_blocks.saturating_sub(1))
            .filter(|&b| {
                mlp_removed[b] && attn_removed[b + 1] && !attn_removed[b] && !mlp_removed[b + 1]
            })
            .collect();
        Inspection {
            num_blocks,
            attn_removed,
            mlp_removed,
            counts: Counts {
                attn,
                mlp,
                total: attn + mlp,
                num_blocks,
            },
            attn_runs,
            whole_blocks,
            merged_blocks,
        }
    }

    /// Inspects `result`'s plan at `ratio`.
    pub fn of_result(result: &SearchResult, ratio: f64) -> Result<Self> {
        Ok(Inspection::new(
            result.num_blocks,
            &result.plan_for_ratio(ratio)?,
        ))
    }

    /// The Figure-4 style grid: one column per block (index written vertically above), one row
    /// for attention and one for the FFN; `#` removed, `.` kept.
    pub fn grid(&self) -> String {
        let l = self.num_blocks;
        let digits = l.saturating_sub(1).to_string().len();
        let mut out = String::new();
        for place in (0..digits).rev() {
            let label = if place == 0 { "block" } else { "" };
            let _ = write!(out, "{label:<6}");
            for b in 0..l {
                let p = 10usize.pow(place as u32);
                let c = if place == 0 || b >= p {
                    char::from(b'0' + ((b / p) % 10) as u8)
                } else {
                    ' '
                };
                out.push(c);
            }
            out.push('\n');
        }
        for (name, row) in [("attn", &self.attn_removed), ("mlp", &self.mlp_removed)] {
            let _ = write!(out, "{name:<6}");
            out.extend(row.iter().map(|&r| if r { '#' } else { '.' }));
            out.push('\n');
        }
        out.push_str("      (# removed, . kept)\n");
        out
    }

    /// A few lines summarising the patterns.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "removed {} of {} sublayers: {} attention, {} FFN",
            c.total,
            2 * c.num_blocks,
            c.attn,
            c.mlp
        );
        let long: Vec<String> = self
            .attn_runs
            .iter()
            .filter(|r| r.len >= 2)
            .map(|r| format!("L{}-L{}", r.start, r.start + r.len - 1))
            .collect();
        let longest = self.attn_runs.iter().map(|r| r.len).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "runs of consecutive attention removals (≥2 blocks): {}; longest: {longest}",
            list(&long)
        );
        let whole: Vec<String> = self.whole_blocks.iter().map(|b| format!("L{b}")).collect();
        let _ = writeln!(out, "whole blocks removed: {}", list(&whole));
        let merged: Vec<String> = self
            .merged_blocks
            .iter()
            .map(|b| format!("L{b}.attn+L{}.mlp", b + 1))
            .collect();
        let _ = writeln!(
            out,
            "blocks merged (L{{b}}.mlp and L{{b+1}}.attn removed): {}",
            list(&merged)
        );
        out
    }

    /// Grid followed by summary.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.grid(), self.summary())
    }
}

/// The steps of `result` as text, one line per step: the unit removed, its score, the work and
/// the runners-up. A runner-up that was stopped early is written `≥ bound (n rows)`: its score is a
/// lower bound from the first `n` calibration rows, not its complete score. Steps decided with
/// elimination also say how many candidates were scored on every row.
pub fn steps_text(result: &SearchResult) -> String {
    let mut out = String::new();
    let mut bounds = false;
    for (i, step) in result.steps.iter().enumerate() {
        let _ = write!(
            out,
            "step {:>3}: {:<9} {:.6e}",
            i + 1,
            step.unit.to_string(),
            step.score
        );
        if let Some(e) = &step.elimination {
            let _ = write!(
                out,
                "  [{} of {} candidates complete, {} stopped after the first group; {:.1} rows scored per candidate of {}]",
                e.completed,
                step.candidates,
                e.stopped_after_first_group,
                e.rows_scored as f64 / step.candidates.max(1) as f64,
                e.rows
            );
        }
        out.push('\n');
        if !step.runners_up.is_empty() {
            let ups: Vec<String> = step
                .runners_up
                .iter()
                .map(|c| match c.stopped_after_rows {
                    Some(rows) => {
                        bounds = true;
                        format!("{} ≥ {:.3e} ({rows} rows)", c.unit, c.score)
                    }
                    None => format!("{} {:.6e}", c.unit, c.score),
                })
                .collect();
            let _ = writeln!(out, "           runners-up: {}", ups.join(", "));
        }
    }
    if bounds {
        out.push_str(
            "(≥: a lower bound from the rows shown; the candidate was stopped early because it could \
             no longer be the best; run with --exhaustive for complete scores)\n",
        );
    }
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        // Blocks 0..6: attn removed in 1, 2, 3 and 5; mlp removed in 0 and 3.
        let removed = BTreeSet::from([2, 4, 6, 10, 1, 7]);
        let i = Inspection::new(6, &removed);
        assert_eq!(
            i.counts,
            Counts {
                attn: 4,
                mlp: 2,
                total: 6,
                num_blocks: 6
            }
        );
        assert_eq!(
            i.attn_runs,
            vec![Run { start: 1, len: 3 }, Run { start: 5, len: 1 }]
        );
        assert_eq!(i.whole_blocks, vec![3]);
        // Sublayers beyond the model (block 4 of 3) do not make a whole block.
        assert_eq!(whole_blocks(&BTreeSet::from([2, 3, 4, 8, 9]), 3), vec![1]);
        // L0.mlp and L1.attn removed, L0.attn and L1.mlp kept.
        assert_eq!(i.merged_blocks, vec![0]);
        let g = i.grid();
        assert_eq!(g.lines().nth(1).unwrap(), "attn  .###.#");
        assert_eq!(g.lines().nth(2).unwrap(), "mlp   #..#..");
        let s = i.summary();
        assert!(s.contains("L1-L3"), "{s}");
        assert!(s.contains("whole blocks removed: L3"), "{s}");
    }

    #[test]
    fn grid_has_tens_row() {
        let i = Inspection::new(12, &BTreeSet::from([22]));
        let g = i.grid();
        let lines: Vec<&str> = g.lines().collect();
        assert_eq!(lines[0], format!("{}11", " ".repeat(16)));
        assert_eq!(lines[1], "block 012345678901");
        assert_eq!(lines[2], "attn  ...........#");
    }
}
