//! Times `x·Wᵀ` at SmolLM2-135M's shapes (512 rows; the FFN's up and down projections and the LM
//! head) and prints the median of each with the GEMM backend in use:
//! `cargo run --release -p finercut-tensor --features openblas-dynamic --example gemm_speed [REPEATS]`
//! (`docs/PERFORMANCE.md`, Which BLAS).

use std::time::Instant;

use finercut_tensor::{Device, Tensor};

fn main() -> finercut_tensor::Result<()> {
    // SAFETY: first thing in `main`, before any thread starts.
    unsafe { finercut_tensor::init_blas() };
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
        .max(1);
    let rows = 512;
    for (n, k) in [(1536usize, 576usize), (576, 1536), (49152, 576)] {
        let x: Vec<f32> = (0..rows * k).map(|i| (i % 97) as f32 * 0.01).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 89) as f32 * 0.01).collect();
        let x = Tensor::from_vec(x, &[rows, k], &Device::Cpu)?;
        let w = Tensor::from_vec(w, &[n, k], &Device::Cpu)?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t0 = Instant::now();
            let y = x.matmul_t(&w)?;
            times.push(t0.elapsed().as_secs_f64());
            std::hint::black_box(y);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{rows}x{k} · ({n}x{k})ᵀ: median {:.3} ms of {reps} [{}]",
            times[times.len() / 2] * 1e3,
            finercut_tensor::gemm_backend()
        );
    }
    Ok(())
}
