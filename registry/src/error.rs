//! The crate's error type: each variant names the reference, registry, file or blob at fault.

use std::path::PathBuf;

use oci_client::errors::OciDistributionError;

/// A push or pull failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registry reference that does not parse, or names no repository.
    #[error("invalid registry reference {input:?}: {reason}")]
    BadReference {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The local store failed (a missing image, a blob that does not hash to its digest, ...).
    #[error(transparent)]
    Store(#[from] kiln_overlay::Error),
    /// A CA certificate file that cannot be read or holds no PEM certificate.
    #[error("CA file {path}: {reason}")]
    Ca {
        /// The file given with `--ca`.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A docker/podman auth file that cannot be read or parsed.
    #[error("auth file {path}: {reason}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The registry answered 401/403: no credentials, or credentials it does not accept.
    #[error("registry {registry} refused access to {repository} {who}: {detail}")]
    Unauthorized {
        /// `host[:port]`.
        registry: String,
        /// The repository asked for.
        repository: String,
        /// Whose credentials were sent, and from which file (or that none were found).
        who: String,
        /// The registry's answer.
        detail: String,
    },
    /// Any other registry or transport failure (after retries for 502/503/504).
    #[error("{op} {target} at {registry}: {source}")]
    Registry {
        /// What was being done.
        op: &'static str,
        /// The manifest, blob or repository it was done to.
        target: String,
        /// `host[:port]`.
        registry: String,
        /// The client's error.
        #[source]
        source: OciDistributionError,
    },
    /// A downloaded blob or manifest whose bytes are not what its descriptor says.
    #[error("{what} from {reference}: {reason}")]
    BadContent {
        /// The blob or manifest.
        what: String,
        /// Where it came from.
        reference: String,
        /// The mismatch.
        reason: String,
    },
    /// A manifest kind kiln's store does not hold (docker schema 1/2, an index with no
    /// manifest for this platform, ...).
    #[error("{reference}: {reason}")]
    Unsupported {
        /// The reference pulled.
        reference: String,
        /// What is not supported.
        reason: String,
    },
    /// The async runtime could not start.
    #[error("start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
