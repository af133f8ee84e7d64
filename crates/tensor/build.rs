//! Build script of `finercut-tensor`: turns the BLAS feature the user chose into one `cfg`.
//!
//! Nothing is searched for: the features decide (see the crate's README). `finercut_blas_linked` is set
//! when a BLAS is linked at build time (`openblas-system`, `openblas-static`, `intel-mkl`, `blis`,
//! `accelerate`), `finercut_openblas_linked` when that BLAS is OpenBLAS, and `finercut_blas_dynamic`
//! when OpenBLAS is to be loaded at run time (`openblas-dynamic`, and no linked BLAS chosen).

use std::env;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(finercut_blas_linked)");
    println!("cargo::rustc-check-cfg=cfg(finercut_openblas_linked)");
    println!("cargo::rustc-check-cfg=cfg(finercut_blas_dynamic)");
    println!("cargo::rerun-if-changed=build.rs");
    let on = |f: &str| env::var_os(format!("CARGO_FEATURE_{f}")).is_some();
    let linked: Vec<&str> = [
        ("OPENBLAS_SYSTEM", "openblas-system"),
        ("OPENBLAS_STATIC", "openblas-static"),
        ("INTEL_MKL", "intel-mkl"),
        ("BLIS", "blis"),
        ("ACCELERATE", "accelerate"),
    ]
    .iter()
    .filter(|(var, _)| on(var))
    .map(|(_, name)| *name)
    .collect();
    if linked.len() > 1 {
        println!(
            "cargo::error=finercut-tensor: the features {} each link a BLAS; choose one",
            linked.join(", ")
        );
        return;
    }
    if let Some(name) = linked.first() {
        println!("cargo::rustc-cfg=finercut_blas_linked");
        if name.starts_with("openblas") {
            println!("cargo::rustc-cfg=finercut_openblas_linked");
        }
    } else if on("OPENBLAS_DYNAMIC") {
        println!("cargo::rustc-cfg=finercut_blas_dynamic");
    }
}
