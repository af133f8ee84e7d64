//! Dense `f64` linear algebra for SliceGPT: products, covariances and the symmetric
//! eigendecomposition, all through `faer` (pure Rust: no LAPACK to install).
//!
//! Products are split into blocks of [`ROW_BLOCK`] rows that run in parallel, each one a
//! sequential `faer` GEMM; the blocks are fixed by the shapes, so results do not depend on the
//! number of threads.

use crate::{Error, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par, Side};
use rayon::prelude::*;

/// Rows of the left operand per parallel block of a product.
pub(crate) const ROW_BLOCK: usize = 64;

/// Calibration rows per partial covariance (summed in order, in `f64`).
const COV_ROWS: usize = 512;

/// A row-major `f64` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows × cols` values, row after row.
    pub data: Vec<f64>,
}

impl Dense {
    /// A matrix from row-major `f32` values (`values.len() == rows · cols`).
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> Result<Dense> {
        if values.len() != rows * cols {
            return Err(Error::Input(format!(
                "{} values for a {rows}×{cols} matrix",
                values.len()
            )));
        }
        Ok(Dense {
            rows,
            cols,
            data: values.iter().map(|&v| f64::from(v)).collect(),
        })
    }

    /// The values rounded to `f32`, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// A `faer` view (kept inside the crate: the public API speaks in row-major slices, so it does
    /// not tie users to `faer`'s version).
    pub(crate) fn view(&self) -> MatRef<'_, f64> {
        MatRef::from_row_major_slice(&self.data, self.rows, self.cols)
    }

    /// The first `k` columns.
    pub fn first_cols(&self, k: usize) -> Dense {
        let k = k.min(self.cols);
        let mut data = Vec::with_capacity(self.rows * k);
        for r in 0..self.rows {
            data.extend_from_slice(&self.data[r * self.cols..r * self.cols + k]);
        }
        Dense {
            rows: self.rows,
            cols: k,
            data,
        }
    }
}

/// `a · b` in `f64` (row-major matrices), blocks of rows of `a` in parallel; an error when the
/// inner dimensions differ.
pub fn matmul_f64(a: &Dense, b: &Dense) -> Result<Dense> {
    if a.cols != b.rows {
        return Err(Error::Input(format!(
            "cannot multiply a {}×{} matrix by a {}×{} one",
            a.rows, a.cols, b.rows, b.cols
        )));
    }
    Ok(matmul_views(a.view(), b.view()))
}

/// `a · b` on `faer` views, blocks of rows of `a` in parallel.
pub(crate) fn matmul_views(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Dense {
    let (m, n) = (a.nrows(), b.ncols());
    let mut data = vec![0.0f64; m * n];
    if n > 0 {
        data.par_chunks_mut(ROW_BLOCK * n)
            .enumerate()
            .for_each(|(i, chunk)| {
                let r0 = i * ROW_BLOCK;
                let r = chunk.len() / n;
                let dst = MatMut::from_row_major_slice_mut(chunk, r, n);
                matmul(dst, Accum::Replace, a.subrows(r0, r), b, 1.0, Par::Seq);
            });
    }
    Dense {
        rows: m,
        cols: n,
        data,
    }
}

/// `Σ x xᵀ` over the rows `x` of `values` (`rows × d`, `f32`), accumulated in `f64`: partial sums
/// over blocks of rows (in parallel), added in block order.
pub fn covariance(values: &[f32], rows: usize, d: usize) -> Result<Dense> {
    if values.len() != rows * d || d == 0 {
        return Err(Error::Input(format!(
            "{} values for {rows} rows of width {d}",
            values.len()
        )));
    }
    let partial: Vec<Vec<f64>> = values
        .par_chunks(COV_ROWS * d)
        .map(|chunk| {
            let r = chunk.len() / d;
            let x: Vec<f64> = chunk.iter().map(|&v| f64::from(v)).collect();
            let xv = MatRef::from_row_major_slice(&x, r, d);
            let mut h = vec![0.0f64; d * d];
            matmul(
                MatMut::from_row_major_slice_mut(&mut h, d, d),
                Accum::Replace,
                xv.transpose(),
                xv,
                1.0,
                Par::Seq,
            );
            h
        })
        .collect();
    let mut h = vec![0.0f64; d * d];
    for p in partial {
        for (a, b) in h.iter_mut().zip(p) {
            *a += b;
        }
    }
    Ok(Dense {
        rows: d,
        cols: d,
        data: h,
    })
}

/// The eigendecomposition of the symmetric matrix `a`: eigenvalues in descending order and the
/// matching unit eigenvectors as the columns of a matrix (`a · v_j = λ_j v_j`). Only the lower
/// triangle of `a` is read. `point` names the matrix in errors.
pub fn symmetric_eigen(a: &Dense, point: usize) -> Result<(Vec<f64>, Dense)> {
    let n = a.rows;
    if a.cols != n {
        return Err(Error::Input(format!(
            "a {}×{} matrix is not square",
            n, a.cols
        )));
    }
    if let Some(v) = a.data.iter().find(|v| !v.is_finite()) {
        return Err(Error::Eigen {
            point,
            reason: format!("the matrix holds {v}"),
        });
    }
    let evd = a
        .view()
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Eigen {
            point,
            reason: format!("{e:?}"),
        })?;
    let s = evd.S();
    let u = evd.U();
    // faer sorts ascending: reverse.
    let values: Vec<f64> = (0..n).rev().map(|i| s[i]).collect();
    let mut vectors = Dense {
        rows: n,
        cols: n,
        data: vec![0.0; n * n],
    };
    for r in 0..n {
        for j in 0..n {
            vectors.data[r * n + j] = u[(r, n - 1 - j)];
        }
    }
    Ok((values, vectors))
}
