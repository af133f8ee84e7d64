//! Criterion benchmarks of `finercut-model` on SmolLM2-135M (fetched by `cargo xtask fetch`; see
//! `benchmarks::smollm2` for what happens when it is absent).

// The kernels an executable gets from `init_blas` (OpenBLAS re-initialised before the harness starts).
finercut_tensor::init_blas_before_main!();

mod benchmarks;

criterion::criterion_main!(benchmarks::forward::benches, benchmarks::stream::benches);
