//! Perplexity over a text in non-overlapping windows (the FinerCut reference's WikiText-2 protocol).
//!
//! The whole text is tokenised at once without BOS ([`LanguageModel::encode_text`]); window `w` is tokens
//! `[w·L, (w+1)·L)`; each window is scored on its own from position 0, and its NLL is that of tokens
//! `1..L` given their prefix (`L − 1` predictions per window); the trailing partial window is dropped;
//! `PPL = exp(Σ NLL / (windows · (L − 1)))`.
//! Windows that overlap a calibration token range are left out and listed, so that calibration and
//! evaluation text stay disjoint.
//! On several ranks ([`perplexity_on`]) the batches of windows are dealt to the ranks, each window's
//! NLL comes back to every rank as its raw bits, and every rank sums them in window order, as one
//! process does: the report is bit for bit the one-process report for any number of ranks.

use std::ops::Range;
use std::path::Path;

use finercut_dist::{Alone, Transport};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::evaluate::Progress;
use crate::lm::{LanguageModel, ScoreGroup};

/// Settings of [`perplexity`].
#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    /// Window length in tokens (at least 2).
    pub seq_len: usize,
    /// Score at most this many windows (the first ones not excluded).
    pub max_windows: Option<usize>,
    /// Token range used for calibration: windows overlapping it are not scored.
    pub exclude: Option<Range<usize>>,
    /// Windows per model call.
    pub batch_size: usize,
}

impl PerplexityOptions {
    /// Windows of `seq_len` tokens, all of them, none excluded, 8 per model call.
    pub fn new(seq_len: usize) -> Self {
        PerplexityOptions {
            seq_len,
            max_windows: None,
            exclude: None,
            batch_size: 8,
        }
    }
}

/// The NLL of one window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowNll {
    /// Window index `w` (tokens `[w·L, (w+1)·L)`).
    pub window: usize,
    /// Summed negative log-likelihood of its `L − 1` predicted tokens.
    pub nll: f64,
}

/// The result of [`perplexity`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerplexityReport {
    /// `exp(mean NLL per predicted token)`.
    pub perplexity: f64,
    /// Mean NLL per predicted token (nats).
    pub mean_nll: f64,
    /// Window length.
    pub seq_len: usize,
    /// Tokens in the text.
    pub n_tokens: usize,
    /// Complete windows in the text.
    pub windows_total: usize,
    /// Windows scored.
    pub windows_scored: usize,
    /// Tokens predicted (`windows_scored · (seq_len − 1)`).
    pub predicted_tokens: usize,
    /// The calibration range that was excluded, as `[start, end)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded_range: Option<(usize, usize)>,
    /// Windows left out because they overlap it.
    pub excluded_windows: Vec<usize>,
    /// NLL of every scored window.
    pub windows: Vec<WindowNll>,
}

/// Reads a text file as one string, line endings kept (WikiText-2 raw has CRLF).
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Perplexity of `text` under `lm` (see the module docs for the protocol).
pub fn perplexity(
    lm: &dyn LanguageModel,
    text: &str,
    options: &PerplexityOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<PerplexityReport> {
    perplexity_on(&Alone, lm, text, options, progress)
}

/// [`perplexity()`] as one rank of `dist` ([`perplexity_of_tokens_on`]).
pub fn perplexity_on(
    dist: &dyn Transport,
    lm: &dyn LanguageModel,
    text: &str,
    options: &PerplexityOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<PerplexityReport> {
    let tokens = crate::ranks::abort_on_error(dist, "perplexity", lm.encode_text(text))?;
    perplexity_of_tokens_on(dist, lm, &tokens, options, progress)
}

/// The windows scored under `options` for a text of `n_tokens` tokens, and those excluded.
pub fn plan_windows(n_tokens: usize, options: &PerplexityOptions) -> (Vec<usize>, Vec<usize>) {
    let total = n_tokens / options.seq_len.max(1);
    let mut scored = Vec::new();
    let mut excluded = Vec::new();
    for w in 0..total {
        if options.max_windows.is_some_and(|m| scored.len() >= m) {
            break;
        }
        let span = w * options.seq_len..(w + 1) * options.seq_len;
        let overlaps = options
            .exclude
            .as_ref()
            .is_some_and(|r| r.start < span.end && span.start < r.end);
        if overlaps {
            excluded.push(w);
        } else {
            scored.push(w);
        }
    }
    (scored, excluded)
}

/// Perplexity of an already tokenised text.
pub fn perplexity_of_tokens(
    lm: &dyn LanguageModel,
    tokens: &[u32],
    options: &PerplexityOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<PerplexityReport> {
    perplexity_of_tokens_on(&Alone, lm, tokens, options, progress)
}

/// [`perplexity_of_tokens`] as one rank of `dist`: the batches of windows one process forms are
/// dealt to the ranks ([`finercut_dist::deal`]; all cost the same), each rank scores its own, the
/// NLLs are gathered to every rank as raw bits, and every rank sums them in window order: every
/// rank returns the one-process report, bit for bit. `progress` counts this rank's windows. A rank
/// whose scoring fails calls [`Transport::abort`] so that no other waits for it. Every rank checks
/// the same settings, so an invalid one fails on every rank alike.
pub fn perplexity_of_tokens_on(
    dist: &dyn Transport,
    lm: &dyn LanguageModel,
    tokens: &[u32],
    options: &PerplexityOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<PerplexityReport> {
    let l = options.seq_len;
    if l < 2 {
        return Err(Error::InvalidSetting {
            setting: "seq_len",
            message: format!("{l} is below 2"),
        });
    }
    if l > lm.max_length() {
        return Err(Error::InvalidSetting {
            setting: "seq_len",
            message: format!("{l} exceeds the model's maximum length {}", lm.max_length()),
        });
    }
    if options.batch_size == 0 {
        return Err(Error::InvalidSetting {
            setting: "batch_size",
            message: "must be at least 1".into(),
        });
    }
    let windows_total = tokens.len() / l;
    let (scored, excluded) = plan_windows(tokens.len(), options);
    if scored.is_empty() {
        return Err(Error::NoWindows {
            n_tokens: tokens.len(),
            seq_len: l,
        });
    }
    let batches: Vec<&[usize]> = scored.chunks(options.batch_size).collect();
    let owner = crate::ranks::deal_batches(&batches, dist.size(), |_| l);
    let rank = dist.rank();
    let total: usize = batches
        .iter()
        .zip(&owner)
        .filter(|(_, &o)| o == rank)
        .map(|(b, _)| b.len())
        .sum();
    progress(&Progress {
        task: "perplexity",
        done: 0,
        total,
    });
    let mut done = 0;
    let local = (|| -> Result<Vec<Vec<u8>>> {
        let mut mine = Vec::new();
        for (chunk, _) in batches.iter().zip(&owner).filter(|(_, &o)| o == rank) {
            // A window is the group (context = its first token, continuation = the rest).
            let groups: Vec<ScoreGroup> = chunk
                .iter()
                .map(|&w| {
                    let win = &tokens[w * l..(w + 1) * l];
                    ScoreGroup {
                        context: win[..1].to_vec(),
                        continuations: vec![win[1..].to_vec()],
                    }
                })
                .collect();
            let out = lm.score(&groups)?;
            if out.len() != groups.len() || out.iter().any(|o| o.len() != 1) {
                return Err(Error::Model(
                    "score returned the wrong number of answers".into(),
                ));
            }
            let nlls: Vec<u8> = out
                .iter()
                .flat_map(|o| (-o[0].logprob).to_bits().to_le_bytes())
                .collect();
            mine.push(nlls);
            done += chunk.len();
            progress(&Progress {
                task: "perplexity",
                done,
                total,
            });
        }
        Ok(mine)
    })();
    let mine = crate::ranks::abort_on_error(dist, "perplexity", local)?;
    let all = if dist.size() == 1 {
        mine
    } else {
        crate::ranks::share_items(dist, &owner, &mine)?
    };
    let mut windows = Vec::with_capacity(scored.len());
    for ((chunk, bytes), &r) in batches.iter().zip(&all).zip(&owner) {
        let nlls = finercut_dist::f64s_from_bytes(r, bytes)?;
        if nlls.len() != chunk.len() {
            return Err(Error::Dist(finercut_dist::Error::Decode {
                rank: r,
                len: bytes.len(),
                what: "window NLLs of its batch",
            }));
        }
        windows.extend(
            chunk
                .iter()
                .zip(nlls)
                .map(|(&window, nll)| WindowNll { window, nll }),
        );
    }
    let predicted_tokens = windows.len() * (l - 1);
    let mean_nll = windows.iter().map(|w| w.nll).sum::<f64>() / predicted_tokens as f64;
    Ok(PerplexityReport {
        perplexity: mean_nll.exp(),
        mean_nll,
        seq_len: l,
        n_tokens: tokens.len(),
        windows_total,
        windows_scored: windows.len(),
        predicted_tokens,
        excluded_range: options.exclude.as_ref().map(|r| (r.start, r.end)),
        excluded_windows: excluded,
        windows,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn windows_skip_the_calibration_range() {
        let mut o = PerplexityOptions::new(10);
        o.exclude = Some(15..31);
        let (scored, excluded) = plan_windows(55, &o);
        assert_eq!(scored, vec![0, 4]);
        assert_eq!(excluded, vec![1, 2, 3]);
        o.max_windows = Some(1);
        assert_eq!(plan_windows(55, &o).0, vec![0]);
        o.exclude = Some(20..30);
        o.max_windows = None;
        assert_eq!(plan_windows(55, &o), (vec![0, 1, 3, 4], vec![2]));
    }
}
