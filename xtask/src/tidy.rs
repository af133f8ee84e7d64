//! Repository-wide hygiene checks, run by `cargo test`.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Every Rust file starts with a `//!` comment saying what it is for.
#[test]
fn every_file_has_a_module_doc() {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("xtask"), &mut files);
    assert!(files.len() > 10, "found only {} Rust files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|p| {
            let text = fs::read_to_string(p).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! doc comment: {missing:?}"
    );
}

/// Loading a library crate changes nothing in the process: code that runs before `main` (an
/// `.init_array` entry) is written once, in `init_blas_before_main!` (`crates/tensor/src/cpu/blas.rs`),
/// and only executables invoke it: in a crate's `src/`, only a binary's `main.rs` or under
/// `#[cfg(test)]`.
#[test]
fn nothing_runs_before_main_when_a_library_loads() {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let mut bad = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains("link_section") && rel != "crates/tensor/src/cpu/blas.rs" {
            bad.push(format!(
                "{rel}: link_section outside init_blas_before_main!"
            ));
        }
        let in_library_src = rel.contains("/src/") && !rel.ends_with("/main.rs");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("init_blas_before_main!()")
                && !line.trim_start().starts_with("//")
                && !line.contains("macro_rules")
                && in_library_src
                && (i == 0 || lines[i - 1].trim() != "#[cfg(test)]")
            {
                bad.push(format!("{rel}:{}: invoked outside #[cfg(test)]", i + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "code that would run before main in a library: {bad:?}"
    );
}

/// `finercut-slice`'s public items speak in slices and its own `Dense`, never in `faer`'s
/// version-pinned matrix types.
#[test]
fn slice_api_exposes_no_faer_types() {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates/slice/src"), &mut files);
    assert!(!files.is_empty(), "no sources under crates/slice/src");
    let mut bad = Vec::new();
    for path in &files {
        let text = fs::read_to_string(path).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            let public =
                t.starts_with("pub fn") || t.starts_with("pub struct") || t.starts_with("pub ");
            let restricted = t.starts_with("pub(crate)") || t.starts_with("pub(super)");
            if public
                && !restricted
                && ["MatRef", "MatMut", "faer::", "Mat<"]
                    .iter()
                    .any(|f| t.contains(f))
            {
                bad.push(format!("{}:{}: {t}", path.display(), i + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "faer types in finercut-slice's public API: {bad:?}"
    );
}

/// `cfg(feature = "cuda")` appears only in the tensor crate.
#[test]
fn cuda_cfg_only_in_tensor_crate() {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| !p.starts_with(root.join("crates/tensor")))
        .filter(|p| {
            fs::read_to_string(p)
                .unwrap_or_default()
                .contains(concat!("feature = \"", "cuda\""))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "cuda cfg outside crates/tensor: {offenders:?}"
    );
}

/// The CUDA backend launches with the geometry of `cuda_plan.rs` (checked against CUDA's limits and
/// mirrored by the kernel emulation): `cuda/mod.rs` builds a `LaunchConfig` in one place only, from a
/// `Geometry`, and takes the cuBLAS arguments from `GemmArgs`.
#[test]
fn cuda_launches_take_their_geometry_from_the_plan() {
    let root = crate::project_root();
    let path = root.join("crates/tensor/src/cuda/mod.rs");
    let text = fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        text.matches(concat!("grid_dim", ":")).count(),
        1,
        "{}: a LaunchConfig built outside launch_config()",
        path.display()
    );
    assert!(text.contains("fn launch_config(g: Geometry) -> LaunchConfig"));
    assert!(text.contains("GemmArgs::new(op, spec)"));
}

/// The model crate does no file I/O.
#[test]
fn model_crate_does_no_file_io() {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates/model/src"), &mut files);
    for p in files {
        let text = fs::read_to_string(&p).unwrap_or_default();
        for needle in ["std::fs", "File::open", "fs::read"] {
            assert!(!text.contains(needle), "{} uses {needle}", p.display());
        }
    }
}

/// Model directories are written through `StagedDir` (beside the target, renamed into place), so
/// an interrupted write never leaves half a checkpoint: every library or binary source file that
/// writes safetensors also uses it. The exceptions define the writers, or write fuzzing seeds
/// into a scratch directory.
#[test]
fn model_directories_are_written_through_staged_dir() {
    let root = crate::project_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let exempt = [
        "crates/format/src/safetensors.rs",
        "crates/format/src/lib.rs",
        "crates/fuzz/src/seeds.rs",
    ];
    let mut checked = 0;
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "src"))
        .filter(|p| !exempt.iter().any(|e| p.ends_with(e)))
        .filter(|p| {
            let text = fs::read_to_string(p).unwrap_or_default();
            let writes =
                text.contains("write_safetensors(") || text.contains("write_safetensors_streamed(");
            checked += usize::from(writes);
            writes && !text.contains("StagedDir")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        checked >= 5,
        "found only {checked} files writing safetensors"
    );
    assert!(
        offenders.is_empty(),
        "files writing safetensors without StagedDir: {offenders:?}"
    );
}

/// The repository's tracked files (from `git ls-files`), or, outside a git checkout, every file
/// under the root except `target/` and hidden directories.
fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let listed = std::process::Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    match listed {
        Some(out) => out
            .stdout
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| root.join(String::from_utf8_lossy(name).as_ref()))
            .filter(|p| p.is_file())
            .collect(),
        None => {
            fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
                let Ok(entries) = fs::read_dir(dir) else {
                    return;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if path.is_dir() {
                        if !name.starts_with('.') && name != "target" {
                            walk(&path, out);
                        }
                    } else {
                        out.push(path);
                    }
                }
            }
            let mut out = Vec::new();
            walk(root, &mut out);
            out
        }
    }
}

/// How many directories below the root `dir` is (`crates/eval` → 2).
fn depth(root: &Path, dir: &Path) -> usize {
    dir.strip_prefix(root)
        .map(|rel| rel.components().count())
        .unwrap_or(0)
}

/// The deepest `..` climb of each relative path in `line`: runs of `../` (or `..\`), and a final
/// bare `..` between a `/` or quote and a quote or the end of the line. A `..` preceded by a
/// letter, digit, `.`, `_` or `-` (ranges such as `1..L`, names such as `a..b`) does not start one.
fn climbs(line: &str) -> Vec<usize> {
    let b = line.as_bytes();
    let is_quote = |c: u8| c == b'"' || c == b'\'' || c == b'`';
    let mut found = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        let starts = b[i] == b'.'
            && b[i + 1] == b'.'
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b"._-".contains(&b[i - 1])));
        if !starts {
            i += 1;
            continue;
        }
        let mut k = 0;
        let mut j = i;
        loop {
            let dots = j + 1 < b.len() && b[j] == b'.' && b[j + 1] == b'.';
            if dots && j + 2 < b.len() && (b[j + 2] == b'/' || b[j + 2] == b'\\') {
                k += 1;
                j += 3;
            } else if dots
                && (j + 2 == b.len() || is_quote(b[j + 2]))
                && j > 0
                && (b[j - 1] == b'/' || is_quote(b[j - 1]))
            {
                k += 1;
                j += 2;
                break;
            } else {
                break;
            }
        }
        if k > 0 {
            found.push(k);
        }
        i = j.max(i + 2);
    }
    found
}

/// The problems of one file's text for [`nothing_names_a_path_outside_the_repository`]; `base`
/// is how deep the directory that relative paths in the file start from lies below the root.
fn outside_paths(text: &str, base: usize) -> Vec<String> {
    // Written in pieces so that this file does not match itself.
    let shared = concat!("sha", "red");
    let needles = [
        format!("../{shared}"),
        format!("{shared}/golden"),
        format!("{shared}/data"),
        format!("{shared}/docs"),
        concat!("/wo", "rk/").to_owned(),
        concat!("/ho", "me/").to_owned(),
        concat!("/Us", "ers/").to_owned(),
    ];
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        // Path components passed one by one (`join("..", "..", "data")`) read as one path.
        let joined = line.replace("\", \"", "/").replace("', '", "/");
        for needle in &needles {
            if joined.contains(needle.as_str()) {
                problems.push(format!("line {}: names `{needle}`: {}", n + 1, line.trim()));
            }
        }
        for k in climbs(&joined) {
            if k > base {
                problems.push(format!(
                    "line {}: climbs {k} directories from a directory {base} below the repository root: {}",
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    problems
}

/// Nothing in the product, its tests, benchmarks, scripts, CI or docs names a path outside the
/// repository: not the developers' data directory next to the clone, not an absolute path of a
/// machine, and no relative path that climbs above the root. In Rust files relative paths count
/// from the crate root (where `CARGO_MANIFEST_DIR` points and tests run), elsewhere from the
/// file's directory.
/// Committed data (everything under `data/` and `docs/results/` but Markdown) is left out: it
/// records where it was produced.
#[test]
fn nothing_names_a_path_outside_the_repository() {
    let root = crate::project_root();
    let files = tracked_files(&root);
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut problems = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(&root).unwrap_or(path);
        let is_md = rel.extension().is_some_and(|e| e == "md");
        let is_data = rel.starts_with("data") || rel.starts_with("docs/results");
        if (is_data && !is_md) || rel == Path::new("xtask/src/tidy.rs") {
            continue;
        }
        let Ok(text) = fs::read_to_string(path) else {
            continue; // not text
        };
        let dir = path.parent().unwrap_or(&root);
        let base = if rel.extension().is_some_and(|e| e == "rs") {
            let krate = dir
                .ancestors()
                .find(|d| d.join("Cargo.toml").is_file())
                .unwrap_or(&root);
            depth(&root, krate)
        } else {
            depth(&root, dir)
        };
        for p in outside_paths(&text, base) {
            problems.push(format!("{}: {p}", rel.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "paths outside the repository (copy what is needed into the repository instead):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_outside_path_check_catches_what_it_should() {
    let shared = concat!("sha", "red");
    let bad = [
        format!("Path::new(env!(\"CARGO_MANIFEST_DIR\")).join(\"../../../{shared}/golden\")"),
        format!("os.path.join(HERE, \"..\", \"..\", \"..\", \"{shared}\", \"golden\")"),
        concat!("let p = \"/wo", "rk/main/data\";").to_owned(),
        "include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/../../../x\"))".to_owned(),
        "cd \"$(dirname \"$0\")/../../..\"".to_owned(),
    ];
    for line in &bad {
        assert!(!outside_paths(line, 2).is_empty(), "not caught: {line}");
    }
    let good = [
        "Path::new(env!(\"CARGO_MANIFEST_DIR\")).join(\"../../data/golden\")",
        "for i in 1..L { x[..]; y[1..] }",
        "see ../ARCHITECTURE.md and (`0..n`), 1..255, a..b",
        "os.path.join(HERE, \"..\", \"..\", \"data\")",
        "a shared prefix; shared_context(x)",
    ];
    for line in good {
        assert_eq!(outside_paths(line, 2), Vec::<String>::new(), "{line}");
    }
    assert!(!outside_paths("cd ../other", 0).is_empty());
}

/// Every data file committed to the repository matches its SHA-256 in `data/checksums.json`, and
/// every file under `crates/eval/data/wikitext-2-raw/` and `data/golden/`, subdirectories included (but the
/// READMEs), has an entry.
#[test]
fn vendored_data_matches_its_checksums() {
    let root = crate::project_root();
    let listed = crate::fetch::check_vendored(&root).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(listed
        .iter()
        .any(|p| p == "crates/eval/data/wikitext-2-raw/wiki.test.raw"));
    let mut dirs = vec![
        "crates/eval/data/wikitext-2-raw".to_owned(),
        "data/golden".to_owned(),
    ];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(root.join(&dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{dir}/{name}");
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(rel);
                continue;
            }
            assert!(
                name == "README.md" || listed.contains(&rel),
                "{rel} has no SHA-256 in data/checksums.json (`vendored`)"
            );
        }
    }
}

/// Every Markdown document that a comment in the Rust code cites (`docs/DESIGN.md`,
/// `data/golden/README.md`) exists in the repository, as a path from the root or a file name.
#[test]
fn cited_documents_are_in_the_repository() {
    let root = crate::project_root();
    let files = tracked_files(&root);
    let names: std::collections::BTreeSet<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut missing = Vec::new();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        let text = fs::read_to_string(path).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let Some(at) = line.find("//") else { continue };
            let comment = &line[at..];
            let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
            for word in comment.split(|c: char| !is_path_char(c)) {
                let word = word.trim_end_matches('.');
                if !word.ends_with(".md") || word == ".md" {
                    continue;
                }
                let found = if word.contains('/') {
                    root.join(word).is_file()
                } else {
                    names.contains(word)
                };
                if !found {
                    let rel = path.strip_prefix(&root).unwrap_or(path);
                    missing.push(format!("{}:{}: {word}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "comments cite documents that are not in the repository:\n{}",
        missing.join("\n")
    );
}

/// Lines (1-based) of `text`, up to its `#[cfg(test)]` module, that name a variant of the family
/// enum (`Architecture::Llama`, …): a `match` on the enum or a comparison with one family.
fn family_enum_uses(text: &str) -> Vec<usize> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim_start();
            !line.starts_with("//")
                && line.match_indices("Architecture::").any(|(i, m)| {
                    line[i + m.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_uppercase())
                })
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// A family's knowledge lives in its module (`crates/format/src/family/`, see "Adding a family"
/// in `docs/ARCHITECTURE.md`): no other library or binary code names a variant of the family
/// enum, so nothing elsewhere matches on it or tests for one family. Other code asks the family
/// (`config.family()`, `config.recipe()`, `config.supports(..)`).
#[test]
fn families_are_matched_only_in_their_modules() {
    let root = crate::project_root();
    let family_dir = root.join("crates/format/src/family");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("xtask/src"), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| !p.starts_with(&family_dir))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "tests"))
        .filter(|p| !p.ends_with("xtask/src/tidy.rs"))
        .flat_map(|p| {
            let text = fs::read_to_string(p).unwrap_or_default();
            family_enum_uses(&text)
                .into_iter()
                .map(move |line| format!("{}:{line}", p.display()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "family enum variants named outside crates/format/src/family (move the knowledge into \
         the family's module): {offenders:?}"
    );
}

#[test]
fn the_family_enum_check_catches_what_it_should() {
    let code = "fn f(a: Architecture) -> bool {\n    match a {\n        Architecture::Gemma3 => true,\n        _ => a == Architecture::Llama,\n    }\n}\n// Architecture::Qwen2 in a comment\nlet f = Architecture::family;\n#[cfg(test)]\nmod tests { const A: Architecture = Architecture::Llama; }\n";
    assert_eq!(family_enum_uses(code), vec![3, 4]);
}

/// The lines of the section of `doc` whose heading line is `heading`, up to the next `## `
/// heading.
fn section<'a>(doc: &'a str, heading: &str) -> Vec<&'a str> {
    doc.lines()
        .skip_while(|l| *l != heading)
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.starts_with("## "))
        .map(|(_, l)| l)
        .collect()
}

/// The GSM8K section of `docs/REPRODUCING.md` shows the committed run's table and headline line
/// for line (`docs/results/qwen2.5-coder-0.5b-gsm8k.md`, as `reproduce gsm8k` wrote it), and the
/// run's `results.json` beside it (`docs/results/qwen2.5-coder-0.5b-gsm8k.json`) holds the same
/// counts and headline with its provenance, so no number of the section is written by hand.
#[test]
fn reproducing_gsm8k_section_is_the_committed_run() {
    let root = crate::project_root();
    let read =
        |rel: &str| fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let doc = read("docs/REPRODUCING.md");
    let md = read("docs/results/qwen2.5-coder-0.5b-gsm8k.md");
    let json: serde_json::Value =
        serde_json::from_str(&read("docs/results/qwen2.5-coder-0.5b-gsm8k.json"))
            .unwrap_or_else(|e| panic!("docs/results/qwen2.5-coder-0.5b-gsm8k.json: {e}"));
    let heading = "## GSM8K: Qwen2.5-Coder-0.5B-Instruct, dense against the pruned rows";
    let sec = section(&doc, heading);
    assert!(
        sec.len() > 1,
        "docs/REPRODUCING.md has no section {heading:?}"
    );

    let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert!(table.len() > 2, "the run's gsm8k.md has no table");
    let shown: Vec<&str> = sec
        .iter()
        .copied()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(shown, table, "the section's table is not the run's");
    let headline = md
        .lines()
        .find(|l| l.starts_with("**Headline.** "))
        .expect("the run's gsm8k.md has no headline");
    assert!(
        sec.contains(&headline),
        "the section does not hold the run's headline {headline:?}"
    );

    let g = &json["gsm8k"];
    assert_eq!(
        Some(headline.trim_start_matches("**Headline.** ")),
        g["headline"].as_str(),
        "results.json's headline differs from gsm8k.md's"
    );
    for key in ["model_sha256", "calibration_sha256", "version", "profile"] {
        assert!(!json[key].is_null(), "results.json has no {key}");
    }
    let rows = g["rows"]
        .as_array()
        .expect("results.json has no gsm8k rows");
    assert_eq!(
        rows.len(),
        table.len() - 2,
        "rows in results.json and gsm8k.md"
    );
    for (row, line) in rows.iter().zip(&table[2..]) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let num = |k: &str| {
            row[k]
                .as_u64()
                .unwrap_or_else(|| panic!("results.json row without {k}: {row}"))
        };
        let flexible = row["exact_match_flexible"].as_f64().unwrap_or(f64::NAN);
        assert_eq!(cells[0], row["method"].as_str().unwrap_or(""), "{line}");
        assert_eq!(
            cells[2],
            format!(
                "{:.1} ({}/{})",
                100.0 * flexible,
                num("correct"),
                num("questions")
            ),
            "{line}"
        );
        assert_eq!(cells[4], num("dense_correct_kept").to_string(), "{line}");
        assert_eq!(cells[6], num("generated_tokens").to_string(), "{line}");
    }
}
