//! Row-wise kernels and attention at SmolLM2 shapes (10 × 256 tokens, d = 576, 9/3 heads of 64).

use criterion::{criterion_group, Criterion, Throughput};
use finercut_tensor::{
    causal_attention, Activation, AttentionSpec, Device, NormWeight, Rope, RopeScaling, Tensor,
};

fn tensor(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let v = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

fn bench_kernels(c: &mut Criterion) {
    let (n, t, d, ffn) = (10, 256, 576, 1536);
    let rows = n * t;
    let mut group = c.benchmark_group("cpu_kernels");
    group.sample_size(10);
    group.throughput(Throughput::Elements(rows as u64));

    let x = tensor(&[rows, d], 1);
    let w = tensor(&[d], 2);
    group.bench_function("rms_norm_2560x576", |b| {
        b.iter(|| x.rms_norm(&w, 1e-5, NormWeight::Plain).expect("norm"))
    });

    let gate = tensor(&[rows, ffn], 3);
    let up = tensor(&[rows, ffn], 4);
    group.bench_function("silu_mul_2560x1536", |b| {
        b.iter_batched(
            || gate.clone(),
            |mut g| g.gated_in_place(&up, Activation::Silu).expect("silu"),
            criterion::BatchSize::LargeInput,
        )
    });

    let logits = tensor(&[256, 49152], 5);
    group.bench_function("log_softmax_256x49152", |b| {
        b.iter(|| logits.log_softmax_last().expect("lsm"))
    });

    let rope = Rope::new(64, 100_000.0, RopeScaling::None).expect("rope");
    let positions: Vec<usize> = (0..rows).map(|r| r % t).collect();
    let q = tensor(&[rows, 9 * 64], 6);
    group.bench_function("rope_q_2560x576", |b| {
        b.iter_batched(
            || q.clone(),
            |mut x| rope.apply(&mut x, &positions).expect("rope"),
            criterion::BatchSize::LargeInput,
        )
    });

    let k = tensor(&[rows, 3 * 64], 7);
    let v = tensor(&[rows, 3 * 64], 8);
    let spec = AttentionSpec::new(9, 3, 64);
    let lens = vec![t; n];
    // Causal attention FLOPs: 2 (q·k and p·v) × 2 × heads × head_dim × t(t+1)/2 per sequence.
    group.throughput(Throughput::Elements(
        (n * 4 * 9 * 64 * t * (t + 1) / 2) as u64,
    ));
    group.bench_function("attention_10x256_9q3kv_64", |b| {
        b.iter(|| causal_attention(&q, &k, &v, &lens, &spec).expect("attn"))
    });
    group.finish();
}

criterion_group!(benches, bench_kernels);
