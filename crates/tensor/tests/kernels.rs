//! Kernels against the `f64` reference (proptest over shapes, including odd sizes and single rows).

use crate::reference::{self as r, assert_close, rand_vec, rng, tensor};
use finercut_tensor::{
    causal_attention, causal_attention_with_prefix, causal_attention_with_prefix_rows, embedding,
    linear, Activation, AttentionSpec, Error, LongRope, NormWeight, Rope, RopeScaling, Tensor,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn matmul_t_matches_reference(m in 1usize..40, k in 1usize..70, n in 1usize..50, seed: u64) {
        let mut g = rng(seed);
        let (a, b) = (rand_vec(&mut g, m * k, 1.0), rand_vec(&mut g, n * k, 1.0));
        let y = tensor(&a, &[m, k]).matmul_t(&tensor(&b, &[n, k])).unwrap();
        prop_assert_eq!(y.shape(), &[m, n]);
        assert_close(y.as_slice_f32().unwrap(), &r::matmul(&a, &b, m, k, n, true), 1e-5, "matmul_t");
    }

    #[test]
    fn matmul_t_keeps_leading_dims(b in 1usize..4, t in 1usize..9, k in 1usize..20, n in 1usize..20, seed: u64) {
        let mut g = rng(seed);
        let (a, w) = (rand_vec(&mut g, b * t * k, 1.0), rand_vec(&mut g, n * k, 1.0));
        let bias = rand_vec(&mut g, n, 1.0);
        let y = linear(&tensor(&a, &[b, t, k]), &tensor(&w, &[n, k]), Some(&tensor(&bias, &[n]))).unwrap();
        prop_assert_eq!(y.shape(), &[b, t, n]);
        let mut want = r::matmul(&a, &w, b * t, k, n, true);
        for (i, v) in want.iter_mut().enumerate() {
            *v += f64::from(bias[i % n]);
        }
        assert_close(y.as_slice_f32().unwrap(), &want, 1e-5, "linear");
    }

    #[test]
    fn rms_norm_matches_reference(rows in 1usize..20, c in 1usize..300, one_plus: bool, seed: u64) {
        let mut g = rng(seed);
        let (x, w) = (rand_vec(&mut g, rows * c, 3.0), rand_vec(&mut g, c, 1.0));
        let kind = if one_plus { NormWeight::OnePlus } else { NormWeight::Plain };
        let y = tensor(&x, &[rows, c]).rms_norm(&tensor(&w, &[c]), 1e-5, kind).unwrap();
        assert_close(y.as_slice_f32().unwrap(), &r::rms_norm(&x, &w, 1e-5, one_plus), 2e-6, "rms_norm");
    }

    #[test]
    fn rms_norm_rows_into_places_rows(rows in 1usize..10, c in 1usize..40, off in 0usize..5, seed: u64) {
        let mut g = rng(seed);
        let (x, w) = (rand_vec(&mut g, rows * c, 2.0), rand_vec(&mut g, c, 1.0));
        let mut out = tensor(&vec![7.0; (rows + off) * c], &[rows + off, c]);
        let src = tensor(&x, &[rows, c]);
        // Normalise rows 1.. of the source into rows off.. of the output.
        src.rms_norm_rows_into(1, rows - 1, &tensor(&w, &[c]), 1e-6, NormWeight::Plain, &mut out, off).unwrap();
        let o = out.as_slice_f32().unwrap();
        prop_assert!(o[..off * c].iter().all(|&v| v == 7.0));
        assert_close(&o[off * c..(off + rows - 1) * c], &r::rms_norm(&x[c..], &w, 1e-6, false), 2e-6, "rows_into");
    }

    #[test]
    fn layer_norm_matches_reference(rows in 1usize..20, c in 1usize..300, shift in -4f32..4.0, seed: u64) {
        let mut g = rng(seed);
        // Rows off centre, so that the mean matters.
        let x: Vec<f32> = rand_vec(&mut g, rows * c, 3.0).iter().map(|v| v + shift).collect();
        let w = rand_vec(&mut g, c, 1.0);
        let y = tensor(&x, &[rows, c]).rms_norm(&tensor(&w, &[c]), 1e-5, NormWeight::Centred).unwrap();
        assert_close(y.as_slice_f32().unwrap(), &r::layer_norm(&x, &w, 1e-5), 4e-6, "layer_norm");
    }

    #[test]
    fn activations_match_reference(n in 1usize..5000, seed: u64) {
        let mut g = rng(seed);
        let (x, u) = (rand_vec(&mut g, n, 12.0), rand_vec(&mut g, n, 2.0));
        for (act, f) in [
            (Activation::Silu, r::silu as fn(f64) -> f64),
            (Activation::GeluTanh, r::gelu_tanh),
            (Activation::Gelu, r::gelu),
        ] {
            let mut gate = tensor(&x, &[n]);
            gate.gated_in_place(&tensor(&u, &[n]), act).unwrap();
            let want: Vec<f64> = x.iter().zip(&u).map(|(&a, &b)| f(f64::from(a)) * f64::from(b)).collect();
            assert_close(gate.as_slice_f32().unwrap(), &want, 1e-6, "gated");
            let mut plain = tensor(&x, &[n]);
            plain.activate_in_place(act).unwrap();
            let want: Vec<f64> = x.iter().map(|&a| f(f64::from(a))).collect();
            assert_close(plain.as_slice_f32().unwrap(), &want, 1e-6, "activate");
        }
    }

    #[test]
    fn softmaxes_match_reference(rows in 1usize..8, c in 1usize..3000, scale in 0.1f32..60.0, seed: u64) {
        let mut g = rng(seed);
        let x = rand_vec(&mut g, rows * c, scale);
        let t = tensor(&x, &[rows, c]);
        let lsm = r::log_softmax(&x, c);
        assert_close(t.log_softmax_last().unwrap().as_slice_f32().unwrap(), &lsm, 2e-6, "log_softmax");
    }

    #[test]
    fn rope_matches_reference(rows in 1usize..12, heads in 1usize..4, half in 1usize..40, start in 0usize..3000, seed: u64) {
        let mut g = rng(seed);
        let hd = 2 * half;
        let x = rand_vec(&mut g, rows * heads * hd, 1.0);
        let positions: Vec<usize> = (0..rows).map(|i| start + 3 * i).collect();
        let rope = Rope::new(hd, 10_000.0, RopeScaling::None).unwrap();
        let mut t = tensor(&x, &[rows, heads * hd]);
        rope.apply(&mut t, &positions).unwrap();
        let inv: Vec<f64> = (0..half).map(|i| 1.0 / 10_000f64.powf(2.0 * i as f64 / hd as f64)).collect();
        // Angles are f32 products (as in transformers), so allow for their rounding at large positions.
        assert_close(t.as_slice_f32().unwrap(), &r::rope(&x, heads * hd, hd, &inv, &positions), 2e-4, "rope");
    }

    #[test]
    fn partial_rope_matches_reference(rows in 1usize..8, heads in 1usize..4, half in 1usize..12, pass in 0usize..9, start in 0usize..300, seed: u64) {
        // The first 2·half values of a head of 2·half + 2·pass rotate; the rest pass through.
        let mut g = rng(seed);
        let (rot, hd) = (2 * half, 2 * half + 2 * pass);
        let x = rand_vec(&mut g, rows * heads * hd, 1.0);
        let positions: Vec<usize> = (0..rows).map(|i| start + 2 * i).collect();
        let rope = Rope::partial(hd, rot, 10_000.0, RopeScaling::None).unwrap();
        prop_assert_eq!(rope.rotary_dim(), rot);
        let mut t = tensor(&x, &[rows, heads * hd]);
        rope.apply(&mut t, &positions).unwrap();
        let inv: Vec<f64> = (0..half).map(|i| 1.0 / 10_000f64.powf(2.0 * i as f64 / rot as f64)).collect();
        assert_close(t.as_slice_f32().unwrap(), &partial_reference(&x, hd, rot, &inv, 1.0, &positions), 2e-5, "partial rope");
    }

    #[test]
    fn attention_matches_reference(
        seqs in 1usize..4,
        t in 1usize..24,
        kv_heads in 1usize..3,
        group in 1usize..4,
        hd in 1usize..12,
        window in proptest::option::of(1usize..8),
        softcap in proptest::option::of(1.0f64..30.0),
        seed: u64,
    ) {
        let mut g = rng(seed);
        let heads = kv_heads * group;
        let (qc, kc) = (heads * hd, kv_heads * hd);
        let rows = seqs * t;
        let (q, k, v) = (rand_vec(&mut g, rows * qc, 2.0), rand_vec(&mut g, rows * kc, 2.0), rand_vec(&mut g, rows * kc, 1.0));
        let mut spec = AttentionSpec::new(heads, kv_heads, hd);
        spec.sliding_window = window;
        spec.softcap = softcap.map(|c| c as f32);
        let y = causal_attention(&tensor(&q, &[rows, qc]), &tensor(&k, &[rows, kc]), &tensor(&v, &[rows, kc]), &vec![t; seqs], &spec).unwrap();
        let a = r::Attn { heads, kv_heads, head_dim: hd, window, softcap };
        for s in 0..seqs {
            let want = r::attention(&q[s * t * qc..(s + 1) * t * qc], &k[s * t * kc..(s + 1) * t * kc], &v[s * t * kc..(s + 1) * t * kc], t, 0, &a);
            assert_close(&y.as_slice_f32().unwrap()[s * t * qc..(s + 1) * t * qc], &want, 2e-5, "attention");
        }
    }

    #[test]
    fn prefix_attention_matches_full_sequences(
        plen in 1usize..20,
        lens in proptest::collection::vec(0usize..9, 1..4),
        hd in 1usize..10,
        seed: u64,
    ) {
        let mut g = rng(seed);
        let (heads, kv_heads) = (4, 2);
        let (qc, kc) = (heads * hd, kv_heads * hd);
        let rows: usize = lens.iter().sum();
        let pk = rand_vec(&mut g, plen * kc, 2.0);
        let pv = rand_vec(&mut g, plen * kc, 1.0);
        let pq = rand_vec(&mut g, plen * qc, 2.0);
        let (q, k, v) = (rand_vec(&mut g, rows * qc, 2.0), rand_vec(&mut g, rows * kc, 2.0), rand_vec(&mut g, rows * kc, 1.0));
        let spec = AttentionSpec::new(heads, kv_heads, hd);
        let y = causal_attention_with_prefix(
            &tensor(&q, &[rows, qc]), &tensor(&k, &[rows, kc]), &tensor(&v, &[rows, kc]), &lens,
            &tensor(&pk, &[plen, kc]), &tensor(&pv, &[plen, kc]), &spec,
        ).unwrap();
        let a = r::Attn { heads, kv_heads, head_dim: hd, window: None, softcap: None };
        let mut row = 0;
        for &len in &lens {
            let cat = |p: &[f32], s: &[f32], c: usize| [p, &s[row * c..(row + len) * c]].concat();
            let want = r::attention(&cat(&pq, &q, qc), &cat(&pk, &k, kc), &cat(&pv, &v, kc), plen + len, plen, &a);
            assert_close(&y.as_slice_f32().unwrap()[row * qc..(row + len) * qc], &want, 2e-5, "prefix attention");
            row += len;
        }
    }
}

#[test]
fn long_sequences_span_several_query_blocks() {
    // Blocks of 64 queries: 150 tokens make three, with windows and a prefix crossing block edges.
    let mut g = rng(11);
    let (heads, kv_heads, hd, t) = (6, 2, 8, 150);
    let (qc, kc) = (heads * hd, kv_heads * hd);
    for (window, plen) in [(None, 0), (Some(70), 0), (None, 90), (Some(100), 90)] {
        let rows = t + plen;
        let (q, k, v) = (
            rand_vec(&mut g, rows * qc, 2.0),
            rand_vec(&mut g, rows * kc, 2.0),
            rand_vec(&mut g, rows * kc, 1.0),
        );
        let mut spec = AttentionSpec::new(heads, kv_heads, hd);
        spec.sliding_window = window;
        spec.softcap = Some(20.0);
        let a = r::Attn {
            heads,
            kv_heads,
            head_dim: hd,
            window,
            softcap: Some(20.0),
        };
        let want = r::attention(&q, &k, &v, rows, plen, &a);
        let own = |x: &[f32], c: usize| tensor(&x[plen * c..], &[t, c]);
        let y = if plen == 0 {
            causal_attention(&own(&q, qc), &own(&k, kc), &own(&v, kc), &[t], &spec).unwrap()
        } else {
            let (pk, pv) = (
                tensor(&k[..plen * kc], &[plen, kc]),
                tensor(&v[..plen * kc], &[plen, kc]),
            );
            causal_attention_with_prefix(
                &own(&q, qc),
                &own(&k, kc),
                &own(&v, kc),
                &[t],
                &pk,
                &pv,
                &spec,
            )
            .unwrap()
        };
        assert_close(
            y.as_slice_f32().unwrap(),
            &want,
            2e-5,
            &format!("window {window:?}, prefix {plen}"),
        );
    }
}

#[test]
fn a_prefix_inside_a_larger_buffer_uses_only_its_rows() {
    let mut g = rng(12);
    let (heads, kv_heads, hd, plen, spare, t) = (4, 2, 8, 9, 5, 3);
    let (qc, kc) = (heads * hd, kv_heads * hd);
    let (q, k, v) = (
        rand_vec(&mut g, t * qc, 2.0),
        rand_vec(&mut g, t * kc, 2.0),
        rand_vec(&mut g, t * kc, 1.0),
    );
    let pk = rand_vec(&mut g, (plen + spare) * kc, 2.0);
    let pv = rand_vec(&mut g, (plen + spare) * kc, 1.0);
    let mut spec = AttentionSpec::new(heads, kv_heads, hd);
    spec.sliding_window = Some(6);
    let (qt, kt, vt) = (
        tensor(&q, &[t, qc]),
        tensor(&k, &[t, kc]),
        tensor(&v, &[t, kc]),
    );
    let want = causal_attention_with_prefix(
        &qt,
        &kt,
        &vt,
        &[t],
        &tensor(&pk[..plen * kc], &[plen, kc]),
        &tensor(&pv[..plen * kc], &[plen, kc]),
        &spec,
    )
    .unwrap();
    let (big_k, big_v) = (
        tensor(&pk, &[plen + spare, kc]),
        tensor(&pv, &[plen + spare, kc]),
    );
    let got = causal_attention_with_prefix_rows(&qt, &kt, &vt, &[t], &big_k, &big_v, plen, &spec)
        .unwrap();
    assert_eq!(got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
    let over = plen + spare + 1;
    assert!(
        causal_attention_with_prefix_rows(&qt, &kt, &vt, &[t], &big_k, &big_v, over, &spec)
            .is_err()
    );
}

#[test]
fn embedding_gathers_rows_and_checks_ids() {
    let table: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let t = tensor(&table, &[4, 3]);
    let e = embedding(&t, &[3, 0, 3]).unwrap();
    assert_eq!(
        e.to_vec_f32().unwrap(),
        vec![9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 9.0, 10.0, 11.0]
    );
    assert!(matches!(
        embedding(&t, &[4]),
        Err(Error::Index {
            index: 4,
            size: 4,
            ..
        })
    ));
    assert_eq!(embedding(&t, &[]).unwrap().shape(), &[0, 3]);
}

#[test]
fn llama3_rope_frequencies_match_reference() {
    // Llama 3.1 8B settings; reference values from the transformers formula written out in f64.
    let (hd, theta, factor, low, high, old) = (128, 500_000.0, 8.0, 1.0, 4.0, 8192usize);
    let rope = Rope::new(
        hd,
        theta,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old,
        },
    )
    .unwrap();
    let mut scaled = 0;
    for (i, &got) in rope.inv_freq().iter().enumerate() {
        let f = 1.0 / f64::powf(theta, (2 * i) as f64 / hd as f64);
        let wavelen = 2.0 * std::f64::consts::PI / f;
        let want = if wavelen < old as f64 / high {
            f
        } else if wavelen > old as f64 / low {
            scaled += 1;
            f / factor
        } else {
            let s = (old as f64 / wavelen - low) / (high - low);
            (1.0 - s) * f / factor + s * f
        };
        assert!(
            (f64::from(got) - want).abs() <= 1e-6 * want,
            "{i}: {got} vs {want}"
        );
    }
    assert!(scaled > 0);
    let linear = Rope::new(8, 10_000.0, RopeScaling::Linear { factor: 4.0 }).unwrap();
    let plain = Rope::new(8, 10_000.0, RopeScaling::None).unwrap();
    for (a, b) in linear.inv_freq().iter().zip(plain.inv_freq()) {
        assert!((a * 4.0 - b).abs() <= 1e-7 * b);
    }
    assert!(Rope::new(7, 10_000.0, RopeScaling::None).is_err());
    // A rotary part that is odd, empty or wider than the head is refused.
    for rot in [0, 3, 10] {
        assert!(Rope::partial(8, rot, 10_000.0, RopeScaling::None).is_err());
    }
}

#[test]
fn rope_frequency_factors_divide_the_inverse_frequencies() {
    // Llama 3.1's factors as llama.cpp's converter writes them give the llama3 frequencies.
    let (hd, theta) = (64, 500_000.0);
    let (factor, low, high, old) = (8.0, 1.0, 4.0, 8192.0);
    let factors: Vec<f32> = (0..hd / 2)
        .map(|i| {
            let f = 1.0 / f64::powf(theta, (2 * i) as f64 / hd as f64);
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < old / high {
                1.0
            } else if wavelen > old / low {
                factor as f32
            } else {
                let s = (old / wavelen - low) / (high - low);
                (1.0 / ((1.0 - s) / factor + s)) as f32
            }
        })
        .collect();
    let from_factors = Rope::with_freq_factors(hd, theta, &factors).unwrap();
    let llama3 = Rope::new(
        hd,
        theta,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old as usize,
        },
    )
    .unwrap();
    for (a, b) in from_factors.inv_freq().iter().zip(llama3.inv_freq()) {
        assert!((a - b).abs() <= 1e-6 * b, "{a} vs {b}");
    }
    assert!(Rope::with_freq_factors(hd, theta, &factors[1..]).is_err());
    let mut bad = factors.clone();
    bad[3] = 0.0;
    assert!(Rope::with_freq_factors(hd, theta, &bad).is_err());
}

#[test]
fn gathered_and_scattered_rows_match_reference() {
    let mut g = rng(7);
    let (n, c) = (9, 5);
    let x = rand_vec(&mut g, n * c, 1.0);
    let t = tensor(&x, &[n, c]);
    let rows = [4, 0, 4, 8];
    let got = t.gather_rows(&rows).unwrap();
    assert_eq!(got.shape(), &[4, c]);
    let want: Vec<f32> = rows
        .iter()
        .flat_map(|&r| x[r * c..(r + 1) * c].to_vec())
        .collect();
    assert_eq!(got.to_vec_f32().unwrap(), want);
    assert_eq!(t.gather_rows(&[]).unwrap().shape(), &[0, c]);
    assert!(t.gather_rows(&[9]).is_err());

    let base = rand_vec(&mut g, n * c, 1.0);
    let mut acc = tensor(&base, &[n, c]);
    let scales = [0.5f32, -2.0, 0.25, 1.0];
    acc.add_scaled_rows_at(&rows, &got, &scales).unwrap();
    let mut want = base.clone();
    for (i, (&r, &s)) in rows.iter().zip(&scales).enumerate() {
        for j in 0..c {
            want[r * c + j] += s * x[rows[i] * c + j];
        }
    }
    assert_eq!(acc.to_vec_f32().unwrap(), want);
    assert!(acc.add_scaled_rows_at(&rows, &got, &scales[1..]).is_err());
    assert!(acc
        .add_scaled_rows_at(&[0, 1, 2, 9], &got, &scales)
        .is_err());
}

#[test]
fn shape_errors_name_the_operation() {
    let a = tensor(&[0.0; 6], &[2, 3]);
    let b = tensor(&[0.0; 8], &[2, 4]);
    let err = a.matmul_t(&b).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "matmul_t", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("[2, 3]"));
    assert!(a.clone().reshape(&[5]).is_err());
    let mut c = a.clone();
    assert!(c.add_rows_from(1, &a, 0, 2).is_err());
    let spec = AttentionSpec::new(3, 2, 1);
    assert!(causal_attention(&a, &a, &a, &[2], &spec).is_err());
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let mut g = rng(7);
    let (rows, d, n) = (700, 96, 300);
    let x = tensor(&rand_vec(&mut g, rows * d, 1.0), &[rows, d]);
    let w = tensor(&rand_vec(&mut g, n * d, 1.0), &[n, d]);
    let nw = tensor(&rand_vec(&mut g, d, 1.0), &[d]);
    let (q, k) = (
        tensor(&rand_vec(&mut g, rows * 64, 1.0), &[rows, 64]),
        tensor(&rand_vec(&mut g, rows * 32, 1.0), &[rows, 32]),
    );
    let spec = AttentionSpec::new(4, 2, 16);
    let run = || -> Vec<Vec<f32>> {
        let y = x.matmul_t(&w).unwrap();
        let mut l = y.log_softmax_last().unwrap();
        l.gated_in_place(&y, Activation::Silu).unwrap();
        vec![
            l.to_vec_f32().unwrap(),
            x.rms_norm(&nw, 1e-5, NormWeight::Plain)
                .unwrap()
                .to_vec_f32()
                .unwrap(),
            causal_attention(&q, &k, &k, &[300, 400], &spec)
                .unwrap()
                .to_vec_f32()
                .unwrap(),
        ]
    };
    let results: Vec<Vec<Vec<f32>>> = [1, 2, 3]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(run)
        })
        .collect();
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
}

#[test]
fn half_dtypes_need_conversion() {
    let t = Tensor::from_half_bits(
        vec![0x3f80, 0xc000],
        finercut_tensor::DType::BF16,
        &[2],
        &finercut_tensor::Device::Cpu,
    )
    .unwrap();
    assert!(matches!(t.as_slice_f32(), Err(Error::DType { .. })));
    assert!(t.matmul_t(&t.clone().reshape(&[1, 2]).unwrap()).is_err());
    assert_eq!(
        t.to_dtype(finercut_tensor::DType::F32)
            .unwrap()
            .as_slice_f32()
            .unwrap(),
        &[1.0, -2.0]
    );
}

/// RoPE of the first `rot` values of every head of `hd`, in `f64`, with `cos`/`sin` scaled by
/// `scale`; the other values pass through.
fn partial_reference(
    x: &[f32],
    hd: usize,
    rot: usize,
    inv: &[f64],
    scale: f64,
    positions: &[usize],
) -> Vec<f64> {
    let half = rot / 2;
    let mut out: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let cols = x.len() / positions.len();
    for (r, row) in out.chunks_mut(cols).enumerate() {
        for head in row.chunks_mut(hd) {
            for i in 0..half {
                let a = positions[r] as f64 * inv[i];
                let (c, s) = (scale * a.cos(), scale * a.sin());
                let (x1, x2) = (head[i], head[i + half]);
                head[i] = x1 * c - x2 * s;
                head[i + half] = x2 * c + x1 * s;
            }
        }
    }
    out
}

#[test]
fn long_rope_chooses_its_factors_by_the_largest_position_and_scales() {
    // Phi-3's LongRoPE on a partial head: short divisors while every position p has
    // p + 1 <= original context, long ones past it; cos and sin scaled by the attention factor.
    let (hd, rot, theta, original) = (16, 12, 10_000.0, 8);
    let short: Vec<f64> = (0..rot / 2).map(|i| 1.0 + 0.1 * i as f64).collect();
    let long: Vec<f64> = (0..rot / 2).map(|i| 2.0 + 0.5 * i as f64).collect();
    let scaling = LongRope {
        short_factor: short.clone(),
        long_factor: long.clone(),
        original_max_position_embeddings: original,
        attention_factor: 1.25,
    };
    let rope = Rope::long_rope(hd, rot, theta, &scaling).unwrap();
    let mut g = rng(7);
    for (positions, factors) in [
        ((0..8).collect::<Vec<_>>(), &short),
        ((0..9).collect(), &long),
        (vec![8], &long),
        (vec![7], &short),
    ] {
        let x = rand_vec(&mut g, positions.len() * 2 * hd, 1.0);
        let mut t = tensor(&x, &[positions.len(), 2 * hd]);
        rope.apply(&mut t, &positions).unwrap();
        let inv: Vec<f64> = factors
            .iter()
            .enumerate()
            .map(|(i, f)| 1.0 / (f * theta.powf(2.0 * i as f64 / rot as f64)))
            .collect();
        let want = partial_reference(&x, hd, rot, &inv, 1.25, &positions);
        assert_close(t.as_slice_f32().unwrap(), &want, 2e-6, "long rope");
    }
    let bad = LongRope {
        long_factor: vec![1.0; 5],
        ..scaling.clone()
    };
    assert!(Rope::long_rope(hd, rot, theta, &bad).is_err());
    assert!(Rope::partial(16, 18, theta, RopeScaling::None).is_err());
    assert!(Rope::partial(16, 5, theta, RopeScaling::None).is_err());
}
