//! Atomic small-file writes: temp file in the same directory, fsync, rename.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::DeployError;

/// Writes `bytes` to `path` so readers see the old content or the new, never a torn one.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), DeployError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DeployError::io("creating", dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| DeployError::io("creating", &tmp, e))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| DeployError::io("writing", &tmp, e))
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|e| DeployError::io("renaming into", path, e))
        });
    if written.is_err() {
        // Best effort: the write error is the one to report.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DeployError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| DeployError::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    write(path, &bytes)
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, DeployError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DeployError::io("reading", path, e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| DeployError::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Removes `path`; a file that is already gone is fine.
pub fn remove_file(path: &Path) -> Result<(), DeployError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(DeployError::io("removing", path, e))
        }
        _ => Ok(()),
    }
}
