//! The files of a source tree, in path order, read from blobs: what the code layer holds.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use gix::object::tree::EntryKind;
use gix::ObjectId;

use super::error::SourceError;
use super::repo::GitRepo;

/// One entry of a source tree, ready for a layer writer or a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// Path relative to the tree's root, `/`-separated, never empty, `..` or absolute.
    pub path: PathBuf,
    /// What the entry is, with its content.
    pub kind: SourceEntryKind,
}

/// The three kinds of entry a git tree holds (submodules are refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEntryKind {
    /// A folder.
    Dir,
    /// A regular file and its bytes.
    File {
        /// Whether git records it as executable (mode 100755).
        executable: bool,
        /// The blob's bytes.
        data: Vec<u8>,
    },
    /// A symbolic link and its target, as written (never followed).
    Symlink {
        /// The link target.
        target: PathBuf,
    },
}

impl SourceEntry {
    /// The Unix permission bits a layer should record: 0755 for folders and executables,
    /// 0644 for other files, 0777 for symlinks.
    pub fn mode(&self) -> u32 {
        match &self.kind {
            SourceEntryKind::Dir => 0o755,
            SourceEntryKind::File {
                executable: true, ..
            } => 0o755,
            SourceEntryKind::File { .. } => 0o644,
            SourceEntryKind::Symlink { .. } => 0o777,
        }
    }
}

/// A listed entry whose content is not read yet.
struct Listed {
    path: Vec<u8>,
    kind: EntryKind,
    id: ObjectId,
}

/// The entries of a source tree in byte order of their paths (a folder before what it holds),
/// each blob read only when its entry is reached.
pub struct SourceEntries<'r> {
    repo: &'r GitRepo,
    listed: std::vec::IntoIter<Listed>,
}

impl Iterator for SourceEntries<'_> {
    type Item = Result<SourceEntry, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let Listed { path, kind, id } = self.listed.next()?;
        let path = PathBuf::from(OsStr::from_bytes(&path));
        let kind = match kind {
            EntryKind::Tree => Ok(SourceEntryKind::Dir),
            EntryKind::Blob | EntryKind::BlobExecutable => {
                self.repo.blob(id).map(|data| SourceEntryKind::File {
                    executable: kind == EntryKind::BlobExecutable,
                    data,
                })
            }
            EntryKind::Link => self.repo.blob(id).map(|data| SourceEntryKind::Symlink {
                target: PathBuf::from(OsStr::from_bytes(&data)),
            }),
            EntryKind::Commit => Err(SourceError::Submodule {
                path: path.display().to_string(),
            }),
        };
        Some(kind.map(|kind| SourceEntry { path, kind }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.listed.size_hint()
    }
}

/// A tree entry name that cannot escape or alias: not empty, `.`, `..` or `.git`, no `/` or NUL.
fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.eq_ignore_ascii_case(b".git")
        && !name.contains(&b'/')
        && !name.contains(&0)
}

impl GitRepo {
    /// Every entry of `tree`, sorted by path, checked for unsafe names, duplicates and submodules.
    pub fn entries(&self, tree: ObjectId) -> Result<SourceEntries<'_>, SourceError> {
        let mut listed = Vec::new();
        self.list(tree, &mut Vec::new(), &mut listed)?;
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(pair) = listed.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(SourceError::UnsafeEntry {
                path: String::from_utf8_lossy(&pair[0].path).into_owned(),
            });
        }
        Ok(SourceEntries {
            repo: self,
            listed: listed.into_iter(),
        })
    }

    fn list(
        &self,
        tree: ObjectId,
        prefix: &mut Vec<u8>,
        out: &mut Vec<Listed>,
    ) -> Result<(), SourceError> {
        let object_err = |source: super::error::GitCause| SourceError::Object {
            id: tree.to_string(),
            what: "tree",
            source,
        };
        let found = self
            .repo
            .find_tree(tree)
            .map_err(|e| object_err(Box::new(e)))?;
        let decoded = found.decode().map_err(|e| object_err(Box::new(e)))?;
        for entry in &decoded.entries {
            let name: &[u8] = entry.filename.as_ref();
            let start = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(name);
            if !is_safe_name(name) {
                return Err(SourceError::UnsafeEntry {
                    path: String::from_utf8_lossy(prefix).into_owned(),
                });
            }
            let kind = entry.mode.kind();
            let id = entry.oid.to_owned();
            if kind == EntryKind::Commit {
                return Err(SourceError::Submodule {
                    path: String::from_utf8_lossy(prefix).into_owned(),
                });
            }
            out.push(Listed {
                path: prefix.clone(),
                kind,
                id,
            });
            if kind == EntryKind::Tree {
                self.list(id, prefix, out)?;
            }
            prefix.truncate(start);
        }
        Ok(())
    }

    /// Writes the files of `tree` under `dest` (created with mode 0755 if missing; it must not
    /// hold any of them), with executable bits and symlinks as git records them; returns how many
    /// entries it wrote.
    ///
    /// Every entry is created new (never opened through an existing file or followed link), so a
    /// tree cannot write outside `dest`.
    pub fn write_tree(&self, tree: ObjectId, dest: &Path) -> Result<usize, SourceError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SourceError::Write { path, source }
        };
        if !dest.exists() {
            // A folder kiln makes gets the same mode as the folders of the tree, whatever the umask.
            std::fs::create_dir_all(dest).map_err(write_err(dest))?;
            std::fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(write_err(dest))?;
        }
        let mut count = 0;
        for entry in self.entries(tree)? {
            let entry = entry?;
            let target = dest.join(&entry.path);
            write_entry(&entry, &target).map_err(write_err(&target))?;
            count += 1;
        }
        Ok(count)
    }
}

fn write_entry(entry: &SourceEntry, target: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    // create_new is O_CREAT|O_EXCL: it never opens an existing file nor follows a final symlink.
    let mode = entry.mode();
    match &entry.kind {
        SourceEntryKind::Dir => {
            std::fs::DirBuilder::new().mode(mode).create(target)?;
            std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
        }
        SourceEntryKind::File { data, .. } => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(target)?;
            file.write_all(data)?;
            file.set_permissions(std::fs::Permissions::from_mode(mode))
        }
        SourceEntryKind::Symlink { target: link } => std::os::unix::fs::symlink(link, target),
    }
}
