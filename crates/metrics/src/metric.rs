//! The [`Metric`] enum: names, parsing and what each metric needs.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// How the pruned model's logits are compared with the dense model's (lower is better for all).
///
/// Every metric is a sum of per-row values (a row is one token position of one calibration
/// sequence), finalised as described on each variant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Textbook Jensen–Shannon divergence of the next-token distributions,
    /// `½KL(P‖M) + ½KL(Q‖M)` with `M = (P+Q)/2`, natural log, mean over rows. The default.
    /// Lies in `[0, ln 2]`.
    #[default]
    Js,
    /// The reference code's `js_divergence`: `½[KL(M‖P) + KL(M‖Q)]` as PyTorch's
    /// `kl_div(log_softmax(x), M, reduction="mean")` computes it, i.e. the sum over every element
    /// divided by rows × vocabulary (`docs/DESIGN.md`, `js-reference` is not textbook JS).
    /// The reference configurations behind the paper's tables use this variant
    /// (`js_divergence`), so reproductions of those tables should select it.
    JsReference,
    /// `KL(dense ‖ pruned)` of the next-token distributions, natural log, mean over rows.
    /// (The reference code divides this by the vocabulary size as well; that scale changes no
    /// ranking.)
    Kl,
    /// Angular distance of the logit vectors, `acos(clamp(cos(l_d, l_p), 0, 1))` in radians,
    /// mean over rows (as the reference code computes it; no `1/π`).
    Angular,
    /// Frobenius norm of the logit difference over all rows: `sqrt(Σ_rows Σ_v (l_d − l_p)²)`.
    /// (The reference code takes the mean over sequences of per-sequence Frobenius norms; with
    /// one calibration sequence the two agree.)
    Euclidean,
    /// Calibration perplexity of the pruned model, `exp(mean NLL)` of each next token given its
    /// target; the last position of each sequence has no target and does not count.
    /// Does not use the dense logits.
    Ppl,
}

impl Metric {
    /// Every metric, in a fixed order.
    pub const ALL: [Metric; 6] = [
        Metric::Js,
        Metric::JsReference,
        Metric::Kl,
        Metric::Angular,
        Metric::Euclidean,
        Metric::Ppl,
    ];

    /// The metric's name as parsed by [`FromStr`] and written by [`fmt::Display`].
    pub fn name(self) -> &'static str {
        match self {
            Metric::Js => "js",
            Metric::JsReference => "js-reference",
            Metric::Kl => "kl",
            Metric::Angular => "angular",
            Metric::Euclidean => "euclidean",
            Metric::Ppl => "ppl",
        }
    }

    /// Whether the metric compares against the dense model's logits.
    pub fn needs_dense_logits(self) -> bool {
        !matches!(self, Metric::Ppl)
    }

    /// Whether the metric needs next-token targets.
    pub fn needs_targets(self) -> bool {
        matches!(self, Metric::Ppl)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::UnknownMetric { name: s.to_owned() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(m.to_string().parse::<Metric>().unwrap(), m);
        }
        assert!("jsd".parse::<Metric>().is_err());
        assert_eq!(Metric::default(), Metric::Js);
    }
}
