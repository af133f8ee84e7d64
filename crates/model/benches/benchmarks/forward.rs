//! One decoder block and the full forward pass at 4×128 and 10×256 tokens (throughput in tokens/s).

use super::{smollm2, tokens};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use finercut_model::Plan;

const BATCHES: &[(usize, usize)] = &[(4, 128), (10, 256)];

fn bench_forward(c: &mut Criterion) {
    let Some(model) = smollm2() else { return };
    eprintln!("GEMM backend: {}", finercut_tensor::gemm_backend());
    let vocab = model.config().vocab_size;
    let mut group = c.benchmark_group("cpu_smollm2");
    group.sample_size(10);
    for &(n, t) in BATCHES {
        let toks = tokens(n, t, vocab);
        group.throughput(Throughput::Elements((n * t) as u64));
        let state = model
            .trace(&toks, &Plan::dense())
            .expect("trace")
            .swap_remove(10);
        group.bench_function(BenchmarkId::new("block", format!("{n}x{t}")), |b| {
            b.iter(|| {
                model
                    .advance(&state, 10, 12, &Plan::dense())
                    .expect("block")
            })
        });
        group.bench_function(BenchmarkId::new("forward", format!("{n}x{t}")), |b| {
            b.iter(|| model.forward(&toks, &Plan::dense()).expect("forward"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_forward);
