//! Tensor engine for finercut: [`Tensor`], [`DType`], [`Device`], and the operations a Llama-family
//! forward pass needs, on a CPU backend and (feature `cuda`) a CUDA backend.
//!
//! # Key types
//!
//! - [`Tensor`]: a contiguous row-major array with a shape, a [`DType`] and a [`Device`]. Weights can be
//!   used in place from shared bytes such as a memory map ([`Tensor::from_shared_bytes`]).
//! - [`Matrix`]: a weight matrix, dense `f32` or kept as stored ([`WidenRows`]: bf16/f16 in place,
//!   or rows a caller widens, such as quantised blocks) and widened to `f32` tile by tile inside the
//!   GEMM, bit-identical to the dense product.
//! - [`Device`]: `Cpu`, or `Cuda(CudaDevice)` ([`Device::cuda`], [`Device::parse`] of `cuda:N`). Without
//!   the `cuda` feature [`CudaDevice`] (and [`CudaStorage`]) are uninhabited, so the CUDA arms of every
//!   `match` are dead code the compiler checks.
//! - Operations: [`Tensor::matmul_t`] (`x·Wᵀ`), [`linear`], [`embedding`],
//!   [`Tensor::rms_norm`] (also Gemma's `1 + w`), [`Rope`] (with Llama 3 and linear scaling),
//!   [`Tensor::gated_in_place`] (SwiGLU/GeGLU), [`Tensor::log_softmax_last`],
//!   [`causal_attention`] (grouped-query heads, optional sliding window and logit soft-capping) and
//!   residual adds in place ([`Tensor::add_rows_from`]).
//!
//! # Design
//!
//! The public `Tensor` is not generic over a backend: its storage is an enum over devices (candle's
//! shape; see `docs/STYLE.md`), which keeps device choice a run-time matter and keeps monomorphisation
//! inside this crate. Each operation checks its arguments, then matches on the storage once, in
//! `storage.rs`, and calls the same method of a crate-private `BackendStorage` trait on the CPU or CUDA
//! storage. Operands on different devices give [`Error::DeviceMismatch`].
//!
//! On the CPU, GEMMs run on the BLAS chosen with a cargo feature (below), else on the pure-Rust
//! `matrixmultiply` ([`blas_info`] says which). Other kernels use rayon over rows or heads and are
//! compiled twice, for the baseline CPU and for AVX2+FMA, picked at run time. **Results do not depend
//! on the number of threads**: work is split into pieces whose size depends only on the shapes, and
//! every sum runs in a fixed order. In particular the BLAS runs single-threaded inside rayon tasks over
//! output tiles of fixed size (OpenBLAS' own threading partitions by thread count).
//!
//! Loading the crate has no effect on the process. An executable that uses OpenBLAS calls
//! [`init_blas`] first thing in `main` (or invokes [`init_blas_before_main!`]): a `DYNAMIC_ARCH`
//! OpenBLAS that does not recognise the CPU (Debian 12's 0.3.21 on Emerald Rapids falls back to SSE3
//! "Prescott" kernels, 5× slower) is then re-initialised with the best kernel set the CPU's features
//! allow, unless `OPENBLAS_CORETYPE` is set; that sets an environment variable for the call, so it is
//! the executable's decision, made before it starts threads.
//!
//! Large `f32` buffers are recycled through a small cache (at most 1 GiB, see
//! [`release_cached_buffers`]): freshly mapped pages cost a page fault each, which in a virtual machine
//! made a 50 MB allocation ten times slower than filling it. [`Tensor::empty`] hands out such a buffer
//! without zeroing it, for outputs that are written entirely.
//!
//! # Crate feature flags
//!
//! - The CPU BLAS, at most one: `openblas-system` (the system's OpenBLAS, found by pkg-config, e.g.
//!   Debian's `libopenblas-dev`), `openblas-static` (OpenBLAS built from source by `openblas-src`),
//!   `intel-mkl` (the system's `libmkl_rt`), `blis`, `blis-system` (the system's `libblis`), `accelerate` (through `blas-src`), or `openblas-dynamic` (OpenBLAS loaded at run
//!   time from `libopenblas.so.0` where it is installed, `matrixmultiply` where not: links nothing, so it
//!   builds on any machine; the `finercut` binary's default). With none, the pure-Rust `matrixmultiply`.
//! - `ndarray`: conversions between [`Tensor`] and `ndarray` arrays and views, zero-copy where the layout allows (`Tensor::as_ndarray`,
//!   `Tensor::from_ndarray`, module `nd`).
//! - `cuda`: the CUDA backend on `cudarc` (driver, cuBLAS, NVRTC, all loaded at run time: building needs
//!   no CUDA toolkit, and a CUDA build runs on machines without a driver, where [`Device::cuda`] is an
//!   error). GEMMs go through cuBLAS (`f32` with TF32 off, or `bf16` inputs with `f32` accumulation when
//!   the weight is `bf16`), every other operation through kernels compiled with NVRTC for the card at
//!   first use (module `cuda_kernels`); [`Tensor::row_divergences`] reduces logits to per-row divergences on
//!   the card. Without the feature nothing of CUDA is compiled.
//!
//! # Example
//!
//! ```
//! use finercut_tensor::{Device, NormWeight, Tensor};
//!
//! # fn main() -> finercut_tensor::Result<()> {
//! let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &Device::Cpu)?;
//! let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0], &[2, 3], &Device::Cpu)?;
//! let y = x.matmul_t(&w)?; // x · wᵀ: picks columns 0 and 1
//! assert_eq!(y.to_vec_f32()?, vec![1.0, 2.0, 4.0, 5.0]);
//! let ones = Tensor::from_vec(vec![1.0; 3], &[3], &Device::Cpu)?;
//! let n = x.rms_norm(&ones, 1e-6, NormWeight::Plain)?;
//! assert_eq!(n.shape(), &[2, 3]);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod backend;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_stub.rs"]
mod cuda;
#[cfg(test)]
mod cuda_emu;
mod cuda_plan;
mod device;
mod divergence;
mod dtype;
mod error;
#[cfg(feature = "ndarray")]
pub mod nd;
mod ops;
mod rope;
mod storage;
mod tensor;
mod widen;

// This crate's unit tests run with the kernels an executable gets from `init_blas`.
#[cfg(test)]
crate::init_blas_before_main!();

pub use cpu::blas::{blas_info, init_blas, BlasInfo};
pub use cpu::gemm::backend_name as gemm_backend;
pub use cpu::pool::release_cached_buffers;
pub use cuda::CudaStorage;
pub use device::{local_card, local_rank_card, CudaDevice, Device};
pub use divergence::{DenseLogits, RowMetric};
pub use dtype::DType;
pub use error::{Error, Result};
pub use ops::{
    causal_attention, causal_attention_with_prefix, causal_attention_with_prefix_rows, embedding,
    linear, Activation, AttentionSpec, NormWeight,
};
pub use rope::{LongRope, Rope, RopeScaling};
pub use storage::SharedBytes;
pub use tensor::Tensor;
pub use widen::{Matrix, WidenRows};

/// The CUDA backend's kernel source and its compilation to PTX (feature `cuda`), for tests and
/// tools: compiling needs NVRTC, not a GPU.
#[cfg(feature = "cuda")]
pub mod cuda_kernels {
    pub use crate::cuda::{
        compile_cubin, kernel_names, nvrtc_version, parse_ptxas_info, Cubin, KernelResources,
        KERNELS_CU,
    };

    /// Dynamic shared memory the backend gives one attention block at most (bytes): its key and
    /// value tiles.
    pub const ATTENTION_TILE_BYTES: usize = crate::cuda_plan::ATT_TILE_BYTES;
    /// Shared memory a block may use without opting in (bytes), the limit every kernel must fit.
    pub const MAX_SHARED_BYTES: u32 = crate::cuda_plan::MAX_SHARED_BYTES;

    /// The PTX of every kernel for virtual architecture `compute_{compute}` (e.g. 80, 90), or
    /// NVRTC's log when a kernel does not compile (or why NVRTC cannot be loaded).
    pub fn compile_to_ptx(compute: i32, include_paths: &[String]) -> Result<String, String> {
        crate::cuda::compile_ptx(crate::cuda::KERNELS_CU, compute, include_paths)
            .map(|p| p.to_src())
    }

    /// [`compile_to_ptx`] for other CUDA C source (tests of the compile path itself).
    pub fn compile_source_to_ptx(
        src: &str,
        compute: i32,
        include_paths: &[String],
    ) -> Result<String, String> {
        crate::cuda::compile_ptx(src, compute, include_paths).map(|p| p.to_src())
    }
}

/// Low-level GEMM entry point on `f32` slices, for benchmarks and callers that manage their own buffers.
pub mod blas {
    use crate::backend::BLayout;
    use crate::cpu::gemm::{self, Gemm};
    use crate::Result;

    /// A packed, row-major, non-accumulating product of `b`'s layout.
    fn packed(m: usize, n: usize, k: usize, b_layout: BLayout) -> Gemm {
        Gemm {
            alpha: 1.0,
            m,
            n,
            k,
            lda: k,
            ldb: match b_layout {
                BLayout::NxK => k,
                BLayout::KxN => n,
            },
            ldc: n,
            b_layout,
            accumulate: false,
        }
    }

    /// `c[m×n] = a[m×k] · bᵀ` where `b` is `[n, k]` (all row-major, packed): the linear-layer product.
    pub fn sgemm_nt(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) -> Result<()> {
        gemm::sgemm(packed(m, n, k, BLayout::NxK), a, b, c)
    }
}
