//! Weight matrices kept as stored and widened to `f32` only inside the GEMM.
//!
//! A [`Matrix`] is either a dense `f32` [`Tensor`] or rows kept in their stored type behind the
//! [`WidenRows`] trait: bf16/f16 straight from shared bytes such as a memory map ([`HalfRows`],
//! built by [`Matrix::from_shared_bytes`]), or rows of any other format that a caller outside this
//! crate can widen (quantised GGUF blocks: `finercut-model` implements the trait over
//! `finercut-format`'s rows, so this crate knows no file format).
//!
//! `x·Wᵀ` with a stored `W` uses the tiling of the dense product (`cpu::gemm`: fixed row tiles,
//! column tiles from the column count): for each tile of output columns, i.e. of rows of `W`, those rows are
//! widened into a buffer from the pool of reused buffers, and each output tile is the same
//! single-threaded `sgemm` call as in the dense product, on the same `f32` values, writing into
//! the strided output. Widening is exact, so the result is bit-identical to widening the whole
//! matrix first and to any thread count. Activations and accumulation stay `f32`.

use crate::cpu::gemm::{self, BLayout, Gemm, SendPtr};
use crate::cpu::pool;
use crate::dtype::HalfKind;
use crate::storage::SharedBytes;
use crate::{DType, Device, Error, Result, Tensor};
use rayon::prelude::*;
use std::fmt;
use std::sync::Arc;

/// A `[rows, cols]` matrix kept in some stored type whose rows can be widened to `f32`.
///
/// Implementations must widen deterministically: the same rows give the same values every time,
/// whichever rows are asked for together.
pub trait WidenRows: Send + Sync {
    /// Number of rows.
    fn rows(&self) -> usize;
    /// Number of columns (the row length).
    fn cols(&self) -> usize;
    /// Name of the stored type, for reports (`"bf16"`, `"Q4_1"`).
    fn stored_type(&self) -> String;
    /// Bytes the matrix occupies as stored.
    fn stored_bytes(&self) -> usize;
    /// Writes rows `first..first + out.len() / cols` as `f32` into `out` (whole rows).
    fn widen_rows(&self, first: usize, out: &mut [f32]) -> std::result::Result<(), String>;
}

/// bf16 or f16 rows used in place from shared bytes (no copy, any alignment).
struct HalfRows {
    owner: SharedBytes,
    start: usize,
    rows: usize,
    cols: usize,
    kind: HalfKind,
}

impl WidenRows for HalfRows {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn stored_type(&self) -> String {
        self.kind.dtype().to_string()
    }

    fn stored_bytes(&self) -> usize {
        self.rows * self.cols * 2
    }

    fn widen_rows(&self, first: usize, out: &mut [f32]) -> std::result::Result<(), String> {
        let n = out.len() / self.cols.max(1);
        if out.len() != n * self.cols || first + n > self.rows {
            return Err(format!(
                "{} values from row {first} of a {}×{} matrix",
                out.len(),
                self.rows,
                self.cols
            ));
        }
        let begin = self.start + first * self.cols * 2;
        let bytes = (*self.owner)
            .as_ref()
            .get(begin..begin + out.len() * 2)
            .ok_or_else(|| "shared bytes shorter than the matrix".to_string())?;
        widen_half(self.kind, bytes, out);
        Ok(())
    }
}

/// Little-endian 16-bit values to `f32` (exact).
fn widen_half(kind: HalfKind, bytes: &[u8], out: &mut [f32]) {
    match kind {
        HalfKind::Bf16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
            }
        }
        HalfKind::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
    }
}

/// A weight matrix `[rows, cols]`: dense `f32`, or kept as stored and widened inside the GEMM.
#[derive(Clone)]
pub enum Matrix {
    /// A dense `f32` tensor (owned, or used in place from a memory map).
    Dense(Tensor),
    /// Rows kept in their stored type (CPU only).
    Stored(Arc<dyn WidenRows>),
}

impl fmt::Debug for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matrix::Dense(t) => write!(f, "Matrix::Dense({t:?})"),
            Matrix::Stored(w) => write!(
                f,
                "Matrix::Stored([{}, {}], {})",
                w.rows(),
                w.cols(),
                w.stored_type()
            ),
        }
    }
}

impl From<Tensor> for Matrix {
    fn from(t: Tensor) -> Matrix {
        Matrix::Dense(t)
    }
}

fn widen_err(op: &'static str, detail: String) -> Error {
    Error::Invalid { op, detail }
}

impl Matrix {
    /// A matrix over `len` little-endian bytes of `owner` from `start`: `f32` as a dense tensor
    /// ([`Tensor::from_shared_bytes`]), bf16 and f16 kept as they are (no copy) and widened inside
    /// the GEMM.
    pub fn from_shared_bytes(
        owner: SharedBytes,
        start: usize,
        len: usize,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Matrix> {
        let op = "Matrix::from_shared_bytes";
        let &[rows, cols] = shape else {
            return Err(Error::ShapeMismatch {
                op,
                detail: format!("{shape:?} is not a matrix"),
            });
        };
        let Some(kind) = HalfKind::of(dtype) else {
            return Ok(Matrix::Dense(Tensor::from_shared_bytes(
                owner, start, len, dtype, shape,
            )?));
        };
        let expected = rows
            .checked_mul(cols)
            .ok_or(Error::TooLarge { op, dim: rows })?;
        if len != expected * 2 {
            return Err(Error::ElementCount {
                op,
                shape: shape.to_vec(),
                expected,
                got: len / 2,
            });
        }
        let available = (*owner).as_ref().len();
        if start.checked_add(len).is_none_or(|end| end > available) {
            return Err(Error::ByteRange {
                op,
                start,
                end: start.saturating_add(len),
                available,
            });
        }
        Ok(Matrix::Stored(Arc::new(HalfRows {
            owner,
            start,
            rows,
            cols,
            kind,
        })))
    }

    /// A matrix of rows that `rows` widens.
    pub fn from_rows(rows: Arc<dyn WidenRows>) -> Matrix {
        Matrix::Stored(rows)
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        match self {
            Matrix::Dense(t) => {
                let s = t.shape();
                [t.rows(), s.last().copied().unwrap_or(1)]
            }
            Matrix::Stored(w) => [w.rows(), w.cols()],
        }
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        let [r, c] = self.shape();
        r * c
    }

    /// The type the values are held in: `"f32"` for a dense matrix, else the stored type.
    pub fn stored_type(&self) -> String {
        match self {
            Matrix::Dense(t) => t.dtype().to_string(),
            Matrix::Stored(w) => w.stored_type(),
        }
    }

    /// Bytes the values occupy.
    pub fn stored_bytes(&self) -> usize {
        match self {
            Matrix::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Matrix::Stored(w) => w.stored_bytes(),
        }
    }

    /// The device holding the values (stored rows are on the CPU).
    pub fn device(&self) -> Device {
        match self {
            Matrix::Dense(t) => t.device(),
            Matrix::Stored(_) => Device::Cpu,
        }
    }

    /// The whole matrix as a dense `f32` tensor (widened once; a clone when already dense).
    pub fn to_dense(&self) -> Result<Tensor> {
        let op = "Matrix::to_dense";
        match self {
            Matrix::Dense(t) => Ok(t.clone()),
            Matrix::Stored(w) => {
                let (rows, cols) = (w.rows(), w.cols());
                let mut out = pool::take(rows * cols);
                if cols > 0 {
                    const BLOCK: usize = 64;
                    out.par_chunks_mut(BLOCK * cols)
                        .enumerate()
                        .try_for_each(|(i, dst)| w.widen_rows(i * BLOCK, dst))
                        .map_err(|e| widen_err(op, e))?;
                }
                Ok(Tensor::cpu(out, vec![rows, cols]))
            }
        }
    }

    /// `x · selfᵀ`: `x` is `[.., cols]`, the result `[.., rows]`.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Matrix::Dense(w) => x.matmul_t(w),
            Matrix::Stored(w) => {
                let op = "matmul_t";
                let (m, n) = (x.rows(), w.rows());
                check_x(op, x, w.as_ref())?;
                let mut shape = x.shape().to_vec();
                if let Some(last) = shape.last_mut() {
                    *last = n;
                }
                let mut out = pool::take(m * n);
                widened_matmul_t(w.as_ref(), x.cpu_f32(op)?, m, &mut out)?;
                Ok(Tensor::cpu(out, shape))
            }
        }
    }

    /// `x · selfᵀ` into the first `x.rows()` rows of `out` (see [`Tensor::matmul_t_into`]).
    pub fn matmul_t_into(&self, x: &Tensor, out: &mut Tensor) -> Result<()> {
        match self {
            Matrix::Dense(w) => x.matmul_t_into(w, out),
            Matrix::Stored(w) => {
                let op = "matmul_t_into";
                let (m, n) = (x.rows(), w.rows());
                check_x(op, x, w.as_ref())?;
                if out.cols() != n || out.rows() < m || out.device() != Device::Cpu {
                    return Err(Error::ShapeMismatch {
                        op,
                        detail: format!(
                            "{:?} · [{n}, {}]ᵀ into {:?}",
                            x.shape(),
                            w.cols(),
                            out.shape()
                        ),
                    });
                }
                widened_matmul_t(
                    w.as_ref(),
                    x.cpu_f32(op)?,
                    m,
                    &mut out.cpu_f32_mut(op)?[..m * n],
                )
            }
        }
    }

    /// `x · selfᵀ + bias` (a linear layer).
    pub fn linear(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let mut y = self.matmul_t(x)?;
        if let Some(b) = bias {
            y.add_row_vector_in_place(b)?;
        }
        Ok(y)
    }

    /// Rows picked by `ids`: `[ids.len(), cols]` (for stored rows only those rows are widened).
    pub fn embedding(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Matrix::Dense(t) => crate::embedding(t, ids),
            Matrix::Stored(w) => {
                let op = "embedding";
                let (vocab, d) = (w.rows(), w.cols());
                if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
                    return Err(Error::Index {
                        op,
                        index: bad as usize,
                        size: vocab,
                    });
                }
                let mut out = pool::take(ids.len() * d);
                if d > 0 {
                    for (row, &i) in out.chunks_exact_mut(d).zip(ids) {
                        w.widen_rows(i as usize, row)
                            .map_err(|e| widen_err(op, e))?;
                    }
                }
                Ok(Tensor::cpu(out, vec![ids.len(), d]))
            }
        }
    }
}

/// `x` is a CPU `[.., cols]` tensor of `f32` whose dimensions the BLAS interface accepts.
fn check_x(op: &'static str, x: &Tensor, w: &dyn WidenRows) -> Result<()> {
    if x.rank() == 0 || x.cols() != w.cols() {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("{:?} · [{}, {}]ᵀ", x.shape(), w.rows(), w.cols()),
        });
    }
    if x.device() != Device::Cpu {
        return Err(Error::DeviceMismatch {
            op,
            lhs: x.device(),
            rhs: Device::Cpu,
        });
    }
    for dim in [x.rows(), w.rows(), w.cols()] {
        if dim > i32::MAX as usize {
            return Err(Error::TooLarge { op, dim });
        }
    }
    Ok(())
}

/// `out[m × n] = x[m × k] · wᵀ` with `w` widened tile by tile (see the module comment).
fn widened_matmul_t(w: &dyn WidenRows, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
    let op = "matmul_t";
    let (n, k) = (w.rows(), w.cols());
    if x.len() < m * k || out.len() < m * n {
        return Err(Error::Invalid {
            op,
            detail: format!(
                "buffers of {} and {} values for {m}×{k}·[{n}×{k}]ᵀ",
                x.len(),
                out.len()
            ),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return Ok(());
    }
    let (tile_m, tile_n) = (gemm::TILE_M, gemm::tile_cols(n));
    let (tiles_m, tiles_n) = (m.div_ceil(tile_m), n.div_ceil(tile_n));
    let parallel = tiles_m * tiles_n > 1 && m * n * k >= gemm::SMALL;
    let c = SendPtr(out.as_mut_ptr());
    let column_tile = |tn: usize| -> Result<()> {
        let c0 = tn * tile_n;
        let cols = tile_n.min(n - c0);
        let mut b = pool::take(cols * k);
        w.widen_rows(c0, &mut b).map_err(|e| widen_err(op, e))?;
        let row_tile = |tm: usize| {
            let r0 = tm * tile_m;
            let g = Gemm {
                alpha: 1.0,
                m,
                n,
                k,
                lda: k,
                ldb: k,
                ldc: n,
                b_layout: BLayout::NxK,
                accumulate: false,
            };
            // SAFETY: `x` holds `m·k` values and `out` `m·n` (checked above), so rows
            // `r0..r0 + rows` of `x` and the block at `(r0, c0)` of `out` lie inside them; `b` holds
            // the tile's `cols` rows of `k` values. Tiles write disjoint blocks of `out` (distinct
            // row or column ranges), and the dimensions fit `i32` (`check_x`).
            unsafe {
                gemm::sgemm_tile(
                    g,
                    tile_m.min(m - r0),
                    cols,
                    x.as_ptr().add(r0 * k),
                    b.as_ptr(),
                    c.get().add(r0 * n + c0),
                )
            };
        };
        if parallel {
            (0..tiles_m).into_par_iter().for_each(row_tile);
        } else {
            (0..tiles_m).for_each(row_tile);
        }
        pool::give(b);
        Ok(())
    };
    if parallel {
        (0..tiles_n).into_par_iter().try_for_each(column_tile)
    } else {
        (0..tiles_n).try_for_each(column_tile)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn shared(bytes: Vec<u8>) -> SharedBytes {
        Arc::new(bytes)
    }

    /// Plain `f64` reference of `x · wᵀ`.
    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                    .sum();
            }
        }
        out
    }

    #[test]
    fn half_rows_widen_exactly_and_the_product_matches_f64() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (dtype, m, n, k, offset) in [
            (DType::BF16, 3, 5, 7, 1),
            (DType::F16, 4, 9, 16, 0),
            (DType::BF16, 300, 700, 40, 3),
            (DType::F16, 513, 2100, 9, 1),
        ] {
            let w: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let kind = HalfKind::of(dtype).unwrap();
            let bits = kind.encode(&w);
            let mut bytes = vec![0u8; offset];
            bytes.extend(bits.iter().flat_map(|b| b.to_le_bytes()));
            let wide: Vec<f32> = bits
                .iter()
                .map(|&b| match kind {
                    HalfKind::Bf16 => half::bf16::from_bits(b).to_f32(),
                    HalfKind::F16 => half::f16::from_bits(b).to_f32(),
                })
                .collect();
            let mat = Matrix::from_shared_bytes(shared(bytes), offset, n * k * 2, dtype, &[n, k])
                .unwrap();
            assert_eq!(mat.stored_type(), dtype.to_string());
            assert_eq!(mat.to_dense().unwrap().to_vec_f32().unwrap(), wide);
            let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let xt = Tensor::from_vec(x.clone(), &[m, k], &Device::Cpu).unwrap();
            let got = mat.matmul_t(&xt).unwrap().to_vec_f32().unwrap();
            let want = reference(&x, &wide, m, n, k);
            for (g, r) in got.iter().zip(&want) {
                assert!(
                    (f64::from(*g) - r).abs() < 1e-4 * (1.0 + r.abs()),
                    "{g} vs {r}"
                );
            }
            // Bit for bit the product with the widened matrix.
            let dense =
                Matrix::Dense(Tensor::from_vec(wide.clone(), &[n, k], &Device::Cpu).unwrap());
            assert_eq!(got, dense.matmul_t(&xt).unwrap().to_vec_f32().unwrap());
            // Embedding rows.
            let ids = [0u32, (n - 1) as u32, 1];
            let e = mat.embedding(&ids).unwrap().to_vec_f32().unwrap();
            for (r, &i) in ids.iter().enumerate() {
                assert_eq!(
                    &e[r * k..(r + 1) * k],
                    &wide[i as usize * k..(i as usize + 1) * k]
                );
            }
            assert!(mat.embedding(&[n as u32]).is_err());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        /// Batch invariance of the product with stored rows: each output row has the same bits
        /// whether computed alone or inside batches of other sizes and offsets, and the same bits
        /// as the dense product with the widened matrix.
        #[test]
        fn a_row_does_not_depend_on_its_batch(
            m in 1usize..160,
            n in 1usize..1100,
            k in 1usize..200,
            seed in 0u64..1000,
            pick in 0.0f64..1.0,
            lo_frac in 0.0f64..1.0,
            hi_frac in 0.0f64..1.0,
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let w: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let bits = HalfKind::Bf16.encode(&w);
            let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
            let mat = Matrix::from_shared_bytes(shared(bytes), 0, n * k * 2, DType::BF16, &[n, k])
                .unwrap();
            let dense = Matrix::Dense(mat.to_dense().unwrap());
            let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let product = |mat: &Matrix, lo: usize, hi: usize| -> Vec<u32> {
                let xt = Tensor::from_vec(x[lo * k..hi * k].to_vec(), &[hi - lo, k], &Device::Cpu)
                    .unwrap();
                mat.matmul_t(&xt).unwrap().to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect()
            };
            let r = ((pick * m as f64) as usize).min(m - 1);
            let lo = (lo_frac * r as f64) as usize;
            let hi = r + 1 + (hi_frac * (m - r - 1) as f64) as usize;
            let whole = product(&mat, 0, m);
            let want = &whole[r * n..(r + 1) * n];
            proptest::prop_assert_eq!(&product(&mat, r, r + 1)[..], want);
            proptest::prop_assert_eq!(&product(&mat, lo, hi)[(r - lo) * n..(r - lo + 1) * n], want);
            proptest::prop_assert_eq!(&product(&dense, lo, hi)[(r - lo) * n..(r - lo + 1) * n], want);
        }
    }

    #[test]
    fn bad_shapes_and_ranges_are_errors() {
        let b = shared(vec![0u8; 8]);
        assert!(Matrix::from_shared_bytes(b.clone(), 0, 8, DType::BF16, &[2, 3]).is_err());
        assert!(Matrix::from_shared_bytes(b.clone(), 2, 8, DType::BF16, &[2, 2]).is_err());
        assert!(Matrix::from_shared_bytes(b.clone(), 0, 8, DType::BF16, &[4]).is_err());
        let m = Matrix::from_shared_bytes(b, 0, 8, DType::BF16, &[2, 2]).unwrap();
        let x = Tensor::from_vec(vec![0.0; 3], &[1, 3], &Device::Cpu).unwrap();
        assert!(m.matmul_t(&x).is_err());
    }
}
