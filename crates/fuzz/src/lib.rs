//! A fuzz campaign over every file loader of finercut, on stable Rust (no cargo-fuzz).
//!
//! `finercut-fuzz` mutates real and synthetic inputs (GGUF, single and sharded safetensors,
//! `config.json`, `tokenizer.json`, result files and checkpoints of the search) with byte flips,
//! truncations, insertions, huge counts and lengths in header fields, wrong dtypes and shapes and
//! structural JSON edits, and feeds each to its loader; where the loader accepts the input, the
//! result is used (tensors decoded, a tokenizer run, a small model built and run). A case fails
//! when it panics, when one allocation exceeds a fixed bound, or when it runs longer than a time
//! bound; a case that runs far longer (a hang) stops the campaign. Each failure writes the input
//! to a crash file, and every case can be replayed from the seed and its number.
//!
//! Key items: [`Options`], [`run`], [`Report`], and [`CountingAlloc`], which the binary (and the
//! campaign's test) install as the global allocator so that allocations are measured.
//!
//! **Design decision: cases are derived, not stored.** Case `k` of seed `s` is generated from a
//! generator seeded with `(s, k)` alone, so a campaign is reproducible at any number of threads
//! and one case can be rerun (`--case k`) without replaying the others.

#![deny(missing_docs)]

pub mod alloc;
pub mod mutate;
pub mod seeds;
pub mod targets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use alloc::CountingAlloc;
use seeds::{Corpus, Seed};
use targets::{Scratch, Target};

/// How to run a campaign.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of cases.
    pub cases: u64,
    /// The campaign's seed.
    pub seed: u64,
    /// Worker threads.
    pub jobs: usize,
    /// Largest single allocation a case may make, in bytes.
    pub max_alloc: usize,
    /// Longest a case may run before it counts as a failure.
    pub case_time: Duration,
    /// Longest a case may run before the campaign is stopped as hung.
    pub hang_time: Duration,
    /// Where crash files go.
    pub crash_dir: PathBuf,
    /// The real GGUF whose header and metadata are mutated too, if any.
    pub real_gguf: Option<PathBuf>,
    /// Run only this case (with `cases` still giving the campaign it belongs to).
    pub only: Option<u64>,
    /// Write the input of every case run to `crash_dir`, failing or not (with `only`).
    pub save_all: bool,
}

/// Why a case failed.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The loader panicked (message and location).
    Panic(String),
    /// One allocation exceeded the bound.
    Allocation(usize),
    /// The case ran longer than the time bound.
    Slow(Duration),
}

/// A failed case.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Case number.
    pub case: u64,
    /// What was fed.
    pub target: Target,
    /// What went wrong.
    pub fault: Fault,
    /// The input, saved.
    pub crash_file: PathBuf,
}

/// Per-target counts.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Cases run.
    pub cases: u64,
    /// Inputs the loader accepted (the rest were refused with an error).
    pub accepted: u64,
    /// Largest single allocation of a case, in bytes.
    pub largest_alloc: usize,
    /// Longest case.
    pub slowest: Duration,
}

/// What a campaign found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cases run.
    pub cases: u64,
    /// Wall-clock time of the cases (without building the corpus).
    pub wall: Duration,
    /// Counts by target name.
    pub targets: BTreeMap<&'static str, Counts>,
    /// Failed cases.
    pub failures: Vec<Failure>,
    /// Largest single allocation of any case, in bytes.
    pub largest_alloc: usize,
    /// The case that made it.
    pub largest_alloc_case: u64,
    /// Longest case.
    pub slowest: Duration,
    /// The case that took it.
    pub slowest_case: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} cases in {:.1} s ({:.0} cases/s), {} failed",
            self.cases,
            self.wall.as_secs_f64(),
            self.cases as f64 / self.wall.as_secs_f64().max(1e-9),
            self.failures.len()
        )?;
        writeln!(
            f,
            "largest single allocation: {} bytes (case {}); slowest case: {:.1} ms (case {})",
            self.largest_alloc,
            self.largest_alloc_case,
            self.slowest.as_secs_f64() * 1e3,
            self.slowest_case
        )?;
        for (name, c) in &self.targets {
            writeln!(
                f,
                "  {name:<12} {:>7} cases {:>7} accepted  largest allocation {:>10} B  slowest {:>7.1} ms",
                c.cases,
                c.accepted,
                c.largest_alloc,
                c.slowest.as_secs_f64() * 1e3
            )?;
        }
        for x in &self.failures {
            writeln!(
                f,
                "FAILED case {} ({}): {:?}; input in {}",
                x.case,
                x.target.name(),
                x.fault,
                x.crash_file.display()
            )?;
        }
        Ok(())
    }
}

/// One generated case.
struct Case {
    target: Target,
    /// For sharded checkpoints: which file is mutated.
    part: usize,
    input: Vec<u8>,
}

/// Generates case `k` of the campaign with seed `seed`.
fn generate(corpus: &Corpus, seed: u64, k: u64) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mix: Vec<(Target, u32)> = Target::MIX
        .iter()
        .copied()
        .filter(|(t, _)| *t != Target::RealGguf || corpus.real_gguf.is_some())
        .collect();
    let total: u32 = mix.iter().map(|m| m.1).sum();
    let mut pick = rng.gen_range(0..total);
    let mut target = Target::Gguf;
    for (t, w) in mix {
        if pick < w {
            target = t;
            break;
        }
        pick -= w;
    }
    let part = rng.gen_range(0..3);
    let choose = |v: &[Seed], rng: &mut ChaCha8Rng| v[rng.gen_range(0..v.len())].clone();
    let (seed, json) = match target {
        Target::Gguf => (choose(&corpus.gguf, &mut rng), false),
        Target::RealGguf => match &corpus.real_gguf {
            Some(s) => (s.clone(), false),
            None => (choose(&corpus.gguf, &mut rng), false),
        },
        Target::Safetensors => (choose(&corpus.safetensors, &mut rng), false),
        Target::Sharded => (corpus.shards[part].clone(), part == 2),
        Target::Config => (corpus.config.clone(), true),
        Target::Tokenizer => (corpus.tokenizer.clone(), true),
        Target::Result => (choose(&corpus.results, &mut rng), true),
    };
    let input = mutate::mutate(&mut rng, &seed, json);
    Case {
        target,
        part,
        input,
    }
}

thread_local! {
    /// Set while this thread runs a case: its panics are recorded, not printed.
    static IN_CASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// What a worker is running, for the hang watchdog.
type Slot = Mutex<Option<(u64, Instant, Target, Arc<Vec<u8>>)>>;

fn crash_path(opts: &Options, case: u64, target: Target, part: usize) -> PathBuf {
    let suffix = if target == Target::Sharded {
        format!("-file{part}")
    } else {
        String::new()
    };
    opts.crash_dir.join(format!(
        "{}-seed{}-case{case}{suffix}.bin",
        target.name(),
        opts.seed
    ))
}

fn save(path: &Path, input: &[u8]) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, input) {
        eprintln!("finercut-fuzz: cannot write {}: {e}", path.display());
    }
}

/// Runs a campaign. Needs [`CountingAlloc`] as the global allocator.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let probe = vec![0u8; 3 << 20];
    if alloc::largest_ever() < probe.len() {
        bail!("the counting allocator is not installed: add `#[global_allocator] static A: finercut_fuzz::CountingAlloc = finercut_fuzz::CountingAlloc;`");
    }
    drop(probe);
    let work = tempfile::tempdir().context("cannot create a scratch directory")?;
    let corpus = Arc::new(seeds::corpus(work.path(), opts.real_gguf.as_deref())?);
    let cases: Vec<u64> = match opts.only {
        Some(k) => vec![k],
        None => (0..opts.cases).collect(),
    };
    let next = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let jobs = opts.jobs.max(1);
    let slots: Vec<Slot> = (0..jobs).map(|_| Mutex::new(None)).collect();
    let report = Mutex::new(Report::default());

    let previous_hook = Arc::new(std::panic::take_hook());
    {
        let previous = previous_hook.clone();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(std::cell::Cell::get) {
                let msg = format!("{info}");
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
            } else {
                previous(info);
            }
        }));
    }

    let t0 = Instant::now();
    let outcome: anyhow::Result<()> = std::thread::scope(|s| {
        let watchdog = s.spawn(|| watch(opts, &slots, &done));
        let workers: Vec<_> = (0..jobs)
            .map(|w| {
                let (corpus, slots, next, report, cases) =
                    (&corpus, &slots, &next, &report, &cases);
                let dir = work.path().join(format!("worker{w}"));
                s.spawn(move || -> anyhow::Result<()> {
                    let scratch = Scratch::new(&dir, corpus.clone())?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(&k) = cases.get(i) else { break };
                        run_case(opts, corpus, &scratch, &slots[w], report, k)?;
                    }
                    Ok(())
                })
            })
            .collect();
        let mut result = Ok(());
        for w in workers {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(anyhow::format_err!("a worker died")));
            if result.is_ok() {
                result = r;
            }
        }
        done.store(true, Ordering::Relaxed);
        let _ = watchdog.join();
        result
    });
    let wall = t0.elapsed();
    drop(std::panic::take_hook());
    if let Ok(hook) = Arc::try_unwrap(previous_hook) {
        std::panic::set_hook(hook);
    }
    outcome?;
    let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
    report.wall = wall;
    report.failures.sort_by_key(|f| f.case);
    Ok(report)
}

fn run_case(
    opts: &Options,
    corpus: &Corpus,
    scratch: &Scratch,
    slot: &Slot,
    report: &Mutex<Report>,
    k: u64,
) -> anyhow::Result<()> {
    let case = generate(corpus, opts.seed, k);
    let crash = crash_path(opts, k, case.target, case.part);
    let input = Arc::new(case.input);
    if opts.save_all {
        save(&crash, &input);
    }
    *slot.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((k, Instant::now(), case.target, input.clone()));
    alloc::start_case(k);
    IN_CASE.with(|c| c.set(true));
    let t = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scratch.run(case.target, &input, case.part)
    }));
    let elapsed = t.elapsed();
    IN_CASE.with(|c| c.set(false));
    let largest = alloc::largest_in_case();
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;

    let mut faults = Vec::new();
    let accepted = match result {
        Ok(r) => r.is_ok(),
        Err(_) => {
            let msg = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "panic without a message".into());
            faults.push(Fault::Panic(msg));
            scratch.restore()?;
            false
        }
    };
    if largest > opts.max_alloc {
        faults.push(Fault::Allocation(largest));
    }
    if elapsed > opts.case_time {
        faults.push(Fault::Slow(elapsed));
    }
    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
    r.cases += 1;
    let c = r.targets.entry(case.target.name()).or_default();
    c.cases += 1;
    c.accepted += u64::from(accepted);
    c.largest_alloc = c.largest_alloc.max(largest);
    c.slowest = c.slowest.max(elapsed);
    if largest > r.largest_alloc {
        r.largest_alloc = largest;
        r.largest_alloc_case = k;
    }
    if elapsed > r.slowest {
        r.slowest = elapsed;
        r.slowest_case = k;
    }
    for fault in faults {
        if !opts.save_all {
            save(&crash, &input);
        }
        eprintln!(
            "finercut-fuzz: case {k} ({}) failed: {fault:?}; input in {}",
            case.target.name(),
            crash.display()
        );
        r.failures.push(Failure {
            case: k,
            target: case.target,
            fault,
            crash_file: crash.clone(),
        });
    }
    Ok(())
}

/// Stops the process when a case runs past the hang bound, after saving its input.
fn watch(opts: &Options, slots: &[Slot], done: &AtomicBool) {
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        for slot in slots {
            let guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((k, start, target, input)) = guard.as_ref() {
                if start.elapsed() > opts.hang_time {
                    let crash = crash_path(opts, *k, *target, 0);
                    save(&crash, input);
                    eprintln!(
                        "finercut-fuzz: case {k} ({}) still running after {:?}: hung; input in {}",
                        target.name(),
                        opts.hang_time,
                        crash.display()
                    );
                    std::process::exit(3);
                }
            }
        }
    }
}
