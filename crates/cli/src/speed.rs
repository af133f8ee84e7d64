//! `finercut speed`: times the dense forward pass (tokens per second), the number the PyTorch
//! comparison sets beside transformers'.

use std::time::Instant;

use anyhow::bail;
use finercut_model::Plan;
use serde_json::json;

use crate::common;

/// Arguments of `finercut speed`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: crate::ModelArg,
    /// Comma-separated BATCHxSEQ shapes.
    #[arg(long, default_value = "4x128,10x256")]
    pub shapes: String,
    /// Untimed runs per shape.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed runs per shape (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the random token ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_shape(s: &str) -> anyhow::Result<(usize, usize)> {
    let parsed = s.split_once('x').and_then(|(a, b)| {
        Some((
            a.trim().parse::<usize>().ok()?,
            b.trim().parse::<usize>().ok()?,
        ))
    });
    match parsed {
        Some((b, t)) if b > 0 && t > 0 => Ok((b, t)),
        _ => bail!("shape `{s}` is not BATCHxSEQ with positive numbers"),
    }
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let threads = common::init_threads(args.threads)?;
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let loaded = common::load_model(&args.model, &finercut_dist::Alone)?;
    let plan = loaded.plan_with(&Default::default());
    let vocab = loaded.checkpoint.config.vocab_size as u64;
    let mut state = args.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut next_id = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % vocab) as u32
    };
    let mut results = Vec::new();
    for shape in args.shapes.split(',') {
        let (b, t) = parse_shape(shape)?;
        let tokens: Vec<Vec<u32>> = (0..b)
            .map(|_| (0..t).map(|_| next_id()).collect())
            .collect();
        let run = |plan: &Plan| -> anyhow::Result<f64> {
            let t0 = Instant::now();
            let logits = loaded.model.forward(&tokens, plan)?;
            std::hint::black_box(&logits);
            Ok(t0.elapsed().as_secs_f64())
        };
        for _ in 0..args.warmup {
            run(&plan)?;
        }
        let mut times = (0..args.repeats)
            .map(|_| run(&plan))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        results.push(json!({
            "shape": format!("{b}x{t}"),
            "median_s": median,
            "min_s": times[0],
            "max_s": times[times.len() - 1],
            "tokens_per_s": (b * t) as f64 / median,
            "times_s": times,
        }));
    }
    let report = json!({
        "model": loaded.path.display().to_string(),
        "threads": threads,
        "backend": finercut_tensor::gemm_backend(),
        "blas": blas_json(),
        "openblas_coretype": std::env::var("OPENBLAS_CORETYPE").ok(),
        "peak_rss_mib": common::peak_rss_mib(),
        "results": results,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if args.json {
        println!("{report}");
    } else {
        for r in &results {
            println!(
                "{:>8}: {:.3} s median, {:.0} tokens/s ({} threads)",
                r["shape"].as_str().unwrap_or(""),
                r["median_s"].as_f64().unwrap_or(f64::NAN),
                r["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
                threads
            );
        }
    }
    Ok(())
}

/// Which BLAS runs the GEMMs: its name, OpenBLAS' kernel set, whether it was linked or loaded, and
/// whether the batch-invariant products' tiles run on it (else on matrixmultiply).
fn blas_json() -> serde_json::Value {
    let info = finercut_tensor::blas_info();
    json!({
        "name": info.name,
        "kernels": info.kernels,
        "source": info.source,
        "tiles_batch_invariant": info.tiles_batch_invariant,
    })
}
