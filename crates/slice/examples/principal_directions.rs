//! SliceGPT's core step on synthetic activations: the covariance of the residual stream, its
//! eigendecomposition, and how much of the signal the first `d'` directions keep. All in plain
//! row-major slices: `cargo run -p finercut-slice --example principal_directions`.

use finercut_slice::{covariance, dim_for_ratio, matmul_f64, symmetric_eigen, Dense};

fn main() -> Result<(), finercut_slice::Error> {
    let (rows, d) = (256, 8);
    // Rows that mostly live in a 3-dimensional subspace, plus a little noise.
    let mut state = 1u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let mut x = Vec::with_capacity(rows * d);
    for r in 0..rows {
        let (a, b, c) = (
            (r as f32 * 0.37).sin(),
            (r as f32 * 0.11).cos(),
            (r as f32 * 0.05).sin(),
        );
        for j in 0..d {
            let j = j as f32;
            x.push(3.0 * a * (j * 0.5).cos() + 2.0 * b * (j * 0.9).sin() + c + 0.05 * noise());
        }
    }
    let cov = covariance(&x, rows, d)?;
    let (values, vectors) = symmetric_eigen(&cov, 0)?;
    let total: f64 = values.iter().sum();
    let keep = dim_for_ratio(d, 0.5)?;
    let kept: f64 = values[..keep].iter().sum();
    println!("eigenvalues: {values:.3?}");
    println!(
        "slicing 50% keeps d' = {keep} of {d} directions and {:.4} of the variance",
        kept / total
    );
    // Project the rows onto the kept directions (X · Q[:, ..d']).
    let projected = matmul_f64(&Dense::from_f32(&x, rows, d)?, &vectors.first_cols(keep))?;
    println!(
        "projected activations: {}×{}",
        projected.rows, projected.cols
    );
    Ok(())
}
