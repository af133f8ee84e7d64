//! The [`LanguageModel`] trait the evaluator scores through, and lm-eval's request tokenisation.
//!
//! A request is a pair of strings (context, continuation); its score is the summed log-probability of the
//! continuation's tokens given the context, and whether every continuation token is the model's greedy
//! choice.
//! Requests are tokenised here, exactly as lm-evaluation-harness 0.4 does it (see [`encode_pair`]), so
//! that a model only ever sees token ids.
//! Several continuations of one context form a [`ScoreGroup`]: a model may run the context once and
//! reuse its state for every continuation.

use crate::error::{Error, Result};
use crate::text::py_rstrip;

/// A model that assigns log-probabilities to token continuations.
///
/// Implemented for a pruned `finercut_model::Model` by [`crate::ModelLm`]; tests implement it with
/// small deterministic models.
/// `Sync` because the evaluator tokenises documents on several threads.
pub trait LanguageModel: Sync {
    /// Tokenises `text` as lm-eval's `tok_encode` does: no special tokens, except a BOS for models that
    /// require one.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;

    /// Tokenises running text with no special tokens at all (perplexity windows carry no BOS).
    /// Defaults to [`encode`](Self::encode), which is right for models that take no BOS.
    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text)
    }

    /// The token that stands in for an empty context (lm-eval's `prefix_token_id`: BOS if the tokenizer
    /// has one, else EOS).
    fn prefix_token(&self) -> u32;

    /// The longest token sequence the model accepts; longer requests lose context tokens from the left,
    /// as in lm-eval.
    fn max_length(&self) -> usize;

    /// Scores every continuation of every group.
    ///
    /// For group `g` and continuation `c` the answer `out[g][c]` holds
    /// `Σ_i log p(c[i] | g.context ++ c[..i])` and whether each `c[i]` is the argmax of its distribution.
    /// Every group has a non-empty context and non-empty continuations, and
    /// `context.len() + continuation.len() <= max_length() + 1`.
    fn score(&self, groups: &[ScoreGroup]) -> Result<Vec<Vec<ContinuationScore>>>;
}

/// One context and the continuations to score after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoreGroup {
    /// Context token ids (never empty).
    pub context: Vec<u32>,
    /// Continuation token ids (each never empty).
    pub continuations: Vec<Vec<u32>>,
}

/// The score of one continuation.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContinuationScore {
    /// Summed natural-log probability of the continuation tokens.
    pub logprob: f64,
    /// Whether every continuation token is the greedy (argmax) prediction.
    pub is_greedy: bool,
}

/// lm-eval 0.4's `_encode_pair`: tokenises a (context, continuation) request.
///
/// Trailing whitespace of the context moves onto the continuation; then `whole = encode(context +
/// continuation)`, `context_enc = encode(context)` and `continuation_enc = whole[len(context_enc)..]`.
/// The model is fed `context_enc ++ continuation_enc`, which can differ from `whole` where the tokenizer
/// merges across the boundary: that is what lm-eval does, so it is what this does.
/// An empty context is replaced by [`LanguageModel::prefix_token`] (lm-eval does this before
/// `_encode_pair`), and so is a context that encodes to no tokens.
pub fn encode_pair(
    lm: &dyn LanguageModel,
    context: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    if context.is_empty() {
        return Ok((vec![lm.prefix_token()], lm.encode(continuation)?));
    }
    let (context, continuation) = split_trailing_whitespace(context, continuation);
    let whole = lm.encode(&format!("{context}{continuation}"))?;
    let mut context_enc = lm.encode(context)?;
    let continuation_enc = whole.get(context_enc.len()..).unwrap_or_default().to_vec();
    if context_enc.is_empty() {
        context_enc.push(lm.prefix_token());
    }
    Ok((context_enc, continuation_enc))
}

/// The whitespace rule of [`encode_pair`] on strings: `("Answer: ", "yes")` → `("Answer:", " yes")`.
pub fn split_trailing_whitespace<'a>(context: &'a str, continuation: &str) -> (&'a str, String) {
    let kept = py_rstrip(context);
    let moved = &context[kept.len()..];
    (kept, format!("{moved}{continuation}"))
}

/// Sums the log-probabilities of `continuation` from rows of log-probabilities (or logits with their
/// log-sum-exp), row `i` being the distribution of token `continuation[i]`.
///
/// `row_logprob(i, token)` returns `log p(token)` under row `i`; `row_argmax(i)` the row's greedy token.
/// Helper for [`LanguageModel`] implementations.
pub fn continuation_score(
    continuation: &[u32],
    mut row_logprob: impl FnMut(usize, u32) -> f64,
    mut row_argmax: impl FnMut(usize) -> u32,
) -> ContinuationScore {
    let mut logprob = 0.0;
    let mut is_greedy = true;
    for (i, &token) in continuation.iter().enumerate() {
        logprob += row_logprob(i, token);
        is_greedy &= row_argmax(i) == token;
    }
    ContinuationScore { logprob, is_greedy }
}

/// Log-probability of `token` under `logits` (float64 log-sum-exp over float32 logits) and the argmax
/// (first maximum, as `torch.argmax`).
///
/// Returns an error when `token` is out of range.
pub fn logprob_and_argmax(logits: &[f32], token: u32) -> Result<(f64, u32)> {
    let t = token as usize;
    let Some(&target) = logits.get(t) else {
        return Err(Error::Model(format!(
            "token {token} outside a vocabulary of {}",
            logits.len()
        )));
    };
    let mut max = f32::NEG_INFINITY;
    let mut argmax = 0usize;
    for (i, &x) in logits.iter().enumerate() {
        if x > max {
            max = x;
            argmax = i;
        }
    }
    let max64 = f64::from(max);
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max64).exp()).sum();
    let lse = max64 + sum.ln();
    Ok((f64::from(target) - lse, argmax as u32))
}

/// Index of the first maximum of `row` (as `torch.argmax`).
pub fn argmax(row: &[f32]) -> u32 {
    let mut max = f32::NEG_INFINITY;
    let mut best = 0usize;
    for (i, &x) in row.iter().enumerate() {
        if x > max {
            max = x;
            best = i;
        }
    }
    best as u32
}

/// Shortens `context` from the left so that `context.len() + continuation_len <= max_length + 1`, as
/// lm-eval's `(context_enc + continuation_enc)[-(max_length + 1):]`.
///
/// Returns `None` when the continuation alone does not fit (lm-eval refuses such requests too).
pub(crate) fn truncate_context(
    context: &[u32],
    continuation_len: usize,
    max_length: usize,
) -> Option<&[u32]> {
    if continuation_len == 0 || continuation_len > max_length {
        return None;
    }
    let keep = max_length + 1 - continuation_len;
    Some(&context[context.len().saturating_sub(keep)..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_moves_to_continuation() {
        assert_eq!(
            split_trailing_whitespace("Answer: ", "yes"),
            ("Answer:", " yes".to_string())
        );
        assert_eq!(
            split_trailing_whitespace("Answer:", " yes"),
            ("Answer:", " yes".to_string())
        );
        assert_eq!(
            split_trailing_whitespace("a \n\t", "b"),
            ("a", " \n\tb".to_string())
        );
        assert_eq!(
            split_trailing_whitespace("   ", "b"),
            ("", "   b".to_string())
        );
    }

    #[test]
    fn logprob_is_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let (lp, am) = logprob_and_argmax(&logits, 0).unwrap();
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((lp - (1.0 - lse)).abs() < 1e-12);
        assert_eq!(am, 2);
        assert!(logprob_and_argmax(&logits, 3).is_err());
        assert_eq!(argmax(&[1.0, 5.0, 5.0]), 1);
    }

    #[test]
    fn truncation_keeps_the_tail() {
        let ctx = [1, 2, 3, 4, 5];
        assert_eq!(truncate_context(&ctx, 2, 10), Some(&ctx[..]));
        assert_eq!(truncate_context(&ctx, 2, 5), Some(&ctx[1..]));
        assert_eq!(truncate_context(&ctx, 5, 5), Some(&ctx[4..]));
        assert_eq!(truncate_context(&ctx, 6, 5), None);
        assert_eq!(truncate_context(&ctx, 0, 5), None);
    }
}
