//! Multiplies two small matrices with `finercut-tensor` and prints the product and the BLAS that ran
//! it: `cargo run -p finercut-tensor --example matmul` (add `--features openblas-dynamic`, or another
//! BLAS feature, to use one).

use finercut_tensor::{Device, Tensor};

fn main() -> finercut_tensor::Result<()> {
    // SAFETY: first thing in `main`, before any thread starts.
    unsafe { finercut_tensor::init_blas() };
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &Device::Cpu)?;
    // Two output features: the sum of the inputs, and the first minus the last.
    let w = Tensor::from_vec(vec![1.0, 1.0, 1.0, 1.0, 0.0, -1.0], &[2, 3], &Device::Cpu)?;
    let y = x.matmul_t(&w)?;
    println!("x·wᵀ = {:?} (shape {:?})", y.to_vec_f32()?, y.shape());
    let blas = finercut_tensor::blas_info();
    println!(
        "GEMM: {} ({}){}",
        blas.name,
        blas.source,
        if blas.kernels.is_empty() {
            String::new()
        } else {
            format!(", kernels {}", blas.kernels)
        }
    );
    Ok(())
}
