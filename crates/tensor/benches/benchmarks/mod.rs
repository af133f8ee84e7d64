//! Benchmark modules.

pub(crate) mod kernels;
pub(crate) mod matmul;
