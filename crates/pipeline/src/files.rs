//! Hashes and atomic output files.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Context, Result};

/// SHA-256 (hex) of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes JSON to `path` atomically (pretty, with a final newline; see
/// [`finercut_format::io::write_atomically`]), creating its directory if needed.
pub fn write_json_atomic(path: &Path, value: &serde_json::Value) -> Result<()> {
    create_parent(path)?;
    Ok(finercut_format::io::write_json(path, value)?)
}

/// Writes `bytes` to `path` atomically (see [`finercut_format::io::write_atomically`]),
/// creating its directory if needed.
pub fn write_file_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    create_parent(path)?;
    Ok(finercut_format::io::write_bytes_atomically(
        path,
        bytes.as_ref(),
    )?)
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}
