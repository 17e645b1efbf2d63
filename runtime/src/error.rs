//! The runtime's error type: every variant names the step, the path or the key that failed.

use std::io;
use std::path::PathBuf;

/// Result alias for kiln-runtime.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong while running a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The container id is not usable as a directory name.
    #[error("container id {id:?} is invalid: {why}")]
    InvalidId {
        /// The id given.
        id: String,
        /// Why it was refused.
        why: &'static str,
    },
    /// A container with this id already exists under the state root.
    #[error("container {0:?} already exists")]
    Exists(String),
    /// No container with this id exists under the state root.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// The container is not in a state the operation accepts.
    #[error("container {id:?} is {status}: cannot {action} it (needs {needed})")]
    BadState {
        /// Container id.
        id: String,
        /// Its current status.
        status: String,
        /// What was asked.
        action: &'static str,
        /// Which status(es) the action needs.
        needed: &'static str,
    },
    /// The bundle's config.json could not be read or parsed.
    #[error("reading OCI config {path}: {msg}")]
    Spec {
        /// The config file.
        path: PathBuf,
        /// The parser's message.
        msg: String,
    },
    /// The configuration asks for something invalid or unsupported.
    #[error("invalid config: {0}")]
    Config(String),
    /// A system call on a path failed.
    #[error("{step} {path}: {errno}")]
    Path {
        /// The step that failed (e.g. "mount proc on").
        step: String,
        /// The path involved.
        path: PathBuf,
        /// The errno.
        errno: io::Error,
    },
    /// A system call failed.
    #[error("{step}: {errno}")]
    Sys {
        /// The step that failed.
        step: String,
        /// The errno.
        errno: io::Error,
    },
    /// An rlimit could not be applied.
    #[error("setting {name} to soft={soft} hard={hard}: {why}")]
    Rlimit {
        /// The rlimit (RLIMIT_NOFILE ...).
        name: String,
        /// Requested soft limit.
        soft: u64,
        /// Requested hard limit.
        hard: u64,
        /// Why it failed.
        why: String,
    },
    /// A cgroup operation failed.
    #[error("cgroup {path}: {msg}")]
    Cgroup {
        /// The cgroup path (relative to the hierarchy roots).
        path: String,
        /// What failed.
        msg: String,
    },
    /// The seccomp profile could not be compiled or loaded.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// A lifecycle hook failed.
    #[error("{kind} hook {path}: {msg}")]
    Hook {
        /// Which hook list (prestart, createRuntime ...).
        kind: &'static str,
        /// The hook executable.
        path: PathBuf,
        /// What happened.
        msg: String,
    },
    /// The container's init process reported an error while setting up.
    #[error("container init: {0}")]
    Init(String),
    /// A container process would be cloned from a multi-threaded process (undefined behaviour).
    #[error(
        "refusing to clone a container process: the calling process has {threads} threads \
         (clone without exec is only sound from a single-threaded process)"
    )]
    MultiThreaded {
        /// How many threads the caller has.
        threads: usize,
    },
    /// A container process would be cloned while kiln runs from a writable host binary.
    #[error(
        "refusing to clone a container process: this process runs from a writable binary \
         (/proc/self/exe), which a container could overwrite (CVE-2019-5736); call \
         kiln_runtime::sealed_exe::ensure() at the start of main"
    )]
    UnsealedExe,
    /// The process's working directory resolved outside the container's root.
    #[error("process.cwd {0} is outside the container's root filesystem")]
    CwdOutsideRoot(PathBuf),
    /// The state file of a container could not be read or written.
    #[error("state file {path}: {msg}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What failed.
        msg: String,
    },
}

impl From<kiln_util::fs::FsError> for Error {
    fn from(e: kiln_util::fs::FsError) -> Self {
        use kiln_util::fs::FsError;
        match e {
            FsError::Io { what, path, source } => Error::Path {
                step: what.to_string(),
                path,
                errno: source,
            },
            FsError::Json { path, source } => Error::State {
                path,
                msg: source.to_string(),
            },
        }
    }
}

/// Attaches a step (and path) to a failing `io::Result`.
pub(crate) trait Ctx<T> {
    /// Names the step that failed.
    fn step(self, step: impl Into<String>) -> Result<T>;
    /// Names the step and the path it acted on.
    fn at(self, step: impl Into<String>, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn step(self, step: impl Into<String>) -> Result<T> {
        self.map_err(|errno| Error::Sys {
            step: step.into(),
            errno,
        })
    }
    fn at(self, step: impl Into<String>, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|errno| Error::Path {
            step: step.into(),
            path: path.into(),
            errno,
        })
    }
}
