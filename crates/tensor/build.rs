//! Build script of `finercut-tensor`: finds OpenBLAS for the CPU GEMM.
//!
//! Where `libopenblas` is installed, the crate links it and compiles with `cfg(finercut_openblas)`;
//! otherwise it falls back to the pure-Rust `matrixmultiply` crate and prints a one-line notice.
//! `FINERCUT_BLAS=none` forces the fallback; `FINERCUT_BLAS=openblas` makes a missing library an error;
//! `FINERCUT_OPENBLAS_DIR` adds a directory to search first.
//! The search runs once per build of this crate: after installing OpenBLAS, run
//! `cargo clean -p finercut-tensor` (or touch this file) to pick it up.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(finercut_openblas)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=FINERCUT_BLAS");
    println!("cargo::rerun-if-env-changed=FINERCUT_OPENBLAS_DIR");

    let mode = env::var("FINERCUT_BLAS")
        .unwrap_or_default()
        .to_ascii_lowercase();
    match mode.as_str() {
        "none" | "off" | "rust" | "matrixmultiply" => {
            println!(
                "cargo::warning=finercut-tensor: FINERCUT_BLAS={mode}: using the pure-Rust matrixmultiply GEMM"
            );
            return;
        }
        "" | "auto" | "openblas" => {}
        other => {
            println!("cargo::error=finercut-tensor: FINERCUT_BLAS={other} is not one of auto, openblas, none");
            return;
        }
    }

    match find_openblas() {
        Some((dir, file)) => {
            println!("cargo::rustc-link-search=native={}", dir.display());
            if file == "libopenblas.so" || file == "libopenblas.dylib" {
                println!("cargo::rustc-link-lib=dylib=openblas");
            } else {
                // Only the runtime package is installed (no unversioned symlink): link the file itself.
                println!("cargo::rustc-link-lib=dylib:+verbatim={file}");
            }
            println!("cargo::rustc-cfg=finercut_openblas");
        }
        None if mode == "openblas" => {
            println!("cargo::error=finercut-tensor: FINERCUT_BLAS=openblas but libopenblas was not found");
        }
        None => {
            println!(
                "cargo::warning=finercut-tensor: libopenblas not found; using the slower pure-Rust matrixmultiply GEMM (install libopenblas-dev for speed)"
            );
        }
    }
}

/// The first directory holding `libopenblas`, with the file name found there.
fn find_openblas() -> Option<(PathBuf, String)> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = env::var("FINERCUT_OPENBLAS_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if os == "linux" {
        // Debian/Ubuntu multiarch first: that directory is on the default loader path.
        let multiarch = format!("/usr/lib/{arch}-linux-gnu");
        dirs.push(PathBuf::from(&multiarch));
        dirs.push(PathBuf::from(format!("{multiarch}/openblas-pthread")));
        dirs.push(PathBuf::from(format!("{multiarch}/openblas-openmp")));
        dirs.push(PathBuf::from(format!("{multiarch}/openblas-serial")));
        dirs.extend(
            [
                "/usr/lib64",
                "/usr/lib",
                "/usr/local/lib",
                "/usr/lib64/openblas",
                "/opt/OpenBLAS/lib",
            ]
            .map(PathBuf::from),
        );
    } else if os == "macos" {
        dirs.extend(
            [
                "/opt/homebrew/opt/openblas/lib",
                "/usr/local/opt/openblas/lib",
            ]
            .map(PathBuf::from),
        );
    }
    let names: &[&str] = if os == "macos" {
        &["libopenblas.dylib"]
    } else {
        &["libopenblas.so", "libopenblas.so.0"]
    };
    for dir in &dirs {
        for name in names {
            if is_file(&dir.join(name)) {
                return Some((dir.clone(), (*name).to_string()));
            }
        }
    }
    None
}

fn is_file(path: &Path) -> bool {
    path.metadata().map(|m| m.is_file()).unwrap_or(false)
}
