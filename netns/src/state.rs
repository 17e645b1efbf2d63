//! Where an environment lives under the runtime root, and its small state record.
//!
//! ```text
//! <runtime_root>/netns/<env>.lock        flock held by apply/teardown
//! <runtime_root>/netns/<env>/<service>   bind mount of the service's network namespace
//! <runtime_root>/netns/<env>/state.json  the plan last applied (addresses stay stable)
//! ```

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::NetError;
use crate::names;
use crate::plan::Plan;

/// Name of the state record inside an env dir (no service can be named so: no dots allowed).
const STATE_FILE: &str = "state.json";

/// What kiln records about an applied environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The environment.
    pub env: String,
    /// The plan last applied.
    pub plan: Plan,
}

/// The directory holding an environment's namespace files.
pub fn env_dir(runtime_root: &Path, env: &str) -> PathBuf {
    runtime_root.join("netns").join(env)
}

/// The path a service's namespace is bind-mounted at (what the OCI runtime joins).
pub fn netns_path(runtime_root: &Path, env: &str, service: &str) -> PathBuf {
    env_dir(runtime_root, env).join(service)
}

/// Checks an environment name (it is a path component).
pub(crate) fn validate_env(env: &str) -> Result<(), NetError> {
    Ok(names::validate("environment", env)?)
}

/// Takes the environment's lock, creating its parent directory.
pub(crate) fn lock(runtime_root: &Path, env: &str) -> Result<Flock<File>, NetError> {
    let dir = runtime_root.join("netns");
    std::fs::create_dir_all(&dir).map_err(|e| NetError::io("creating", &dir, e))?;
    let path = dir.join(format!("{env}.lock"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| NetError::io("opening lock", &path, e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| NetError::sys("flock", path.display().to_string(), e))
}

/// Removes the environment's lock file (teardown, while holding it).
pub(crate) fn remove_lock(runtime_root: &Path, env: &str) {
    // Best effort: a leftover empty lock file is harmless.
    let _ = std::fs::remove_file(runtime_root.join("netns").join(format!("{env}.lock")));
}

/// The record of an environment, if one was saved.
pub fn load(runtime_root: &Path, env: &str) -> Result<Option<Record>, NetError> {
    let path = env_dir(runtime_root, env).join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NetError::io("reading", &path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| NetError::State {
            path,
            message: e.to_string(),
        })
}

/// Writes the record atomically (temp file, fsync, rename, fsync of the directory).
pub(crate) fn save(runtime_root: &Path, record: &Record) -> Result<(), NetError> {
    let path = env_dir(runtime_root, &record.env).join(STATE_FILE);
    Ok(kiln_util::fs::write_json(&path, record)?)
}

/// Removes the record and the env dir if nothing else is left in it.
pub(crate) fn remove(runtime_root: &Path, env: &str) -> Result<(), NetError> {
    let dir = env_dir(runtime_root, env);
    // The record and any temp file a crashed write left (`.state.json.<pid>.tmp`, or
    // `.state.json.tmp` from before kiln-util's atomic write).
    let temps = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".state.json.") && n.ends_with(".tmp"));
    for name in std::iter::once(STATE_FILE.to_string()).chain(temps) {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(NetError::io("removing", &path, e))
            }
            _ => {}
        }
    }
    match std::fs::remove_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io("removing env dir", &dir, e)),
        Ok(()) => Ok(()),
    }
}
