//! File plumbing: memory maps, atomic writes ([`write_atomically`], used for every file finercut
//! writes), streamed SHA-256.

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

/// Writes `path` atomically: `fill` writes into a temporary file in the same directory, which is
/// flushed, synced and renamed over `path`; the directory is then synced (where the platform
/// allows), so the rename survives a crash.
///
/// This is the one way finercut writes an output file (checkpoints, result files, tables, plots,
/// exports). Readers see either the old file or the complete new one, never a half-written file:
/// an error in `fill`, a full disk or a kill before the rename leaves `path` untouched, and on an
/// error the temporary file (`.NAME.tmp-PID`, next to `path`) is removed. A memory map of the old
/// file stays valid, because the rename replaces the directory entry, not the contents.
///
/// The directory of `path` must exist.
///
/// ```
/// use std::io::Write;
/// # fn main() -> finercut_format::Result<()> {
/// let dir = std::env::temp_dir().join(format!("finercut-atomic-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("out.txt");
/// finercut_format::io::write_atomically(&path, |w| {
///     w.write_all(b"hello").map_err(|e| finercut_format::Error::io(&path, e))
/// })?;
/// assert_eq!(std::fs::read(&path).unwrap(), b"hello");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(())
/// # }
/// ```
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
        return result;
    }
    // Make the rename itself durable. Some platforms cannot open or sync a directory; the file
    // is complete either way.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (see [`write_atomically`]).
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |w| w.write_all(bytes).with_path(path))
}

/// Writes `value` to `path` as pretty-printed JSON with a final newline, atomically (see
/// [`write_atomically`]).
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
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
            sha256_files(std::slice::from_ref(&p)).unwrap(),
            "2689367b205c16ce32ed4200942b8b8b1e262dfc70d9bc9fbc77c49699a4f1df"
        );
        // A failed write keeps the old file whole.
        let r = write_atomically(&p, |w| {
            w.write_all(b"new and longer").unwrap();
            Err(Error::malformed(&p, "boom"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"ok");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The rename fails: a file cannot replace a directory.
        let target = dir.path().join("taken");
        std::fs::create_dir(&target).unwrap();
        let e = write_bytes_atomically(&target, b"data").unwrap_err();
        assert!(e.to_string().contains("taken"), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["taken"]);
        // A missing directory is an error naming the temporary file's directory.
        let e = write_json(&dir.path().join("no/such/out.json"), &serde_json::json!(1));
        assert!(e.unwrap_err().to_string().contains("no/such"));
        write_json(&dir.path().join("out.json"), &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.json")).unwrap(),
            "{\n  \"a\": 1\n}\n"
        );
    }
}
