//! The CPU backend: storage and kernels on `f32` slices.

pub(crate) mod attention;
mod backend;
pub(crate) mod blas;
pub(crate) mod gemm;
pub(crate) mod kernels;
pub(crate) mod pool;
pub(crate) mod simd;
pub(crate) mod storage;
