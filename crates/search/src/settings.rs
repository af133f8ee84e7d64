//! What a run is asked to do: [`Method`], [`Stop`], [`Settings`] and [`Provenance`].

use std::fmt;
use std::str::FromStr;

use finercut_metrics::Metric;
use serde::{Deserialize, Serialize};

use crate::{Error, Level, Result};

/// A pruning method: FinerCut or one of the baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Greedy FinerCut (`docs/DESIGN.md`, The search): each step removes the unit whose removal
    /// moves the final logits least from the dense model's.
    Finercut,
    /// One-shot FinerCut: every unit scored once against the dense model, removed in that order.
    FinercutOneshot,
    /// ShortGPT: whole blocks in order of lowest Block Influence `1 − cos(h_b, h_{b+1})`.
    Shortgpt,
    /// DeeperLayers (Gromov et al.): for each n, the window of n consecutive blocks with the
    /// smallest angular distance between its input and output states.
    DeeperLayers,
    /// SLEB: greedy whole blocks by calibration perplexity; first and last block never removed.
    Sleb,
    /// BlockPruner: greedy sublayers by calibration perplexity.
    Blockpruner,
    /// Random order of units from a seeded ChaCha8 generator.
    Random,
}

/// How a method gets its scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Greedy steps over a [`crate::Scorer`].
    Greedy,
    /// One call of a [`crate::Scorer`] against the dense model.
    OneShot,
    /// Dense hidden states from a [`crate::HiddenStates`] source.
    HiddenStates,
    /// Nothing but the seed.
    Random,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 7] = [
        Method::Finercut,
        Method::FinercutOneshot,
        Method::Shortgpt,
        Method::DeeperLayers,
        Method::Sleb,
        Method::Blockpruner,
        Method::Random,
    ];

    /// The method's name (`finercut`, `finercut-oneshot`, `shortgpt`, `deeper-layers`, `sleb`,
    /// `blockpruner`, `random`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Finercut => "finercut",
            Method::FinercutOneshot => "finercut-oneshot",
            Method::Shortgpt => "shortgpt",
            Method::DeeperLayers => "deeper-layers",
            Method::Sleb => "sleb",
            Method::Blockpruner => "blockpruner",
            Method::Random => "random",
        }
    }

    /// How the method gets its scores.
    pub fn family(self) -> Family {
        match self {
            Method::Finercut | Method::Sleb | Method::Blockpruner => Family::Greedy,
            Method::FinercutOneshot => Family::OneShot,
            Method::Shortgpt | Method::DeeperLayers => Family::HiddenStates,
            Method::Random => Family::Random,
        }
    }

    /// The metric used when none is given (`None` for methods that use no logit metric).
    pub fn default_metric(self) -> Option<Metric> {
        match self {
            Method::Finercut | Method::FinercutOneshot => Some(Metric::Js),
            Method::Sleb | Method::Blockpruner => Some(Metric::Ppl),
            Method::Shortgpt | Method::DeeperLayers | Method::Random => None,
        }
    }

    /// The level the method works at when the settings do not say.
    pub fn default_level(self) -> Level {
        match self {
            Method::Shortgpt | Method::DeeperLayers | Method::Sleb => Level::Block,
            _ => Level::Sublayer,
        }
    }

    /// Whether the method can run at `level`.
    pub fn supports_level(self, level: Level) -> bool {
        match self {
            Method::Shortgpt | Method::DeeperLayers | Method::Sleb => level == Level::Block,
            Method::Blockpruner => level != Level::Block,
            Method::Finercut | Method::FinercutOneshot | Method::Random => true,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::InvalidSetting {
                setting: "method",
                message: format!(
                    "unknown method {s:?}; expected one of: {}",
                    Method::ALL.map(Method::name).join(", ")
                ),
            })
    }
}

/// When a greedy search stops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// Once `floor(2L·r)` sublayers are removed (or no further unit fits under that count).
    Ratio(f64),
    /// When no candidate is left: every ratio can then be read from the result.
    End,
}

impl Stop {
    /// The number of sublayers this stop allows out of `num_sublayers`.
    pub fn target_sublayers(self, num_sublayers: usize) -> usize {
        match self {
            Stop::Ratio(r) => ratio_to_sublayers(r, num_sublayers),
            Stop::End => num_sublayers,
        }
    }
}

/// Checks a pruning ratio, the fraction of the 2L sublayers to remove: it must lie strictly
/// between 0 and 1 (0 removes nothing, 1 everything; neither is a pruning). This is the one rule
/// for ratios: every setting, method and command that takes one checks it here, so all say the
/// same thing ([`Error::InvalidRatio`]). Returns the ratio.
pub fn check_ratio(ratio: f64) -> Result<f64> {
    if ratio > 0.0 && ratio < 1.0 {
        Ok(ratio)
    } else {
        Err(Error::InvalidRatio { ratio })
    }
}

/// `floor(2L·r)`, computed as the reference code does (`int(total * rate)` on doubles), so that
/// ratios map to the same counts.
pub fn ratio_to_sublayers(ratio: f64, num_sublayers: usize) -> usize {
    let k = (num_sublayers as f64 * ratio).floor();
    if k <= 0.0 {
        0
    } else {
        (k as usize).min(num_sublayers)
    }
}

/// Which token positions DeeperLayers compares.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenSelection {
    /// The last position of each sequence (Gromov et al.).
    #[default]
    Last,
    /// Every position.
    All,
}

/// Everything that determines a run's outcome, recorded in its result file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The method.
    pub method: Method,
    /// The logit metric (`None` for methods that use none). Serialised by name.
    #[serde(with = "metric_name")]
    pub metric: Option<Metric>,
    /// The candidate level.
    pub level: Level,
    /// When to stop.
    pub stop: Stop,
    /// FinerCut's front exclusion `x` (`docs/DESIGN.md`, Front exclusion): the first
    /// `⌊2L·x/2⌋+1` blocks are not candidates until `⌊2L·x⌋+1` sublayers are removed. `None`: off.
    pub front_exclusion: Option<f64>,
    /// Number of calibration sequences.
    pub samples: usize,
    /// Tokens per calibration sequence.
    pub seq_len: usize,
    /// Where the calibration slice starts in the data (in tokens, as the caller counts it).
    pub calib_offset: usize,
    /// Seed of the random method (and of anything else random); recorded.
    pub seed: Option<u64>,
    /// Worker threads used; recorded, but results do not depend on it.
    pub threads: usize,
    /// DeeperLayers: which token positions are compared.
    #[serde(default)]
    pub token_selection: TokenSelection,
    /// Greedy methods: score every candidate on every calibration row instead of stopping the
    /// candidates that can no longer be the best of their step ([`crate::eliminate()`]). Same
    /// removal order and scores of the removed units; every runner-up's score is complete.
    #[serde(default)]
    pub exhaustive: bool,
    /// How the model's weight matrices were held (`--dtype`, e.g. `"stored: Q4_1 ×211 (…)"`);
    /// recorded, but results do not depend on it (widening is exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
}

impl Settings {
    /// Settings for `method` with its defaults: default metric and level, run to the end, no
    /// front exclusion, the reference calibration shape (10 × 256 tokens from offset 0), one
    /// thread, seed 0 for the random method.
    pub fn new(method: Method) -> Settings {
        Settings {
            method,
            metric: method.default_metric(),
            level: method.default_level(),
            stop: Stop::End,
            front_exclusion: None,
            samples: 10,
            seq_len: 256,
            calib_offset: 0,
            seed: (method == Method::Random).then_some(0),
            threads: 1,
            token_selection: TokenSelection::Last,
            exhaustive: false,
            weights: None,
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &'static str, message: String| {
            Err(Error::InvalidSetting { setting, message })
        };
        let m = self.method;
        if !m.supports_level(self.level) {
            return bad(
                "level",
                format!("method {m} cannot run at level {}", self.level),
            );
        }
        match (m.default_metric(), self.metric) {
            (None, Some(metric)) => {
                return bad(
                    "metric",
                    format!("method {m} uses no logit metric, got {metric}"),
                )
            }
            (Some(_), None) => return bad("metric", format!("method {m} needs a metric")),
            (Some(Metric::Ppl), Some(metric)) if metric != Metric::Ppl => {
                return bad(
                    "metric",
                    format!("method {m} scores by perplexity (ppl), got {metric}"),
                )
            }
            _ => {}
        }
        if let Stop::Ratio(r) = self.stop {
            check_ratio(r)?;
        }
        if let Some(x) = self.front_exclusion {
            if m.family() != Family::Greedy {
                return bad("front_exclusion", format!("method {m} is not greedy"));
            }
            if !(0.0..1.0).contains(&x) {
                return bad("front_exclusion", format!("{x} is not in [0, 1)"));
            }
        }
        if m == Method::Random && self.seed.is_none() {
            return bad("seed", "the random method needs a seed".to_owned());
        }
        if self.token_selection != TokenSelection::Last && m != Method::DeeperLayers {
            return bad(
                "token_selection",
                format!("only deeper-layers uses it, not {m}"),
            );
        }
        Ok(())
    }

    /// The first setting (other than `threads`, `stop` and `exhaustive`, which may change when a
    /// run is resumed) on which `self` and `other` differ, with both values.
    pub fn first_difference(&self, other: &Settings) -> Option<(&'static str, String, String)> {
        macro_rules! cmp {
            ($($f:ident),*) => {$(
                if self.$f != other.$f {
                    return Some((stringify!($f), format!("{:?}", self.$f), format!("{:?}", other.$f)));
                }
            )*};
        }
        cmp!(
            method,
            metric,
            level,
            front_exclusion,
            samples,
            seq_len,
            calib_offset,
            seed,
            token_selection
        );
        None
    }
}

/// What the run was computed from: hashes passed in by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// SHA-256 of the model's weight files (hex).
    pub model_sha256: String,
    /// SHA-256 of the calibration data (hex).
    pub data_sha256: String,
}

impl Provenance {
    /// SHA-256 (hex) of calibration token sequences: each sequence's length as a little-endian
    /// `u64`, then its tokens as little-endian `u32`s. A data hash that covers text, tokenizer,
    /// offset and shape at once.
    pub fn tokens_sha256(tokens: &[Vec<u32>]) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for seq in tokens {
            h.update((seq.len() as u64).to_le_bytes());
            for t in seq {
                h.update(t.to_le_bytes());
            }
        }
        hex::encode(h.finalize())
    }
}

/// Serde of `Option<Metric>` by name.
mod metric_name {
    use finercut_metrics::Metric;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(m: &Option<Metric>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Some(m) => s.serialize_some(m.name()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Metric>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        for m in Method::ALL {
            Settings::new(m).validate().unwrap();
            assert_eq!(m.to_string().parse::<Method>().unwrap(), m);
        }
    }

    #[test]
    fn contradictions_are_errors() {
        let mut s = Settings::new(Method::Sleb);
        s.metric = Some(Metric::Js);
        assert!(s.validate().is_err());
        let mut s = Settings::new(Method::Shortgpt);
        s.level = Level::Sublayer;
        assert!(s.validate().is_err());
        let mut s = Settings::new(Method::Finercut);
        s.stop = Stop::Ratio(0.0);
        assert!(s.validate().is_err());
        s.stop = Stop::Ratio(0.25);
        s.front_exclusion = Some(1.0);
        assert!(s.validate().is_err());
        s.front_exclusion = Some(0.4);
        s.validate().unwrap();
        let mut s = Settings::new(Method::Random);
        s.seed = None;
        assert!(s.validate().is_err());
    }

    #[test]
    fn one_rule_for_ratios() {
        for bad in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            let e = check_ratio(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidRatio { .. }), "{bad}");
            assert!(e.to_string().contains("outside (0, 1)"), "{e}");
            let mut s = Settings::new(Method::Finercut);
            s.stop = Stop::Ratio(bad);
            assert_eq!(s.validate().unwrap_err().to_string(), e.to_string());
        }
        for good in [f64::MIN_POSITIVE, 0.25, 0.999] {
            assert_eq!(check_ratio(good).unwrap(), good);
        }
    }

    #[test]
    fn ratio_counts_like_the_reference() {
        assert_eq!(ratio_to_sublayers(0.25, 60), 15);
        assert_eq!(ratio_to_sublayers(0.3, 60), 18);
        assert_eq!(ratio_to_sublayers(0.35, 60), 21);
        assert_eq!(ratio_to_sublayers(1.0, 60), 60);
        assert_eq!(ratio_to_sublayers(0.01, 60), 0);
    }

    #[test]
    fn token_hash_is_stable() {
        let a = Provenance::tokens_sha256(&[vec![1, 2], vec![3]]);
        assert_eq!(a.len(), 64);
        assert_eq!(a, Provenance::tokens_sha256(&[vec![1, 2], vec![3]]));
        assert_ne!(a, Provenance::tokens_sha256(&[vec![1], vec![2, 3]]));
    }

    #[test]
    fn settings_round_trip_json() {
        let mut s = Settings::new(Method::Finercut);
        s.stop = Stop::Ratio(0.25);
        s.front_exclusion = Some(0.4);
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"metric\":\"js\""), "{j}");
        assert_eq!(serde_json::from_str::<Settings>(&j).unwrap(), s);
    }
}
