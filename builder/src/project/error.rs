//! Errors of loading a project at a commit: each names the commit, and the service when one is at fault.

use crate::config::ConfigErrors;
use crate::source::SourceError;

/// What can go wrong loading a project's configuration and sources at a commit.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading git failed (repository, revision, objects, merge).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The commit has no kiln.toml at its root.
    #[error("commit {commit} has no kiln.toml at the root of the repository")]
    NoConfig {
        /// The commit (or merge) looked at.
        commit: String,
    },
    /// kiln.toml is not UTF-8 text.
    #[error("kiln.toml of commit {commit} is not UTF-8 text")]
    ConfigNotText {
        /// The commit looked at.
        commit: String,
    },
    /// kiln.toml is invalid.
    #[error("commit {commit}: {errors}")]
    Config {
        /// The commit looked at.
        commit: String,
        /// Every problem, each with line and key.
        errors: ConfigErrors,
    },
    /// An app's `source` folder is not in the commit.
    #[error("service `{service}`: source folder `{folder}` does not exist in commit {commit}")]
    MissingSource {
        /// The app.
        service: String,
        /// Its `source`.
        folder: String,
        /// The commit looked at.
        commit: String,
    },
    /// An app's `source` folder cannot be read (a file, not a folder, or unreadable).
    #[error("service `{service}`: source folder `{folder}`")]
    SourceFolder {
        /// The app.
        service: String,
        /// Its `source`.
        folder: String,
        /// Why.
        #[source]
        source: SourceError,
    },
    /// A flavor that needs a file the source folder does not have.
    #[error("service `{service}`: flavor `{flavor}` needs `{path}` in source folder `{folder}`")]
    MissingLockFile {
        /// The app.
        service: String,
        /// The flavor.
        flavor: &'static str,
        /// The file it needs.
        path: &'static str,
        /// The app's source folder.
        folder: String,
    },
}
