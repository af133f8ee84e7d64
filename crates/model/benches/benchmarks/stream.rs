//! One greedy step of the search: every sublayer a candidate, streamed with `stream_candidates`.
//! Small calibration (1 × 64 tokens) so that one iteration takes seconds; throughput is in candidates.

use super::{smollm2, tokens};
use criterion::{criterion_group, Criterion, Throughput};
use finercut_model::Plan;

fn bench_stream(c: &mut Criterion) {
    let Some(model) = smollm2() else { return };
    let toks = tokens(1, 64, model.config().vocab_size);
    let candidates: Vec<Vec<usize>> = (0..model.num_sublayers()).map(|i| vec![i]).collect();
    let mut checksum = 0f64;
    let mut run = || {
        model
            .stream_candidates(&toks, &Plan::dense(), &candidates, &mut |_, _, rows| {
                checksum += f64::from(rows[0]);
                Ok(())
            })
            .expect("stream")
    };
    let stats = run();
    eprintln!(
        "one greedy step: {} sublayer evaluations = {:.2} forward-equivalents",
        stats.sublayer_evals, stats.forward_equivalents
    );
    let mut group = c.benchmark_group("cpu_smollm2_stream");
    group.sample_size(10);
    group.throughput(Throughput::Elements(candidates.len() as u64));
    group.bench_function("greedy_step_1x64_all_candidates", |b| b.iter(&mut run));
    group.finish();
}

criterion_group!(benches, bench_stream);
