//! File plumbing: memory maps, atomic writes, streamed SHA-256.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use crate::error::IoResultExt;
use crate::{Error, Result};

/// Maps `path` read-only into memory.
///
/// # Safety
///
/// The file must not be modified, truncated or replaced in place while the map (or any
/// [`crate::Bytes`] that borrows it) is alive: the operating system shows such changes through
/// the map, which breaks Rust's aliasing rules and can make reads past a truncated end fault
/// (SIGBUS). Model files are written once and then only read, so the contract is the same as
/// ripgrep's and candle's; writers in this crate replace files by `rename`, which leaves an
/// existing map on the old contents.
pub unsafe fn map_file(path: &Path) -> Result<Arc<Mmap>> {
    let file = File::open(path).with_path(path)?;
    // SAFETY: the caller upholds the contract documented above.
    let mmap = unsafe { Mmap::map(&file) }.with_path(path)?;
    Ok(Arc::new(mmap))
}

/// Maps `path` under the crate-wide contract that model files are not modified while open.
pub(crate) fn map_model_file(path: &Path) -> Result<Arc<Mmap>> {
    // SAFETY: the crate documents (lib.rs, "Memory maps") that files opened for reading must not
    // change while they are open; see `map_file`.
    unsafe { map_file(path) }
}

/// Writes `path` through a temporary file in the same directory and renames it into place, so a
/// failure (a full disk, an error in `fill`) never leaves a half-written `path` behind.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp).with_path(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        w.flush().with_path(&tmp)?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().with_path(&tmp)?;
        drop(file);
        std::fs::rename(&tmp, path).with_path(path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a pretty-printed JSON file atomically.
pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value)
            .map_err(|e| Error::malformed(path, format!("cannot serialise JSON: {e}")))?;
        w.write_all(b"\n").with_path(path)
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// SHA-256 over the concatenation of `files`, streamed, as lowercase hex.
pub fn sha256_files(files: &[PathBuf]) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in files {
        let mut f = File::open(path).with_path(path)?;
        loop {
            let n = f.read(&mut buf).with_path(path)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        let r = write_atomically(&p, |w| {
            w.write_all(b"partial").unwrap();
            Err(Error::malformed(&p, "boom"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomically(&p, |w| w.write_all(b"ok").with_path(&p)).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"ok");
        assert_eq!(
            sha256_files(&[p]).unwrap(),
            "2689367b205c16ce32ed4200942b8b8b1e262dfc70d9bc9fbc77c49699a4f1df"
        );
    }
}
