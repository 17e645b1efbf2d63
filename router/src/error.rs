//! Everything that can go wrong in the router and in talking to it, each error naming what it
//! is about (a cause is either in the message or the `source`, never both).

use std::path::PathBuf;

use nix::errno::Errno;

/// An error of the router library: the path, the environment, the call and the errno.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A file or socket operation failed (naming the step and the path or address), or a
    /// record file could not be written or read.
    #[error(transparent)]
    File(#[from] kiln_util::fs::FsError),
    /// A system call failed.
    #[error("{call} ({target}): {errno}")]
    Sys {
        /// The call ("pthread_sigmask", "flock"…).
        call: &'static str,
        /// What it was called on.
        target: String,
        /// The errno.
        errno: Errno,
    },
    /// A name that cannot be used (it becomes a path component).
    #[error("invalid {what} name {name:?}: {why}")]
    InvalidName {
        /// What the name is of ("environment", "volume").
        what: &'static str,
        /// The name.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// An upstream written in a form the router does not know.
    #[error("invalid upstream {spec:?}: {why} (expected IP:PORT or IP:PORT@NETNS_PATH)")]
    BadUpstream {
        /// The text given.
        spec: String,
        /// Why it is refused.
        why: String,
    },
    /// Connecting to an upstream (or a health-checked port) failed.
    #[error("connecting to {upstream}: {call}: {errno}")]
    Connect {
        /// The upstream, as `IP:PORT[@NETNS_PATH]`.
        upstream: String,
        /// The call that failed.
        call: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// Entering the upstream's network namespace failed.
    #[error(transparent)]
    Netns(#[from] kiln_netns::NetError),
    /// The environment's router is not running.
    #[error("environment {env:?} has no running router (no answer on {socket})")]
    NotRunning {
        /// The environment.
        env: String,
        /// Its control socket.
        socket: PathBuf,
    },
    /// The environment's router already runs.
    #[error("environment {env:?} already has a router running (pid {pid})")]
    Running {
        /// The environment.
        env: String,
        /// The router's pid.
        pid: u32,
    },
    /// The router refused or failed a control command.
    #[error("router of {env:?}: {command}: {message}")]
    Refused {
        /// The environment.
        env: String,
        /// The command sent.
        command: String,
        /// What the router answered.
        message: String,
    },
    /// The router process did not come up.
    #[error("router of {env:?} did not start: {message}")]
    Start {
        /// The environment.
        env: String,
        /// Why, with the last lines of its log.
        message: String,
    },
}

impl RouterError {
    /// An I/O error on `path` while doing `what`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::File(kiln_util::fs::FsError::io(what, path, source))
    }

    /// A failed system call on `target`.
    pub fn sys(call: &'static str, target: impl std::fmt::Display, errno: Errno) -> Self {
        Self::Sys {
            call,
            target: target.to_string(),
            errno,
        }
    }
}
