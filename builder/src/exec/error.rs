//! Errors of running a build: each names the service and, inside a build, the step at fault.

use std::path::PathBuf;

use crate::cache::CacheError;
use crate::sandbox::SandboxError;
use crate::source::SourceError;

/// Why a build of one service (or a step of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A step of a service failed.
    #[error("service `{service}`, step `{step}`")]
    Step {
        /// The app.
        service: String,
        /// The step (`dependencies`, `code`, `flavor`, `hook`, `config`).
        step: &'static str,
        /// What went wrong.
        #[source]
        cause: StepFailure,
    },
    /// Outside any step: the base image, the lock, the final image, the tag or the cache.
    #[error("service `{service}`: {what}")]
    Service {
        /// The app.
        service: String,
        /// What was being done.
        what: &'static str,
        /// What went wrong.
        #[source]
        cause: StepFailure,
    },
    /// A base image named in kiln.toml is not in the store.
    #[error("service `{service}`: base image `{base}` is not in the store (tried {tried})")]
    UnknownBase {
        /// The app.
        service: String,
        /// Its `base`.
        base: String,
        /// The references looked up.
        tried: String,
    },
}

/// The cause of a failed step or service build.
#[derive(Debug, thiserror::Error)]
pub enum StepFailure {
    /// The store refused something.
    #[error(transparent)]
    Store(#[from] kiln_overlay::Error),
    /// The runtime could not run the step's container.
    #[error("container")]
    Runtime(#[from] kiln_runtime::Error),
    /// The build sandbox could not run the step.
    #[error(transparent)]
    Sandbox(Box<SandboxError>),
    /// Reading the source from git failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Reading or writing the build cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A file operation of the executor failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command of the step exited non-zero.
    #[error("`{command}` exited with status {code}{}", last_lines(.tail))]
    Failed {
        /// The command (shell form).
        command: String,
        /// Its exit status (128 + n for signal n).
        code: i32,
        /// The last lines of the step's output.
        tail: Vec<String>,
    },
    /// The step ran longer than its timeout and was killed.
    #[error("timed out after {secs} s and was killed{}", last_lines(.tail))]
    TimedOut {
        /// The timeout.
        secs: u64,
        /// The last lines of the step's output.
        tail: Vec<String>,
    },
}

impl From<SandboxError> for StepFailure {
    fn from(e: SandboxError) -> StepFailure {
        StepFailure::Sandbox(Box::new(e))
    }
}

/// `"; last lines:\n  …"` or nothing.
fn last_lines(tail: &[String]) -> String {
    if tail.is_empty() {
        return "; it printed nothing".to_string();
    }
    let mut s = String::from("; last lines of its output:");
    for l in tail {
        s.push_str("\n  | ");
        s.push_str(l);
    }
    s
}

/// Maps an io error into [`StepFailure::Io`] naming `op` and `path`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> StepFailure {
    let path = path.into();
    move |source| StepFailure::Io { op, path, source }
}
