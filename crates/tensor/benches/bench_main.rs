//! Criterion benchmarks of `finercut-tensor` (one module per operation group).

// The kernels an executable gets from `init_blas` (OpenBLAS re-initialised before the harness starts).
finercut_tensor::init_blas_before_main!();

mod benchmarks;

criterion::criterion_main!(benchmarks::matmul::benches, benchmarks::kernels::benches);
