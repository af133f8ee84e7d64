//! Repository-wide hygiene checks, run by `cargo test`.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Every Rust file starts with a `//!` comment saying what it is for.
#[test]
fn every_file_has_a_module_doc() {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("xtask"), &mut files);
    assert!(files.len() > 10, "found only {} Rust files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|p| {
            let text = fs::read_to_string(p).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! doc comment: {missing:?}"
    );
}

/// `cfg(feature = "cuda")` appears only in the tensor crate.
#[test]
fn cuda_cfg_only_in_tensor_crate() {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| !p.starts_with(root.join("crates/tensor")))
        .filter(|p| {
            fs::read_to_string(p)
                .unwrap_or_default()
                .contains(concat!("feature = \"", "cuda\""))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "cuda cfg outside crates/tensor: {offenders:?}"
    );
}

/// The model crate does no file I/O.
#[test]
fn model_crate_does_no_file_io() {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates/model/src"), &mut files);
    for p in files {
        let text = fs::read_to_string(&p).unwrap_or_default();
        for needle in ["std::fs", "File::open", "fs::read"] {
            assert!(!text.contains(needle), "{} uses {needle}", p.display());
        }
    }
}
