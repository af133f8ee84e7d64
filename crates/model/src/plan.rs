//! Sublayer identities and removal plans.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The two residual branches of a decoder block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SublayerKind {
    /// Self-attention (`h = x + Attn(norm1(x))`).
    Attn,
    /// Feed-forward (`y = h + FFN(norm2(h))`).
    Mlp,
}

impl fmt::Display for SublayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SublayerKind::Attn => "attn",
            SublayerKind::Mlp => "mlp",
        })
    }
}

/// One of the 2L sublayers, in execution order `L0.attn, L0.mlp, L1.attn, …`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SublayerId {
    /// Decoder block.
    pub block: usize,
    /// Branch within the block.
    pub kind: SublayerKind,
}

impl SublayerId {
    /// The sublayer with execution index `i` (`2·block + (kind == Mlp)`).
    pub fn from_index(i: usize) -> SublayerId {
        let kind = if i.is_multiple_of(2) {
            SublayerKind::Attn
        } else {
            SublayerKind::Mlp
        };
        SublayerId { block: i / 2, kind }
    }

    /// Execution index: `2·block + (kind == Mlp)`.
    pub fn index(&self) -> usize {
        2 * self.block + usize::from(self.kind == SublayerKind::Mlp)
    }
}

impl fmt::Display for SublayerId {
    /// `L{block}.attn` or `L{block}.mlp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}.{}", self.block, self.kind)
    }
}

impl FromStr for SublayerId {
    type Err = String;

    /// Parses `L{block}.attn` / `L{block}.mlp`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a sublayer name like `L3.attn` or `L3.mlp`");
        let rest = s.strip_prefix('L').ok_or_else(bad)?;
        let (block, kind) = rest.split_once('.').ok_or_else(bad)?;
        let block = block.parse().map_err(|_| bad())?;
        let kind = match kind {
            "attn" => SublayerKind::Attn,
            "mlp" => SublayerKind::Mlp,
            _ => return Err(bad()),
        };
        Ok(SublayerId { block, kind })
    }
}

/// Which sublayers are removed. A removed sublayer is skipped entirely (norm and branch): its residual
/// branch becomes the identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Plan {
    removed: BTreeSet<usize>,
}

impl Plan {
    /// Nothing removed.
    pub fn dense() -> Plan {
        Plan::default()
    }

    /// The given sublayer indices removed.
    pub fn from_removed(removed: impl IntoIterator<Item = usize>) -> Plan {
        Plan {
            removed: removed.into_iter().collect(),
        }
    }

    /// Whether sublayer `i` is removed.
    pub fn is_removed(&self, i: usize) -> bool {
        self.removed.contains(&i)
    }

    /// The removed indices, ascending.
    pub fn removed(&self) -> &BTreeSet<usize> {
        &self.removed
    }

    /// Number of removed sublayers.
    pub fn len(&self) -> usize {
        self.removed.len()
    }

    /// Whether nothing is removed.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty()
    }

    /// Removes sublayer `i` too; returns whether it was kept before.
    pub fn insert(&mut self, i: usize) -> bool {
        self.removed.insert(i)
    }

    /// This plan with `more` removed as well.
    pub fn with(&self, more: impl IntoIterator<Item = usize>) -> Plan {
        let mut p = self.clone();
        p.removed.extend(more);
        p
    }
}

impl fmt::Display for Plan {
    /// The removed sublayers as `L0.attn,L3.mlp` (`dense` when none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed.is_empty() {
            return f.write_str("dense");
        }
        for (n, &i) in self.removed.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", SublayerId::from_index(i))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for i in 0..10 {
            let id = SublayerId::from_index(i);
            assert_eq!(id.index(), i);
            assert_eq!(id.to_string().parse::<SublayerId>().unwrap(), id);
        }
        assert_eq!(SublayerId::from_index(3).to_string(), "L1.mlp");
        assert!("L1.ffn".parse::<SublayerId>().is_err());
        assert!("1.attn".parse::<SublayerId>().is_err());
    }

    #[test]
    fn plans() {
        let p = Plan::from_removed([3, 0]);
        assert!(p.is_removed(0) && !p.is_removed(1));
        assert_eq!(p.to_string(), "L0.attn,L1.mlp");
        assert_eq!(p.with([5]).len(), 3);
        assert_eq!(Plan::dense().to_string(), "dense");
    }
}
