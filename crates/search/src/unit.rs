//! Candidate levels and units: what one greedy step removes, and the names results use.
//!
//! Sublayer `i` is the attention branch of block `i / 2` when `i` is even and its FFN when odd
//! (execution order, as in `finercut_model::SublayerId`). Units are named `L{block}.attn`,
//! `L{block}.mlp` and `L{block}`, blocks counted from 0.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which units a search may remove.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Attention and FFN sublayers, each on its own (FinerCut's default).
    #[default]
    Sublayer,
    /// Attention sublayers only.
    Attn,
    /// FFN sublayers only.
    Mlp,
    /// Whole blocks (attention and FFN together).
    Block,
}

impl Level {
    /// Every level.
    pub const ALL: [Level; 4] = [Level::Sublayer, Level::Attn, Level::Mlp, Level::Block];

    /// The level's name (`sublayer`, `attn`, `mlp`, `block`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Sublayer => "sublayer",
            Level::Attn => "attn",
            Level::Mlp => "mlp",
            Level::Block => "block",
        }
    }

    /// Every unit of this level in a model of `num_blocks` blocks, in index order.
    pub fn units(self, num_blocks: usize) -> Vec<Unit> {
        match self {
            Level::Sublayer => (0..2 * num_blocks).map(Unit::Sublayer).collect(),
            Level::Attn => (0..num_blocks).map(|b| Unit::Sublayer(2 * b)).collect(),
            Level::Mlp => (0..num_blocks).map(|b| Unit::Sublayer(2 * b + 1)).collect(),
            Level::Block => (0..num_blocks).map(Unit::Block).collect(),
        }
    }

    /// Whether `unit` belongs to this level.
    pub fn contains(self, unit: Unit) -> bool {
        match (self, unit) {
            (Level::Sublayer, Unit::Sublayer(_)) | (Level::Block, Unit::Block(_)) => true,
            (Level::Attn, Unit::Sublayer(i)) => i.is_multiple_of(2),
            (Level::Mlp, Unit::Sublayer(i)) => i % 2 == 1,
            _ => false,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Level::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| Error::InvalidSetting {
                setting: "level",
                message: format!("unknown level {s:?}; expected sublayer, attn, mlp or block"),
            })
    }
}

/// One removable unit: a sublayer (by index) or a whole block (by block index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// Sublayer `i` (`L{i/2}.attn` or `L{i/2}.mlp`).
    Sublayer(usize),
    /// Block `b` (`L{b}`): sublayers `2b` and `2b+1`.
    Block(usize),
}

impl Unit {
    /// The sublayer indices this unit removes, ascending.
    pub fn sublayers(self) -> Vec<usize> {
        match self {
            Unit::Sublayer(i) => vec![i],
            Unit::Block(b) => vec![2 * b, 2 * b + 1],
        }
    }

    /// The block the unit lies in.
    pub fn block(self) -> usize {
        match self {
            Unit::Sublayer(i) => i / 2,
            Unit::Block(b) => b,
        }
    }

    /// The unit's index within its level's order (sublayer index or block index): ties between
    /// equal scores go to the lowest.
    pub fn index(self) -> usize {
        match self {
            Unit::Sublayer(i) => i,
            Unit::Block(b) => b,
        }
    }

    /// Whether the unit lies inside a model of `num_blocks` blocks.
    pub fn fits(self, num_blocks: usize) -> bool {
        self.block() < num_blocks
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Unit::Sublayer(i) if i.is_multiple_of(2) => write!(f, "L{}.attn", i / 2),
            Unit::Sublayer(i) => write!(f, "L{}.mlp", i / 2),
            Unit::Block(b) => write!(f, "L{b}"),
        }
    }
}

impl FromStr for Unit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidUnit { name: s.to_owned() };
        let rest = s.strip_prefix('L').ok_or_else(bad)?;
        let (block, kind) = match rest.split_once('.') {
            Some((b, k)) => (b, Some(k)),
            None => (rest, None),
        };
        if block.is_empty() || !block.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let b: usize = block.parse().map_err(|_| bad())?;
        match kind {
            None => Ok(Unit::Block(b)),
            Some("attn") => Ok(Unit::Sublayer(2 * b)),
            Some("mlp") => Ok(Unit::Sublayer(2 * b + 1)),
            Some(_) => Err(bad()),
        }
    }
}

impl Serialize for Unit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Unit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Name of sublayer `i` (`L{i/2}.attn` or `L{i/2}.mlp`).
pub fn sublayer_name(i: usize) -> String {
    Unit::Sublayer(i).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for u in [Unit::Sublayer(0), Unit::Sublayer(7), Unit::Block(12)] {
            assert_eq!(u.to_string().parse::<Unit>().unwrap(), u);
        }
        assert_eq!(Unit::Sublayer(7).to_string(), "L3.mlp");
        assert_eq!(Unit::Block(2).sublayers(), vec![4, 5]);
        for bad in [
            "",
            "L",
            "3.attn",
            "L3.ffn",
            "L-1",
            "L+1",
            "Lx.attn",
            "L1.attn.x",
        ] {
            assert!(bad.parse::<Unit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn level_units() {
        assert_eq!(
            Level::Attn.units(2),
            vec![Unit::Sublayer(0), Unit::Sublayer(2)]
        );
        assert_eq!(
            Level::Mlp.units(2),
            vec![Unit::Sublayer(1), Unit::Sublayer(3)]
        );
        assert_eq!(Level::Sublayer.units(2).len(), 4);
        assert!(Level::Mlp.contains(Unit::Sublayer(3)));
        assert!(!Level::Mlp.contains(Unit::Block(1)));
        for l in Level::ALL {
            assert_eq!(l.to_string().parse::<Level>().unwrap(), l);
        }
    }
}
