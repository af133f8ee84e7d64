//! Criterion benchmarks of `finercut-tensor` (one module per operation group).

mod benchmarks;

criterion::criterion_main!(benchmarks::matmul::benches, benchmarks::kernels::benches);
