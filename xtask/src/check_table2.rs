//! `cargo xtask check-table2`: re-derives the numbers of a reproduced Table 2 from outside the
//! reproduction, with the `finercut` commands a user has.
//!
//! For every row of `<out>/table2/<model>/results.json`: the row's model is exported with
//! `finercut export` from the row's `plan_file` (the SliceGPT row's `plan_file` is its sliced
//! checkpoint, used as saved), evaluated with `finercut eval` on the documents the table used
//! (`documents_per_task`, the profile's MMLU limit), and its WikiText-2 perplexity measured with
//! `finercut ppl` on the table's windows (`--exclude` the calibration tokens). Every accuracy and
//! document count must equal the table's; the perplexity must agree to a relative 1e-6. The
//! comparison is written to `<out>/check-table2/<model>/check.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, format_err, Context};
use serde_json::{json, Value};

/// Settings of `check-table2`.
#[derive(Debug)]
pub struct CheckTable2 {
    /// The reproduction's output directory (`--out` of `reproduce`).
    pub out: PathBuf,
    /// Model directories under `table2/` to check; empty: every one.
    pub models: Vec<String>,
    /// Row names to check ("Dense", "FinerCut", …); empty: every row.
    pub rows: Vec<String>,
    /// Worker threads of `finercut`.
    pub threads: usize,
}

/// Relative tolerance of the perplexity (the exported model holds the dequantised weights the
/// reproduction widened tile by tile; the sums are the same, the tolerance covers the text round
/// trip of nothing else).
const PPL_RTOL: f64 = 1e-6;

pub fn check_table2(root: &Path, bin: &Path, settings: &CheckTable2) -> anyhow::Result<()> {
    let table_dir = settings.out.join("table2");
    let mut models = settings.models.clone();
    if models.is_empty() {
        let entries = std::fs::read_dir(&table_dir).with_context(|| {
            format!(
                "cannot list {} (run `reproduce table2` first)",
                table_dir.display()
            )
        })?;
        for e in entries {
            let e = e.with_context(|| format!("cannot list {}", table_dir.display()))?;
            if e.path().join("results.json").is_file() {
                models.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        models.sort();
    }
    if models.is_empty() {
        bail!(
            "no table2/<model>/results.json under {}",
            settings.out.display()
        );
    }
    let mut failures = Vec::new();
    for model in &models {
        failures.extend(check_model(root, bin, settings, model)?);
    }
    if failures.is_empty() {
        eprintln!("check-table2: every checked number equals the table's");
        Ok(())
    } else {
        bail!(
            "check-table2: {} differences:\n{}",
            failures.len(),
            failures.join("\n")
        )
    }
}

fn check_model(
    root: &Path,
    bin: &Path,
    settings: &CheckTable2,
    model: &str,
) -> anyhow::Result<Vec<String>> {
    let results_path = settings.out.join("table2").join(model).join("results.json");
    let results = read_json(&results_path)?;
    let field = |v: &Value, name: &str| -> anyhow::Result<Value> {
        v.get(name)
            .cloned()
            .ok_or_else(|| format_err!("{}: no `{name}`", results_path.display()))
    };
    let profile = field(&results, "profile")?;
    let num = |name: &str| -> anyhow::Result<u64> {
        profile[name]
            .as_u64()
            .ok_or_else(|| format_err!("{}: profile.{name} is not a count", results_path.display()))
    };
    let ratio = profile["ratio"]
        .as_f64()
        .ok_or_else(|| format_err!("{}: profile.ratio is not a number", results_path.display()))?;
    // The windows the table skipped: every calibration slice (the search's and SliceGPT's).
    let calib_end = num("calib_offset")?
        + (num("samples")? * num("seq_len")?)
            .max(num("slicegpt_samples")? * num("slicegpt_seq_len")?);
    let exclude = format!("{}:{calib_end}", num("calib_offset")?);
    let model_path = field(&results, "model_path")?
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| format_err!("{}: model_path is not a path", results_path.display()))?;
    // Tasks grouped by their document limit, as `finercut eval --limit` takes one per call.
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for d in field(&results, "documents_per_task")?
        .as_array()
        .into_iter()
        .flatten()
    {
        let (Some(task), Some(limit)) = (d["task"].as_str(), d["limit"].as_u64()) else {
            bail!(
                "{}: malformed documents_per_task entry {d}",
                results_path.display()
            );
        };
        groups.entry(limit).or_default().push(task.to_owned());
    }
    if let Some(l) = profile["mmlu_limit"].as_u64() {
        groups.entry(l).or_default().push("mmlu".to_owned());
    }
    let work = settings.out.join("check-table2").join(model);
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for row in field(&results, "rows")?.as_array().into_iter().flatten() {
        let method = row["method"].as_str().unwrap_or_default().to_owned();
        if !settings.rows.is_empty()
            && !settings
                .rows
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&method))
        {
            continue;
        }
        eprintln!("== check-table2: {model} / {method}");
        let plan = row["plan_file"].as_str().map(PathBuf::from);
        let checked_model = match (&plan, method.as_str()) {
            (None, _) => model_path.clone(),
            (Some(dir), "SliceGPT") => dir.clone(),
            (Some(plan), _) => {
                let dir = work.join(format!("{}-export", method.to_lowercase()));
                crate::run(
                    Command::new(bin)
                        .current_dir(root)
                        .args(["export", "--force", "--ratio"])
                        .arg(ratio.to_string())
                        .arg("--model")
                        .arg(&model_path)
                        .arg("--plan")
                        .arg(plan)
                        .arg("--out")
                        .arg(&dir),
                )?;
                dir
            }
        };
        let mut tasks = Map::new();
        for (limit, names) in &groups {
            let out = work.join(format!("{}-eval-{limit}.json", method.to_lowercase()));
            crate::run(
                Command::new(bin)
                    .current_dir(root)
                    .arg("eval")
                    .arg("--model")
                    .arg(&checked_model)
                    .arg("--tasks")
                    .arg(names.join(","))
                    .arg("--limit")
                    .arg(limit.to_string())
                    .arg("--threads")
                    .arg(settings.threads.to_string())
                    .arg("--out")
                    .arg(&out),
            )?;
            for t in read_json(&out)?["tasks"].as_array().into_iter().flatten() {
                if let Some(name) = t["task"].as_str() {
                    tasks.insert(name.to_owned(), (t["value"].as_f64(), t["n"].as_u64()));
                }
            }
        }
        let mut checked = Vec::new();
        for (task, v) in row["tasks"].as_object().into_iter().flatten() {
            let (want, want_n) = (v[0].as_f64(), v[2].as_u64());
            let (got, got_n) = tasks.get(task).copied().unwrap_or((None, None));
            let same = want.is_some() && got == want && got_n == want_n;
            if !same {
                failures.push(format!(
                    "{model} / {method} / {task}: table {want:?} on {want_n:?} documents, finercut eval {got:?} on {got_n:?}"
                ));
            }
            checked.push(json!({"task": task, "table": want, "eval": got, "documents": got_n, "equal": same}));
        }
        let ppl_out = Command::new(bin)
            .current_dir(root)
            .arg("ppl")
            .arg("--model")
            .arg(&checked_model)
            .arg("--seq-len")
            .arg(num("ppl_seq_len")?.to_string())
            .args(
                profile["ppl_max_windows"]
                    .as_u64()
                    .map(|w| format!("--max-windows={w}")),
            )
            .arg("--exclude")
            .arg(&exclude)
            .arg("--threads")
            .arg(settings.threads.to_string())
            .arg("--json")
            .output()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        if !ppl_out.status.success() {
            bail!(
                "finercut ppl on {} failed: {}",
                checked_model.display(),
                String::from_utf8_lossy(&ppl_out.stderr)
            );
        }
        let ppl: Value = serde_json::from_slice(&ppl_out.stdout)
            .context("finercut ppl --json printed no JSON")?;
        let (want, got) = (row["ppl"].as_f64(), ppl["ppl"].as_f64());
        let ppl_ok =
            matches!((want, got), (Some(w), Some(g)) if (w - g).abs() <= PPL_RTOL * w.abs());
        if !ppl_ok {
            failures.push(format!(
                "{model} / {method} / perplexity: table {want:?}, finercut ppl {got:?}"
            ));
        }
        eprintln!(
            "   {} of {} tasks equal; perplexity table {want:?}, finercut ppl {got:?}",
            checked.iter().filter(|c| c["equal"] == true).count(),
            checked.len()
        );
        report.push(json!({
            "method": method, "model": checked_model, "tasks": checked,
            "ppl": {"table": want, "ppl": got, "equal_within": PPL_RTOL, "equal": ppl_ok},
        }));
    }
    let path = work.join("check.json");
    let text = serde_json::to_string_pretty(&json!({
        "results": results_path, "rows": report, "differences": failures,
    }))?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("written: {}", path.display());
    Ok(failures)
}

type Map = BTreeMap<String, (Option<f64>, Option<u64>)>;

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}
