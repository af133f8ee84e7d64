//! Integration tests of `finercut-tensor`: every kernel against a plain `f64` reference on random inputs.

#![allow(clippy::unwrap_used)] // Tests may unwrap (`docs/STYLE.md`).

// The kernels an executable gets from `init_blas` (OpenBLAS re-initialised before the harness starts).
finercut_tensor::init_blas_before_main!();

mod construct;
mod kernels;
mod reference;
