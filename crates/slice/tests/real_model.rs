//! SmolLM2-135M: at full width the sliced model's WikiText-2 perplexity is the dense model's; at
//! about 10% slicing it is finite and higher.

use finercut_format::{cache, Checkpoint};
use finercut_model::{Model, Plan};
use finercut_slice::{dim_for_ratio, slice_model, SliceSettings};
use finercut_tensor::Device;

/// Mean NLL per predicted token over windows of `t` tokens.
fn mean_nll(model: &Model, windows: &[Vec<u32>]) -> f64 {
    let logits = model.forward(windows, &Plan::dense()).unwrap();
    let vocab = model.config().vocab_size;
    let lp = logits
        .reshape(&[windows.len() * windows[0].len(), vocab])
        .unwrap()
        .log_softmax_last()
        .unwrap();
    let lp = lp.as_slice_f32().unwrap();
    let t = windows[0].len();
    let mut sum = 0.0f64;
    for (w, win) in windows.iter().enumerate() {
        for pos in 0..t - 1 {
            let row = w * t + pos;
            sum -= f64::from(lp[row * vocab + win[pos + 1] as usize]);
        }
    }
    sum / (windows.len() * (t - 1)) as f64
}

#[test]
fn smollm2_slicing_keeps_perplexity_at_full_width_and_raises_it_when_slicing() {
    let Some(path) = cache::require_downloaded(cache::default_model_path()) else {
        return;
    };
    let ckpt = Checkpoint::open(&path).unwrap();
    let model = Model::load(&ckpt.config, ckpt.weights.as_ref(), &Device::Cpu).unwrap();
    let ids = ckpt
        .tokenizer
        .encode(finercut_eval::WIKITEXT2_TEST, false)
        .unwrap();
    let t = 128;
    // Calibration: the first two windows; evaluation: three windows after them.
    let calib: Vec<Vec<u32>> = ids[..2 * t].chunks(t).map(<[u32]>::to_vec).collect();
    let eval: Vec<Vec<u32>> = ids[4 * t..7 * t].chunks(t).map(<[u32]>::to_vec).collect();
    let dense = mean_nll(&model, &eval).exp();

    let d = ckpt.config.hidden_size;
    let full = slice_model(&model, &calib, &SliceSettings { dim: d })
        .unwrap()
        .into_model()
        .unwrap();
    let ppl_full = mean_nll(&full, &eval).exp();
    let rel = (ppl_full - dense).abs() / dense;
    assert!(
        rel < 1e-3,
        "dense perplexity {dense}, full-width rotation {ppl_full}: {rel:e} apart"
    );

    let dim = dim_for_ratio(d, 0.1).unwrap();
    let sliced = slice_model(&model, &calib, &SliceSettings { dim })
        .unwrap()
        .into_model()
        .unwrap();
    let ppl = mean_nll(&sliced, &eval).exp();
    assert!(
        ppl.is_finite() && ppl > dense,
        "dense {dense}, sliced to {dim}: {ppl}"
    );
    println!("SmolLM2-135M: dense {dense:.3}, d' = d {ppl_full:.3}, d' = {dim} {ppl:.3}");
}
