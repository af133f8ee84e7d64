//! The CUDA parts of the project's commands: the checks every test run makes without a GPU
//! (`cargo xtask test`), the GPU test target (`cargo xtask gpu-test`) and the one-call device check
//! (`cargo xtask device-check`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::{fetch, run, target_dir};

/// Without a GPU: the `cuda` feature builds and passes clippy (tensor engine, model, search with its
/// GPU test, CLI), the tensor crate's unit tests pass with it (opening a card is a clear error where
/// there is no driver), and every kernel compiles to PTX for compute_80 and compute_90 with NVRTC
/// from `fetch cuda-tools`.
pub fn checks(root: &Path) -> anyhow::Result<()> {
    fetch::fetch(root, fetch::Target::CudaTools)?;
    run(Command::new("cargo").current_dir(root).args([
        "clippy",
        "--package",
        "finercut-tensor",
        "--package",
        "finercut-model",
        "--package",
        "finercut-search",
        "--package",
        "finercut",
        "--features",
        "finercut-tensor/cuda,finercut-model/cuda,finercut-search/cuda,finercut/cuda",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let (lib, include) = fetch::cuda_tools_dirs();
    run(Command::new("cargo")
        .current_dir(root)
        .args([
            "test",
            "--package",
            "finercut-tensor",
            "--features",
            "cuda",
            "--lib",
            "--test",
            "ptx",
        ])
        .env("LD_LIBRARY_PATH", prepend_path(&lib))
        .env("FINERCUT_CUDA_INCLUDE", &include))
}

/// `$LD_LIBRARY_PATH` with `dir` in front.
fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).unwrap_or_else(|_| dir.as_os_str().to_owned())
}

/// The GPU tests: every operation against the CPU backend, and whole models GPU vs CPU. They fail
/// where no GPU is present.
pub fn gpu_test(root: &Path, args: &[String]) -> anyhow::Result<()> {
    run(Command::new("cargo")
        .current_dir(root)
        .args([
            "test",
            "--release",
            "--package",
            "finercut-tensor",
            "--package",
            "finercut-search",
            "--features",
            "finercut-tensor/cuda,finercut-search/cuda",
            "--test",
            "gpu",
        ])
        .args(args))
}

/// Prepares `target/device-check/`: the release `finercut` binary and the GPU test binaries built
/// with the `cuda` feature and the pure-Rust GEMM (nothing to install on the device machine), and
/// `run.sh`, which runs the whole check in one call and writes `results.json`.
pub fn device_check(root: &Path) -> anyhow::Result<()> {
    let out = root.join("target/device-check");
    let bin = out.join("bin");
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cannot remove {}", out.display()))?;
    }
    fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let build_dir = target_dir(root).join("device");
    let env = |cmd: &mut Command| {
        cmd.current_dir(root)
            .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
            .env("CARGO_PROFILE_RELEASE_STRIP", "true")
            .env("CARGO_TARGET_DIR", &build_dir);
    };
    let mut build = Command::new("cargo");
    build.args([
        "build",
        "--release",
        "--package",
        "finercut",
        "--no-default-features",
        "--features",
        "cuda",
    ]);
    env(&mut build);
    run(&mut build)?;
    copy(&build_dir.join("release/finercut"), &bin.join("finercut"))?;
    // The GPU test binaries, built without running them.
    let mut tests = Command::new("cargo");
    tests.args([
        "test",
        "--release",
        "--no-run",
        "--message-format=json",
        "--package",
        "finercut-tensor",
        "--package",
        "finercut-search",
        "--features",
        "finercut-tensor/cuda,finercut-search/cuda",
        "--test",
        "gpu",
    ]);
    env(&mut tests);
    let output = tests.output().context("cannot run cargo test --no-run")?;
    if !output.status.success() {
        bail!(
            "building the GPU tests failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(name)) = (
            msg.get("executable").and_then(|e| e.as_str()),
            msg.pointer("/target/name").and_then(|n| n.as_str()),
        ) else {
            continue;
        };
        if name == "gpu" {
            let pkg = msg
                .get("package_id")
                .and_then(|p| p.as_str())
                .unwrap_or_default();
            let crate_name = if pkg.contains("finercut-search") || pkg.contains("crates/search") {
                "search"
            } else {
                "tensor"
            };
            copy(Path::new(exe), &bin.join(format!("gpu-test-{crate_name}")))?;
        }
    }
    for f in ["run.sh", "make_models.py", "torch_step.py"] {
        copy(&root.join("xtask/device").join(f), &out.join(f))?;
    }
    let size: u64 = walk(&out)?.iter().map(|p| p.1).sum();
    eprintln!(
        "device-check: {} ready ({:.1} MiB); run it on the GPU machine with \
         `bash target/device-check/run.sh` (see docs/PERFORMANCE.md, \"CUDA\")",
        out.display(),
        size as f64 / (1 << 20) as f64
    );
    if size > 60 << 20 {
        bail!("{} is over 60 MiB and would not travel", out.display());
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Files under `dir` with their sizes.
fn walk(dir: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            out.extend(walk(&entry.path())?);
        } else {
            out.push((entry.path(), meta.len()));
        }
    }
    Ok(out)
}
