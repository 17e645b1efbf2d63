//! A container's persisted state (`<root>/<id>/state.json`), its lock, and its live status.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Hook;
use serde::{Deserialize, Serialize};

use crate::error::{Ctx, Error, Result};
use crate::sys;

/// File name of the state inside a container's directory.
pub const STATE_FILE: &str = "state.json";
/// File name of the exec fifo that `start` opens to release the init process.
pub const EXEC_FIFO: &str = "exec.fifo";

/// The lifecycle status of a container (runtime-spec, plus runc's `paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// create is running.
    Creating,
    /// init waits for `start`.
    Created,
    /// the user process runs.
    Running,
    /// the container's processes are frozen.
    Paused,
    /// the init process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What kiln remembers about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// OCI runtime-spec version of the config.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Host pid of the container's init process.
    pub pid: i32,
    /// Start time of the init process in clock ticks (guards against pid reuse).
    pub pid_start: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Config annotations.
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
    /// The container's cgroup path (relative to each hierarchy root), if it has one.
    pub cgroup: Option<String>,
    /// Poststop hooks to run on delete (the bundle may be gone by then).
    #[serde(default)]
    pub poststop: Vec<Hook>,
    /// Poststart hooks to run after start.
    #[serde(default)]
    pub poststart: Vec<Hook>,
    /// Whether the container was started (the exec fifo consumed).
    #[serde(default)]
    pub started: bool,
}

impl ContainerState {
    /// The directory holding this container's state under `root`.
    pub fn dir(root: &Path, id: &str) -> PathBuf {
        root.join(id)
    }

    /// Loads the state of container `id` under `root`.
    pub fn load(root: &Path, id: &str) -> Result<ContainerState> {
        let path = Self::dir(root, id).join(STATE_FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(e).at("reading state", path),
        };
        serde_json::from_slice(&data).map_err(|e| Error::State {
            path,
            msg: e.to_string(),
        })
    }

    /// Writes the state atomically and durably (see [`write_atomic`]).
    pub fn save(&self, root: &Path) -> Result<()> {
        let path = Self::dir(root, &self.id).join(STATE_FILE);
        let data = serde_json::to_vec(self).map_err(|e| Error::State {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        write_atomic(&path, &data)
    }

    /// The live status: from the init process (alive? zombie? same start time?), the exec fifo,
    /// and the freezer.
    pub fn status(&self, root: &Path) -> Status {
        match sys::proc_start_time(self.pid) {
            Some((start, zombie)) if start == self.pid_start && !zombie => {}
            _ => return Status::Stopped,
        }
        if !self.started && Self::dir(root, &self.id).join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if let Some(cg) = &self.cgroup {
            if crate::cgroups::is_frozen(cg) {
                return Status::Paused;
            }
        }
        Status::Running
    }

    /// The OCI state document (`kiln state` output).
    pub fn oci_json(&self, status: Status) -> serde_json::Value {
        let pid = if status == Status::Stopped {
            0
        } else {
            self.pid
        };
        serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": status,
            "pid": pid,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "annotations": self.annotations,
            "owner": "",
        })
    }
}

/// An exclusive flock on a container's directory, released on drop.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock on `<root>/<id>` (blocking while another kiln process holds it).
    pub fn acquire(root: &Path, id: &str) -> Result<Lock> {
        let dir = ContainerState::dir(root, id);
        let f = match File::open(&dir) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(e).at("opening state dir", dir),
        };
        Self::on(f, &dir)
    }

    /// Locks an already opened directory.
    pub fn on(f: File, dir: &Path) -> Result<Lock> {
        loop {
            // SAFETY: flock on an fd we own.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Lock { _file: f });
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e).at("locking state dir", dir);
            }
        }
    }
}

/// Replaces `path` with `data` atomically and durably (see [`kiln_util::fs::write_atomic`]: after
/// a crash the file is either the old or the new content, never empty or missing).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    Ok(kiln_util::fs::write_atomic(path, data)?)
}

/// Checks that an id is usable as one path component.
pub fn validate_id(id: &str) -> Result<()> {
    let why = if id.is_empty() {
        "it is empty"
    } else if id == "." || id == ".." {
        "it is a relative path component"
    } else if id.len() > 1024 {
        "it is longer than 1024 bytes"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b))
    {
        "only letters, digits and _ + - . are allowed"
    } else {
        return Ok(());
    };
    Err(Error::InvalidId {
        id: id.to_string(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc-1.2_x").is_ok());
        for bad in ["", "..", "a/b", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
