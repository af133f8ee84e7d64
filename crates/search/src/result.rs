//! The result file of a run ([`SearchResult`]): settings, provenance, removal order with scores
//! and costs; atomic checkpoints; resume validation; plans for a ratio.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::settings::{check_ratio, ratio_to_sublayers};
use crate::{Elimination, Error, Provenance, Result, Settings, Unit};

/// Version of the result file layout. Version 2 added the lower bounds of candidates stopped
/// early (`stopped_after_rows`, `elimination`); version 1 files, whose scores are all complete,
/// are read as well.
pub const FORMAT_VERSION: u32 = 2;

/// How many runners-up each step records.
pub const RUNNERS_UP: usize = 5;

/// One scored candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The unit.
    pub unit: Unit,
    /// Its score (lower is better), or a lower bound of it where `stopped_after_rows` is set;
    /// NaN or infinite values are written as strings.
    #[serde(with = "float")]
    pub score: f64,
    /// Set when the candidate was stopped early because it could no longer be the best: the
    /// number of calibration rows it was scored on; `score` is then a lower bound of its
    /// complete score, not the score. Absent when `score` is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_after_rows: Option<usize>,
}

impl Candidate {
    /// Whether `score` is only a lower bound of the complete score.
    pub fn is_bound(&self) -> bool {
        self.stopped_after_rows.is_some()
    }
}

/// One step of a removal order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The unit removed.
    pub unit: Unit,
    /// Its score (always complete: the best candidate of a step is scored on every row).
    #[serde(with = "float")]
    pub score: f64,
    /// The next best candidates of the step, best first (at most [`RUNNERS_UP`]), ranked by
    /// their recorded value; a candidate stopped early is ranked by its lower bound, so its
    /// place among the runners-up is not necessarily that of its complete score.
    pub runners_up: Vec<Candidate>,
    /// How many candidates the step scored (0 where the order came from one shared scoring).
    pub candidates: usize,
    /// Work of the step in forward-equivalents (sublayer evaluations ÷ 2L).
    pub forward_equivalents: f64,
    /// Wall time of the step in seconds.
    pub wall_s: f64,
    /// How the step's candidates were eliminated; absent when every candidate was scored on
    /// every row (`--exhaustive`, or methods that score everything once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elimination: Option<Elimination>,
}

/// DeeperLayers: the best window of `blocks` consecutive blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Number of blocks in the window.
    pub blocks: usize,
    /// First block of the window.
    pub start: usize,
    /// Its angular distance `(1/π)·acos(cos(h_start, h_{start+blocks}))`, averaged.
    #[serde(with = "float")]
    pub distance: f64,
}

/// Work done before the steps (dense forward, hidden-state traces).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Forward-equivalents.
    pub forward_equivalents: f64,
    /// Wall time in seconds.
    pub wall_s: f64,
}

/// The result (and checkpoint) file of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// `finercut-search` version that wrote the file.
    pub tool_version: String,
    /// What was asked.
    pub settings: Settings,
    /// Model and data hashes.
    pub provenance: Provenance,
    /// Blocks in the model (2L sublayers).
    pub num_blocks: usize,
    /// Work before the first step.
    #[serde(default)]
    pub preparation: Cost,
    /// The removal order (empty for DeeperLayers, which records windows).
    pub steps: Vec<Step>,
    /// DeeperLayers: the best window for each number of blocks, ascending.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// Whether the run reached its stop (false in a checkpoint of a run still going).
    pub complete: bool,
    /// Whether no removable unit was left: every ratio the level allows can be read off.
    pub exhausted: bool,
}

/// Most blocks a result file may describe (the largest published models have a few hundred): a
/// larger count in a file is corruption, and would overflow the arithmetic on sublayer indices.
const MAX_BLOCKS: usize = 1 << 16;

impl SearchResult {
    /// A new, empty result for a model of `num_blocks` blocks; validates the settings.
    pub fn new(settings: Settings, provenance: Provenance, num_blocks: usize) -> Result<Self> {
        settings.validate()?;
        if num_blocks == 0 {
            return Err(Error::InvalidSetting {
                setting: "num_blocks",
                message: "the model has no blocks".into(),
            });
        }
        Ok(SearchResult {
            format: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            settings,
            provenance,
            num_blocks,
            preparation: Cost::default(),
            steps: Vec::new(),
            windows: Vec::new(),
            complete: false,
            exhausted: false,
        })
    }

    /// Number of sublayers, 2L.
    pub fn num_sublayers(&self) -> usize {
        2 * self.num_blocks
    }

    /// The removal order.
    pub fn order(&self) -> Vec<Unit> {
        self.steps.iter().map(|s| s.unit).collect()
    }

    /// Sublayers removed by all recorded steps, in removal order.
    pub fn removed_sublayers(&self) -> Vec<usize> {
        self.steps.iter().flat_map(|s| s.unit.sublayers()).collect()
    }

    /// Total forward-equivalents (preparation and steps).
    pub fn total_forward_equivalents(&self) -> f64 {
        self.preparation.forward_equivalents
            + self
                .steps
                .iter()
                .map(|s| s.forward_equivalents)
                .sum::<f64>()
    }

    /// Total wall time in seconds (preparation and steps).
    pub fn total_wall_s(&self) -> f64 {
        self.preparation.wall_s + self.steps.iter().map(|s| s.wall_s).sum::<f64>()
    }

    /// The units removed at `ratio`: `k = floor(2L·ratio)` sublayers, taken as the longest prefix
    /// of the removal order whose sublayers number at most `k` (for whole blocks, an odd `k`
    /// rounds down). DeeperLayers: the best window of `floor(k/2)` blocks.
    ///
    /// An error when `ratio` is outside `(0, 1)` ([`crate::check_ratio`]), the result does not
    /// reach `k` (a run stopped earlier) or the level cannot remove `k` sublayers.
    pub fn units_for_ratio(&self, ratio: f64) -> Result<Vec<Unit>> {
        check_ratio(ratio)?;
        let k = ratio_to_sublayers(ratio, self.num_sublayers());
        if self.settings.method == crate::Method::DeeperLayers {
            let n = k / 2;
            if n == 0 {
                return Ok(Vec::new());
            }
            let w = self
                .windows
                .iter()
                .find(|w| w.blocks == n)
                .ok_or(Error::RatioNotCovered {
                    ratio,
                    sublayers: k,
                    covered: 2 * self.windows.iter().map(|w| w.blocks).max().unwrap_or(0),
                })?;
            return Ok((w.start..w.start + n).map(Unit::Block).collect());
        }
        let mut units = Vec::new();
        let mut count = 0;
        for step in &self.steps {
            let size = step.unit.sublayers().len();
            if count + size > k {
                return Ok(units);
            }
            count += size;
            units.push(step.unit);
        }
        // Whole blocks remove sublayers two at a time: a run that stopped at an odd `k` stopped at
        // `k - 1`.
        let reachable = if self.settings.level == crate::Level::Block {
            k - k % 2
        } else {
            k
        };
        if count == reachable {
            Ok(units)
        } else if self.exhausted {
            Err(Error::RatioBeyondLevel {
                ratio,
                sublayers: k,
                max: count,
                level: self.settings.level,
            })
        } else {
            Err(Error::RatioNotCovered {
                ratio,
                sublayers: k,
                covered: count,
            })
        }
    }

    /// The plan for `ratio`: the set of removed sublayer indices (see [`Self::units_for_ratio`]).
    pub fn plan_for_ratio(&self, ratio: f64) -> Result<BTreeSet<usize>> {
        Ok(self
            .units_for_ratio(ratio)?
            .into_iter()
            .flat_map(Unit::sublayers)
            .collect())
    }

    /// Writes the result as pretty JSON, atomically (`finercut_format::io::write_atomically`:
    /// a temporary file next to `path`, fsync, rename over `path`, fsync of the directory), so a
    /// run killed at any moment leaves the previous checkpoint or the new one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(finercut_format::io::write_bytes_atomically(path, &json)?)
    }

    /// Reads and checks a result or checkpoint file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| Error::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let corrupt = |message: String| Error::CorruptCheckpoint {
            path: path.to_owned(),
            message,
        };
        let r: SearchResult = serde_json::from_slice(&bytes).map_err(|e| {
            corrupt(format!(
                "not a valid result file (truncated or corrupt?): {e}"
            ))
        })?;
        if !(1..=FORMAT_VERSION).contains(&r.format) {
            return Err(corrupt(format!(
                "format version {} is not between 1 and {FORMAT_VERSION}",
                r.format
            )));
        }
        r.check_consistent().map_err(corrupt)?;
        Ok(r)
    }

    /// Loads the checkpoint at `path` to continue a run with `settings` on the model and data of
    /// `provenance` (a model of `num_blocks` blocks). Everything that determines the outcome must
    /// match; only `threads`, `stop` and `exhaustive` may differ, and take the new values
    /// (elimination changes no removal order or score of a removed unit, only which runners-up
    /// are recorded as lower bounds).
    pub fn resume(
        path: &Path,
        settings: &Settings,
        provenance: &Provenance,
        num_blocks: usize,
    ) -> Result<Self> {
        settings.validate()?;
        let mut r = Self::load(path)?;
        let mismatch = |what: &'static str, old: String, new: String| Error::ResumeMismatch {
            path: path.to_owned(),
            what,
            checkpoint: old,
            requested: new,
        };
        if r.provenance.model_sha256 != provenance.model_sha256 {
            return Err(mismatch(
                "model SHA-256",
                r.provenance.model_sha256,
                provenance.model_sha256.clone(),
            ));
        }
        if r.provenance.data_sha256 != provenance.data_sha256 {
            return Err(mismatch(
                "data SHA-256",
                r.provenance.data_sha256,
                provenance.data_sha256.clone(),
            ));
        }
        if r.num_blocks != num_blocks {
            return Err(mismatch(
                "number of blocks",
                r.num_blocks.to_string(),
                num_blocks.to_string(),
            ));
        }
        if r.tool_version != env!("CARGO_PKG_VERSION") {
            return Err(mismatch(
                "tool version",
                r.tool_version,
                env!("CARGO_PKG_VERSION").to_owned(),
            ));
        }
        if let Some((field, old, new)) = r.settings.first_difference(settings) {
            return Err(mismatch(field, old, new));
        }
        if r.settings.stop != settings.stop {
            r.complete = false;
        }
        r.settings.threads = settings.threads;
        r.settings.stop = settings.stop;
        r.settings.exhaustive = settings.exhaustive;
        // Steps added from now on may hold lower bounds: the file is written in the current layout.
        r.format = FORMAT_VERSION;
        Ok(r)
    }

    /// Checks what a file could get wrong: units inside the model and of the right level, no
    /// sublayer removed twice, window bounds.
    fn check_consistent(&self) -> std::result::Result<(), String> {
        self.settings.validate().map_err(|e| e.to_string())?;
        if !(1..=MAX_BLOCKS).contains(&self.num_blocks) {
            return Err(format!(
                "num_blocks {} is not between 1 and {MAX_BLOCKS}",
                self.num_blocks
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            if !step.unit.fits(self.num_blocks) {
                return Err(format!(
                    "step {i}: unit {} is outside a model of {} blocks",
                    step.unit, self.num_blocks
                ));
            }
            if !self.settings.level.contains(step.unit) {
                return Err(format!(
                    "step {i}: unit {} is not of level {}",
                    step.unit, self.settings.level
                ));
            }
            for s in step.unit.sublayers() {
                if !seen.insert(s) {
                    return Err(format!("step {i}: unit {} is removed twice", step.unit));
                }
            }
        }
        for w in &self.windows {
            if w.blocks == 0 || w.start.saturating_add(w.blocks) > self.num_blocks {
                return Err(format!(
                    "window of {} blocks at {} is outside the model",
                    w.blocks, w.start
                ));
            }
        }
        Ok(())
    }
}

/// Serde of an `f64` that may be NaN or infinite: finite values as JSON numbers, the rest as
/// the strings `"NaN"`, `"inf"`, `"-inf"` (JSON has no such numbers).
pub(crate) mod float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else if x.is_nan() {
            s.serialize_str("NaN")
        } else if *x > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Str(String),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(x) => Ok(x),
            Repr::Str(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(serde::de::Error::custom(format!("{s:?} is not a number"))),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Level, Method, Stop};

    fn prov() -> Provenance {
        Provenance {
            model_sha256: "aa".into(),
            data_sha256: "bb".into(),
        }
    }

    fn step(unit: Unit, score: f64) -> Step {
        Step {
            unit,
            score,
            runners_up: vec![],
            candidates: 1,
            forward_equivalents: 0.5,
            wall_s: 0.0,
            elimination: None,
        }
    }

    /// Found by `cargo xtask fuzz`: a result file claiming `usize::MAX` blocks overflowed
    /// `num_sublayers` (a panic in debug builds, a wrong count in release builds).
    #[test]
    fn a_huge_block_count_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        let r = SearchResult::new(Settings::new(Method::Finercut), prov(), 4).unwrap();
        r.save(&path).unwrap();
        SearchResult::load(&path).unwrap();
        for blocks in [0, usize::MAX, MAX_BLOCKS + 1] {
            let mut json: serde_json::Value =
                serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            json["num_blocks"] = blocks.into();
            fs::write(&path, json.to_string()).unwrap();
            let e = SearchResult::load(&path).unwrap_err().to_string();
            assert!(e.contains("num_blocks"), "{e}");
        }
    }

    #[test]
    fn ratio_plans_take_prefixes() {
        let mut r = SearchResult::new(Settings::new(Method::Finercut), prov(), 4).unwrap();
        r.steps = [5, 2, 7, 0]
            .into_iter()
            .map(|i| step(Unit::Sublayer(i), 0.1))
            .collect();
        assert_eq!(r.plan_for_ratio(0.25).unwrap(), BTreeSet::from([5, 2]));
        assert_eq!(r.plan_for_ratio(0.1).unwrap(), BTreeSet::new());
        assert!(matches!(
            r.plan_for_ratio(0.0),
            Err(Error::InvalidRatio { .. })
        ));
        assert!(matches!(
            r.plan_for_ratio(0.75),
            Err(Error::RatioNotCovered { .. })
        ));
        r.exhausted = true;
        assert!(matches!(
            r.plan_for_ratio(0.75),
            Err(Error::RatioBeyondLevel { .. })
        ));
        assert!(matches!(
            r.plan_for_ratio(1.5),
            Err(Error::InvalidRatio { .. })
        ));
    }

    #[test]
    fn block_plans_round_down() {
        let mut s = Settings::new(Method::Finercut);
        s.level = Level::Block;
        let mut r = SearchResult::new(s, prov(), 4).unwrap();
        r.steps = [2, 1]
            .into_iter()
            .map(|b| step(Unit::Block(b), 0.1))
            .collect();
        // 8 sublayers: ratio 0.375 → 3 sublayers → one block.
        assert_eq!(r.units_for_ratio(0.375).unwrap(), vec![Unit::Block(2)]);
        assert_eq!(r.plan_for_ratio(0.5).unwrap(), BTreeSet::from([2, 3, 4, 5]));
        // A greedy block run that stopped where the ratio asked (SLEB at 0.25 of 8 sublayers
        // on a 4-block model stops after one block; 0.375 asks for 3, reachable as 2).
        r.steps.truncate(1);
        assert_eq!(r.units_for_ratio(0.375).unwrap(), vec![Unit::Block(2)]);
        assert_eq!(r.units_for_ratio(0.25).unwrap(), vec![Unit::Block(2)]);
        assert!(matches!(
            r.units_for_ratio(0.5),
            Err(Error::RatioNotCovered { .. })
        ));
    }

    #[test]
    fn non_finite_scores_round_trip() {
        let mut r = SearchResult::new(Settings::new(Method::Finercut), prov(), 2).unwrap();
        r.steps = vec![
            step(Unit::Sublayer(1), f64::NAN),
            step(Unit::Sublayer(0), f64::INFINITY),
        ];
        let j = serde_json::to_string(&r).unwrap();
        let back: SearchResult = serde_json::from_str(&j).unwrap();
        assert!(back.steps[0].score.is_nan());
        assert_eq!(back.steps[1].score, f64::INFINITY);
    }

    #[test]
    fn resume_checks_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let mut s = Settings::new(Method::Finercut);
        s.stop = Stop::Ratio(0.5);
        let r = SearchResult::new(s.clone(), prov(), 2).unwrap();
        r.save(&path).unwrap();
        let mut s2 = s.clone();
        s2.threads = 8;
        s2.stop = Stop::End;
        let back = SearchResult::resume(&path, &s2, &prov(), 2).unwrap();
        assert_eq!(back.settings.threads, 8);
        let other = Provenance {
            model_sha256: "cc".into(),
            data_sha256: "bb".into(),
        };
        let err = SearchResult::resume(&path, &s, &other, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("model SHA-256"), "{err}");
        let mut s3 = s.clone();
        s3.samples = 3;
        let err = SearchResult::resume(&path, &s3, &prov(), 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("samples"), "{err}");
        assert!(SearchResult::resume(&path, &s, &prov(), 3).is_err());
    }
}
