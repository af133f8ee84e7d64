//! `cargo xtask outside-crate`: builds a crate outside the workspace that depends on
//! `finercut-model` and `finercut-search` by path, as a researcher's project would, and runs it.
//!
//! The crate lives in a fresh directory under the system's temporary directory with its own
//! `[workspace]`, a copy of the workspace's `Cargo.lock` (the same dependency versions) and the
//! workspace's profiles, and builds with `--offline` into the workspace's target directory under
//! the `test` profile, so that the dependencies `cargo test --workspace` already compiled with the
//! same features are reused. Its `main.rs` is `finercut-search`'s example `three_step_search.rs`
//! itself: it writes a tiny random Llama, loads it, runs three steps of the FinerCut search and
//! prints the removed sublayers, which this check requires.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// The manifest of the outside crate; `{root}` is the workspace root.
fn manifest(root: &Path, profiles: &str) -> String {
    let root = root.display();
    format!(
        r#"[package]
name = "finercut-outside-check"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
finercut-model = {{ path = "{root}/crates/model" }}
finercut-search = {{ path = "{root}/crates/search" }}

# Not a member of any enclosing workspace.
[workspace]

{profiles}
"#
    )
}

/// The `[profile…]` tables of the workspace manifest (so that compiled dependencies match).
fn workspace_profiles(root: &Path) -> anyhow::Result<String> {
    let path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = String::new();
    let mut in_profile = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_profile = line.starts_with("[profile.");
        }
        if in_profile {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        bail!("{} has no [profile.…] table", path.display());
    }
    Ok(out)
}

/// Builds and runs the outside crate; fails unless it prints three removed sublayers.
pub fn check(root: &Path, target_dir: &Path) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let dir = std::env::temp_dir().join(format!("finercut-outside-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let src = dir.join("src");
    std::fs::create_dir_all(&src).with_context(|| format!("cannot create {}", src.display()))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        manifest(root, &workspace_profiles(root)?),
    )
    .context("cannot write the outside crate's Cargo.toml")?;
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))
        .context("cannot copy Cargo.lock")?;
    std::fs::copy(
        root.join("crates/search/examples/three_step_search.rs"),
        src.join("main.rs"),
    )
    .context("cannot copy the three-step example")?;
    let model_dir = dir.join("tiny-model");
    let out = Command::new("cargo")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["run", "--quiet", "--offline", "--profile", "test", "--"])
        .arg(&model_dir)
        .output()
        .context("cannot start cargo for the outside crate")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the outside crate in {} failed ({}):\n{stdout}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let steps = stdout.lines().filter(|l| l.starts_with("step ")).count();
    if steps != 3 || !stdout.contains(" removed L") {
        bail!("the outside crate printed {steps} steps, not 3 removed sublayers:\n{stdout}");
    }
    print!("{stdout}");
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    eprintln!(
        "outside crate (finercut-model + finercut-search by path) built and ran in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_both_crates_and_stands_alone() {
        let root = crate::project_root();
        let m = manifest(&root, &workspace_profiles(&root).expect("profiles"));
        assert!(m.contains("finercut-model = { path = "));
        assert!(m.contains("finercut-search = { path = "));
        assert!(m.contains("\n[workspace]\n"));
        assert!(m.contains("[profile.test]"));
    }
}
