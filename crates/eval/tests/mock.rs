//! Deterministic mock language models for the integration tests.
//!
//! [`MockLm`] has a GPT-2-like word tokenizer (a space attaches to the following word; other whitespace
//! runs are their own tokens) and a known next-token distribution that depends on the previous token and
//! the position, so every log-likelihood can be recomputed by hand from a flat token sequence.

use finercut_eval::lm::logprob_and_argmax;
use finercut_eval::{ContinuationScore, LanguageModel, Result, ScoreGroup};

/// Vocabulary size of the mock.
pub const VOCAB: usize = 97;

/// The mock's prefix (BOS) token.
pub const PREFIX: u32 = 96;

/// Splits text into GPT-2-like pieces: `" word"`, `"word"`, punctuation stays with its word, and
/// whitespace runs (less a final space that starts the next word) are pieces of their own.
pub fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            let start = i;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            let run: String = chars[start..i].iter().collect();
            if i < chars.len() && chars[i - 1] == ' ' {
                // The last space starts the next word.
                if run.len() > 1 {
                    out.push(run[..run.len() - 1].to_string());
                }
                let w_start = i;
                while i < chars.len() && !chars[i].is_whitespace() {
                    i += 1;
                }
                out.push(format!(" {}", chars[w_start..i].iter().collect::<String>()));
            } else {
                out.push(run);
            }
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        }
    }
    out
}

/// FNV-1a of a piece, folded into the vocabulary (never the prefix token).
pub fn token_of(piece: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in piece.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % (VOCAB as u64 - 1)) as u32
}

/// The mock's tokenizer.
pub fn encode(text: &str) -> Vec<u32> {
    pieces(text).iter().map(|p| token_of(p)).collect()
}

/// Logits of the token after `prev` at position `pos` (the position of `prev`).
pub fn logits(prev: u32, pos: usize) -> Vec<f32> {
    (0..VOCAB)
        .map(|v| {
            let x = (prev as f64) * 0.37 + (v as f64) * 1.13 + (pos as f64) * 0.71;
            (3.0 * x.sin() + (v % 5) as f64 * 0.2) as f32
        })
        .collect()
}

/// `log p(tokens[i] | tokens[..i])` for `i` in `from..`, as a plain loop over the flat sequence:
/// the "direct computation" the tests compare the evaluator against.
pub fn direct_logprob(tokens: &[u32], from: usize) -> (f64, bool) {
    let mut lp = 0.0;
    let mut greedy = true;
    for i in from..tokens.len() {
        let (l, am) = logprob_and_argmax(&logits(tokens[i - 1], i - 1), tokens[i]).unwrap();
        lp += l;
        greedy &= am == tokens[i];
    }
    (lp, greedy)
}

/// The mock model.
pub struct MockLm {
    /// Its maximum sequence length.
    pub max_length: usize,
}

impl LanguageModel for MockLm {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(encode(text))
    }

    fn prefix_token(&self) -> u32 {
        PREFIX
    }

    fn max_length(&self) -> usize {
        self.max_length
    }

    fn score(&self, groups: &[ScoreGroup]) -> Result<Vec<Vec<ContinuationScore>>> {
        // Run each context once: its last token and position are the state every continuation resumes.
        Ok(groups
            .iter()
            .map(|g| {
                assert!(!g.context.is_empty());
                let last = *g.context.last().unwrap();
                let pos = g.context.len() - 1;
                g.continuations
                    .iter()
                    .map(|c| {
                        assert!(!c.is_empty());
                        assert!(g.context.len() + c.len() <= self.max_length + 1);
                        let mut prev = last;
                        let mut score = ContinuationScore {
                            logprob: 0.0,
                            is_greedy: true,
                        };
                        for (k, &t) in c.iter().enumerate() {
                            let (l, am) = logprob_and_argmax(&logits(prev, pos + k), t).unwrap();
                            score.logprob += l;
                            score.is_greedy &= am == t;
                            prev = t;
                        }
                        score
                    })
                    .collect()
            })
            .collect())
    }
}

/// A model whose continuation log-likelihoods are fixed by the continuation's text
/// (`table[i] = (continuation, logprob)`); the tokenizer is one token per byte.
pub struct TableLm {
    /// (continuation text, its log-likelihood).
    pub table: Vec<(String, f64)>,
}

impl LanguageModel for TableLm {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn prefix_token(&self) -> u32 {
        0
    }

    fn max_length(&self) -> usize {
        4096
    }

    fn score(&self, groups: &[ScoreGroup]) -> Result<Vec<Vec<ContinuationScore>>> {
        Ok(groups
            .iter()
            .map(|g| {
                g.continuations
                    .iter()
                    .map(|c| {
                        let text: String = c.iter().map(|&b| char::from(b as u8)).collect();
                        let logprob = self
                            .table
                            .iter()
                            .find(|(t, _)| *t == text)
                            .map_or(-100.0, |e| e.1);
                        ContinuationScore {
                            logprob,
                            is_greedy: logprob > -1.0,
                        }
                    })
                    .collect()
            })
            .collect())
    }
}
