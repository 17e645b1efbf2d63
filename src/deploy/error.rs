//! Everything that can go wrong in deploy, each error naming what it is about.

use std::path::PathBuf;

use nix::errno::Errno;

/// An error of the deploy library: the path, the environment, the call and the errno.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done ("reading", "creating"…).
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{call} ({target}): {errno}")]
    Sys {
        /// The call ("connect", "ioctl(FICLONE)"…).
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
    /// A state record that cannot be parsed or written.
    #[error("state record {path}: {message}")]
    State {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        message: String,
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
        /// The upstream, as IP:PORT[@NETNS_PATH].
        upstream: String,
        /// The call that failed.
        call: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// The network namespace helper failed.
    #[error(transparent)]
    Netns(#[from] kiln_netns::NetError),
    /// The environment's router is not running.
    #[error("environment {env:?} has no running router (no answer on {socket})")]
    RouterNotRunning {
        /// The environment.
        env: String,
        /// Its control socket.
        socket: PathBuf,
    },
    /// The environment's router already runs.
    #[error("environment {env:?} already has a router running (pid {pid})")]
    RouterRunning {
        /// The environment.
        env: String,
        /// The router's pid.
        pid: u32,
    },
    /// The router refused or failed a control command.
    #[error("router of {env:?}: {command}: {message}")]
    Router {
        /// The environment.
        env: String,
        /// The command sent.
        command: String,
        /// What the router answered.
        message: String,
    },
    /// The router process did not come up.
    #[error("router of {env:?} did not start: {message}")]
    RouterStart {
        /// The environment.
        env: String,
        /// Why, with the last lines of its log.
        message: String,
    },
    /// A health check did not pass in time.
    #[error("health check {check} failed after {waited_ms} ms: {last}")]
    Unhealthy {
        /// The check (port and namespace, or command).
        check: String,
        /// How long it waited.
        waited_ms: u128,
        /// The last failure seen.
        last: String,
    },
    /// A volume that should not exist yet does.
    #[error("volume {path} already exists")]
    VolumeExists {
        /// The volume's directory.
        path: PathBuf,
    },
    /// A file type a volume copy cannot reproduce.
    #[error("cannot copy {path}: {why}")]
    Uncopyable {
        /// The entry.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
    /// The freeze/thaw hook around a volume clone failed.
    #[error("{action} of environment {env:?} failed: {message}")]
    Freeze {
        /// "freeze" or "thaw".
        action: &'static str,
        /// The environment frozen.
        env: String,
        /// What the hook said.
        message: String,
    },
    /// The OCI runtime failed on a container.
    #[error("container {container}: {source}")]
    Runtime {
        /// The container id.
        container: String,
        /// The runtime's error.
        #[source]
        source: kiln_runtime::Error,
    },
    /// The image store failed (reading an image, mounting its snapshots).
    #[error("{what}: {source}")]
    Store {
        /// What was being done.
        what: String,
        /// The store's error.
        #[source]
        source: kiln_overlay::Error,
    },
    /// A container config that cannot be made from the image and kiln.toml.
    #[error("service {service}: {message}")]
    Config {
        /// The service.
        service: String,
        /// What is wrong.
        message: String,
    },
    /// A deploy step failed for a service (the environment was rolled back).
    #[error(
        "service {service}: {step} failed: {message}\n--- last lines of its output ---\n{tail}"
    )]
    Step {
        /// The service.
        service: String,
        /// The step ("deploy hook", "health", "start"…).
        step: String,
        /// What went wrong.
        message: String,
        /// The last lines of the service's output.
        tail: String,
    },
    /// A deploy failed and its rollback could not bring everything back.
    #[error("{cause}\n--- the rollback did not restore everything: the environment is degraded ---\n{}", problems.join("\n"))]
    RollbackIncomplete {
        /// Why the deploy failed.
        cause: Box<DeployError>,
        /// What the rollback could not do.
        problems: Vec<String>,
    },
}

impl DeployError {
    /// An I/O error on `path` while doing `what`.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// A failed system call on `target`.
    pub(crate) fn sys(call: &'static str, target: impl std::fmt::Display, errno: Errno) -> Self {
        Self::Sys {
            call,
            target: target.to_string(),
            errno,
        }
    }
}
