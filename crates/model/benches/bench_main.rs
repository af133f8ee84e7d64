//! Criterion benchmarks of `finercut-model` on SmolLM2-135M (fetched by `cargo xtask fetch`; see
//! `benchmarks::smollm2` for what happens when it is absent).

mod benchmarks;

criterion::criterion_main!(benchmarks::forward::benches, benchmarks::stream::benches);
