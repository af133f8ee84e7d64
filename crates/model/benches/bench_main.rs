//! Criterion benchmarks of `finercut-model` on SmolLM2-135M (skipped when the model file is absent).

mod benchmarks;

criterion::criterion_main!(benchmarks::forward::benches, benchmarks::stream::benches);
