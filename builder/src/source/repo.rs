//! A git repository opened for reading: revisions, commits, trees and files, never a checkout.

use std::path::{Path, PathBuf};

use gix::ObjectId;

use super::error::{GitCause, SourceError};

/// A project's git repository, read through its objects only.
///
/// Objects written while building (a pull-request merge) stay in memory: kiln never writes
/// into the repository it builds.
pub struct GitRepo {
    pub(crate) repo: gix::Repository,
    path: PathBuf,
}

impl GitRepo {
    /// Opens the repository at `path` (a work tree or a bare repository).
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let repo = gix::open(path).map_err(|e| SourceError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        Ok(GitRepo {
            repo: repo.with_object_memory(),
            path: path.to_path_buf(),
        })
    }

    /// The path the repository was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves a revision (full or short sha, branch, tag, `HEAD`, `main~1`) to a commit id.
    pub fn resolve(&self, rev: &str) -> Result<ObjectId, SourceError> {
        let resolve_err = |source: GitCause| SourceError::Resolve {
            rev: rev.to_string(),
            source,
        };
        let id = self
            .repo
            .rev_parse_single(rev)
            .map_err(|e| resolve_err(Box::new(e)))?;
        let commit = id
            .object()
            .map_err(|e| resolve_err(Box::new(e)))?
            .peel_to_commit()
            .map_err(|e| resolve_err(Box::new(e)))?;
        Ok(commit.id)
    }

    /// The branch a revision names, for `KILN_GIT_BRANCH`: `rev` itself when it is a local branch,
    /// the checked-out branch for `HEAD`, otherwise none.
    pub fn branch_of(&self, rev: &str) -> Option<String> {
        if rev == "HEAD" {
            let head = self.repo.head_name().ok().flatten()?;
            return Some(head.shorten().to_string());
        }
        let name = rev.strip_prefix("refs/heads/").unwrap_or(rev);
        self.repo
            .try_find_reference(format!("refs/heads/{name}").as_str())
            .ok()
            .flatten()
            .map(|_| name.to_string())
    }

    /// The root tree of a commit.
    pub fn commit_tree(&self, commit: ObjectId) -> Result<ObjectId, SourceError> {
        let object_err = |source: GitCause| SourceError::Object {
            id: commit.to_string(),
            what: "commit",
            source,
        };
        let commit = self
            .repo
            .find_commit(commit)
            .map_err(|e| object_err(Box::new(e)))?;
        let tree = commit.tree_id().map_err(|e| object_err(Box::new(e)))?;
        Ok(tree.detach())
    }

    /// The entry at `path` (`/`-separated, relative) in `tree`: its mode and id, if it exists.
    fn entry_at(
        &self,
        tree: ObjectId,
        path: &str,
    ) -> Result<Option<(gix::object::tree::EntryKind, ObjectId)>, SourceError> {
        let root = self.repo.find_tree(tree).map_err(|e| SourceError::Object {
            id: tree.to_string(),
            what: "tree",
            source: Box::new(e),
        })?;
        let entry = root
            .lookup_entry(path.split('/').filter(|part| !part.is_empty()))
            .map_err(|e| SourceError::Object {
                id: tree.to_string(),
                what: "tree",
                source: Box::new(e),
            })?;
        Ok(entry.map(|e| (e.mode().kind(), e.object_id())))
    }

    /// The tree id of folder `folder` in `tree` (`.` is `tree` itself); none if it does not exist.
    pub fn folder_tree(
        &self,
        tree: ObjectId,
        folder: &str,
    ) -> Result<Option<ObjectId>, SourceError> {
        if folder == "." || folder.is_empty() {
            return Ok(Some(tree));
        }
        match self.entry_at(tree, folder)? {
            None => Ok(None),
            Some((gix::object::tree::EntryKind::Tree, id)) => Ok(Some(id)),
            Some(_) => Err(SourceError::WrongKind {
                path: folder.to_string(),
                tree: tree.to_string(),
                expected: "folder",
            }),
        }
    }

    /// The blob id of file `path` in `tree`; none if it does not exist.
    pub fn file_id(&self, tree: ObjectId, path: &str) -> Result<Option<ObjectId>, SourceError> {
        use gix::object::tree::EntryKind;
        match self.entry_at(tree, path)? {
            None => Ok(None),
            Some((EntryKind::Blob | EntryKind::BlobExecutable, id)) => Ok(Some(id)),
            Some(_) => Err(SourceError::WrongKind {
                path: path.to_string(),
                tree: tree.to_string(),
                expected: "file",
            }),
        }
    }

    /// The bytes of blob `id`.
    pub fn blob(&self, id: ObjectId) -> Result<Vec<u8>, SourceError> {
        let mut blob = self.repo.find_blob(id).map_err(|e| SourceError::Object {
            id: id.to_string(),
            what: "blob",
            source: Box::new(e),
        })?;
        Ok(blob.take_data())
    }

    /// The content of file `path` in `tree`, read from the object database; none if absent.
    pub fn read_file(&self, tree: ObjectId, path: &str) -> Result<Option<Vec<u8>>, SourceError> {
        self.file_id(tree, path)?
            .map(|id| self.blob(id))
            .transpose()
    }
}
