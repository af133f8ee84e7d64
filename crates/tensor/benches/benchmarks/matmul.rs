//! `sgemm` at SmolLM2-135M shapes; throughput is reported in FLOPs (2·m·n·k per call) as elements/s.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use finercut_tensor::blas;

/// `(rows, in, out)` of `x[rows, in] · W[out, in]ᵀ`: q/o, k/v, gate/up and down projections at the
/// calibration batch (10 × 256 tokens) and the small batch (4 × 128), and the LM head on row chunks.
const SHAPES: &[(usize, usize, usize)] = &[
    (2560, 576, 576),
    (2560, 576, 192),
    (2560, 576, 1536),
    (2560, 1536, 576),
    (512, 576, 576),
    (512, 576, 192),
    (512, 576, 1536),
    (512, 1536, 576),
    (256, 576, 49152),
    (512, 576, 49152),
];

fn filled(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

fn bench_sgemm(c: &mut Criterion) {
    eprintln!("GEMM backend: {}", finercut_tensor::gemm_backend());
    let mut group = c.benchmark_group("cpu_sgemm_nt");
    group.sample_size(10);
    for &(m, k, n) in SHAPES {
        let a = filled(m * k, 1);
        let b = filled(n * k, 2);
        let mut out = vec![0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{m}x{k}x{n}")),
            |bench| {
                bench.iter(|| blas::sgemm_nt(m, n, k, &a, &b, &mut out).expect("sgemm"));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_sgemm);
