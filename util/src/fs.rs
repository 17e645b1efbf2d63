//! Atomic small-file writes: readers see the old content or the new one, never a torn file,
//! and after a crash the file is one or the other too.
//!
//! The write: a temp file in the same directory (so the rename stays on one filesystem),
//! written and fsynced, renamed over the target, then the directory fsynced so the rename
//! itself is durable.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A file operation that failed, naming the step and the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An I/O call failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done ("creating", "renaming into"…).
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON record that cannot be parsed or serialised.
    #[error("state record {path}")]
    Json {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl FsError {
    /// An I/O error on `path` while doing `what`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// The temp file an atomic write of `path` goes through (hidden, named for the writer).
fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `bytes` to `path` atomically and durably (creating its directory if needed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let dir = parent(path);
    std::fs::create_dir_all(dir).map_err(|e| FsError::io("creating", dir, e))?;
    let tmp = temp_path(dir, path);
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).map(|()| f))
        .map_err(|e| FsError::io("writing", &tmp, e))
        .and_then(|f| commit(&f, &tmp, path));
    if written.is_err() {
        // Best effort: the write error is the one to report.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The shared tail of every atomic write: fsyncs the written temp file `file` (at `tmp`, on the
/// same filesystem as `dest`), renames it over `dest`, then fsyncs `dest`'s directory so the
/// rename itself is durable. The caller removes `tmp` if this fails.
pub fn commit(file: &File, tmp: &Path, dest: &Path) -> Result<(), FsError> {
    file.sync_all()
        .map_err(|e| FsError::io("syncing", tmp, e))?;
    std::fs::rename(tmp, dest).map_err(|e| FsError::io("renaming into", dest, e))?;
    sync_parent(dest)
}

/// fsyncs the directory holding `path`, so a rename into it is durable.
pub fn sync_parent(path: &Path) -> Result<(), FsError> {
    let dir = parent(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::io("syncing directory", dir, e))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `value` as pretty JSON (with a final newline) to `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), FsError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| FsError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, FsError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::io("reading", path, e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| FsError::Json {
            path: path.to_path_buf(),
            source,
        })
}

/// Removes the file at `path`; one that is already gone is fine.
pub fn remove_file(path: &Path) -> Result<(), FsError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FsError::io("removing", path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/record.json");
        write_json(&path, &vec![1, 2]).expect("first write");
        write_json(&path, &vec![3]).expect("second write");
        assert_eq!(read_json::<Vec<u8>>(&path).expect("read"), Some(vec![3]));
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["record.json"]);
        assert_eq!(
            read_json::<Vec<u8>>(&dir.path().join("none")).expect("read"),
            None
        );
    }

    #[test]
    fn a_bad_record_names_its_path_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{").expect("write");
        let err = read_json::<Vec<u8>>(&path).expect_err("bad json");
        let text = format!("{err}");
        assert_eq!(text, format!("state record {}", path.display()));
    }
}
