//! Single-precision GEMM on the CPU: `cblas_sgemm` of the BLAS chosen by a cargo feature (module
//! `blas`), the pure-Rust `matrixmultiply` without one.
//!
//! Both back-ends run the same tiling: the output is cut into tiles of exactly [`TILE_M`] rows (the
//! last tile of a product is padded with zero rows) and of columns that depend on the output's
//! column count only ([`tile_cols`]), and rayon runs one single-threaded back-end call per tile.
//! Every call of a product therefore has the same shape whatever the number of rows and threads,
//! so the back-end never switches kernels by size (OpenBLAS' small-matrix and direct paths, its
//! edge kernels, `matrixmultiply`'s masked edge kernel), and each output row is computed by the
//! same arithmetic whichever other rows share its batch and at whichever offset: the product is
//! batch-invariant as well as independent of the thread count. BLAS threads never compete with
//! rayon's.

use rayon::prelude::*;

use crate::cpu::pool;
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

/// Rows of every output tile: a product's rows are cut into tiles of exactly this many rows, the
/// last one padded with zero rows, so every back-end call has this row count (see the module
/// comment). A multiple of every back-end's register tile (8, 16).
pub(crate) const TILE_M: usize = 64;
/// Most columns of an output tile.
const TILE_N: usize = 512;

/// Columns of the output tiles of a product with `n` output columns: a function of `n` only
/// (never of the row count or of the thread count), as few tiles of at most [`TILE_N`] columns
/// as cover `n`, of equal width rounded up to a multiple of 16 (the last may be narrower).
pub(crate) fn tile_cols(n: usize) -> usize {
    if n <= TILE_N {
        return n.max(1);
    }
    n.div_ceil(n.div_ceil(TILE_N)).next_multiple_of(16)
}

/// Problems below this many multiply-adds run their tiles one after another on the current thread.
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

/// Runs `g` on the given buffers (checked against the dimensions first), tile by tile (see the
/// module comment).
pub(crate) fn sgemm(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    if check_or_trivial(&g, a, b, c)? {
        return Ok(());
    }
    let tile_n = tile_cols(g.n);
    let tiles_m = g.m.div_ceil(TILE_M);
    let tiles_n = g.n.div_ceil(tile_n);
    let c_ptr = SendPtr(c.as_mut_ptr());
    let run = |t: usize| {
        // Column-major tile order: consecutive tasks share the same B columns.
        let (tm, tn) = (t % tiles_m, t / tiles_m);
        let (r0, c0) = (tm * TILE_M, tn * tile_n);
        let (rows, cols) = (TILE_M.min(g.m - r0), tile_n.min(g.n - c0));
        let b_off = match g.b_layout {
            BLayout::KxN => c0,
            BLayout::NxK => c0 * g.ldb,
        };
        // SAFETY: `Gemm::check` verified that every row/column range addressed with these leading
        // dimensions lies inside the slices and that the dimensions fit `i32`; tiles write
        // disjoint blocks of C (distinct row or column ranges), so concurrent calls do not alias.
        unsafe {
            sgemm_tile(
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
        (0..tiles).for_each(run);
    } else {
        (0..tiles).into_par_iter().for_each(run);
    }
    Ok(())
}

/// Runs `g` as one call on the current thread (for small products inside parallel tasks, such as
/// the attention of one sequence; not batch-invariant, and not meant to be).
pub(crate) fn sgemm_serial(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    if !check_or_trivial(&g, a, b, c)? {
        // SAFETY: `check_or_trivial` verified that the slices cover the whole product and that
        // the dimensions fit `i32`; `c` is borrowed mutably.
        unsafe {
            backend::call(
                backend::Call::Serial,
                g,
                g.m,
                g.n,
                a.as_ptr(),
                b.as_ptr(),
                c.as_mut_ptr(),
            )
        };
    }
    Ok(())
}

/// Runs one output tile of a larger product `g` on the current thread: `rows ≤ TILE_M` rows and
/// `cols` columns, `a` pointing at the tile's first row of A, `b` at its first column of `op(B)`
/// and `c` at its first element, all with `g`'s leading dimensions. The back-end is always called
/// with [`TILE_M`] rows: a tile with fewer rows is computed on a zero-padded copy. Shared by the
/// dense product and the product with stored rows (`crate::widen`), so both compute each element
/// with the same call.
///
/// # Safety
///
/// `a`, `b` and `c` must address the tile's operands with `g`'s leading dimensions inside live
/// allocations, nothing else may access that block of `c` during the call, and every dimension
/// and leading dimension must fit in `i32`.
pub(crate) unsafe fn sgemm_tile(
    g: Gemm,
    rows: usize,
    cols: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
) {
    if rows == TILE_M {
        // SAFETY: guaranteed by the caller.
        unsafe { backend::call(backend::Call::Tile, g, TILE_M, cols, a, b, c) };
        return;
    }
    let k = g.k;
    let mut pa = pool::take_zeroed(TILE_M * k);
    let mut pc = pool::take_zeroed(TILE_M * cols);
    for r in 0..rows {
        // SAFETY: the caller guarantees rows `0..rows` of A (`k` values each, `g.lda` apart) and of
        // the C block (`cols` values each, `g.ldc` apart) lie inside live allocations.
        unsafe {
            pa[r * k..(r + 1) * k].copy_from_slice(std::slice::from_raw_parts(a.add(r * g.lda), k));
            if g.accumulate {
                pc[r * cols..(r + 1) * cols]
                    .copy_from_slice(std::slice::from_raw_parts(c.add(r * g.ldc), cols));
            }
        }
    }
    let padded = Gemm {
        lda: k,
        ldc: cols,
        ..g
    };
    // SAFETY: `pa` holds `TILE_M × k` and `pc` `TILE_M × cols` values; `b` is the caller's.
    unsafe {
        backend::call(
            backend::Call::Tile,
            padded,
            TILE_M,
            cols,
            pa.as_ptr(),
            b,
            pc.as_mut_ptr(),
        )
    };
    for r in 0..rows {
        // SAFETY: as above; nothing else accesses this block of C during the call.
        unsafe {
            std::slice::from_raw_parts_mut(c.add(r * g.ldc), cols)
                .copy_from_slice(&pc[r * cols..(r + 1) * cols]);
        }
    }
    pool::give(pa);
    pool::give(pc);
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
    use super::{BLayout, Gemm};
    use crate::cpu::blas::SgemmFn;
    use cblas_sys::{CBLAS_LAYOUT, CBLAS_TRANSPOSE};
    use std::os::raw::c_int;

    /// One single-threaded `cblas_sgemm` of an `m×n` block of `g`'s output.
    ///
    /// # Safety
    ///
    /// `a`, `b` and `c` must address an `m×k`, `op(B)` and `m×n` block with `g`'s leading dimensions,
    /// inside live allocations, and nothing else may access that part of `c` during the call; the
    /// dimensions must fit in `c_int` (checked by `Gemm::check`).
    pub(super) unsafe fn call(
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
}

/// The pure-Rust GEMM: without a BLAS, or where `openblas-dynamic` found no OpenBLAS.
#[cfg_attr(finercut_blas_linked, allow(dead_code))]
mod rust_backend {
    use super::{BLayout, Gemm};

    /// One `matrixmultiply` call of an `m×n` block of `g`'s output.
    ///
    /// # Safety
    ///
    /// `a`, `b` and `c` must address an `m×k`, `op(B)` and `m×n` block with `g`'s leading dimensions,
    /// inside live allocations, and nothing else may access that part of `c` during the call.
    pub(super) unsafe fn call(
        g: Gemm,
        m: usize,
        n: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
    ) {
        let (rsb, csb) = match g.b_layout {
            BLayout::KxN => (g.ldb as isize, 1),
            BLayout::NxK => (1, g.ldb as isize),
        };
        // SAFETY: the caller guarantees that all addressed elements lie inside live allocations;
        // matrixmultiply computes each element with the same kernel whatever its thread count.
        unsafe {
            matrixmultiply::sgemm(
                m,
                g.k,
                n,
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

/// Runs each back-end call on the BLAS where one is linked or was loaded, else on `matrixmultiply`;
/// tiles run on the BLAS only where it computes a row the same at every row position of a tile
/// ([`tiles_on_blas`]).
mod backend {
    use super::Gemm;

    /// Which product a back-end call belongs to.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Call {
        /// A tile of a batch-invariant product: on the BLAS only where
        /// [`tiles_on_blas`](super::tiles_on_blas) says its rows do not depend on their position.
        Tile,
        /// A whole product on one thread (attention of one sequence): on the BLAS where there is one.
        Serial,
    }

    /// One single-threaded back-end call of an `m×n` block of `g`'s output.
    ///
    /// # Safety
    ///
    /// `a`, `b` and `c` must address an `m×k`, `op(B)` and `m×n` block with `g`'s leading dimensions,
    /// inside live allocations, and nothing else may access that part of `c` during the call.
    pub(super) unsafe fn call(
        kind: Call,
        g: Gemm,
        m: usize,
        n: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
    ) {
        #[cfg(any(finercut_blas_linked, finercut_blas_dynamic))]
        if let Some(blas) = crate::cpu::blas::get() {
            if kind == Call::Serial || super::tiles_on_blas(blas) {
                // SAFETY: guaranteed by the caller.
                return unsafe { super::blas_backend::call(blas.sgemm, g, m, n, a, b, c) };
            }
        }
        #[cfg(not(any(finercut_blas_linked, finercut_blas_dynamic)))]
        let _ = kind;
        // SAFETY: guaranteed by the caller.
        unsafe { super::rust_backend::call(g, m, n, a, b, c) }
    }
}

/// Whether the tiles of batch-invariant products run on `blas` (probed once, again after
/// [`crate::init_blas`] changes OpenBLAS' kernels): 0 not probed yet, 1 yes, 2 no.
static TILES_ON_BLAS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Forgets the probe's answer, for the next tile to probe the BLAS again (its kernels changed).
#[cfg_attr(
    not(any(finercut_openblas_linked, all(finercut_blas_dynamic, unix))),
    allow(dead_code)
)]
pub(crate) fn reprobe_tiles() {
    TILES_ON_BLAS.store(0, std::sync::atomic::Ordering::Release);
}

/// Whether `blas` computes each output row of a [`TILE_M`]-row call with the same bits at every
/// row position of the call, which the tiling relies on for batch invariance. Most kernel sets
/// do; OpenBLAS 0.3.21's Haswell (and Zen) SGEMM kernels do not: a row's bits depend on its row
/// position modulo 12 (its micro-kernel handles the rows of a 12-row block in two ways). Where
/// the answer is no, the tiles run on `matrixmultiply`, which is batch-invariant. The probe
/// computes rotated copies of random tiles at the shapes and layouts the tiles use; it runs
/// once (a few milliseconds) and is cached.
#[cfg(any(finercut_blas_linked, finercut_blas_dynamic))]
pub(crate) fn tiles_on_blas(blas: &crate::cpu::blas::Blas) -> bool {
    use std::sync::atomic::Ordering;
    match TILES_ON_BLAS.load(Ordering::Acquire) {
        1 => true,
        2 => false,
        _ => {
            let ok = rows_are_position_invariant(blas.sgemm);
            TILES_ON_BLAS.store(if ok { 1 } else { 2 }, Ordering::Release);
            ok
        }
    }
}

/// The probe of [`tiles_on_blas`]: every row of [`TILE_M`]-row products, computed again with the
/// rows rotated, has the same bits at its new position.
#[cfg(any(finercut_blas_linked, finercut_blas_dynamic))]
fn rows_are_position_invariant(sgemm: crate::cpu::blas::SgemmFn) -> bool {
    // A fixed xorshift stream of values in [-1, 1): the probe is the same in every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let rotate = |v: &[f32], width: usize, shift: usize| {
        let mut out = vec![0.0; v.len()];
        for r in 0..TILE_M {
            let to = (r + shift) % TILE_M;
            out[to * width..(to + 1) * width].copy_from_slice(&v[r * width..(r + 1) * width]);
        }
        out
    };
    for (n, k) in [(16, 8), (48, 64), (200, 96), (512, 40)] {
        for b_layout in [BLayout::KxN, BLayout::NxK] {
            for accumulate in [false, true] {
                let g = Gemm {
                    alpha: 1.0,
                    m: TILE_M,
                    n,
                    k,
                    lda: k,
                    ldb: if b_layout == BLayout::KxN { n } else { k },
                    ldc: n,
                    b_layout,
                    accumulate,
                };
                let a: Vec<f32> = (0..TILE_M * k).map(|_| next()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
                let c0: Vec<f32> = (0..TILE_M * n).map(|_| next()).collect();
                let mut c = c0.clone();
                // SAFETY: `a`, `b` and `c` hold exactly the `TILE_M×k`, `k×n` and `TILE_M×n`
                // values `g` addresses; the dimensions are small.
                unsafe {
                    blas_backend::call(sgemm, g, TILE_M, n, a.as_ptr(), b.as_ptr(), c.as_mut_ptr())
                };
                for shift in [1, 6, 13, 35] {
                    let ra = rotate(&a, k, shift);
                    let mut rc = rotate(&c0, n, shift);
                    // SAFETY: as above.
                    unsafe {
                        blas_backend::call(
                            sgemm,
                            g,
                            TILE_M,
                            n,
                            ra.as_ptr(),
                            b.as_ptr(),
                            rc.as_mut_ptr(),
                        )
                    };
                    let same = rotate(&c, n, shift)
                        .iter()
                        .zip(&rc)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    if !same {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// Which GEMM backend this process uses: `"matrixmultiply"`, or the BLAS' name, for OpenBLAS with
/// the kernel set in use, e.g. `"openblas (skylakex)"`; where the BLAS' rows depend on their
/// position in a call, `"openblas (haswell), tiles on matrixmultiply"` (see [`crate::blas_info`]).
pub fn backend_name() -> String {
    let info = crate::cpu::blas::blas_info();
    let name = if info.kernels.is_empty() {
        info.name.to_string()
    } else {
        format!("{} ({})", info.name, info.kernels)
    };
    if info.tiles_batch_invariant {
        name
    } else {
        format!("{name}, tiles on matrixmultiply")
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
                    s += f64::from(g.alpha) * f64::from(a[i * g.lda + p]) * f64::from(bv);
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

    /// Runs `g` on rows `lo..hi` of the product `g` describes (A and C offset, the same B).
    fn rows_of(g: Gemm, a: &[f32], b: &[f32], c0: &[f32], lo: usize, hi: usize) -> Vec<f32> {
        let sub = Gemm { m: hi - lo, ..g };
        let mut c = c0[lo * g.ldc..hi * g.ldc].to_vec();
        sgemm(sub, &a[lo * g.lda..hi * g.lda], b, &mut c).unwrap();
        c
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Batch invariance: each output row has the same bits whether computed alone, inside the
        /// whole batch, or inside a sub-batch at another offset and of another size.
        #[test]
        fn a_row_does_not_depend_on_its_batch(
            m in 1usize..200,
            n in 1usize..700,
            k in 1usize..300,
            nxk in proptest::bool::ANY,
            accumulate in proptest::bool::ANY,
            scaled in proptest::bool::ANY,
            seed in 0u64..1000,
            pick in 0.0f64..1.0,
            lo_frac in 0.0f64..1.0,
            hi_frac in 0.0f64..1.0,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let layout = if nxk { BLayout::NxK } else { BLayout::KxN };
            let (ldb, b_len) = match layout {
                BLayout::KxN => (n, k * n),
                BLayout::NxK => (k, n * k),
            };
            let g = Gemm {
                alpha: if scaled { 0.37 } else { 1.0 },
                m,
                n,
                k,
                lda: k,
                ldb,
                ldc: n,
                b_layout: layout,
                accumulate,
            };
            let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..b_len).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let whole = rows_of(g, &a, &b, &c0, 0, m);
            let r = ((pick * m as f64) as usize).min(m - 1);
            let lo = (lo_frac * r as f64) as usize;
            let hi = r + 1 + (hi_frac * (m - r - 1) as f64) as usize;
            let alone = rows_of(g, &a, &b, &c0, r, r + 1);
            let inside = rows_of(g, &a, &b, &c0, lo, hi);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let want = bits(&whole[r * n..(r + 1) * n]);
            proptest::prop_assert_eq!(bits(&alone), want.clone(), "row {} alone", r);
            proptest::prop_assert_eq!(
                bits(&inside[(r - lo) * n..(r - lo + 1) * n]),
                want,
                "row {} in rows {}..{}",
                r,
                lo,
                hi
            );
            // And the values are right.
            let reference = reference(g, &a, &b, &c0);
            for j in 0..n {
                let (got, exp) = (f64::from(whole[r * n + j]), reference[r * n + j]);
                proptest::prop_assert!((got - exp).abs() < 1e-4 * (1.0 + exp.abs()), "{} vs {}", got, exp);
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

    /// A row-major `cblas_sgemm` in plain loops; with `SPLIT`, the rows at positions 6–11 of
    /// every 12 sum their products in reverse order, as a kernel whose rows depend on their
    /// position would.
    #[cfg(any(finercut_blas_linked, finercut_blas_dynamic))]
    unsafe extern "C" fn loop_sgemm<const SPLIT: bool>(
        _layout: cblas_sys::CBLAS_LAYOUT,
        _trans_a: cblas_sys::CBLAS_TRANSPOSE,
        trans_b: cblas_sys::CBLAS_TRANSPOSE,
        m: std::os::raw::c_int,
        n: std::os::raw::c_int,
        k: std::os::raw::c_int,
        alpha: f32,
        a: *const f32,
        lda: std::os::raw::c_int,
        b: *const f32,
        ldb: std::os::raw::c_int,
        beta: f32,
        c: *mut f32,
        ldc: std::os::raw::c_int,
    ) {
        let nxk = matches!(trans_b, cblas_sys::CBLAS_TRANSPOSE::CblasTrans);
        let (m, n, k) = (m as usize, n as usize, k as usize);
        let (lda, ldb, ldc) = (lda as usize, ldb as usize, ldc as usize);
        for i in 0..m {
            for j in 0..n {
                let term = |p: usize| {
                    // SAFETY: the probe passes buffers of exactly these shapes.
                    unsafe {
                        let bv = if nxk {
                            *b.add(j * ldb + p)
                        } else {
                            *b.add(p * ldb + j)
                        };
                        *a.add(i * lda + p) * bv
                    }
                };
                let s: f32 = if SPLIT && i % 12 >= 6 {
                    (0..k).rev().map(term).sum()
                } else {
                    (0..k).map(term).sum()
                };
                // SAFETY: as above.
                unsafe {
                    let out = c.add(i * ldc + j);
                    *out = alpha * s + if beta == 0.0 { 0.0 } else { beta * *out };
                }
            }
        }
    }

    /// The probe accepts a GEMM whose rows do not depend on their position and refuses one whose
    /// rows do; the BLAS of this build gets a definite answer.
    #[cfg(any(finercut_blas_linked, finercut_blas_dynamic))]
    #[test]
    fn the_probe_tells_position_dependent_rows() {
        assert!(rows_are_position_invariant(loop_sgemm::<false>));
        assert!(!rows_are_position_invariant(loop_sgemm::<true>));
        if let Some(blas) = crate::cpu::blas::get() {
            let info = crate::cpu::blas::blas_info();
            assert_eq!(info.tiles_batch_invariant, tiles_on_blas(blas), "{info:?}");
            assert_eq!(
                backend_name().ends_with("tiles on matrixmultiply"),
                !info.tiles_batch_invariant
            );
        }
    }
}
