//! Sharing an evaluation among ranks: which rank scores which batch, and the exchange of the
//! outcomes so that every rank holds all of them.
//!
//! The units dealt are the batches one process forms (multiple choice) or single prompts (GSM8K),
//! so that each unit is computed exactly as one process computes it: a multiple-choice batch
//! clusters consecutive contexts that share a long prefix, and the state of that prefix depends on
//! which contexts share it, so a batch is never split. Outcomes travel as bits (`f64::to_bits`),
//! so every rank derives the same metrics from the same numbers.

use finercut_dist::{deal, Transport};

use crate::error::{Error, Result};
use crate::lm::ContinuationScore;

/// The rank of each batch: batches dealt by their cost (the sum of `cost` over their items),
/// longest first onto the least-loaded rank ([`finercut_dist::deal`]).
pub(crate) fn deal_batches<T>(
    batches: &[&[T]],
    ranks: usize,
    cost: impl Fn(&T) -> usize,
) -> Vec<usize> {
    let costs: Vec<usize> = batches
        .iter()
        .map(|b| b.iter().map(&cost).sum::<usize>().max(1))
        .collect();
    deal(&costs, ranks)
}

/// Passes `result` through; on an error with several ranks, first ends the other ranks'
/// collectives ([`Transport::abort`], which with MPI ends the job naming this rank and `what`).
pub(crate) fn abort_on_error<T>(dist: &dyn Transport, what: &str, result: Result<T>) -> Result<T> {
    if let Err(e) = &result {
        if dist.size() > 1 {
            dist.abort(&format!(
                "rank {} of {}: {what}: {e}",
                dist.rank(),
                dist.size()
            ));
        }
    }
    result
}

/// Bytes of one encoded [`ContinuationScore`]: the log-probability's bits and the greedy flag.
const SCORE_BYTES: usize = 9;

/// Fills every batch this rank did not score with the scores of the rank that did (`owner[b]`).
/// `shape(b)` is the number of continuations of each group of batch `b`, known to every rank.
pub(crate) fn share_scores(
    dist: &dyn Transport,
    owner: &[usize],
    outcomes: &mut [Option<Vec<Vec<ContinuationScore>>>],
    shape: impl Fn(usize) -> Vec<usize>,
) -> Result<()> {
    if dist.size() == 1 {
        return Ok(());
    }
    let rank = dist.rank();
    let mut mine = Vec::new();
    for (b, out) in outcomes.iter().enumerate() {
        if owner[b] != rank {
            continue;
        }
        let out = out
            .as_ref()
            .ok_or_else(|| Error::Model(format!("rank {rank} did not score its batch {b}")))?;
        for s in out.iter().flatten() {
            mine.extend_from_slice(&s.logprob.to_bits().to_le_bytes());
            mine.push(u8::from(s.is_greedy));
        }
    }
    let all = dist.all_gather_bytes(&mine)?;
    for (r, bytes) in all.iter().enumerate() {
        if r == rank {
            continue;
        }
        let bad = || {
            Error::Dist(finercut_dist::Error::Decode {
                rank: r,
                len: bytes.len(),
                what: "continuation scores of its batches",
            })
        };
        let mut at = 0;
        for (b, slot) in outcomes.iter_mut().enumerate() {
            if owner[b] != r {
                continue;
            }
            let mut out = Vec::new();
            for n in shape(b) {
                let mut group = Vec::with_capacity(n);
                for _ in 0..n {
                    let rec = bytes.get(at..at + SCORE_BYTES).ok_or_else(bad)?;
                    let mut bits = [0u8; 8];
                    bits.copy_from_slice(&rec[..8]);
                    group.push(ContinuationScore {
                        logprob: f64::from_bits(u64::from_le_bytes(bits)),
                        is_greedy: rec[8] != 0,
                    });
                    at += SCORE_BYTES;
                }
                out.push(group);
            }
            *slot = Some(out);
        }
        if at != bytes.len() {
            return Err(bad());
        }
    }
    Ok(())
}

/// Gathers each rank's encoded items to every rank and returns them in item order: item `i` was
/// computed by rank `owner[i]`, which sent its items in increasing order, each as
/// `u32` length and that many bytes.
pub(crate) fn share_items(
    dist: &dyn Transport,
    owner: &[usize],
    mine: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>> {
    let rank = dist.rank();
    let mut buf = Vec::new();
    for item in mine {
        let len = u32::try_from(item.len()).map_err(|_| {
            Error::Dist(finercut_dist::Error::TooLarge {
                rank,
                len: item.len(),
                max: u32::MAX as usize,
            })
        })?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(item);
    }
    let all = dist.all_gather_bytes(&buf)?;
    let mut cursors = vec![0usize; all.len()];
    let mut out = Vec::with_capacity(owner.len());
    for &r in owner {
        let bytes = all.get(r).ok_or_else(|| {
            Error::Model(format!("an item was dealt to rank {r} of {}", all.len()))
        })?;
        let bad = || {
            Error::Dist(finercut_dist::Error::Decode {
                rank: r,
                len: bytes.len(),
                what: "length-prefixed outcomes",
            })
        };
        let at = cursors[r];
        let head = bytes.get(at..at + 4).ok_or_else(bad)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let item = bytes.get(at + 4..at + 4 + len).ok_or_else(bad)?;
        out.push(item.to_vec());
        cursors[r] = at + 4 + len;
    }
    for (r, bytes) in all.iter().enumerate() {
        if cursors[r] != bytes.len() {
            return Err(Error::Dist(finercut_dist::Error::Decode {
                rank: r,
                len: bytes.len(),
                what: "length-prefixed outcomes (bytes left over)",
            }));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use finercut_dist::Local;

    #[test]
    fn items_come_back_in_item_order_on_every_rank() {
        let owner = [1, 0, 2, 1, 0];
        let got: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = Local::group(3)
                .into_iter()
                .map(|t| {
                    s.spawn(move || {
                        let mine: Vec<Vec<u8>> = owner
                            .iter()
                            .enumerate()
                            .filter(|(_, &o)| o == t.rank())
                            .map(|(i, _)| vec![i as u8; i])
                            .collect();
                        share_items(&t, &owner, &mine).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let want: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; i]).collect();
        for g in got {
            assert_eq!(g, want);
        }
    }

    #[test]
    fn batches_are_dealt_by_their_summed_cost() {
        let items = [5usize, 1, 1, 1, 3, 3];
        let batches: Vec<&[usize]> = items.chunks(2).collect(); // costs 6, 2, 6
        assert_eq!(deal_batches(&batches, 2, |&c| c), vec![0, 0, 1]);
        assert_eq!(deal_batches(&batches, 1, |&c| c), vec![0, 0, 0]);
    }
}
