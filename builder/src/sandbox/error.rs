//! Why a build step's container could not be set up or run.

use std::path::PathBuf;

/// A failure of the build sandbox (not of the step's own commands: those exit non-zero).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The runtime could not create, start, signal or delete the step's container.
    #[error("container")]
    Runtime(#[from] kiln_runtime::Error),
    /// Mounting the step's overlay failed.
    #[error(transparent)]
    Store(#[from] kiln_overlay::Error),
    /// A file or mount operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Waiting for the step's process failed.
    #[error("waiting for the step's process {pid}: {errno}")]
    Wait {
        /// Its host pid.
        pid: i32,
        /// The error of waitpid.
        errno: nix::errno::Errno,
    },
    /// kiln had other threads alive when it was about to clone a step container.
    #[error(
        "kiln has {count} threads: a step container is only created from a single-threaded \
         process (a thread was still running)"
    )]
    Threads {
        /// `Threads:` of /proc/self/status.
        count: u32,
    },
    /// The network of a step (slirp4netns) could not be set up.
    #[error("the step's network (slirp4netns): {reason}")]
    Network {
        /// What went wrong, with slirp4netns' own words if it said any.
        reason: String,
    },
}

/// Maps an io error into [`SandboxError::Io`] naming `op` and `path`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.into();
    move |source| SandboxError::Io { op, path, source }
}
