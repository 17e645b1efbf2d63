//! A project's source, straight from git objects (gix): revisions, files, folder trees, the
//! entries of a tree for the code layer, and pull-request merges. Never a checkout.

mod entries;
mod error;
mod merge;
mod repo;

pub use entries::{SourceEntries, SourceEntry, SourceEntryKind};
pub use error::{GitCause, SourceError};
pub use gix::ObjectId;
pub use repo::GitRepo;
