//! Everything that can go wrong in the ingress and in talking to it, each error naming what it
//! is about (a cause is either in the message or the `source`, never both).
//!
//! A failed system call on a file is a [`RouterError::File`] (kiln-util's `FsError`, naming
//! the step and the path); in a network namespace it is kiln-netns' own error. The router has
//! no system-call variant of its own.

use std::path::PathBuf;

use nix::errno::Errno;

/// An error of the ingress library: the path, the environment, the call and the errno.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A file or socket operation failed (naming the step and the path or address), or a
    /// record file could not be written or read.
    #[error(transparent)]
    File(#[from] kiln_util::fs::FsError),
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
    /// A route the ingress cannot serve.
    #[error("invalid route {route:?}: {why}")]
    BadRoute {
        /// The route's URL pattern.
        route: String,
        /// Why it is refused.
        why: String,
    },
    /// A certificate or key that cannot be used.
    #[error("TLS {what} {path}: {why}")]
    Tls {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
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
    /// The environment is not served by a running ingress.
    #[error("environment {env:?} has no running router (no answer on {socket})")]
    NotRunning {
        /// The environment.
        env: String,
        /// The ingress's control socket.
        socket: PathBuf,
    },
    /// The environment is already registered with the running ingress.
    #[error("environment {env:?} already has a router running (pid {pid})")]
    Running {
        /// The environment.
        env: String,
        /// The ingress's pid.
        pid: u32,
    },
    /// Another ingress runs for this runtime root.
    #[error("an ingress already runs for {root} (pid {pid})")]
    IngressRunning {
        /// The runtime root.
        root: PathBuf,
        /// Its pid (0 when unknown).
        pid: u32,
    },
    /// The ingress refused or failed a control command.
    #[error("router of {env:?}: {command}: {message}")]
    Refused {
        /// The environment ("" for ingress-wide commands).
        env: String,
        /// The command sent.
        command: String,
        /// What the ingress answered.
        message: String,
    },
    /// The ingress process did not come up.
    #[error("ingress did not start: {message}")]
    Start {
        /// Why, with the last lines of its log.
        message: String,
    },
}

impl RouterError {
    /// An I/O error on `path` while doing `what`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::File(kiln_util::fs::FsError::io(what, path, source))
    }

    /// A failed call on `path`, as an I/O error naming the step.
    pub fn errno(what: &'static str, path: impl Into<PathBuf>, errno: Errno) -> Self {
        Self::io(what, path, std::io::Error::from(errno))
    }
}
