//! [`StagedDir`]: writing a checkpoint directory beside its destination and renaming it into place,
//! so that readers, and a run that is interrupted, see the old checkpoint or the new one, never a
//! mixture.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::checkpoint::{checkpoint_files, Overwrite};
use crate::error::IoResultExt;
use crate::{Error, Result};

/// The marker in the names of staging directories: `.NAME.finercut-new-PID` (the checkpoint
/// being written for `NAME`) and `.NAME.finercut-old-PID` (the checkpoint it replaces, between
/// the two renames of [`StagedDir::commit`]).
const NEW: &str = "finercut-new-";
const OLD: &str = "finercut-old-";

/// A checkpoint directory being written: files go into a staging directory beside the target
/// ([`StagedDir::path`]), and [`StagedDir::commit`] renames it into the target's place.
///
/// This is the one way finercut writes a model directory (`convert`, `export`, `slice`,
/// `make-tiny`, the reproduction's sliced models); each file in it is still written with
/// [`crate::io::write_atomically`].
///
/// - **Atomic replacement.** The old directory stays whole until the new one is complete; commit
///   then renames the old one away (`.NAME.finercut-old-PID`), renames the new one in and removes
///   the old. An error while writing, or dropping the `StagedDir` uncommitted, removes the
///   staging directory and leaves the target as it was.
/// - **Other files are kept.** Files in the old directory that are not part of a checkpoint
///   ([`checkpoint_files`], and whatever [`StagedDir::commit_replacing`] names) and that the new
///   one does not hold (a README, a `.gguf`) are hard-linked (or copied) into the new directory
///   before the swap, as replacing the checkpoint in place would have left them.
/// - **Interrupted runs.** A process killed while writing leaves its staging directory behind;
///   [`StagedDir::begin`] finds those of the same target from processes that are no longer
///   running, removes them, and reports each in [`StagedDir::notes`]. A run killed between the
///   two renames leaves no target but the complete old checkpoint: it is renamed back. Staging
///   directories of a process that is still running (or, where `/proc` is missing, of any other
///   process) are reported and left alone.
///
/// ```
/// use finercut_format::{Overwrite, StagedDir};
/// # fn main() -> finercut_format::Result<()> {
/// let root = std::env::temp_dir().join(format!("finercut-staged-doc-{}", std::process::id()));
/// let out = root.join("model");
/// let staged = StagedDir::begin(&out, Overwrite::Refuse)?;
/// finercut_format::io::write_bytes_atomically(&staged.path().join("config.json"), b"{}")?;
/// assert!(!out.exists());
/// staged.commit()?;
/// assert!(out.join("config.json").is_file());
/// # std::fs::remove_dir_all(&root).unwrap();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    notes: Vec<String>,
    committed: bool,
}

impl StagedDir {
    /// Starts writing a checkpoint directory for `target`: refuses a target that is not a
    /// directory, or (with [`Overwrite::Refuse`]) one that already holds a checkpoint; cleans up
    /// what interrupted runs left beside it; creates a fresh staging directory. The target's
    /// parent is created if missing; the target itself is not touched until
    /// [`StagedDir::commit`].
    pub fn begin(target: &Path, overwrite: Overwrite) -> Result<Self> {
        // Replace what a symbolic link points to, not the link.
        let target = match std::fs::symlink_metadata(target) {
            Ok(m) if m.file_type().is_symlink() => target.canonicalize().with_path(target)?,
            _ => target.to_path_buf(),
        };
        if target.exists() && !target.is_dir() {
            return Err(Error::malformed(
                &target,
                "is not a directory; cannot write a checkpoint into it",
            ));
        }
        let found = checkpoint_files(&target)?;
        if !found.is_empty() && overwrite == Overwrite::Refuse {
            return Err(Error::malformed(
                &target,
                format!(
                    "already holds a checkpoint ({}); choose another directory or overwrite it with --force",
                    found.join(", ")
                ),
            ));
        }
        let parent = parent_of(&target);
        std::fs::create_dir_all(&parent).with_path(&parent)?;
        let notes = clean_stale(&target)?;
        let staging = sibling(&target, NEW, std::process::id());
        if staging.exists() {
            std::fs::remove_dir_all(&staging).with_path(&staging)?;
        }
        std::fs::create_dir(&staging).with_path(&staging)?;
        Ok(StagedDir {
            target,
            staging,
            notes,
            committed: false,
        })
    }

    /// The directory to write the checkpoint's files into.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The directory the checkpoint will be at after [`StagedDir::commit`].
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// One line per leftover of an interrupted run that [`StagedDir::begin`] found beside the
    /// target, saying what was done with it (removed, restored, or left because its process still
    /// runs). Empty in the common case; worth a warning otherwise.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Puts the written checkpoint in the target's place (see [`StagedDir`]): the old
    /// checkpoint's files ([`checkpoint_files`]) are replaced, other files carried over.
    pub fn commit(self) -> Result<()> {
        self.commit_replacing(|_| false)
    }

    /// [`StagedDir::commit`], also replacing the old directory's files for which `replaced`
    /// (given the file name) is true, e.g. the `.gguf` of an earlier GGUF export.
    pub fn commit_replacing(mut self, replaced: impl Fn(&str) -> bool) -> Result<()> {
        sync_dir(&self.staging);
        if self.target.is_dir() {
            let old_files = checkpoint_files(&self.target)?;
            for entry in std::fs::read_dir(&self.target).with_path(&self.target)? {
                let entry = entry.with_path(&self.target)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let new = self.staging.join(entry.file_name());
                if old_files.contains(&name)
                    || replaced(&name)
                    || is_stale_temporary(&name)
                    || new.symlink_metadata().is_ok()
                {
                    continue;
                }
                link_tree(&entry.path(), &new)?;
            }
            let old = sibling(&self.target, OLD, std::process::id());
            if old.exists() {
                std::fs::remove_dir_all(&old).with_path(&old)?;
            }
            std::fs::rename(&self.target, &old).with_path(&self.target)?;
            if let Err(e) = std::fs::rename(&self.staging, &self.target) {
                // Put the old checkpoint back; the staging directory is removed on drop.
                let _ = std::fs::rename(&old, &self.target);
                return Err(Error::io(&self.target, e));
            }
            self.committed = true;
            sync_dir(&parent_of(&self.target));
            // The new checkpoint is in place; an old directory that cannot be removed now is
            // removed by the next run (its process is then gone).
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&self.staging, &self.target).with_path(&self.target)?;
            self.committed = true;
            sync_dir(&parent_of(&self.target));
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.NAME.{kind}PID` beside `target`.
fn sibling(target: &Path, kind: &str, pid: u32) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(target).join(format!(".{name}.{kind}{pid}"))
}

/// Whether `name` is a temporary file of [`crate::io::write_atomically`] (`.NAME.tmp-PID`).
fn is_stale_temporary(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(".tmp-")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether process `pid` is running: `Some` where `/proc` tells, `None` where it cannot.
fn process_running(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
}

/// Removes (or, for an old checkpoint whose target is missing, restores) the staging directories
/// that processes no longer running left beside `target`; returns one line per directory found.
fn clean_stale(target: &Path) -> Result<Vec<String>> {
    let parent = parent_of(target);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut found: Vec<(PathBuf, &str, u32)> = Vec::new();
    for entry in std::fs::read_dir(&parent).with_path(&parent)? {
        let entry = entry.with_path(&parent)?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        for kind in [NEW, OLD] {
            if let Some(pid) = rest.strip_prefix(kind).and_then(|p| p.parse::<u32>().ok()) {
                found.push((entry.path(), kind, pid));
            }
        }
    }
    // Old checkpoints first: one may have to be restored before its staging twin is removed.
    found.sort_by_key(|(path, kind, _)| (*kind != OLD, path.clone()));
    let own = std::process::id();
    let mut notes = Vec::new();
    for (path, kind, pid) in found {
        let what = if kind == NEW {
            "an unfinished checkpoint"
        } else {
            "a replaced checkpoint"
        };
        match process_running(pid) {
            Some(true) if pid != own => notes.push(format!(
                "{}: {what} being written by process {pid}, which is still running; left alone",
                path.display()
            )),
            None if pid != own => notes.push(format!(
                "{}: {what} left by process {pid}; cannot tell whether it still runs, left alone",
                path.display()
            )),
            _ if kind == OLD && !target.exists() => {
                std::fs::rename(&path, target).with_path(&path)?;
                notes.push(format!(
                    "{}: restored {} from it (process {pid} was interrupted while replacing it)",
                    path.display(),
                    target.display()
                ));
            }
            _ => {
                std::fs::remove_dir_all(&path).with_path(&path)?;
                notes.push(format!(
                    "{}: removed {what} left by an interrupted run (process {pid})",
                    path.display()
                ));
            }
        }
    }
    Ok(notes)
}

/// Recreates `src` at `dst`: files hard-linked (copied where the file system cannot link),
/// directories recursively, symbolic links as links.
fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).with_path(src)?;
    if meta.is_dir() {
        std::fs::create_dir(dst).with_path(dst)?;
        for entry in std::fs::read_dir(src).with_path(src)? {
            let entry = entry.with_path(src)?;
            link_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        return Ok(());
    }
    #[cfg(unix)]
    if meta.file_type().is_symlink() {
        let to = std::fs::read_link(src).with_path(src)?;
        return std::os::unix::fs::symlink(to, dst).with_path(dst);
    }
    if std::fs::hard_link(src, dst).is_err() {
        std::fs::copy(src, dst).with_path(dst)?;
    }
    Ok(())
}

/// Syncs a directory's entries to disk where the platform allows (see
/// [`crate::io::write_atomically`]).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn write(staged: &StagedDir, name: &str, text: &str) {
        crate::io::write_bytes_atomically(&staged.path().join(name), text.as_bytes()).unwrap();
    }

    #[test]
    fn replaces_a_checkpoint_whole_and_keeps_other_files() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("a/model");
        let s = StagedDir::begin(&out, Overwrite::Refuse).unwrap();
        write(&s, "config.json", "old");
        write(&s, "model-00001-of-00002.safetensors", "old");
        write(&s, "model.safetensors.index.json", "old");
        write(&s, "old.gguf", "old");
        s.commit().unwrap();
        std::fs::write(out.join("README.md"), "kept").unwrap();
        std::fs::create_dir(out.join("notes")).unwrap();
        std::fs::write(out.join("notes/n.txt"), "kept too").unwrap();
        std::fs::write(out.join(".config.json.tmp-4"), "stale").unwrap();

        let e = StagedDir::begin(&out, Overwrite::Refuse).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        let s = StagedDir::begin(&out, Overwrite::Replace).unwrap();
        write(&s, "config.json", "new");
        write(&s, "model.safetensors", "new");
        // Until the commit, readers see the old checkpoint.
        assert_eq!(
            std::fs::read_to_string(out.join("config.json")).unwrap(),
            "old"
        );
        s.commit_replacing(|n| n.ends_with(".gguf")).unwrap();
        assert_eq!(
            names(&out),
            ["README.md", "config.json", "model.safetensors", "notes"]
        );
        assert_eq!(
            std::fs::read_to_string(out.join("config.json")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("notes/n.txt")).unwrap(),
            "kept too"
        );
        assert_eq!(names(&root.path().join("a")), ["model"]);

        let file = root.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = StagedDir::begin(&file, Overwrite::Replace).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn a_failure_while_writing_leaves_the_old_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("model");
        let s = StagedDir::begin(&out, Overwrite::Refuse).unwrap();
        write(&s, "config.json", "old");
        s.commit().unwrap();
        let fill = |s: &StagedDir| -> Result<()> {
            write(s, "model.safetensors", "half");
            Err(Error::malformed(s.path(), "disk full"))
        };
        let s = StagedDir::begin(&out, Overwrite::Replace).unwrap();
        assert!(fill(&s).is_err());
        drop(s);
        assert_eq!(names(&out), ["config.json"]);
        assert_eq!(
            std::fs::read_to_string(out.join("config.json")).unwrap(),
            "old"
        );
        assert_eq!(names(root.path()), ["model"]);
    }

    #[test]
    fn leftovers_of_killed_runs_are_cleaned_and_reported() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("model");
        // A process id that no running process has: above Linux's pid_max limit.
        let dead = 4_194_305;
        // Killed while writing: a half-written staging directory beside a complete checkpoint.
        let s = StagedDir::begin(&out, Overwrite::Refuse).unwrap();
        write(&s, "config.json", "old");
        s.commit().unwrap();
        let half = sibling(&out, NEW, dead);
        std::fs::create_dir(&half).unwrap();
        std::fs::write(half.join("model.safetensors"), "half").unwrap();
        // Some other file that only looks similar is not touched.
        std::fs::create_dir(root.path().join(".model.finercut-new-x")).unwrap();
        let s = StagedDir::begin(&out, Overwrite::Replace).unwrap();
        assert_eq!(s.notes().len(), 1, "{:?}", s.notes());
        assert!(
            s.notes()[0].contains("removed an unfinished checkpoint")
                && s.notes()[0].contains(&dead.to_string()),
            "{:?}",
            s.notes()
        );
        assert!(!half.exists());
        drop(s);
        assert_eq!(names(root.path()), [".model.finercut-new-x", "model"]);

        // Killed between the renames: the old checkpoint is beside a missing target.
        let old = sibling(&out, OLD, dead);
        std::fs::rename(&out, &old).unwrap();
        std::fs::create_dir(sibling(&out, NEW, dead)).unwrap();
        let s = StagedDir::begin(&out, Overwrite::Replace).unwrap();
        assert_eq!(s.notes().len(), 2, "{:?}", s.notes());
        assert!(s.notes()[0].contains("restored"), "{:?}", s.notes());
        assert_eq!(
            std::fs::read_to_string(out.join("config.json")).unwrap(),
            "old"
        );
        drop(s);
        assert_eq!(names(root.path()), [".model.finercut-new-x", "model"]);

        // A running process's staging directory is reported and left alone.
        if process_running(1) == Some(true) {
            let busy = sibling(&out, NEW, 1);
            std::fs::create_dir(&busy).unwrap();
            let s = StagedDir::begin(&out, Overwrite::Replace).unwrap();
            assert!(s.notes()[0].contains("still running"), "{:?}", s.notes());
            assert!(busy.is_dir());
        }
    }

    #[test]
    fn stale_temporary_names() {
        assert!(is_stale_temporary(".config.json.tmp-123"));
        assert!(!is_stale_temporary("config.json.tmp-123"));
        assert!(!is_stale_temporary(".config.json.tmp-"));
        assert!(!is_stale_temporary(".notes.tmp-x"));
    }
}
