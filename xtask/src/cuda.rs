//! The CUDA parts of the project's commands: the checks every test run makes without a GPU
//! (`cargo xtask test`), the GPU test target (`cargo xtask gpu-test`) and the one-call device check
//! (`cargo xtask device-check [--dry-run]`, whose bookkeeping a test runs here with the GPU
//! commands stubbed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::{fetch, run, target_dir};

/// Without a GPU: the `cuda` feature builds and passes clippy (tensor engine, model, search with its
/// GPU test, CLI), the tensor crate's unit tests pass with it (opening a card is a clear error where
/// there is no driver, and the kernels' launch plans, cuBLAS arguments and Rust emulations check
/// out), and every kernel compiles with NVRTC from `fetch cuda-tools` to PTX for compute_80 and
/// compute_90 and to cubins for sm_80 and sm_90, whose ptxas report must show no spills in the
/// attention kernel and no shared memory above the limit.
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

/// Settings of the comparisons whose CPU side is computed here, before the run (`expected/`).
const TINY_PROMPT: &str = "The device check compares finercut on the GPU with the CPU.";
const TINY_SAMPLES: usize = 4;
const TINY_SEQ_LEN: usize = 64;
/// Four greedy steps of the tiny model's eight sublayers: floor(8 · 0.5625) = 4.
const TINY_RATIO: f64 = 0.5625;
/// Calibration shape of the Llama-3-8B-shaped greedy step: a step of seconds, not minutes.
const SAMPLES_8B: usize = 4;
const SEQ_LEN_8B: usize = 256;
/// What a device run may return: files at the top of `$OUT`.
pub const MAX_RETURNED_FILES: usize = 8;

/// Prepares `target/device-check/`: the release `finercut` binary and the GPU test binaries built
/// with the `cuda` feature and the pure-Rust GEMM (nothing to install on the device machine),
/// stripped and executable; `run.sh`, `check.py`, `torch_step.py`; and `expected/`, the CPU side
/// of every comparison, computed here with the same binary on the CPU. With `dry_run`, then runs
/// the whole script here with its GPU commands stubbed and checks what comes back.
pub fn device_check(root: &Path, dry_run: bool) -> anyhow::Result<()> {
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
    for entry in walk(&bin)? {
        // Test binaries keep their symbols: strip them too (the check needs no backtraces).
        let _ = Command::new("strip").arg(&entry.0).status();
        make_executable(&entry.0)?;
    }
    copy_scripts(root, &out)?;
    expected_here(&out)?;
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
    if dry_run {
        let dry = root.join("target/device-check-dry");
        let report = dry_run_script(&out, &dry.join("out"), &dry.join("work"), &[])?;
        eprintln!("device-check --dry-run: {report}");
    }
    Ok(())
}

/// Copies the device scripts into the prepared tree.
fn copy_scripts(root: &Path, out: &Path) -> anyhow::Result<()> {
    for f in ["run.sh", "check.py", "torch_step.py"] {
        copy(&root.join("xtask/device").join(f), &out.join(f))?;
        make_executable(&out.join(f))?;
    }
    Ok(())
}

fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

/// Token ids below 256 (the byte-level tokenizer of `make-tiny`), `n` sequences of `t`, from a
/// fixed linear congruential generator.
fn token_rows(n: usize, t: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            (0..t)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((x >> 33) % 256) as u32
                })
                .collect()
        })
        .collect()
}

/// The CPU side of the device check's comparisons, computed here with the prepared `finercut` on
/// the CPU: `expected/` with the tiny model's hash, its last-position log-probabilities and its
/// greedy removal order, and the calibration ids.
fn expected_here(out: &Path) -> anyhow::Result<()> {
    let exp = out.join("expected");
    let work = out.join("../device-check-work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&exp).with_context(|| format!("cannot create {}", exp.display()))?;
    let finercut = out.join("bin/finercut");
    let tiny = work.join("tiny");
    run(Command::new(&finercut).arg("make-tiny").arg(&tiny))?;
    let tiny_sha = {
        use sha2::Digest;
        let bytes = fs::read(tiny.join("model.safetensors"))
            .with_context(|| format!("cannot read the tiny model in {}", tiny.display()))?;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let write_json = |name: &str, v: &serde_json::Value| -> anyhow::Result<()> {
        let path = exp.join(name);
        fs::write(&path, serde_json::to_string_pretty(v)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write_json(
        "tokens-tiny.json",
        &serde_json::json!(token_rows(TINY_SAMPLES, TINY_SEQ_LEN, 1)),
    )?;
    write_json(
        "tokens-8b.json",
        &serde_json::json!(token_rows(SAMPLES_8B, SEQ_LEN_8B, 2)),
    )?;
    write_json(
        "meta.json",
        &serde_json::json!({
            "tiny_sha256": tiny_sha,
            "prompt": TINY_PROMPT,
            "samples": TINY_SAMPLES,
            "seq_len": TINY_SEQ_LEN,
            "ratio": TINY_RATIO,
            "samples_8b": SAMPLES_8B,
            "seq_len_8b": SEQ_LEN_8B,
        }),
    )?;
    let run_json = Command::new(&finercut)
        .arg("run")
        .arg("--model")
        .arg(&tiny)
        .args(["--device", "cpu", "--json", "--prompt", TINY_PROMPT])
        .output()
        .context("cannot run finercut run")?;
    if !run_json.status.success() {
        bail!(
            "finercut run --json failed: {}",
            String::from_utf8_lossy(&run_json.stderr)
        );
    }
    let path = exp.join("tiny-run-cpu.json");
    fs::write(&path, &run_json.stdout)
        .with_context(|| format!("cannot write {}", path.display()))?;
    run(Command::new(&finercut)
        .arg("prune")
        .arg("--model")
        .arg(&tiny)
        .args([
            "--device",
            "cpu",
            "--metric",
            "js",
            "--exhaustive",
            "--force",
        ])
        .arg("--tokens")
        .arg(exp.join("tokens-tiny.json"))
        .args(["--samples", &TINY_SAMPLES.to_string()])
        .args(["--seq-len", &TINY_SEQ_LEN.to_string()])
        .args(["--ratio", &TINY_RATIO.to_string()])
        .arg("--out")
        .arg(exp.join("tiny-prune-cpu.json")))?;
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

/// Runs `run.sh --dry-run` of the tree `tree` with `$OUT` = `out` and `$WORK` = `work` (and the
/// extra environment `envs`), and checks what a device run would return: at most
/// [`MAX_RETURNED_FILES`] plain files at the top of `out`, among them `results.json` and
/// `logs.tar.gz`. Returns the verdict of `results.json`; an error when the returned files are
/// wrong (a failing stage is not an error here: the verdict says so).
pub fn dry_run_script(
    tree: &Path,
    out: &Path,
    work: &Path,
    envs: &[(&str, &str)],
) -> anyhow::Result<String> {
    let _ = fs::remove_dir_all(out);
    let mut cmd = Command::new("bash");
    cmd.arg(tree.join("run.sh"))
        .arg("--dry-run")
        .env("OUT", out)
        .env("WORK", work);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd.status().context("cannot run bash run.sh --dry-run")?;
    let files: Vec<_> = fs::read_dir(out)
        .with_context(|| format!("the dry run left no {}", out.display()))?
        .collect::<Result<_, _>>()?;
    if files.len() > MAX_RETURNED_FILES || files.iter().any(|f| !f.path().is_file()) {
        bail!(
            "the dry run left {} entries in {} (at most {MAX_RETURNED_FILES} plain files come back)",
            files.len(),
            out.display()
        );
    }
    for name in ["results.json", "logs.tar.gz"] {
        if !out.join(name).is_file() {
            bail!("the dry run wrote no {name} into {}", out.display());
        }
    }
    let results: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(out.join("results.json")).context("cannot read results.json")?,
    )
    .context("results.json is not JSON")?;
    let verdict = results["verdict"].as_str().unwrap_or("missing").to_string();
    if status.success() != (verdict == "passed") {
        bail!("run.sh exited with {status} but results.json says {verdict}");
    }
    Ok(verdict)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (`docs/STYLE.md`).
mod tests {
    use super::*;

    /// A prepared tree without binaries (a dry run stubs them): the scripts and a synthetic CPU
    /// side in `expected/`.
    fn synthetic_tree(dir: &Path) -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let tree = dir.join("tree");
        let exp = tree.join("expected");
        fs::create_dir_all(&exp).unwrap();
        copy_scripts(root, &tree).unwrap();
        let write = |name: &str, v: serde_json::Value| {
            fs::write(exp.join(name), v.to_string()).unwrap();
        };
        write(
            "meta.json",
            serde_json::json!({"tiny_sha256": "-", "prompt": "hi", "samples": 2, "seq_len": 8,
                "ratio": 0.3125, "samples_8b": 2, "seq_len_8b": 8}),
        );
        write("tokens-tiny.json", serde_json::json!(token_rows(2, 8, 1)));
        write("tokens-8b.json", serde_json::json!(token_rows(2, 8, 2)));
        write(
            "tiny-run-cpu.json",
            serde_json::json!({"ids": [1, 2], "removed_sublayers": [],
                "logprobs": [-0.1, -2.5, -3.0]}),
        );
        write(
            "tiny-prune-cpu.json",
            serde_json::json!({"steps": [
                {"unit": "L2.mlp", "score": 0.01, "forward_equivalents": 1.0, "wall_s": 0.5,
                 "candidates": 8, "runners_up": []},
                {"unit": "L0.attn", "score": 0.02, "forward_equivalents": 1.0, "wall_s": 0.5,
                 "candidates": 7, "runners_up": []}]}),
        );
        tree
    }

    fn stages(out: &Path) -> Vec<(String, String)> {
        let r: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    const STAGES: [&str; 6] = [
        "env",
        "ops",
        "models",
        "cli_parity",
        "torch_parity",
        "timing_8b",
    ];

    #[test]
    fn a_dry_run_passes_every_stage_and_returns_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let tree = synthetic_tree(dir.path());
        let (out, work) = (dir.path().join("out"), dir.path().join("work"));
        assert_eq!(dry_run_script(&tree, &out, &work, &[]).unwrap(), "passed");
        let s = stages(&out);
        assert_eq!(
            s.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            STAGES,
            "stages in order of value"
        );
        assert!(s.iter().all(|x| x.1 == "passed"), "{s:?}");
        assert_eq!(fs::read_dir(&out).unwrap().count(), 2);
        // Every stage's log is in the archive.
        let list = Command::new("tar")
            .arg("-tzf")
            .arg(out.join("logs.tar.gz"))
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        for name in STAGES {
            assert!(list.contains(&format!("logs/{name}.log")), "{name}: {list}");
        }
        assert!(list.contains("checks/cli_parity.order.json"), "{list}");
    }

    #[test]
    fn a_failing_stage_is_recorded_and_the_later_stages_still_run() {
        let dir = tempfile::tempdir().unwrap();
        let tree = synthetic_tree(dir.path());
        let (out, work) = (dir.path().join("out"), dir.path().join("work"));
        let verdict =
            dry_run_script(&tree, &out, &work, &[("FINERCUT_DRY_FAIL", "models")]).unwrap();
        assert_eq!(verdict, "failed");
        let s = stages(&out);
        assert_eq!(s.len(), STAGES.len());
        for (name, status) in &s {
            let want = if name == "models" { "failed" } else { "passed" };
            assert_eq!(status, want, "{name}");
        }
    }

    #[test]
    fn the_deadline_stops_a_stage_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let tree = synthetic_tree(dir.path());
        let (out, work) = (dir.path().join("out"), dir.path().join("work"));
        // Every stub would take 60 s; the deadline is 8 s and every stage may start until then.
        let verdict = dry_run_script(
            &tree,
            &out,
            &work,
            &[
                ("DEADLINE_S", "8"),
                ("FINERCUT_NEED_S", "0"),
                ("FINERCUT_DRY_SLEEP", "60"),
            ],
        )
        .unwrap();
        let s = stages(&out);
        assert_eq!(s.len(), STAGES.len(), "every stage recorded: {s:?}");
        assert_eq!(s[0], ("env".to_string(), "passed".to_string()));
        // The first stubbed stage is killed at the deadline (or, on a machine so slow that env
        // took the whole budget, skipped); none after it runs.
        assert!(["timeout", "skipped"].contains(&s[1].1.as_str()), "{s:?}");
        assert!(s[2..].iter().all(|x| x.1 == "skipped"), "{s:?}");
        assert_ne!(verdict, "passed");
        let r: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
        assert!(r["elapsed_s"].as_u64().unwrap() < 60, "{r}");
    }

    #[test]
    fn no_stage_starts_without_time_left() {
        // With the deadline reached, a stage that needs no time must still not start: a timeout
        // of 0 s would run it without any limit.
        let dir = tempfile::tempdir().unwrap();
        let tree = synthetic_tree(dir.path());
        let (out, work) = (dir.path().join("out"), dir.path().join("work"));
        let verdict = dry_run_script(
            &tree,
            &out,
            &work,
            &[
                ("DEADLINE_S", "0"),
                ("FINERCUT_NEED_S", "0"),
                ("FINERCUT_DRY_SLEEP", "60"),
            ],
        )
        .unwrap();
        let s = stages(&out);
        assert_eq!(s.len(), STAGES.len(), "every stage recorded: {s:?}");
        assert!(s.iter().all(|x| x.1 == "skipped"), "{s:?}");
        assert_ne!(verdict, "passed");
    }

    #[test]
    fn the_comparisons_fail_on_a_different_gpu_result() {
        let dir = tempfile::tempdir().unwrap();
        let tree = synthetic_tree(dir.path());
        let exp = tree.join("expected");
        let check = |args: &[&Path], extra: &[&str]| {
            Command::new("python3")
                .arg(tree.join("check.py"))
                .args(args)
                .args(extra)
                .output()
                .unwrap()
        };
        let cpu_run = exp.join("tiny-run-cpu.json");
        let gpu_run = dir.path().join("gpu-run.json");
        fs::write(
            &gpu_run,
            r#"{"ids": [1, 2], "logprobs": [-0.1, -2.5, -2.9]}"#,
        )
        .unwrap();
        let sub = Path::new("logprobs");
        assert!(!check(&[sub, &cpu_run, &gpu_run], &["--tol", "1e-4"])
            .status
            .success());
        assert!(check(&[sub, &cpu_run, &gpu_run], &["--tol", "0.1"])
            .status
            .success());
        let cpu_prune = exp.join("tiny-prune-cpu.json");
        let gpu_prune = dir.path().join("gpu-prune.json");
        fs::write(
            &gpu_prune,
            r#"{"steps": [{"unit": "L0.attn", "score": 0.02}, {"unit": "L2.mlp", "score": 0.01}]}"#,
        )
        .unwrap();
        let sub = Path::new("order");
        let o = check(&[sub, &cpu_prune, &gpu_prune], &["--score-tol", "1"]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout).contains("\"same_order\": false"));
    }
}
