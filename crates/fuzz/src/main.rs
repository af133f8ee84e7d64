//! `finercut-fuzz`: runs a fuzz campaign over finercut's file loaders (see the library docs) and
//! prints what it found; exits with an error when a case failed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use finercut_fuzz::{run, CountingAlloc, Options};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Fuzz finercut's loaders: GGUF, safetensors (single and sharded), config.json, tokenizer.json,
/// result files and checkpoints.
#[derive(Debug, Parser)]
#[command(name = "finercut-fuzz", version)]
struct Args {
    /// Number of cases.
    #[arg(long, default_value_t = 100_000)]
    cases: u64,
    /// Seed of the campaign.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Largest single allocation a case may make, in MiB.
    #[arg(long, default_value_t = 16)]
    max_alloc_mib: usize,
    /// Longest a case may run, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    case_ms: u64,
    /// Longest a case may run before the campaign stops as hung, in seconds.
    #[arg(long, default_value_t = 60)]
    hang_s: u64,
    /// Directory for crash files.
    #[arg(long, default_value = "target/fuzz/crashes")]
    crash_dir: PathBuf,
    /// A real GGUF whose header and metadata are mutated too (default: the cached SmolLM2).
    #[arg(long)]
    real_gguf: Option<PathBuf>,
    /// Do not mutate a real GGUF.
    #[arg(long)]
    no_real: bool,
    /// Run only this case of the campaign (to replay a failure).
    #[arg(long)]
    case: Option<u64>,
    /// With --case: write the case's input to the crash directory even if it passes.
    #[arg(long)]
    save: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let real_gguf = if args.no_real {
        None
    } else {
        let path = args
            .real_gguf
            .unwrap_or_else(finercut_format::cache::default_model_path);
        if !path.is_file() {
            bail!(
                "{} not found: run `cargo xtask fetch`, give --real-gguf, or pass --no-real",
                path.display()
            );
        }
        Some(path)
    };
    let opts = Options {
        cases: args.cases,
        seed: args.seed,
        jobs: args.jobs,
        max_alloc: args.max_alloc_mib << 20,
        case_time: Duration::from_millis(args.case_ms),
        hang_time: Duration::from_secs(args.hang_s),
        crash_dir: args.crash_dir,
        real_gguf,
        only: args.case,
        save_all: args.save,
    };
    let report = run(&opts)?;
    print!("{report}");
    if !report.failures.is_empty() {
        bail!("{} of {} cases failed", report.failures.len(), report.cases);
    }
    Ok(())
}
