//! The crate's error type: every variant names what is wrong (path, entry, digest, ref).

use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong on disk, in a document, or in a layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{op} {}: {error}", path.display())]
    Io {
        /// The operation ("open", "rename", ...).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error (in the message, not a separate `source()`, so chains print it once).
        error: std::io::Error,
    },
    /// A system call failed.
    #[error("{syscall} {}: {errno}", path.display())]
    Sys {
        /// The system call ("openat2", "mount", ...).
        syscall: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The errno it returned.
        errno: nix::errno::Errno,
    },
    /// A string is not a `sha256:<64 hex>` digest.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// What was given.
        input: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Content did not hash to the digest it was supposed to have.
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: Digest,
        /// The digest of what was actually received.
        actual: Digest,
    },
    /// A blob named by a document is not in the store.
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    /// No ref of that name in index.json.
    #[error("no image named {0:?} in the store")]
    RefNotFound(String),
    /// A ref name that the OCI image layout does not allow.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidRef {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A JSON document could not be read or written.
    #[error("{what}: {error}")]
    Json {
        /// Which document (e.g. "index.json", "manifest sha256:...").
        what: String,
        /// The parse or serialisation error (in the message, not a separate `source()`).
        error: serde_json::Error,
    },
    /// A document is valid JSON but not what the OCI spec requires.
    #[error("{what}: {reason}")]
    BadDocument {
        /// Which document.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A layer entry was refused by the safe applier.
    #[error("layer entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        /// The entry's name in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// A layer went over one of its resource limits (nothing of it is kept).
    #[error(transparent)]
    Limit(#[from] crate::layer::LimitExceeded),
    /// A `KILN_LAYER_MAX_*` variable that is not a size.
    #[error(
        "{var}={value:?}: not a size (a number of bytes or entries, optionally with k, m, g or t)"
    )]
    BadLimit {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A source for a layer could not be turned into a tar entry.
    #[error("layer source {}: {reason}", path.display())]
    BadSource {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An overlay mount failed; `detail` carries the kernel's own message when it gave one.
    #[error("overlay mount on {}: {detail}", target.display())]
    Mount {
        /// Where the mount was attempted.
        target: PathBuf,
        /// The errno and the kernel's explanation.
        detail: String,
    },
    /// A worker thread of the layer pipeline panicked.
    #[error("layer pipeline worker panicked")]
    WorkerPanicked,
}

/// Attaches the operation and the path to an `io::Error`.
pub(crate) trait IoContext<T> {
    /// Maps an `io::Error` into [`Error::Io`] naming `op` and `path`.
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|error| match crate::layer::LimitExceeded::from_io(&error) {
            // A metering reader stopped the stream: the limit is the error, not the read.
            Some(limit) => Error::Limit(limit.clone()),
            None => Error::Io {
                op,
                path: path.to_path_buf(),
                error,
            },
        })
    }
}

/// Attaches the syscall and the path to an errno.
pub(crate) trait SysContext<T> {
    /// Maps an errno into [`Error::Sys`] naming `syscall` and `path`.
    fn sys(self, syscall: &'static str, path: &Path) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn sys(self, syscall: &'static str, path: &Path) -> Result<T> {
        self.map_err(|errno| Error::Sys {
            syscall,
            path: path.to_path_buf(),
            errno,
        })
    }
}

impl From<kiln_util::fs::FsError> for Error {
    fn from(e: kiln_util::fs::FsError) -> Self {
        use kiln_util::fs::FsError;
        match e {
            FsError::Io { what, path, source } => Error::Io {
                op: what,
                path,
                error: source,
            },
            FsError::Json { path, source } => Error::Io {
                op: "parsing",
                path,
                error: source.into(),
            },
        }
    }
}
