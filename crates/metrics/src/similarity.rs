//! Similarities of hidden states for the baselines: cosine (ShortGPT's Block Influence) and the
//! normalised angular distance of DeeperLayers (Gromov et al.), on rows of `f32`, in `f64`.

use std::f64::consts::PI;

use crate::{Error, Result};

/// Cosine similarity of two vectors; 0 when either is the zero vector (as PyTorch's
/// `cosine_similarity` gives with its `eps`). Lengths must match (else NaN).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    let denom = (aa * bb).sqrt();
    if denom > 0.0 {
        (dot / denom).clamp(-1.0, 1.0)
    } else if denom.is_nan() {
        f64::NAN
    } else {
        0.0
    }
}

/// Normalised angular distance `(1/π)·acos(cos(a, b))`, in `[0, 1]` (Gromov et al., eq. 7).
pub fn angular_distance(a: &[f32], b: &[f32]) -> f64 {
    cosine(a, b).acos() / PI
}

/// Mean over rows of the cosine similarity of matching rows of `a` and `b` (`[rows, dim]`).
pub fn mean_row_cosine(a: &[f32], b: &[f32], dim: usize) -> Result<f64> {
    mean_rows(a, b, dim, cosine)
}

/// Mean over rows of [`angular_distance`] of matching rows.
pub fn mean_row_angular_distance(a: &[f32], b: &[f32], dim: usize) -> Result<f64> {
    mean_rows(a, b, dim, angular_distance)
}

/// ShortGPT's Block Influence of a block with input `a` and output `b` (`[rows, dim]`):
/// `1 − mean_rows cos(a_row, b_row)`.
pub fn block_influence(a: &[f32], b: &[f32], dim: usize) -> Result<f64> {
    Ok(1.0 - mean_row_cosine(a, b, dim)?)
}

fn mean_rows(a: &[f32], b: &[f32], dim: usize, f: fn(&[f32], &[f32]) -> f64) -> Result<f64> {
    if dim == 0 {
        return Err(Error::ZeroSize {
            what: "hidden size",
        });
    }
    if a.len() != b.len() || !a.len().is_multiple_of(dim) || a.is_empty() {
        return Err(Error::ShapeMismatch {
            what: format!("hidden states with hidden size {dim}"),
            expected: a.len().max(dim),
            got: b.len(),
        });
    }
    let rows = a.len() / dim;
    let mut sum = crate::accumulate::NeumaierSum::default();
    for (x, y) in a.chunks(dim).zip(b.chunks(dim)) {
        sum.add(f(x, y));
    }
    Ok(sum.value() / rows as f64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert!((cosine(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-15);
        assert!((angular_distance(&[1.0, 0.0], &[-1.0, 0.0]) - 1.0).abs() < 1e-15);
        assert!((angular_distance(&[1.0, 0.0], &[0.0, 2.0]) - 0.5).abs() < 1e-15);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        let a = [1.0, 0.0, 1.0, 1.0];
        let b = [1.0, 0.0, -1.0, -1.0];
        assert!((block_influence(&a, &b, 2).unwrap() - 1.0).abs() < 1e-12);
        assert!(mean_row_cosine(&a, &b[..2], 2).is_err());
        assert!(mean_row_cosine(&a, &b, 0).is_err());
    }
}
