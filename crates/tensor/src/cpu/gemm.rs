//! Single-precision GEMM on the CPU: `cblas_sgemm` of the BLAS chosen by a cargo feature (module
//! `blas`), the pure-Rust `matrixmultiply` without one.
//!
//! With a BLAS, the output is cut into tiles whose sizes depend only on the problem shape, and rayon
//! runs one single-threaded `cblas_sgemm` per tile. Every output element is therefore computed by the
//! same kernel call whatever the number of threads (OpenBLAS' own threading splits the matrix by thread
//! count, and its edge kernels may round differently), and BLAS threads never compete with rayon's.

use crate::{Error, Result};

pub(crate) use crate::backend::BLayout;

/// One GEMM: `C[m×n] = alpha·A[m×k]·op(B) (+ C when accumulate)`, all row-major with leading
/// dimensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gemm {
    pub alpha: f32,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub b_layout: BLayout,
    pub accumulate: bool,
}

/// Largest output tile. Tile sizes derive from the shape only (never from the thread count), which keeps
/// results reproducible.
const TILE_M: usize = 256;
const TILE_N: usize = 2048;
/// Problems are cut into at least this many tiles where the tiles stay reasonably large.
const MIN_TILES: usize = 8;

/// Tile sizes `(rows, cols)` for an `m×n` output.
pub(crate) fn tiling(m: usize, n: usize) -> (usize, usize) {
    let (mut tm, mut tn) = (m.clamp(1, TILE_M), n.clamp(1, TILE_N));
    let count = |tm: usize, tn: usize| m.div_ceil(tm) * n.div_ceil(tn);
    while count(tm, tn) < MIN_TILES {
        if tn >= 512 {
            tn = (tn / 2).next_multiple_of(16);
        } else if tm >= 64 {
            tm = (tm / 2).next_multiple_of(8);
        } else {
            break;
        }
    }
    (tm, tn)
}
/// Problems below this many multiply-adds run as one call on the current thread.
pub(crate) const SMALL: usize = 1 << 21;

impl Gemm {
    fn check(&self, a: &[f32], b: &[f32], c: &[f32]) -> Result<()> {
        let op = "gemm";
        let need = |rows: usize, ld: usize, cols: usize| {
            if rows == 0 {
                0
            } else {
                (rows - 1) * ld + cols
            }
        };
        let (b_rows, b_cols) = match self.b_layout {
            BLayout::KxN => (self.k, self.n),
            BLayout::NxK => (self.n, self.k),
        };
        if self.lda < self.k || self.ldb < b_cols || self.ldc < self.n {
            return Err(Error::Invalid {
                op,
                detail: format!("leading dimensions too small: {self:?}"),
            });
        }
        for (name, len, want) in [
            ("A", a.len(), need(self.m, self.lda, self.k)),
            ("B", b.len(), need(b_rows, self.ldb, b_cols)),
            ("C", c.len(), need(self.m, self.ldc, self.n)),
        ] {
            if len < want {
                return Err(Error::Invalid {
                    op,
                    detail: format!("{name} has {len} elements, needs {want}: {self:?}"),
                });
            }
        }
        for dim in [self.m, self.n, self.k, self.lda, self.ldb, self.ldc] {
            if dim > i32::MAX as usize {
                return Err(Error::TooLarge { op, dim });
            }
        }
        Ok(())
    }
}

/// Checks `g` against the buffers and handles the products with nothing to multiply (an empty
/// output, or `k = 0`: `c` becomes zero unless accumulating). Returns whether `c` is final.
fn check_or_trivial(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<bool> {
    g.check(a, b, c)?;
    if g.m == 0 || g.n == 0 {
        return Ok(true);
    }
    if g.k == 0 {
        if !g.accumulate {
            for r in 0..g.m {
                c[r * g.ldc..r * g.ldc + g.n].fill(0.0);
            }
        }
        return Ok(true);
    }
    Ok(false)
}

/// Runs `g` on the given buffers (checked against the dimensions first).
pub(crate) fn sgemm(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    if !check_or_trivial(&g, a, b, c)? {
        backend::sgemm(g, a, b, c);
    }
    Ok(())
}

/// Runs `g` as one call on the current thread (for small products inside parallel tasks).
pub(crate) fn sgemm_serial(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    if !check_or_trivial(&g, a, b, c)? {
        backend::sgemm_serial(g, a, b, c);
    }
    Ok(())
}

/// Runs one tile of a larger product, `g` describing the tile (`g.m × g.n` outputs, the larger
/// product's leading dimensions), on the current thread: the same kernel call as each tile of
/// [`sgemm`], for callers that prepare the tile's operands themselves (`crate::widen`).
///
/// # Safety
///
/// `a`, `b` and `c` must address `g`'s operands with its leading dimensions inside live
/// allocations, nothing else may access that block of `c` during the call, and every dimension
/// and leading dimension must fit in `i32`.
pub(crate) unsafe fn sgemm_tile(g: Gemm, a: *const f32, b: *const f32, c: *mut f32) {
    // SAFETY: guaranteed by the caller.
    unsafe { backend::tile(g, a, b, c) }
}

/// A raw pointer that may cross threads; each user writes a disjoint region.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: only used to hand disjoint output regions to rayon tasks; see the users.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `SendPtr` rather than its field).
    pub(crate) fn get(&self) -> *mut T {
        self.0
    }
}

#[cfg(any(finercut_blas_linked, finercut_blas_dynamic))]
mod blas_backend {
    use super::{tiling, BLayout, Gemm, SendPtr, SMALL};
    use crate::cpu::blas::SgemmFn;
    use cblas_sys::{CBLAS_LAYOUT, CBLAS_TRANSPOSE};
    use rayon::prelude::*;
    use std::os::raw::c_int;

    /// One `cblas_sgemm` of an `m×n` block of `g`'s output.
    ///
    /// # Safety
    ///
    /// `a`, `b` and `c` must address an `m×k`, `op(B)` and `m×n` block with `g`'s leading dimensions,
    /// inside live allocations, and nothing else may access that part of `c` during the call; the
    /// dimensions must fit in `c_int` (checked by `Gemm::check`).
    unsafe fn call(
        cblas_sgemm: SgemmFn,
        g: Gemm,
        m: usize,
        n: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
    ) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            cblas_sgemm(
                CBLAS_LAYOUT::CblasRowMajor,
                CBLAS_TRANSPOSE::CblasNoTrans,
                if g.b_layout == BLayout::NxK {
                    CBLAS_TRANSPOSE::CblasTrans
                } else {
                    CBLAS_TRANSPOSE::CblasNoTrans
                },
                m as c_int,
                n as c_int,
                g.k as c_int,
                g.alpha,
                a,
                g.lda as c_int,
                b,
                g.ldb as c_int,
                if g.accumulate { 1.0 } else { 0.0 },
                c,
                g.ldc as c_int,
            );
        }
    }

    /// # Safety
    ///
    /// See [`super::sgemm_tile`].
    pub(super) unsafe fn tile(f: SgemmFn, g: Gemm, a: *const f32, b: *const f32, c: *mut f32) {
        // SAFETY: guaranteed by the caller.
        unsafe { call(f, g, g.m, g.n, a, b, c) };
    }

    pub(super) fn sgemm_serial(f: SgemmFn, g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        // SAFETY: `Gemm::check` verified the slices cover the whole product; `c` is borrowed mutably.
        unsafe { call(f, g, g.m, g.n, a.as_ptr(), b.as_ptr(), c.as_mut_ptr()) };
    }

    pub(super) fn sgemm(f: SgemmFn, g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (tile_m, tile_n) = tiling(g.m, g.n);
        let tiles_m = g.m.div_ceil(tile_m);
        let tiles_n = g.n.div_ceil(tile_n);
        let c_ptr = SendPtr(c.as_mut_ptr());
        let run_tile = |t: usize| {
            // Column-major tile order: consecutive tasks share the same B columns.
            let (tm, tn) = (t % tiles_m, t / tiles_m);
            let (r0, c0) = (tm * tile_m, tn * tile_n);
            let (rows, cols) = (tile_m.min(g.m - r0), tile_n.min(g.n - c0));
            let b_off = match g.b_layout {
                BLayout::KxN => c0,
                BLayout::NxK => c0 * g.ldb,
            };
            // SAFETY: `Gemm::check` verified that every row/column range addressed with these
            // leading dimensions lies inside the slices, and tiles write disjoint parts of C
            // (distinct row or column ranges), so concurrent calls do not alias.
            unsafe {
                call(
                    f,
                    g,
                    rows,
                    cols,
                    a.as_ptr().add(r0 * g.lda),
                    b.as_ptr().add(b_off),
                    c_ptr.get().add(r0 * g.ldc + c0),
                )
            };
        };
        let tiles = tiles_m * tiles_n;
        if tiles == 1 || g.m * g.n * g.k < SMALL {
            (0..tiles).for_each(run_tile);
        } else {
            (0..tiles).into_par_iter().for_each(run_tile);
        }
    }
}

/// The pure-Rust GEMM: without a BLAS, or where `openblas-dynamic` found no OpenBLAS.
#[cfg_attr(finercut_blas_linked, allow(dead_code))]
mod rust_backend {
    use super::{BLayout, Gemm};

    pub(super) fn sgemm_serial(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        sgemm(g, a, b, c);
    }

    pub(super) fn sgemm(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        // SAFETY: `Gemm::check` verified that all addressed elements lie inside the slices.
        unsafe { tile(g, a.as_ptr(), b.as_ptr(), c.as_mut_ptr()) }
    }

    /// # Safety
    ///
    /// See [`super::sgemm_tile`].
    pub(super) unsafe fn tile(g: Gemm, a: *const f32, b: *const f32, c: *mut f32) {
        let (rsb, csb) = match g.b_layout {
            BLayout::KxN => (g.ldb as isize, 1),
            BLayout::NxK => (1, g.ldb as isize),
        };
        // SAFETY: the caller guarantees that all addressed elements lie inside live allocations;
        // matrixmultiply computes each element with the same kernel whatever its thread count.
        unsafe {
            matrixmultiply::sgemm(
                g.m,
                g.k,
                g.n,
                g.alpha,
                a,
                g.lda as isize,
                1,
                b,
                rsb,
                csb,
                if g.accumulate { 1.0 } else { 0.0 },
                c,
                g.ldc as isize,
                1,
            );
        }
    }
}

/// Runs each product on the BLAS where one is linked or was loaded, else on `matrixmultiply`.
mod backend {
    use super::{rust_backend, Gemm};

    pub(super) fn sgemm(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        #[cfg(any(finercut_blas_linked, finercut_blas_dynamic))]
        if let Some(blas) = crate::cpu::blas::get() {
            return super::blas_backend::sgemm(blas.sgemm, g, a, b, c);
        }
        rust_backend::sgemm(g, a, b, c)
    }

    pub(super) fn sgemm_serial(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        #[cfg(any(finercut_blas_linked, finercut_blas_dynamic))]
        if let Some(blas) = crate::cpu::blas::get() {
            return super::blas_backend::sgemm_serial(blas.sgemm, g, a, b, c);
        }
        rust_backend::sgemm_serial(g, a, b, c)
    }

    /// # Safety
    ///
    /// See [`super::sgemm_tile`].
    pub(super) unsafe fn tile(g: Gemm, a: *const f32, b: *const f32, c: *mut f32) {
        #[cfg(any(finercut_blas_linked, finercut_blas_dynamic))]
        if let Some(blas) = crate::cpu::blas::get() {
            // SAFETY: guaranteed by the caller.
            return unsafe { super::blas_backend::tile(blas.sgemm, g, a, b, c) };
        }
        // SAFETY: guaranteed by the caller.
        unsafe { rust_backend::tile(g, a, b, c) }
    }
}

/// Which GEMM backend this process uses: `"matrixmultiply"`, or the BLAS' name, for OpenBLAS with
/// the kernel set in use, e.g. `"openblas (skylakex)"` (see [`crate::blas_info`]).
pub fn backend_name() -> String {
    let info = crate::cpu::blas::blas_info();
    if info.kernels.is_empty() {
        info.name.to_string()
    } else {
        format!("{} ({})", info.name, info.kernels)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reference(g: Gemm, a: &[f32], b: &[f32], c: &[f32]) -> Vec<f64> {
        let mut out = vec![0f64; g.m * g.n];
        for i in 0..g.m {
            for j in 0..g.n {
                let mut s = if g.accumulate {
                    f64::from(c[i * g.ldc + j])
                } else {
                    0.0
                };
                for p in 0..g.k {
                    let bv = match g.b_layout {
                        BLayout::KxN => b[p * g.ldb + j],
                        BLayout::NxK => b[j * g.ldb + p],
                    };
                    s += f64::from(a[i * g.lda + p]) * f64::from(bv);
                }
                out[i * g.n + j] = s;
            }
        }
        out
    }

    #[test]
    fn tiled_gemm_matches_reference() {
        // Large enough to be tiled in both directions.
        for (m, n, k, layout, acc) in [
            (300, 2100, 17, BLayout::NxK, false),
            (513, 70, 33, BLayout::KxN, true),
            (1, 5, 3, BLayout::NxK, false),
            (7, 1, 0, BLayout::KxN, false),
        ] {
            let (ldb, b_len) = match layout {
                BLayout::KxN => (n + 1, k * (n + 1)),
                BLayout::NxK => (k + 2, n * (k + 2)),
            };
            let g = Gemm {
                alpha: 1.0,
                m,
                n,
                k,
                lda: k + 3,
                ldb,
                ldc: n + 1,
                b_layout: layout,
                accumulate: acc,
            };
            let a: Vec<f32> = (0..m * (k + 3))
                .map(|i| ((i * 7919) % 13) as f32 * 0.1 - 0.6)
                .collect();
            let b: Vec<f32> = (0..b_len)
                .map(|i| ((i * 104_729) % 11) as f32 * 0.1 - 0.5)
                .collect();
            let c0: Vec<f32> = (0..m * (n + 1)).map(|i| (i % 5) as f32).collect();
            let mut c = c0.clone();
            sgemm(g, &a, &b, &mut c).unwrap();
            let want = reference(g, &a, &b, &c0);
            for i in 0..m {
                for j in 0..n {
                    let got = f64::from(c[i * g.ldc + j]);
                    assert!(
                        (got - want[i * n + j]).abs() < 1e-4,
                        "({m},{n},{k}) at ({i},{j})"
                    );
                }
                // The padding column is untouched.
                assert_eq!(c[i * g.ldc + n], c0[i * g.ldc + n]);
            }
        }
    }

    #[test]
    fn rejects_short_buffers() {
        let g = Gemm {
            alpha: 1.0,
            m: 2,
            n: 2,
            k: 2,
            lda: 2,
            ldb: 2,
            ldc: 2,
            b_layout: BLayout::KxN,
            accumulate: false,
        };
        assert!(sgemm(g, &[0.0; 3], &[0.0; 4], &mut [0.0; 4]).is_err());
    }
}
