//! Integration tests of `finercut-eval`.
#![allow(clippy::unwrap_used)]

// The kernels an executable gets from `init_blas` (OpenBLAS re-initialised before the harness starts).
finercut_tensor::init_blas_before_main!();

mod dist;
mod families;
mod gsm8k;
mod mock;
mod model;
mod prompts;
mod scoring;
