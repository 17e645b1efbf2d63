//! Everything that can go wrong in deploy, each error naming what it is about.

use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;

/// An error of the deploy library: the path, the environment, the call and the errno.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
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
    /// A state record that cannot be parsed or written.
    #[error("state record {path}: {message}")]
    State {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The network namespace helper failed.
    #[error(transparent)]
    Netns(#[from] kiln_netns::NetError),
    /// The environment's router failed, or talking to it did.
    #[error(transparent)]
    Router(#[from] kiln_router::RouterError),
    /// A file operation failed (naming the step and the path), or a record file could not be
    /// written or read.
    #[error(transparent)]
    File(#[from] kiln_util::fs::FsError),
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
    #[error("{action} of environment {env:?} failed")]
    Freeze {
        /// "freeze" or "thaw".
        action: &'static str,
        /// The environment frozen.
        env: String,
        /// Why (boxed: it can hold a runtime error, and every `Result` of deploy stays small).
        #[source]
        source: Box<FreezeError>,
    },
    /// The OCI runtime failed on a container.
    #[error("container {container}")]
    Runtime {
        /// The container id.
        container: String,
        /// The runtime's error.
        #[source]
        source: kiln_runtime::Error,
    },
    /// The image store failed (reading an image, mounting its snapshots).
    #[error("{what}")]
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
    /// A directory a service in a user namespace must reach is closed to its mapped uids.
    #[error(
        "service {service} runs in a user namespace (container root is host uid {host_uid}) \
         and cannot reach its files: {dir} has mode {mode:o}, without search permission for \
         other users; make it traversable (chmod o+x {dir}), keep KILN_STORE and KILN_RUNTIME \
         under directories that are, or opt the service out with security.host_root"
    )]
    Unreachable {
        /// The service.
        service: String,
        /// Host uid of the container's root.
        host_uid: u32,
        /// The closed directory.
        dir: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A deploy step was called before the step it needs (a bug in the caller).
    #[error("deploy step {step} needs step {needs} first")]
    OutOfOrder {
        /// The step called.
        step: &'static str,
        /// The step it needs.
        needs: &'static str,
    },
    /// Opening the project's repository failed.
    #[error(transparent)]
    Source(Box<kiln_builder::source::SourceError>),
    /// The project's kiln.toml at the revision could not be loaded.
    #[error(transparent)]
    Load(Box<kiln_builder::project::LoadError>),
    /// The build could not be planned.
    #[error(transparent)]
    Plan(Box<kiln_builder::plan::PlanError>),
    /// The build failed.
    #[error(transparent)]
    Build(Box<kiln_builder::exec::BuildError>),
    /// Deploying a built commit failed (the build went through).
    #[error("deploying {commit} into {env}")]
    Deploying {
        /// The commit.
        commit: String,
        /// The environment.
        env: String,
        /// Why.
        #[source]
        source: Box<DeployError>,
    },
    /// A thread of the deploy panicked (a bug): what it was doing.
    #[error("a thread {doing} panicked")]
    Panicked {
        /// What the thread was doing.
        doing: &'static str,
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

/// Why the processes of a parent environment could not be frozen or thawed.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    /// The freezer cgroup could not be written or read (through the runtime's cgroups).
    #[error(transparent)]
    Cgroup(#[from] kiln_runtime::Error),
    /// A cgroup did not reach the state in time.
    #[error("cgroup {cgroup} not {state} after {waited:?}")]
    Timeout {
        /// The cgroup (relative to the hierarchy roots).
        cgroup: String,
        /// The state waited for ("frozen", "thawed").
        state: &'static str,
        /// How long it waited.
        waited: Duration,
    },
}

/// Why a command run in a container (`kiln exec`: a deploy hook, a health command) failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The scratch directory for the exec's pid file could not be made.
    #[error("creating a temporary directory")]
    TempDir(#[source] std::io::Error),
    /// The `kiln exec` process could not be started.
    #[error("running {bin}")]
    Spawn {
        /// The kiln binary.
        bin: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the `kiln exec` process failed.
    #[error("waiting for kiln exec")]
    Wait(#[source] std::io::Error),
    /// The command ran past its time and was killed with everything it started.
    #[error("timed out after {} (killed)", seconds(*.after))]
    TimedOut {
        /// Its time limit.
        after: Duration,
    },
    /// The command exited non-zero.
    #[error("exited with status {code}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Exited {
        /// Its exit status.
        code: i32,
        /// What `kiln exec` printed on stderr (trimmed; empty when nothing).
        stderr: String,
    },
    /// The `kiln exec` process was killed by a signal.
    #[error("killed by a signal")]
    Signaled,
}

/// `3 s`, or `0.25 s` for a fraction.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

impl DeployError {
    /// An I/O error on `path` while doing `what`.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::File(kiln_util::fs::FsError::io(what, path, source))
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

/// `?` on a builder error: boxed, so every `Result<_, DeployError>` stays small.
macro_rules! from_boxed {
    ($($variant:ident($ty:ty)),* $(,)?) => {$(
        impl From<$ty> for DeployError {
            fn from(e: $ty) -> Self {
                Self::$variant(Box::new(e))
            }
        }
    )*};
}

from_boxed!(
    Source(kiln_builder::source::SourceError),
    Load(kiln_builder::project::LoadError),
    Plan(kiln_builder::plan::PlanError),
    Build(kiln_builder::exec::BuildError),
);
