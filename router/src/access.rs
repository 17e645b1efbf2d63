//! An environment's access log: one JSON line per request (time, host, method, path, status,
//! bytes, upstream ms), appended to `$KILN_RUNTIME/envs/<env>/access.log`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use crate::error::RouterError;

/// One request, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// When it ended (RFC 3339).
    pub time: String,
    /// The client address.
    pub client: String,
    /// The Host it asked for.
    pub host: String,
    /// The method.
    pub method: String,
    /// The path (and query).
    pub path: String,
    /// The status sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Time to the upstream's response head, in ms (none when the ingress answered itself).
    pub upstream_ms: Option<f64>,
}

/// An open access log.
#[derive(Debug)]
pub struct AccessLog {
    file: Mutex<File>,
}

impl AccessLog {
    /// Opens (creates) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<Self, RouterError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| RouterError::io("opening", path, e))?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Appends one line (best effort: a full disk must not fail requests).
    pub fn write(&self, entry: &Entry) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&line) {
            tracing::debug!("access log: {e}");
        }
    }
}
