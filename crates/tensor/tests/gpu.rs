//! Every operation on a CUDA GPU against the CPU backend on random inputs (`cargo xtask gpu-test`).
//!
//! This target **fails without a GPU**: it exists to be run where one is. `f32` results must match
//! the CPU to 1e-5 relative (max-norm of the difference over the max-norm of the CPU result);
//! `bf16` GEMMs (bf16 inputs, f32 accumulation) must match the CPU's `f32` GEMM on the same
//! bf16-rounded inputs to 1e-5, and the unrounded `f32` product to 1e-2 (bf16 has an 8-bit
//! mantissa: a relative rounding error of 2^-9 per input).

#![allow(clippy::unwrap_used)] // Tests may unwrap (`docs/STYLE.md`).

use finercut_tensor::{
    causal_attention, causal_attention_with_prefix, embedding, Activation, AttentionSpec, DType,
    Device, NormWeight, Rope, RopeScaling, RowMetric, Tensor,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const F32_TOL: f64 = 1e-5;

fn gpu() -> Device {
    match Device::cuda(0) {
        Ok(d) => d,
        Err(e) => panic!("the GPU tests need a CUDA GPU: {e}"),
    }
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn rand_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// The same random tensor on the CPU and on the GPU.
fn pair(rng: &mut StdRng, shape: &[usize], scale: f32) -> (Tensor, Tensor) {
    let n = shape.iter().product();
    let c = Tensor::from_vec(rand_vec(rng, n, scale), shape, &Device::Cpu).unwrap();
    let g = c.to_device(&gpu()).unwrap();
    (c, g)
}

/// `max|gpu − cpu| / max|cpu|`.
fn rel(gpu: &Tensor, cpu: &Tensor) -> f64 {
    assert_eq!(gpu.shape(), cpu.shape());
    assert!(!gpu.device().is_cpu());
    let (a, b) = (gpu.to_vec_f32().unwrap(), cpu.to_vec_f32().unwrap());
    let scale = b
        .iter()
        .fold(0f64, |m, &x| m.max(f64::from(x).abs()))
        .max(1e-30);
    let diff = a.iter().zip(&b).fold(0f64, |m, (&x, &y)| {
        m.max((f64::from(x) - f64::from(y)).abs())
    });
    if a.iter().any(|x| x.is_nan()) {
        return f64::INFINITY;
    }
    diff / scale
}

fn assert_close(what: &str, gpu: &Tensor, cpu: &Tensor, tol: f64) {
    let r = rel(gpu, cpu);
    assert!(r <= tol, "{what}: relative difference {r:e} above {tol:e}");
}

#[test]
fn gemms_match_cpu() {
    let mut r = rng(1);
    for &(m, k, n) in &[
        (1, 1, 1),
        (7, 33, 5),
        (64, 576, 1536),
        (300, 128, 49),
        (2, 4096, 3),
    ] {
        let (xc, xg) = pair(&mut r, &[m, k], 1.0);
        let (wc, wg) = pair(&mut r, &[n, k], 1.0);
        assert_close(
            "matmul_t",
            &xg.matmul_t(&wg).unwrap(),
            &xc.matmul_t(&wc).unwrap(),
            F32_TOL,
        );
        // Into the first rows of a larger buffer.
        let mut oc = Tensor::zeros(&[m + 3, n], &Device::Cpu).unwrap();
        let mut og = Tensor::zeros(&[m + 3, n], &gpu()).unwrap();
        xc.matmul_t_into(&wc, &mut oc).unwrap();
        xg.matmul_t_into(&wg, &mut og).unwrap();
        assert_close("matmul_t_into", &og, &oc, F32_TOL);
    }
}

#[test]
fn bf16_gemm_matches_cpu_on_rounded_inputs() {
    let mut r = rng(2);
    let (m, k, n) = (40, 576, 300);
    let (xc, xg) = pair(&mut r, &[m, k], 1.0);
    let (wc, wg) = pair(&mut r, &[n, k], 1.0);
    let wg16 = wg.to_dtype(DType::BF16).unwrap();
    assert_eq!(wg16.dtype(), DType::BF16);
    let got = xg.matmul_t(&wg16).unwrap();
    let round = |t: &Tensor| {
        t.to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let exact_inputs = round(&xc).matmul_t(&round(&wc)).unwrap();
    assert_close(
        "bf16 matmul_t vs rounded inputs",
        &got,
        &exact_inputs,
        F32_TOL,
    );
    assert_close(
        "bf16 matmul_t vs f32",
        &got,
        &xc.matmul_t(&wc).unwrap(),
        1e-2,
    );
    // Conversions round the same way as on the host.
    let back = wg16.to_device(&Device::Cpu).unwrap();
    assert_eq!(
        back.to_vec_f32().unwrap(),
        wc.to_dtype(DType::BF16).unwrap().to_vec_f32().unwrap()
    );
}

#[test]
fn rowwise_ops_match_cpu() {
    let mut r = rng(3);
    for &(rows, c) in &[(1, 1), (5, 576), (17, 3000), (3, 49_152)] {
        let (xc, xg) = pair(&mut r, &[rows, c], 3.0);
        let (wc, wg) = pair(&mut r, &[c], 1.0);
        for kind in [NormWeight::Plain, NormWeight::OnePlus, NormWeight::Centred] {
            let a = xg.rms_norm(&wg, 1e-5, kind).unwrap();
            let b = xc.rms_norm(&wc, 1e-5, kind).unwrap();
            assert_close("rms_norm", &a, &b, F32_TOL);
        }
        assert_close(
            "log_softmax",
            &xg.log_softmax_last().unwrap(),
            &xc.log_softmax_last().unwrap(),
            F32_TOL,
        );
        for act in [Activation::Silu, Activation::GeluTanh, Activation::Gelu] {
            let (uc, ug) = pair(&mut r, &[rows, c], 2.0);
            let (mut gc, mut gg) = (xc.clone(), xg.clone());
            gc.gated_in_place(&uc, act).unwrap();
            gg.gated_in_place(&ug, act).unwrap();
            assert_close("gated", &gg, &gc, F32_TOL);
            let (mut ac, mut ag) = (xc.clone(), xg.clone());
            ac.activate_in_place(act).unwrap();
            ag.activate_in_place(act).unwrap();
            assert_close("activate", &ag, &ac, F32_TOL);
        }
        let (mut sc, mut sg) = (xc.clone(), xg.clone());
        sc.softcap_in_place(2.5).unwrap();
        sg.softcap_in_place(2.5).unwrap();
        assert_close("softcap", &sg, &sc, F32_TOL);
        sc.scale_in_place(-0.75).unwrap();
        sg.scale_in_place(-0.75).unwrap();
        assert_close("scale", &sg, &sc, F32_TOL);
        sc.add_row_vector_in_place(&wc).unwrap();
        sg.add_row_vector_in_place(&wg).unwrap();
        assert_close("add_row_vector", &sg, &sc, F32_TOL);
        let n = rows;
        sc.add_rows_from(0, &xc, 0, n).unwrap();
        sg.add_rows_from(0, &xg, 0, n).unwrap();
        assert_close("add_rows_from (all rows)", &sg, &sc, F32_TOL);
    }
}

#[test]
fn row_copies_and_norms_into_rows_match_cpu() {
    let mut r = rng(4);
    let (xc, xg) = pair(&mut r, &[10, 64], 1.0);
    let (mut dc, mut dg) = pair(&mut r, &[12, 64], 1.0);
    dc.copy_rows_from(2, &xc, 3, 5).unwrap();
    dg.copy_rows_from(2, &xg, 3, 5).unwrap();
    assert_close("copy_rows_from", &dg, &dc, 0.0);
    dc.add_rows_from(6, &xc, 0, 4).unwrap();
    dg.add_rows_from(6, &xg, 0, 4).unwrap();
    assert_close("add_rows_from", &dg, &dc, F32_TOL);
    assert_close(
        "slice_rows",
        &dg.slice_rows(4, 7).unwrap(),
        &dc.slice_rows(4, 7).unwrap(),
        0.0,
    );
    let (wc, wg) = pair(&mut r, &[64], 1.0);
    xc.rms_norm_rows_into(1, 6, &wc, 1e-6, NormWeight::Plain, &mut dc, 5)
        .unwrap();
    xg.rms_norm_rows_into(1, 6, &wg, 1e-6, NormWeight::Plain, &mut dg, 5)
        .unwrap();
    assert_close("rms_norm_rows_into", &dg, &dc, F32_TOL);
    // Operands on different devices are a typed error, not a crash.
    assert!(dg.add_rows_from(0, &dc, 0, 1).is_err());
}

#[test]
fn gathered_and_scattered_rows_match_cpu() {
    let mut r = rng(9);
    let (n, c) = (40, 300);
    let (xc, xg) = pair(&mut r, &[n, c], 1.0);
    // The rows one expert of a mixture gets (distinct), and rows that repeat.
    for rows in [vec![3usize, 7, 8, 21, 39], vec![4, 0, 4, 8, 4, 39]] {
        let gc = xc.gather_rows(&rows).unwrap();
        let gg = xg.gather_rows(&rows).unwrap();
        assert_close("gather_rows", &gg, &gc, 0.0);
        let (yc, yg) = pair(&mut r, &[rows.len(), c], 2.0);
        let scales = rand_vec(&mut r, rows.len(), 1.0);
        let (mut oc, mut og) = (xc.clone(), xg.clone());
        oc.add_scaled_rows_at(&rows, &yc, &scales).unwrap();
        og.add_scaled_rows_at(&rows, &yg, &scales).unwrap();
        // Products rounded before the add, additions in the host's order: the same bits.
        assert_close("add_scaled_rows_at", &og, &oc, 0.0);
        assert!(og.add_scaled_rows_at(&rows, &yc, &scales).is_err());
    }
}

#[test]
fn embedding_and_rope_match_cpu() {
    let mut r = rng(5);
    let (tc, tg) = pair(&mut r, &[100, 48], 1.0);
    let ids = [3u32, 99, 0, 3, 57];
    assert_close(
        "embedding",
        &embedding(&tg, &ids).unwrap(),
        &embedding(&tc, &ids).unwrap(),
        0.0,
    );
    let t16 = tg.to_dtype(DType::BF16).unwrap();
    let rounded = tc
        .to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    assert_close(
        "embedding bf16",
        &embedding(&t16, &ids).unwrap(),
        &embedding(&rounded, &ids).unwrap(),
        0.0,
    );
    assert!(embedding(&tg, &[100]).is_err());
    for scaling in [
        RopeScaling::None,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        },
    ] {
        // Whole heads, and partial rotary (a quarter of each head, GPT-NeoX).
        for rotary in [64, 16] {
            let rope = Rope::partial(64, rotary, 500_000.0, scaling).unwrap();
            let (mut xc, mut xg) = pair(&mut r, &[6, 4 * 64], 1.0);
            let positions = [0usize, 5, 2, 4095, 17, 17];
            rope.apply(&mut xc, &positions).unwrap();
            rope.apply(&mut xg, &positions).unwrap();
            assert_close("rope", &xg, &xc, F32_TOL);
        }
    }
}

#[test]
fn attention_matches_cpu() {
    let mut r = rng(6);
    // (heads, kv_heads, head_dim, window, softcap, sequence lengths)
    type Case<'a> = (usize, usize, usize, Option<usize>, Option<f32>, &'a [usize]);
    let cases: &[Case<'_>] = &[
        (9, 3, 64, None, None, &[128, 128, 128, 128]),
        (4, 1, 256, Some(7), Some(50.0), &[1, 40, 33]),
        (32, 8, 128, None, None, &[256, 3]),
        (2, 2, 32, Some(64), None, &[300]),
        (3, 1, 72, None, Some(5.0), &[17, 0, 9]),
    ];
    for &(heads, kvh, hd, window, softcap, lens) in cases {
        let rows: usize = lens.iter().sum();
        let (qc, qg) = pair(&mut r, &[rows, heads * hd], 1.0);
        let (kc, kg) = pair(&mut r, &[rows, kvh * hd], 1.0);
        let (vc, vg) = pair(&mut r, &[rows, kvh * hd], 1.0);
        let mut spec = AttentionSpec::new(heads, kvh, hd);
        spec.sliding_window = window;
        spec.softcap = softcap;
        let a = causal_attention(&qg, &kg, &vg, lens, &spec).unwrap();
        let b = causal_attention(&qc, &kc, &vc, lens, &spec).unwrap();
        assert_close(
            &format!("attention {heads}/{kvh}x{hd} {window:?} {softcap:?}"),
            &a,
            &b,
            F32_TOL,
        );
        let plen = 23;
        let (pkc, pkg) = pair(&mut r, &[plen, kvh * hd], 1.0);
        let (pvc, pvg) = pair(&mut r, &[plen, kvh * hd], 1.0);
        let a = causal_attention_with_prefix(&qg, &kg, &vg, lens, &pkg, &pvg, &spec).unwrap();
        let b = causal_attention_with_prefix(&qc, &kc, &vc, lens, &pkc, &pvc, &spec).unwrap();
        assert_close("attention with prefix", &a, &b, F32_TOL);
    }
}

#[test]
fn divergences_match_the_metrics_crate() {
    use finercut_metrics::{Accumulator, DenseRows, Metric};
    let mut r = rng(7);
    let (rows, vocab) = (12, 5000);
    let dense = rand_vec(&mut r, rows * vocab, 8.0);
    let pruned: Vec<f32> = dense
        .iter()
        .map(|&x| x + r.gen_range(-0.5f32..0.5))
        .collect();
    let targets: Vec<Option<u32>> = (0..rows)
        .map(|i| (i % 5 != 4).then(|| r.gen_range(0..vocab as u32)))
        .collect();
    let dense_rows = DenseRows::new(dense.clone(), vocab)
        .unwrap()
        .with_targets(targets.clone())
        .unwrap();
    let dg = Tensor::from_vec(dense, &[rows, vocab], &gpu()).unwrap();
    let pg = Tensor::from_slice(&pruned, &[rows, vocab], &gpu()).unwrap();
    let lse: Vec<f64> = (0..rows)
        .map(|i| dense_rows.log_sum_exp(i).unwrap())
        .collect();
    for (metric, row_metric) in [
        (Metric::Js, RowMetric::Js),
        (Metric::JsReference, RowMetric::JsReference),
        (Metric::Kl, RowMetric::Kl),
        (Metric::Angular, RowMetric::Angular),
        (Metric::Euclidean, RowMetric::Euclidean),
        (Metric::Ppl, RowMetric::Ppl),
    ] {
        let dev = finercut_tensor::DenseLogits::new(&dg, &lse, &targets).unwrap();
        let got = pg.row_divergences(&dev, 0, row_metric).unwrap();
        for (i, &g) in got.iter().enumerate() {
            let want = dense_rows
                .row_value(metric, i, &pruned[i * vocab..(i + 1) * vocab])
                .unwrap();
            let tol = 1e-12 * want.abs().max(1e-12) + 1e-15;
            assert!(
                (g - want).abs() <= tol.max(want.abs() * 1e-9),
                "{metric} row {i}: {g} vs {want}"
            );
        }
        // The accumulated score equals the host's.
        let mut acc = Accumulator::new(metric, &dense_rows).unwrap();
        acc.add_rows(0, &pruned).unwrap();
        let host = acc.finish().unwrap();
        let mut acc2 = Accumulator::new(metric, &dense_rows).unwrap();
        acc2.add_row_values(0, &got).unwrap();
        let dev_score = acc2.finish().unwrap();
        assert!(
            (host - dev_score).abs() <= 1e-9 * host.abs().max(1e-12),
            "{metric}: {host} vs {dev_score}"
        );
    }
}

#[test]
fn no_such_card_is_an_error() {
    let _ = gpu();
    let e = Device::cuda(999)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("no such CUDA device"), "{e}");
}
