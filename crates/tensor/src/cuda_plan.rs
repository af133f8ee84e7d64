//! What the CUDA backend hands to the driver and to cuBLAS, as plain functions of the shapes: the
//! launch geometry of every kernel (checked against CUDA's grid, block and shared-memory limits, so
//! an oversized call is an [`Error::LaunchLimit`] before anything is launched) and the arguments of
//! `cublasGemmEx`.
//!
//! Nothing here touches a driver, so it is compiled and tested in every build, with or without the
//! `cuda` feature; the CUDA backend (`cuda/mod.rs`) takes every launch configuration and GEMM
//! argument from here. The constants mirror the `#define`s of `cuda/kernels.cu`; a test parses the
//! source and compares them.

#![cfg_attr(not(feature = "cuda"), allow(dead_code))] // Used by the CUDA backend and the tests.

use crate::backend::{BLayout, GemmSpec};
use crate::{Error, Result};

/// Threads per block of the row-wise and elementwise kernels (a multiple of 32: the block
/// reductions of `kernels.cu` keep one partial per warp in `__shared__ float s[32]`).
pub(crate) const THREADS: u32 = 256;
/// Query rows per attention block (`ATT_BQ` in kernels.cu).
pub(crate) const ATT_BQ: u32 = 16;
/// Warps per attention block (`ATT_WARPS`).
pub(crate) const ATT_WARPS: u32 = 4;
/// Query rows per warp (`ATT_ROWS`).
#[allow(dead_code)] // Read by the emulation of the kernels (tests).
pub(crate) const ATT_ROWS: u32 = ATT_BQ / ATT_WARPS;
/// Values of a head each lane holds at most (`ATT_MAXD`): the attention kernel's head-size limit
/// is `32 · ATT_MAXD`.
pub(crate) const ATT_MAXD: u32 = 8;
/// The largest head size the attention kernel takes.
pub(crate) const MAX_HEAD_DIM: usize = 32 * ATT_MAXD as usize;
/// Dynamic shared memory of one attention block at most (bytes): two key/value tiles.
pub(crate) const ATT_TILE_BYTES: usize = 32 * 1024;

/// CUDA's limit on `gridDim.x` (compute capability 3.0 and later).
pub(crate) const MAX_GRID_X: u32 = i32::MAX as u32;
/// CUDA's limit on `gridDim.y` and `gridDim.z`.
pub(crate) const MAX_GRID_YZ: u32 = 65_535;
/// CUDA's limit on the threads of a block.
pub(crate) const MAX_BLOCK_THREADS: u32 = 1024;
/// Shared memory a block may use without opting in (`cudaFuncAttributeMaxDynamicSharedMemorySize`).
pub(crate) const MAX_SHARED_BYTES: u32 = 48 * 1024;
/// Blocks of a grid-stride (elementwise) launch at most.
pub(crate) const ELEMENTWISE_MAX_BLOCKS: u32 = 65_535 * 8;

/// A kernel's launch configuration: grid and block sizes and dynamic shared memory (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

impl Geometry {
    /// The geometry if it is within CUDA's limits, else which limit `op`'s launch would exceed.
    pub(crate) fn checked(self, op: &'static str) -> Result<Geometry> {
        let limit = |what: &'static str, value: u64, limit: u32| {
            if value > u64::from(limit) {
                Err(Error::LaunchLimit {
                    op,
                    what,
                    value: value as usize,
                    limit: limit as usize,
                })
            } else {
                Ok(())
            }
        };
        let (gx, gy, gz) = self.grid;
        let (bx, by, bz) = self.block;
        if gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 {
            return Err(Error::Invalid {
                op,
                detail: format!("empty launch: grid {:?}, block {:?}", self.grid, self.block),
            });
        }
        limit("grid x (blocks)", gx.into(), MAX_GRID_X)?;
        limit("grid y (blocks)", gy.into(), MAX_GRID_YZ)?;
        limit("grid z (blocks)", gz.into(), MAX_GRID_YZ)?;
        limit(
            "threads per block",
            u64::from(bx) * u64::from(by) * u64::from(bz),
            MAX_BLOCK_THREADS,
        )?;
        limit(
            "shared memory per block (bytes)",
            self.shared_bytes.into(),
            MAX_SHARED_BYTES,
        )?;
        Ok(self)
    }
}

fn u32_of(op: &'static str, x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| Error::TooLarge { op, dim: x })
}

fn i32_of(op: &'static str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error::TooLarge { op, dim: x })
}

/// A grid-stride launch over `n` elements (at most [`ELEMENTWISE_MAX_BLOCKS`] blocks; each thread
/// then takes several elements).
pub(crate) fn elementwise(n: usize) -> Geometry {
    let blocks = n
        .div_ceil(THREADS as usize)
        .clamp(1, ELEMENTWISE_MAX_BLOCKS as usize) as u32;
    Geometry {
        grid: (blocks, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }
}

/// One block of [`THREADS`] per row (`rms_norm_f32`, `log_softmax_rows_f32`, `embedding_*`,
/// `rope_f32`, `divergence_rows`).
pub(crate) fn per_row(op: &'static str, rows: usize) -> Result<Geometry> {
    Geometry {
        grid: (u32_of(op, rows)?, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }
    .checked(op)
}

/// `add_scaled_rows_f32`: one thread per column, `grid.y` chunks of `per` rows each (returned with
/// the geometry). Chunks run in parallel only when no row repeats (`distinct`); otherwise one chunk
/// takes every row, in order.
pub(crate) fn add_scaled_rows(
    op: &'static str,
    rows: usize,
    cols: usize,
    distinct: bool,
) -> Result<(Geometry, u32)> {
    let (n, c) = (u32_of(op, rows)?, u32_of(op, cols)?);
    let per = if distinct {
        n.div_ceil(MAX_GRID_YZ).max(1)
    } else {
        n.max(1)
    };
    let g = Geometry {
        grid: (c.div_ceil(THREADS), n.div_ceil(per), 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }
    .checked(op)?;
    Ok((g, per))
}

/// `attention_f32`: blocks of [`ATT_BQ`] query rows on `x`, heads on `y`, sequences on `z`, with
/// key/value tiles of `bk` rows (returned with the geometry) in dynamic shared memory.
pub(crate) fn attention(
    op: &'static str,
    max_len: usize,
    heads: usize,
    seqs: usize,
    head_dim: usize,
) -> Result<(Geometry, u32)> {
    if head_dim == 0 || head_dim > MAX_HEAD_DIM {
        return Err(Error::Invalid {
            op,
            detail: format!(
                "head_dim {head_dim} outside the CUDA attention kernel's range 1..={MAX_HEAD_DIM}"
            ),
        });
    }
    // Key tile rows: shared memory of 2·bk·head_dim floats stays within ATT_TILE_BYTES.
    let bk = (ATT_TILE_BYTES / (2 * 4 * head_dim)).clamp(1, 32);
    let g = Geometry {
        grid: (
            u32_of(op, max_len.div_ceil(ATT_BQ as usize).max(1))?,
            u32_of(op, heads)?,
            u32_of(op, seqs)?,
        ),
        block: (32 * ATT_WARPS, 1, 1),
        shared_bytes: u32_of(op, 2 * bk * head_dim * 4)?,
    }
    .checked(op)?;
    Ok((g, bk as u32))
}

/// `cublasOperation_t` of a GEMM operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trans {
    /// `CUBLAS_OP_N`.
    N,
    /// `CUBLAS_OP_T`.
    T,
}

/// The arguments of `cublasGemmEx` for a row-major GEMM `C[m×n] = A[m×k]·op(B)`.
///
/// cuBLAS is column-major, and a row-major matrix is its transpose in column-major order, so the
/// call computes `Cᵀ = op(B)ᵀ·Aᵀ`: cuBLAS's first operand is `B` (the weight), its second `A` (the
/// activations), with `m` and `n` swapped. `B [n,k]` row-major ([`BLayout::NxK`]) is column-major
/// `k×n`, so it is transposed; `B [k,n]` ([`BLayout::KxN`]) is column-major `n×k` as needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GemmArgs {
    /// `transa` (of cuBLAS's first operand, `B`).
    pub transa: Trans,
    /// `transb` (of cuBLAS's second operand, `A`).
    pub transb: Trans,
    /// cuBLAS's `m`: rows of column-major `Cᵀ` (the row-major `n`).
    pub m: i32,
    /// cuBLAS's `n` (the row-major `m`).
    pub n: i32,
    /// The shared dimension.
    pub k: i32,
    /// Leading dimension of `B`.
    pub lda: i32,
    /// Leading dimension of `A`.
    pub ldb: i32,
    /// Leading dimension of `C`.
    pub ldc: i32,
}

impl GemmArgs {
    /// The arguments for `spec`; a dimension beyond cuBLAS's 32-bit integers is an error naming
    /// `op`.
    pub(crate) fn new(op: &'static str, spec: GemmSpec) -> Result<GemmArgs> {
        let GemmSpec { m, n, k, b_layout } = spec;
        let (transa, lda) = match b_layout {
            BLayout::NxK => (Trans::T, k),
            BLayout::KxN => (Trans::N, n),
        };
        Ok(GemmArgs {
            transa,
            transb: Trans::N,
            m: i32_of(op, n)?,
            n: i32_of(op, m)?,
            k: i32_of(op, k)?,
            lda: i32_of(op, lda.max(1))?,
            ldb: i32_of(op, k.max(1))?,
            ldc: i32_of(op, n.max(1))?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (`docs/STYLE.md`).
mod tests {
    use super::*;

    /// `C = op(A)·op(B)` the BLAS way: column-major operands with leading dimensions, as
    /// `cublasGemmEx` reads them (`alpha = 1`, `beta = 0`).
    #[allow(clippy::too_many_arguments)]
    fn column_major_gemm(g: &GemmArgs, a: &[f32], b: &[f32]) -> Vec<f64> {
        let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
        let (lda, ldb, ldc) = (g.lda as usize, g.ldb as usize, g.ldc as usize);
        let op_a = |i: usize, l: usize| match g.transa {
            Trans::N => a[i + l * lda],
            Trans::T => a[l + i * lda],
        };
        let op_b = |l: usize, j: usize| match g.transb {
            Trans::N => b[l + j * ldb],
            Trans::T => b[j + l * ldb],
        };
        let mut c = vec![f64::NAN; ldc * n];
        for j in 0..n {
            for i in 0..m {
                c[i + j * ldc] = (0..k)
                    .map(|l| f64::from(op_a(i, l)) * f64::from(op_b(l, j)))
                    .sum();
            }
        }
        c
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 250.0
                    - 2.0
            })
            .collect()
    }

    #[test]
    fn gemm_ex_arguments_compute_the_row_major_product_for_both_weight_layouts() {
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (8, 2, 9), (5, 11, 1), (16, 3, 4)] {
            for layout in [BLayout::NxK, BLayout::KxN] {
                let a = values(m * k, 1);
                let b = values(n * k, 2);
                let g = GemmArgs::new(
                    "matmul",
                    GemmSpec {
                        m,
                        n,
                        k,
                        b_layout: layout,
                    },
                )
                .unwrap();
                assert_eq!(g.transb, Trans::N);
                // cuBLAS's first operand is B, its second A; C comes back in its buffer.
                let c = column_major_gemm(&g, &b, &a);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|l| {
                                let bv = match layout {
                                    BLayout::NxK => b[j * k + l],
                                    BLayout::KxN => b[l * n + j],
                                };
                                f64::from(a[i * k + l]) * f64::from(bv)
                            })
                            .sum();
                        // Row-major C[i][j] sits at i·n + j of the output.
                        let got = c[i * n + j];
                        assert!(
                            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                            "{layout:?} m={m} n={n} k={k} C[{i}][{j}]: {got} vs {want}"
                        );
                    }
                }
                // The whole output is m·n values, none left unwritten.
                assert!(c.iter().take(m * n).all(|x| x.is_finite()));
            }
        }
    }

    #[test]
    fn gemm_dimensions_beyond_i32_are_errors() {
        let spec = GemmSpec {
            m: 1 << 31,
            n: 4,
            k: 4,
            b_layout: BLayout::NxK,
        };
        assert!(matches!(
            GemmArgs::new("matmul", spec),
            Err(Error::TooLarge { op: "matmul", .. })
        ));
    }

    #[test]
    fn more_than_65535_sequences_or_heads_are_launch_limit_errors() {
        let e = attention("causal_attention", 10, 8, 65_536, 64).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LaunchLimit {
                    what: "grid z (blocks)",
                    value: 65_536,
                    limit: 65_535,
                    ..
                }
            ),
            "{e}"
        );
        let e = attention("causal_attention", 10, 70_000, 4, 64).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LaunchLimit {
                    what: "grid y (blocks)",
                    ..
                }
            ),
            "{e}"
        );
        assert!(attention("causal_attention", 10, 8, 65_535, 64).is_ok());
        assert!(matches!(
            attention("causal_attention", 10, 8, 4, 257),
            Err(Error::Invalid { .. })
        ));
    }

    #[test]
    fn rows_beyond_the_grid_are_errors_and_large_row_counts_launch() {
        assert!(per_row("rms_norm", 1 << 20).is_ok());
        assert!(matches!(
            per_row("rms_norm", 1usize << 32),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            per_row("rms_norm", MAX_GRID_X as usize + 1),
            Err(Error::LaunchLimit {
                what: "grid x (blocks)",
                ..
            })
        ));
        // Distinct rows are chunked to stay within grid.y; repeated rows take one chunk.
        let (g, per) = add_scaled_rows("add", 200_000, 64, true).unwrap();
        assert!(g.grid.1 <= MAX_GRID_YZ && u64::from(g.grid.1) * u64::from(per) >= 200_000);
        let (g, per) = add_scaled_rows("add", 200_000, 64, false).unwrap();
        assert_eq!((g.grid.1, per), (1, 200_000));
    }

    #[test]
    fn attention_tiles_fit_the_shared_memory_limit_for_every_head_size() {
        for hd in 1..=MAX_HEAD_DIM {
            let (g, bk) = attention("att", 100, 4, 2, hd).unwrap();
            assert!(
                g.shared_bytes as usize <= ATT_TILE_BYTES && g.shared_bytes <= MAX_SHARED_BYTES
            );
            assert_eq!(g.shared_bytes as usize, 2 * bk as usize * hd * 4);
            assert!(bk >= 1);
        }
    }

    /// The value of `#define NAME value` in kernels.cu.
    fn define(name: &str) -> i64 {
        let src = include_str!("cuda/kernels.cu");
        let line = src
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["#define", name]))
            .unwrap_or_else(|| panic!("#define {name} missing from kernels.cu"));
        // The value: the rest of the line, without a `//` comment or spaces.
        let rest = line.split_whitespace().skip(2).collect::<String>();
        let value = rest.split("//").next().unwrap_or_default();
        if let Some((a, b)) = value
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .and_then(|v| v.split_once('/'))
        {
            return define(a.trim()) / define(b.trim());
        }
        value
            .parse()
            .unwrap_or_else(|_| panic!("#define {name} {value}: not a number"))
    }

    #[test]
    fn kernel_constants_equal_the_rust_constants() {
        assert_eq!(define("ATT_BQ"), i64::from(ATT_BQ));
        assert_eq!(define("ATT_WARPS"), i64::from(ATT_WARPS));
        assert_eq!(define("ATT_ROWS"), i64::from(ATT_ROWS));
        assert_eq!(define("ATT_MAXD"), i64::from(ATT_MAXD));
        const { assert!(ATT_BQ.is_multiple_of(ATT_WARPS)) };
        for (name, metric) in [
            ("DIV_JS", crate::RowMetric::Js),
            ("DIV_JS_REFERENCE", crate::RowMetric::JsReference),
            ("DIV_KL", crate::RowMetric::Kl),
            ("DIV_ANGULAR", crate::RowMetric::Angular),
            ("DIV_EUCLIDEAN", crate::RowMetric::Euclidean),
            ("DIV_PPL", crate::RowMetric::Ppl),
        ] {
            assert_eq!(define(name), i64::from(metric.code()), "{name}");
        }
        // The block reductions keep one partial per warp in s[32]; blocks are whole warps.
        const {
            assert!(THREADS.is_multiple_of(32) && THREADS / 32 <= 32);
            assert!(THREADS <= MAX_BLOCK_THREADS && 32 * ATT_WARPS <= MAX_BLOCK_THREADS);
        };
        assert!(include_str!("cuda/kernels.cu").contains("__shared__ float s[32];"));
    }
}
