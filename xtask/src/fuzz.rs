//! `cargo xtask fuzz`: fetches the default model (its GGUF header is one of the inputs mutated)
//! and runs the `finercut-fuzz` campaign from a release build.

use std::path::Path;
use std::process::Command;

use crate::{fetch, run, target_dir};

/// Runs `finercut-fuzz --cases CASES --seed SEED ARGS…` through `cargo run --release`.
pub fn fuzz(root: &Path, cases: u64, seed: u64, args: &[String]) -> anyhow::Result<()> {
    fetch::fetch(root, fetch::Target::Smollm2)?;
    run(Command::new("cargo")
        .current_dir(root)
        .args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "finercut-fuzz",
            "--",
        ])
        .args(["--cases", &cases.to_string(), "--seed", &seed.to_string()])
        .arg("--crash-dir")
        .arg(target_dir(root).join("fuzz/crashes"))
        .args(args))
}
