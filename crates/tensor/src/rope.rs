//! Rotary position embeddings in the Hugging Face `rotate_half` layout, with Llama 3, linear and
//! LongRoPE scaling, over the whole head or its first `rotary_dim` values (partial rotary).
//!
//! Frequencies follow `transformers`' `_compute_default_rope_parameters`,
//! `_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters` and
//! `_compute_longrope_parameters`; angles are computed as the `f32` product `position · inv_freq`
//! like `LlamaRotaryEmbedding`, then `cos`/`sin` are taken (and multiplied by LongRoPE's attention
//! factor).
//!
//! Partial rotary (GPT-NeoX's `rotary_pct`, Phi's `partial_rotary_factor`): with `rotary_dim <
//! head_dim`, the first `rotary_dim` values of each head rotate in the NeoX half layout (value `i`
//! pairs with `i + rotary_dim / 2`) and the others pass through, as transformers'
//! `apply_rotary_pos_emb` does when `cos` is narrower than the head.
//!
//! LongRoPE (Phi-3): two sets of per-frequency divisors; a call whose largest position `p` has
//! `p + 1 > original_max_position_embeddings` uses the long set for all its rows, otherwise the
//! short one, as transformers' `longrope_frequency_update` chooses per forward call.

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

/// LongRoPE settings (`"rope_type": "longrope"`, Phi-3): the inverse frequencies are divided by
/// `short_factor` or `long_factor` (`rotary_dim / 2` positive values each), and `cos`/`sin` are
/// multiplied by `attention_factor`.
#[derive(Clone, Debug, PartialEq)]
pub struct LongRope {
    /// Divisors for calls within the original context.
    pub short_factor: Vec<f64>,
    /// Divisors for calls past it.
    pub long_factor: Vec<f64>,
    /// Context length of pre-training: a call with a position `p`, `p + 1` above it, uses
    /// `long_factor`.
    pub original_max_position_embeddings: usize,
    /// Scale of `cos` and `sin` (transformers' `attention_scaling`).
    pub attention_factor: f64,
}

/// Precomputed inverse frequencies of a rotary embedding.
#[derive(Clone, Debug)]
pub struct Rope {
    head_dim: usize,
    /// `rotary_dim / 2` inverse frequencies (the short set under LongRoPE).
    inv_freq: Vec<f32>,
    /// LongRoPE's long set and the context past which it applies.
    long: Option<(Vec<f32>, usize)>,
    /// Scale of `cos` and `sin`.
    scale: f32,
}

impl Rope {
    /// Rotary embedding of heads of `head_dim` (even) values with base `theta`.
    pub fn new(head_dim: usize, theta: f64, scaling: RopeScaling) -> Result<Rope> {
        Rope::partial(head_dim, head_dim, theta, scaling)
    }

    /// Rotary embedding of the first `rotary_dim` (even, at most `head_dim`) values of heads of
    /// `head_dim` values with base `theta`; the others pass through.
    pub fn partial(
        head_dim: usize,
        rotary_dim: usize,
        theta: f64,
        scaling: RopeScaling,
    ) -> Result<Rope> {
        let op = "Rope::new";
        check_dims(op, head_dim, rotary_dim)?;
        if !(theta.is_finite() && theta > 0.0) {
            return Err(Error::Invalid {
                op,
                detail: format!("rope_theta {theta} must be positive"),
            });
        }
        let base = base_freqs(rotary_dim, theta);
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
            long: None,
            scale: 1.0,
        })
    }

    /// LongRoPE of the first `rotary_dim` values of heads of `head_dim` values, base `theta`.
    pub fn long_rope(
        head_dim: usize,
        rotary_dim: usize,
        theta: f64,
        scaling: &LongRope,
    ) -> Result<Rope> {
        let op = "Rope::long_rope";
        check_dims(op, head_dim, rotary_dim)?;
        if !(theta.is_finite() && theta > 0.0) {
            return Err(Error::Invalid {
                op,
                detail: format!("rope_theta {theta} must be positive"),
            });
        }
        let a = scaling.attention_factor;
        if !(a.is_finite() && a > 0.0) || scaling.original_max_position_embeddings == 0 {
            return Err(Error::Invalid {
                op,
                detail: format!(
                    "attention factor {a} and original context {} must be positive",
                    scaling.original_max_position_embeddings
                ),
            });
        }
        let base = base_freqs(rotary_dim, theta);
        let divided = |name: &str, factors: &[f64]| -> Result<Vec<f32>> {
            if factors.len() != base.len() {
                return Err(Error::ShapeMismatch {
                    op,
                    detail: format!(
                        "{} {name} values for rotary_dim {rotary_dim} (expected {})",
                        factors.len(),
                        base.len()
                    ),
                });
            }
            if let Some(bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                return Err(Error::Invalid {
                    op,
                    detail: format!("{name} value {bad} must be positive"),
                });
            }
            Ok(base
                .iter()
                .zip(factors)
                .map(|(&b, &f)| (b / f) as f32)
                .collect())
        };
        Ok(Rope {
            head_dim,
            inv_freq: divided("short_factor", &scaling.short_factor)?,
            long: Some((
                divided("long_factor", &scaling.long_factor)?,
                scaling.original_max_position_embeddings,
            )),
            scale: a as f32,
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
        let base = base_freqs(head_dim, theta);
        Ok(Rope {
            head_dim,
            inv_freq: base
                .iter()
                .zip(factors)
                .map(|(&b, &f)| (b / f64::from(f)) as f32)
                .collect(),
            long: None,
            scale: 1.0,
        })
    }

    /// Dimension of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Values of each head that rotate (the first ones; `head_dim` unless partial).
    pub fn rotary_dim(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// The inverse frequencies (`rotary_dim / 2` values; LongRoPE's short set).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// The inverse frequencies a call whose largest position is `hi` uses.
    fn freqs_for(&self, hi: usize) -> &[f32] {
        match &self.long {
            Some((long, original)) if hi.saturating_add(1) > *original => long,
            _ => &self.inv_freq,
        }
    }

    /// `(cos, sin)` tables for positions `lo..=hi`, `rotary_dim / 2` values per position.
    fn tables(&self, lo: usize, hi: usize) -> (Vec<f32>, Vec<f32>) {
        let freqs = self.freqs_for(hi);
        let half = freqs.len();
        let n = hi - lo + 1;
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for p in lo..=hi {
            for &f in freqs {
                let angle = f64::from(p as f32 * f);
                cos.push(angle.cos() as f32 * self.scale);
                sin.push(angle.sin() as f32 * self.scale);
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

/// Checks a head width and its rotating part.
fn check_dims(op: &'static str, head_dim: usize, rotary_dim: usize) -> Result<()> {
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(Error::Invalid {
            op,
            detail: format!("head_dim {head_dim} must be even and positive"),
        });
    }
    if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || rotary_dim > head_dim {
        return Err(Error::Invalid {
            op,
            detail: format!(
                "rotary_dim {rotary_dim} must be even, positive and at most head_dim {head_dim}"
            ),
        });
    }
    Ok(())
}

/// `theta^(-2i / dim)` for `i < dim / 2`.
fn base_freqs(dim: usize, theta: f64) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / dim as f64))
        .collect()
}
