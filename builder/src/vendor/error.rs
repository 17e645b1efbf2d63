//! Errors of vendor image builds: each names the recipe, package, file or entry at fault.

use std::path::PathBuf;

/// Everything that can go wrong turning a recipe into an image.
#[derive(Debug, thiserror::Error)]
pub enum VendorError {
    /// No `<name>.toml` in the recipes directory.
    #[error("no recipe {name:?}: {path} does not exist")]
    RecipeNotFound {
        /// The recipe name asked for.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The recipe is not valid TOML for the schema (the message has line and column).
    #[error("recipe {path}: {message}")]
    RecipeParse {
        /// The recipe file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The recipe parses but says something kiln cannot do.
    #[error("recipe {path}: {key}: {reason}")]
    RecipeInvalid {
        /// The recipe file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// apt does not know a package the recipe names.
    #[error("package {name:?} is unknown to apt (recipe {recipe}); is it spelled right and are apt's lists up to date?")]
    UnknownPackage {
        /// The package name.
        name: String,
        /// The recipe naming it.
        recipe: String,
    },
    /// An apt command could not be started.
    #[error("cannot run {program}")]
    AptSpawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// An apt command failed.
    #[error("{command} failed ({status}): {stderr}")]
    AptFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// apt's index lacks something kiln needs for a package.
    #[error("apt's index entry for {package} {version}: {reason}")]
    AptIndex {
        /// The package.
        package: String,
        /// Its version.
        version: String,
        /// What is missing or odd.
        reason: String,
    },
    /// A .deb's sha256 differs from the one apt's index gives.
    #[error("checksum mismatch for {package} {version} ({path}): apt's index says sha256 {expected}, the file has {actual}")]
    ChecksumMismatch {
        /// The package.
        package: String,
        /// Its version.
        version: String,
        /// The file checked.
        path: PathBuf,
        /// sha256 from apt's index.
        expected: String,
        /// sha256 of the file.
        actual: String,
    },
    /// apt-get download ran but a package's file did not appear.
    #[error("apt-get download did not produce {package} {version} (sha256 {sha256})")]
    NotDownloaded {
        /// The package.
        package: String,
        /// Its version.
        version: String,
        /// The expected sha256.
        sha256: String,
    },
    /// A .deb is not a valid Debian package archive.
    #[error("broken .deb {path}: {reason}")]
    BrokenDeb {
        /// The .deb file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// One entry of a .deb's data archive cannot be unpacked.
    #[error("{deb}: entry {entry:?}: {reason}")]
    DebEntry {
        /// The .deb file.
        deb: PathBuf,
        /// The entry's path in data.tar.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done (e.g. "write", "mkdir").
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A `run` step of a recipe could not be set up or failed.
    #[error("run step {args:?}: {reason}")]
    RunStep {
        /// The step's command line.
        args: Vec<String>,
        /// What went wrong.
        reason: String,
    },
    /// The build sandbox could not run a `run` step.
    #[error("run step {args:?}")]
    Sandbox {
        /// The step's command line.
        args: Vec<String>,
        /// What went wrong.
        source: crate::sandbox::SandboxError,
    },
    /// The OCI store refused something.
    #[error("store: {0}")]
    Store(String),
}

/// Result of vendor operations.
pub type Result<T, E = VendorError> = std::result::Result<T, E>;

/// Builds an `Io` error for `op` on `path`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> VendorError {
    let path = path.into();
    move |source| VendorError::Io { op, path, source }
}
