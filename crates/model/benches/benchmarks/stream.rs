//! One greedy step of the search with every sublayer a candidate: the shared-prefix, candidate-batched
//! stream (`stream_candidates`) against the naive procedure (one full `forward` per candidate, what the
//! reference does), in the same run. Throughput is in candidates; the work of each is printed in
//! forward-equivalents.

use std::time::Duration;

use super::{smollm2, tokens};
use criterion::{criterion_group, Criterion, Throughput};
use finercut_model::{Model, Plan};

fn step(c: &mut Criterion, model: &Model, n: usize, t: usize) {
    let toks = tokens(n, t, model.config().vocab_size);
    let candidates: Vec<Vec<usize>> = (0..model.num_sublayers()).map(|i| vec![i]).collect();
    let mut checksum = 0f64;
    let mut stream = || {
        model
            .stream_candidates(&toks, &Plan::dense(), &candidates, &mut |_, _, rows| {
                checksum += f64::from(rows[0]);
                Ok(())
            })
            .expect("stream")
    };
    let stats = stream();
    let naive_evals: usize = candidates.len() * (model.num_sublayers() - 1);
    eprintln!(
        "one greedy step at {n}x{t}: streamed {:.2} forward-equivalents, naive {:.2} ({:.3} of naive)",
        stats.forward_equivalents,
        naive_evals as f64 / model.num_sublayers() as f64,
        stats.sublayer_evals as f64 / naive_evals as f64
    );
    let mut naive = || {
        for cand in &candidates {
            let logits = model
                .forward(&toks, &Plan::from_removed(cand.iter().copied()))
                .expect("forward");
            std::hint::black_box(logits.as_slice_f32().expect("cpu")[0]);
        }
    };
    let mut group = c.benchmark_group(format!("cpu_smollm2_greedy_step_{n}x{t}"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(candidates.len() as u64));
    group.bench_function("shared_prefix_batched", |b| b.iter(&mut stream));
    group.bench_function("naive_full_recompute", |b| b.iter(&mut naive));
    group.finish();
    std::hint::black_box(checksum);
}

fn bench_stream(c: &mut Criterion) {
    let Some(model) = smollm2() else { return };
    step(c, &model, 1, 64);
    step(c, &model, 4, 128);
}

criterion_group!(benches, bench_stream);
