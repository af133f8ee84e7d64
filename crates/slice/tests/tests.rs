//! Integration tests of `finercut-slice`: the rotation invariance at full width on tiny random
//! models of every supported family, the eigensolver and covariance against plain `f64`
//! references, parameter accounting, saving and loading, refusals, plans on a sliced model, and
//! SmolLM2-135M.

#![allow(clippy::unwrap_used)] // Tests may unwrap (`docs/STYLE.md`).
#![allow(clippy::needless_range_loop)] // Plain index loops are the f64 references.

// The kernels an executable gets from `init_blas` (OpenBLAS re-initialised before the harness starts).
finercut_tensor::init_blas_before_main!();

mod linalg;
mod real_model;
mod tiny;
