//! Rotary position embeddings in the Hugging Face `rotate_half` layout, with Llama 3 and linear scaling.
//!
//! A rotary embedding may be partial (GPT-NeoX's `rotary_pct`, transformers' `partial_rotary_factor`):
//! only the first `rotary_dim` values of each head rotate (as two halves of `rotary_dim / 2`), the
//! others pass through, and the frequencies are those of a head of `rotary_dim` values.
//!
//! Frequencies follow `transformers`' `_compute_default_rope_parameters`,
//! `_compute_linear_scaling_rope_parameters` and `_compute_llama3_parameters`; angles are computed as
//! the `f32` product `position · inv_freq` like `LlamaRotaryEmbedding`, then `cos`/`sin` are taken.

use crate::backend::RopeTables;
use crate::{Error, Result, Tensor};

/// Frequency scaling of RoPE (mirrors `rope_scaling` in a Hugging Face `config.json`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (`"rope_type": "linear"`).
    Linear {
        /// Scaling factor.
        factor: f64,
    },
    /// Llama 3.1 frequency-dependent scaling (`"rope_type": "llama3"`).
    Llama3 {
        /// Scaling factor of low frequencies.
        factor: f64,
        /// Wavelength bound (as a fraction of the original context) above which frequencies are scaled.
        low_freq_factor: f64,
        /// Wavelength bound below which frequencies are kept.
        high_freq_factor: f64,
        /// Context length of the original model.
        original_max_position_embeddings: usize,
    },
}

/// Precomputed inverse frequencies of a rotary embedding.
#[derive(Clone, Debug)]
pub struct Rope {
    head_dim: usize,
    /// `rotary_dim / 2` inverse frequencies: the first `rotary_dim` values of a head rotate.
    inv_freq: Vec<f32>,
}

impl Rope {
    /// Rotary embedding of heads of `head_dim` (even) values with base `theta`.
    pub fn new(head_dim: usize, theta: f64, scaling: RopeScaling) -> Result<Rope> {
        Rope::with_rotary_dim(head_dim, head_dim, theta, scaling)
    }

    /// Rotary embedding of heads of `head_dim` values of which the first `rotary_dim` (even, at
    /// most `head_dim`) rotate, with the frequencies of a head of `rotary_dim` values
    /// (transformers' `partial_rotary_factor = rotary_dim / head_dim`).
    pub fn with_rotary_dim(
        head_dim: usize,
        rotary_dim: usize,
        theta: f64,
        scaling: RopeScaling,
    ) -> Result<Rope> {
        let op = "Rope::new";
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || rotary_dim > head_dim {
            return Err(Error::Invalid {
                op,
                detail: format!(
                    "rotary_dim {rotary_dim} must be even, positive and at most head_dim {head_dim}"
                ),
            });
        }
        if !(theta.is_finite() && theta > 0.0) {
            return Err(Error::Invalid {
                op,
                detail: format!("rope_theta {theta} must be positive"),
            });
        }
        let base: Vec<f64> = (0..rotary_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / rotary_dim as f64))
            .collect();
        let inv: Vec<f64> = match scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => {
                if !(factor.is_finite() && factor > 0.0) {
                    return Err(Error::Invalid {
                        op,
                        detail: format!("linear rope factor {factor}"),
                    });
                }
                base.iter().map(|f| f / factor).collect()
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                if !(factor > 0.0 && low_freq_factor > 0.0 && high_freq_factor > low_freq_factor) {
                    return Err(Error::Invalid {
                        op,
                        detail: format!("llama3 rope scaling {scaling:?}"),
                    });
                }
                let old = original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        Ok(Rope {
            head_dim,
            inv_freq: inv.iter().map(|&f| f as f32).collect(),
        })
    }

    /// Plain RoPE of base `theta` whose inverse frequencies are divided by `factors` (`head_dim / 2`
    /// positive values), as llama.cpp applies a GGUF's `rope_freqs` tensor (Llama 3.1 scaling
    /// stored as per-frequency divisors).
    pub fn with_freq_factors(head_dim: usize, theta: f64, factors: &[f32]) -> Result<Rope> {
        // Checks head_dim and theta.
        Rope::new(head_dim, theta, RopeScaling::None)?;
        if factors.len() != head_dim / 2 {
            return Err(Error::ShapeMismatch {
                op: "Rope::with_freq_factors",
                detail: format!(
                    "{} frequency factors for head_dim {head_dim} (expected {})",
                    factors.len(),
                    head_dim / 2
                ),
            });
        }
        if let Some(bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
            return Err(Error::Invalid {
                op: "Rope::with_freq_factors",
                detail: format!("frequency factor {bad} must be positive"),
            });
        }
        let base: Vec<f64> = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
            .collect();
        Ok(Rope {
            head_dim,
            inv_freq: base
                .iter()
                .zip(factors)
                .map(|(&b, &f)| (b / f64::from(f)) as f32)
                .collect(),
        })
    }

    /// Dimension of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// How many leading values of a head rotate (`head_dim` unless partial).
    pub fn rotary_dim(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// The inverse frequencies (`rotary_dim / 2` values).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// `(cos, sin)` tables for positions `lo..=hi`, `rotary_dim / 2` values per position.
    fn tables(&self, lo: usize, hi: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let n = hi - lo + 1;
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for p in lo..=hi {
            for &f in &self.inv_freq {
                let angle = f64::from(p as f32 * f);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        (cos, sin)
    }

    /// Rotates `x` (`[rows, heads·head_dim]`) in place; row `r` is at position `positions[r]`.
    pub fn apply(&self, x: &mut Tensor, positions: &[usize]) -> Result<()> {
        let op = "Rope::apply";
        let c = x.cols();
        if x.rows() != positions.len() || !c.is_multiple_of(self.head_dim) {
            return Err(Error::ShapeMismatch {
                op,
                detail: format!(
                    "{:?} with {} positions and head_dim {}",
                    x.shape(),
                    positions.len(),
                    self.head_dim
                ),
            });
        }
        let (Some(&lo), Some(&hi)) = (positions.iter().min(), positions.iter().max()) else {
            return Ok(());
        };
        let half = self.inv_freq.len();
        let (cos, sin) = self.tables(lo, hi);
        let index: Vec<u32> = positions.iter().map(|&p| (p - lo) as u32).collect();
        let tables = RopeTables {
            head_dim: self.head_dim,
            half,
            cos: &cos,
            sin: &sin,
            index: &index,
        };
        x.storage.rope(c, &tables)
    }
}
