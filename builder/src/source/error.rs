//! Errors of reading sources from git: each names the repository, revision, object or path.

use std::path::PathBuf;

/// An error from gix, kept as the cause.
pub type GitCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong reading a project's source from git.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The path is not a git repository (or cannot be opened).
    #[error("cannot open git repository {path}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// gix's reason.
        #[source]
        source: GitCause,
    },
    /// A revision (sha, branch, HEAD, …) that does not name a commit.
    #[error("revision `{rev}` does not name a commit")]
    Resolve {
        /// The revision given.
        rev: String,
        /// gix's reason.
        #[source]
        source: GitCause,
    },
    /// An object that cannot be read (missing, corrupt, or of the wrong kind).
    #[error("cannot read git object {id} ({what})")]
    Object {
        /// The object id.
        id: String,
        /// What it was expected to be (`commit`, `tree`, `blob`, …).
        what: &'static str,
        /// gix's reason.
        #[source]
        source: GitCause,
    },
    /// A path that is a file where a folder was expected (or the other way round).
    #[error("`{path}` in tree {tree} is not a {expected}")]
    WrongKind {
        /// The path inside the tree.
        path: String,
        /// The tree it was looked up in.
        tree: String,
        /// What was expected (`folder`, `file`).
        expected: &'static str,
    },
    /// A submodule in a source tree (kiln builds only what the commit's own objects hold).
    #[error("`{path}` is a git submodule; kiln does not build submodules")]
    Submodule {
        /// Its path in the source tree.
        path: String,
    },
    /// A tree entry name that could escape the destination (`..`, `/`, NUL) or repeats.
    #[error("tree entry `{path}` has an unsafe or duplicate name")]
    UnsafeEntry {
        /// The entry's path.
        path: String,
    },
    /// Writing a source file to disk failed.
    #[error("cannot write {path}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A pull-request merge that git would leave with conflicts.
    #[error("merging head {head} onto base {base} conflicts in: {}", paths.join(", "))]
    MergeConflict {
        /// The base commit.
        base: String,
        /// The head commit.
        head: String,
        /// The conflicting paths, sorted.
        paths: Vec<String>,
    },
    /// The merge itself failed (no merge base, unreadable objects, …).
    #[error("cannot merge head {head} onto base {base}")]
    Merge {
        /// The base commit.
        base: String,
        /// The head commit.
        head: String,
        /// gix's reason.
        #[source]
        source: GitCause,
    },
}
