//! The part of `cargo xtask mpi-test` that checks perplexity and the reproduction over MPI ranks:
//! `finercut ppl` on 2 ranks prints the one-process report bit for bit, and `finercut reproduce
//! figure3 --smoke` (searches of three methods and the perplexity of each plan, on the smoke
//! profile's two tiny models) on 2 ranks writes the one-process files byte for byte, timings aside.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::mpi::mpirun;
use crate::run;

/// Runs `cmd` to its end and returns its stdout, failing with the command line and stderr when
/// it does not succeed.
fn stdout_of(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `finercut ppl` and `finercut reproduce` on 2 ranks against one process.
pub fn ppl_and_reproduce_across_ranks(bin: &Path, dir: &Path, model: &Path) -> anyhow::Result<()> {
    let t0 = Instant::now();
    // 20 windows of 16 tokens: three batches of 8, so both ranks score.
    let ppl = [
        "ppl",
        "--model",
        &model.to_string_lossy(),
        "--seq-len",
        "16",
        "--max-windows",
        "20",
        "--json",
        "--threads",
        "1",
    ]
    .map(str::to_owned);
    let one = stdout_of(Command::new(bin).args(&ppl))?;
    let two = stdout_of(mpirun(2).arg(bin).args(&ppl))?;
    if one != two {
        bail!("ppl on 2 ranks printed\n{two}\nand one process\n{one}");
    }
    if !one.contains("\"windows\":20") {
        bail!("ppl did not score 20 windows:\n{one}");
    }
    eprintln!(
        "ppl: 2 ranks equal one process ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );

    let t0 = Instant::now();
    let reproduce = |out: &Path| -> Vec<String> {
        [
            "reproduce",
            "figure3",
            "--smoke",
            "--threads",
            "1",
            "--out",
            &out.to_string_lossy(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let one = dir.join("reproduce-1proc");
    let two = dir.join("reproduce-np2");
    run(Command::new(bin).args(reproduce(&one)))?;
    run(mpirun(2).arg(bin).args(reproduce(&two)))?;
    same_tree(&one, &two)?;
    eprintln!(
        "reproduce figure3 --smoke: 2 ranks write the one-process files ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every file under `dir` by its relative path.
fn files(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let path = entry
                .with_context(|| format!("cannot read {}", dir.display()))?
                .path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                out.insert(rel, bytes);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// A file's content with the output directory written `OUT` and, in JSON, without the fields
/// that hold times measured during the run.
fn timeless(name: &str, bytes: &[u8], out: &Path) -> anyhow::Result<String> {
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|k, _| {
                    !(k == "timings_s"
                        || k == "decode_steps"
                        || k.ends_with("wall_s")
                        || k.ends_with("_seconds")
                        || k.ends_with("_per_second"))
                });
                map.values_mut().for_each(scrub);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(bytes).replace(&*out.to_string_lossy(), "OUT");
    if !name.ends_with(".json") {
        return Ok(text);
    }
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{name} is not JSON"))?;
    scrub(&mut v);
    Ok(serde_json::to_string_pretty(&v)?)
}

/// Fails unless `got` holds the files of `want` (no more, no fewer) with the same content,
/// timings aside.
fn same_tree(want: &Path, got: &Path) -> anyhow::Result<()> {
    let (a, b) = (files(want)?, files(got)?);
    if a.keys().ne(b.keys()) {
        bail!(
            "{} holds {:?}, {} holds {:?}",
            got.display(),
            b.keys().collect::<Vec<_>>(),
            want.display(),
            a.keys().collect::<Vec<_>>()
        );
    }
    for (name, bytes) in &a {
        if timeless(name, bytes, want)? != timeless(name, &b[name], got)? {
            bail!(
                "{} differs from {}",
                got.join(name).display(),
                want.join(name).display()
            );
        }
    }
    Ok(())
}
