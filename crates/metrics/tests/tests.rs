//! Integration tests of `finercut-metrics`: the fused kernels against a plain `f64` oracle, and
//! the properties of the divergences (proptest).

#![allow(clippy::unwrap_used)] // Tests may unwrap.

use finercut_metrics::{next_token_targets, similarity, Accumulator, DenseRows, Metric};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// Kahan-summed `f64` sum.
fn kahan(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for x in xs {
        let y = x - c;
        let t = s + y;
        c = (t - s) - y;
        s = t;
    }
    s
}

fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .map(|&x| f64::from(x))
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|&x| (f64::from(x) - max).exp()).collect();
    let s = kahan(e.iter().copied());
    e.into_iter().map(|x| x / s).collect()
}

fn xlogy_ratio(x: f64, a: f64, b: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x * (a / b).ln()
    }
}

/// The textbook definitions, written the obvious way.
fn oracle(
    metric: Metric,
    dense: &[f32],
    pruned: &[f32],
    vocab: usize,
    targets: &[Option<u32>],
) -> f64 {
    let rows = dense.len() / vocab;
    let per_row: Vec<f64> = (0..rows)
        .map(|r| {
            let d = &dense[r * vocab..(r + 1) * vocab];
            let q = &pruned[r * vocab..(r + 1) * vocab];
            let (pp, qq) = (softmax(d), softmax(q));
            let m: Vec<f64> = pp.iter().zip(&qq).map(|(a, b)| 0.5 * (a + b)).collect();
            match metric {
                Metric::Js => {
                    0.5 * kahan((0..vocab).map(|i| xlogy_ratio(pp[i], pp[i], m[i])))
                        + 0.5 * kahan((0..vocab).map(|i| xlogy_ratio(qq[i], qq[i], m[i])))
                }
                Metric::JsReference => {
                    0.5 * (kahan((0..vocab).map(|i| xlogy_ratio(m[i], m[i], pp[i])))
                        + kahan((0..vocab).map(|i| xlogy_ratio(m[i], m[i], qq[i]))))
                        / vocab as f64
                }
                Metric::Kl => kahan((0..vocab).map(|i| xlogy_ratio(pp[i], pp[i], qq[i]))),
                Metric::Angular => {
                    let dot = kahan(d.iter().zip(q).map(|(&a, &b)| f64::from(a) * f64::from(b)));
                    let na = kahan(d.iter().map(|&a| f64::from(a).powi(2))).sqrt();
                    let nb = kahan(q.iter().map(|&b| f64::from(b).powi(2))).sqrt();
                    (dot / (na * nb)).clamp(0.0, 1.0).acos()
                }
                Metric::Euclidean => kahan(
                    d.iter()
                        .zip(q)
                        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)),
                ),
                Metric::Ppl => targets[r].map_or(0.0, |t| -qq[t as usize].ln()),
            }
        })
        .collect();
    match metric {
        Metric::Euclidean => kahan(per_row).sqrt(),
        Metric::Ppl => {
            let n = targets.iter().filter(|t| t.is_some()).count() as f64;
            (kahan(per_row) / n).exp()
        }
        _ => kahan(per_row) / rows as f64,
    }
}

fn score(metric: Metric, dense: &DenseRows, pruned: &[f32]) -> f64 {
    let mut acc = Accumulator::new(metric, dense).unwrap();
    acc.add_rows(0, pruned).unwrap();
    acc.finish().unwrap()
}

fn random_logits(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

#[test]
fn kernels_match_f64_oracle_on_random_inputs() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for &(rows, vocab, scale) in &[
        (3usize, 5usize, 1.0f32),
        (7, 64, 8.0),
        (4, 1000, 20.0),
        (2, 50_000, 10.0),
    ] {
        let seqs: Vec<Vec<u32>> = vec![(0..rows as u32).map(|i| (i * 7) % vocab as u32).collect()];
        let targets = next_token_targets(&seqs);
        let dense_logits = random_logits(&mut rng, rows * vocab, scale);
        let pruned: Vec<f32> = dense_logits
            .iter()
            .map(|&x| x + rng.gen_range(-scale..scale) * 0.3)
            .collect();
        let dense = DenseRows::new(dense_logits.clone(), vocab)
            .unwrap()
            .with_targets(targets.clone())
            .unwrap();
        for metric in Metric::ALL {
            let got = score(metric, &dense, &pruned);
            let want = oracle(metric, &dense_logits, &pruned, vocab, &targets);
            let tol = 1e-10 * want.abs().max(1e-6);
            assert!(
                (got - want).abs() <= tol,
                "{metric} rows={rows} vocab={vocab}: got {got}, want {want}"
            );
        }
    }
}

#[test]
fn log_sum_exp_matches_f64_oracle() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for &(n, scale) in &[(1usize, 1.0f32), (5, 3.0), (1000, 30.0), (50_000, 10.0)] {
        let row = random_logits(&mut rng, n, scale);
        let max = row
            .iter()
            .map(|&x| f64::from(x))
            .fold(f64::NEG_INFINITY, f64::max);
        let want = max + kahan(row.iter().map(|&x| (f64::from(x) - max).exp())).ln();
        let got = finercut_metrics::log_sum_exp(&row);
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "n={n}: got {got}, want {want}"
        );
    }
    // Large logits do not overflow; non-finite rows are NaN, not a number that looks right.
    let big = finercut_metrics::log_sum_exp(&[1e30, 1e30]);
    assert!((big - f64::from(1e30f32)).abs() <= 1e-12 * big, "{big}");
    assert!(finercut_metrics::log_sum_exp(&[f32::NAN, 0.0]).is_nan());
    assert!(finercut_metrics::log_sum_exp(&[]).is_nan());
}

#[test]
fn js_is_bounded_for_disjoint_distributions() {
    // Nearly disjoint supports: JS approaches ln 2, js-reference stays finite.
    let dense = DenseRows::new(vec![100.0, -100.0, -100.0, 100.0], 2).unwrap();
    let pruned = [-100.0f32, 100.0, 100.0, -100.0];
    let js = score(Metric::Js, &dense, &pruned);
    assert!((js - std::f64::consts::LN_2).abs() < 1e-12, "{js}");
    let jr = score(Metric::JsReference, &dense, &pruned);
    assert!(jr.is_finite() && jr > 10.0, "{jr}");
    let kl = score(Metric::Kl, &dense, &pruned);
    assert!((kl - 200.0).abs() < 1e-9, "{kl}");
}

#[test]
fn non_finite_pruned_rows_score_nan() {
    let dense = DenseRows::new(vec![0.0, 1.0], 2).unwrap();
    for metric in [
        Metric::Js,
        Metric::JsReference,
        Metric::Kl,
        Metric::Angular,
        Metric::Euclidean,
    ] {
        assert!(score(metric, &dense, &[f32::NAN, 1.0]).is_nan(), "{metric}");
    }
}

#[test]
fn similarity_matches_oracle() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let (rows, dim) = (5, 33);
    let a = random_logits(&mut rng, rows * dim, 2.0);
    let b = random_logits(&mut rng, rows * dim, 2.0);
    let mut cos = Vec::new();
    for r in 0..rows {
        let (x, y) = (&a[r * dim..(r + 1) * dim], &b[r * dim..(r + 1) * dim]);
        let dot = kahan(x.iter().zip(y).map(|(&p, &q)| f64::from(p) * f64::from(q)));
        let nx = kahan(x.iter().map(|&p| f64::from(p).powi(2))).sqrt();
        let ny = kahan(y.iter().map(|&q| f64::from(q).powi(2))).sqrt();
        cos.push(dot / (nx * ny));
    }
    let mean_cos = kahan(cos.iter().copied()) / rows as f64;
    let mean_ang = kahan(cos.iter().map(|c| c.acos() / std::f64::consts::PI)) / rows as f64;
    assert!((similarity::mean_row_cosine(&a, &b, dim).unwrap() - mean_cos).abs() < 1e-12);
    assert!((similarity::block_influence(&a, &b, dim).unwrap() - (1.0 - mean_cos)).abs() < 1e-12);
    assert!((similarity::mean_row_angular_distance(&a, &b, dim).unwrap() - mean_ang).abs() < 1e-12);
}

/// One helper that checks every property on one (dense, pruned) pair.
fn check_props(vocab: usize, dense: Vec<f32>, pruned: Vec<f32>, split: usize) {
    let ln2 = std::f64::consts::LN_2;
    let rows = dense.len() / vocab;
    let d = DenseRows::new(dense.clone(), vocab).unwrap();
    let q = DenseRows::new(pruned.clone(), vocab).unwrap();

    let js_dq = score(Metric::Js, &d, &pruned);
    let js_qd = score(Metric::Js, &q, &dense);
    assert!((0.0..=ln2).contains(&js_dq), "js {js_dq}");
    assert!(
        (js_dq - js_qd).abs() <= 1e-12 + 1e-9 * js_dq,
        "js asymmetric: {js_dq} vs {js_qd}"
    );
    let jr_dq = score(Metric::JsReference, &d, &pruned);
    let jr_qd = score(Metric::JsReference, &q, &dense);
    assert!(jr_dq >= 0.0);
    assert!(
        (jr_dq - jr_qd).abs() <= 1e-12 + 1e-9 * jr_dq,
        "js-reference asymmetric"
    );
    assert!(score(Metric::Kl, &d, &pruned) >= 0.0);

    // Equal inputs give exactly zero.
    for metric in [
        Metric::Js,
        Metric::JsReference,
        Metric::Kl,
        Metric::Euclidean,
    ] {
        assert_eq!(score(metric, &d, &dense), 0.0, "{metric} of equal rows");
    }
    // Different distributions give a positive JS (softmax is shift-invariant, so compare
    // centred logits).
    let differs = (0..rows).any(|r| {
        let row = |v: &[f32]| {
            let x = &v[r * vocab..(r + 1) * vocab];
            let m = x.iter().map(|&v| f64::from(v)).sum::<f64>() / vocab as f64;
            x.iter().map(|&v| f64::from(v) - m).collect::<Vec<_>>()
        };
        row(&dense)
            .iter()
            .zip(row(&pruned))
            .any(|(a, b)| (a - b).abs() > 1e-3)
    });
    if differs {
        assert!(js_dq > 0.0, "js of different distributions is 0");
    }

    // Chunked accumulation, in reverse chunk order, equals the whole.
    let split = split % (rows + 1);
    for metric in [
        Metric::Js,
        Metric::JsReference,
        Metric::Kl,
        Metric::Angular,
        Metric::Euclidean,
    ] {
        let whole = score(metric, &d, &pruned);
        let mut acc = Accumulator::new(metric, &d).unwrap();
        let mut start = rows;
        let mut chunks = Vec::new();
        let step = split.max(1);
        while start > 0 {
            let first = start.saturating_sub(step);
            chunks.push((first, start));
            start = first;
        }
        for (first, end) in chunks {
            acc.add_rows(first, &pruned[first * vocab..end * vocab])
                .unwrap();
        }
        assert_eq!(acc.finish().unwrap(), whole, "{metric} chunked");
    }
}

fn pair() -> impl Strategy<Value = (usize, Vec<f32>, Vec<f32>, usize)> {
    (1usize..20, 1usize..6, 0usize..8).prop_flat_map(|(vocab, rows, split)| {
        let n = vocab * rows;
        (
            Just(vocab),
            proptest::collection::vec(-30.0f32..30.0, n),
            proptest::collection::vec(-30.0f32..30.0, n),
            Just(split),
        )
    })
}

proptest! {
    #[test]
    fn divergence_properties((vocab, dense, pruned, split) in pair()) {
        check_props(vocab, dense, pruned, split);
    }

    #[test]
    fn near_equal_inputs((vocab, dense, _p, split) in pair(), eps in 0.0f32..1e-3) {
        let pruned: Vec<f32> = dense.iter().enumerate().map(|(i, &x)| x + eps * (i % 3) as f32).collect();
        check_props(vocab, dense, pruned, split);
    }
}

/// Every prefix of rows gives a lower bound of the complete score, for every metric; the bound
/// of the complete rows is the score up to the margin.
fn check_lower_bounds(vocab: usize, dense: Vec<f32>, pruned: Vec<f32>) {
    let rows = dense.len() / vocab;
    let targets: Vec<Option<u32>> = (0..rows)
        .map(|r| (r % 3 != 2).then_some((r * 7 % vocab) as u32))
        .collect();
    let d = DenseRows::new(dense, vocab)
        .unwrap()
        .with_targets(targets)
        .unwrap();
    for metric in Metric::ALL {
        let whole = score(metric, &d, &pruned);
        let mut acc = Accumulator::new(metric, &d).unwrap();
        assert!(acc.lower_bound() <= whole, "{metric}: empty bound");
        for r in 0..rows {
            acc.add_rows(r, &pruned[r * vocab..(r + 1) * vocab])
                .unwrap();
            let bound = acc.lower_bound();
            assert_eq!(acc.rows_given(), r + 1);
            assert!(
                bound <= whole,
                "{metric}: bound {bound} after {} rows exceeds the score {whole}",
                r + 1
            );
        }
        assert_eq!(acc.finish().unwrap(), whole);
        let b = acc.lower_bound();
        // The margin is relative to the summed row values; perplexity is exp(mean NLL), which turns
        // a relative margin m of the NLL sum into a relative m * ln(ppl) of the score.
        let tolerance = 1e-11 * whole.abs() * whole.abs().ln().max(1.0);
        assert!(
            b <= whole && whole - b <= tolerance,
            "{metric}: {b} vs {whole}"
        );
    }
}

proptest! {
    #[test]
    fn partial_sums_are_lower_bounds((vocab, dense, pruned, _split) in pair()) {
        check_lower_bounds(vocab, dense, pruned);
    }

    #[test]
    fn partial_sums_of_near_equal_rows_are_lower_bounds(
        (vocab, dense, _p, _split) in pair(),
        eps in 0.0f32..1e-4,
    ) {
        // Row values near zero, where rounding noise would make a value negative unclamped.
        let pruned: Vec<f32> = dense.iter().enumerate().map(|(i, &x)| x + eps * (i % 5) as f32).collect();
        check_lower_bounds(vocab, dense, pruned);
    }
}
