//! Integration tests of `finercut-model`: a tiny random model against a naive `f64` forward, the
//! properties of plans, traces, streams and continuations, and parity with transformers on SmolLM2.

#![allow(clippy::unwrap_used)] // Tests may unwrap (`docs/STYLE.md`).

// The kernels an executable gets from `init_blas` (OpenBLAS re-initialised before the harness starts).
finercut_tensor::init_blas_before_main!();

mod export;
mod families;
mod generate;
mod golden;
mod parallel;
mod partial;
mod reference;
mod tiny;
