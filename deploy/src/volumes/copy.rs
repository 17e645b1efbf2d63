//! Copying a directory tree as it is: contents (reflinked with FICLONE where the filesystem
//! can share extents, copied otherwise), modes, owners, times, symlinks, hard links, fifos and
//! device nodes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, mkfifo, Gid, Uid};
use serde::Serialize;

use crate::error::DeployError;

// FICLONE = _IOW(0x94, 9, int): make the destination file share the source's extents.
nix::ioctl_write_int!(ficlone, 0x94, 9);

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CopyStats {
    /// Regular files written.
    pub files: u64,
    /// Bytes in them.
    pub bytes: u64,
    /// Files cloned with FICLONE (copy-on-write, no data copied).
    pub reflinked: u64,
    /// Files whose data was copied.
    pub copied: u64,
    /// Directories made.
    pub dirs: u64,
    /// Symbolic links made.
    pub symlinks: u64,
    /// Extra names of hard-linked files, linked again.
    pub hardlinks: u64,
    /// Fifos and device nodes made.
    pub special: u64,
    /// Sockets skipped (they are only meaningful to a live process).
    pub skipped_sockets: u64,
}

/// One tree copy in progress.
struct Copier {
    stats: CopyStats,
    /// Source (dev, inode) of multiply-linked files → their first copy.
    links: HashMap<(u64, u64), PathBuf>,
    /// Whether FICLONE works between these trees (unknown until tried).
    reflink: Option<bool>,
}

/// Copies the tree at `src` to `dst` (which must not exist), with ownership and modes.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats, DeployError> {
    let mut c = Copier {
        stats: CopyStats::default(),
        links: HashMap::new(),
        reflink: None,
    };
    let meta = std::fs::symlink_metadata(src).map_err(|e| DeployError::io("reading", src, e))?;
    if !meta.is_dir() {
        return Err(DeployError::Uncopyable {
            path: src.to_path_buf(),
            why: "not a directory",
        });
    }
    c.dir(src, dst, &meta)?;
    Ok(c.stats)
}

impl Copier {
    /// Copies a directory, its entries (in name order), then its metadata.
    fn dir(&mut self, src: &Path, dst: &Path, meta: &std::fs::Metadata) -> Result<(), DeployError> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dst)
            .map_err(|e| DeployError::io("creating directory", dst, e))?;
        self.stats.dirs += 1;
        let mut entries = std::fs::read_dir(src)
            .map_err(|e| DeployError::io("listing", src, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DeployError::io("listing", src, e))?;
        entries.sort();
        for name in entries {
            self.entry(&src.join(&name), &dst.join(&name))?;
        }
        let f = File::open(dst).map_err(|e| DeployError::io("opening", dst, e))?;
        set_owner_mode(&f, dst, meta)?;
        set_times(dst, meta, false)
    }

    /// Copies one entry of any type.
    fn entry(&mut self, src: &Path, dst: &Path) -> Result<(), DeployError> {
        let meta =
            std::fs::symlink_metadata(src).map_err(|e| DeployError::io("reading", src, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            return self.dir(src, dst, &meta);
        }
        if ft.is_symlink() {
            let target =
                std::fs::read_link(src).map_err(|e| DeployError::io("reading link", src, e))?;
            std::os::unix::fs::symlink(&target, dst)
                .map_err(|e| DeployError::io("creating symlink", dst, e))?;
            std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| DeployError::io("changing owner of", dst, e))?;
            self.stats.symlinks += 1;
            return set_times(dst, &meta, true);
        }
        if ft.is_socket() {
            self.stats.skipped_sockets += 1;
            return Ok(());
        }
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                std::fs::hard_link(first, dst).map_err(|e| DeployError::io("linking", dst, e))?;
                self.stats.hardlinks += 1;
                return Ok(());
            }
            self.links
                .insert((meta.dev(), meta.ino()), dst.to_path_buf());
        }
        if ft.is_file() {
            return self.file(src, dst, &meta);
        }
        self.special(dst, &meta)
    }

    /// Copies a regular file's data (FICLONE first), owner, mode and times.
    fn file(
        &mut self,
        src: &Path,
        dst: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<(), DeployError> {
        let mut from = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)
            .map_err(|e| DeployError::io("opening", src, e))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(|e| DeployError::io("creating", dst, e))?;
        if self.reflink != Some(false) && meta.len() > 0 {
            // SAFETY: both descriptors are open files owned by this function for the call.
            match unsafe { ficlone(to.as_raw_fd(), from.as_raw_fd() as libc::c_ulong) } {
                Ok(_) => {
                    self.reflink = Some(true);
                    self.stats.reflinked += 1;
                }
                Err(
                    Errno::EOPNOTSUPP
                    | Errno::EXDEV
                    | Errno::EINVAL
                    | Errno::ENOTTY
                    | Errno::ENOSYS,
                ) => {
                    self.reflink = Some(false);
                }
                Err(e) => return Err(DeployError::sys("ioctl(FICLONE)", dst.display(), e)),
            }
        }
        if self.reflink != Some(true) || meta.len() == 0 {
            std::io::copy(&mut from, &mut to)
                .map_err(|e| DeployError::io("copying into", dst, e))?;
            self.stats.copied += 1;
        }
        self.stats.files += 1;
        self.stats.bytes += meta.len();
        set_owner_mode(&to, dst, meta)?;
        set_times(dst, meta, false)
    }

    /// Makes a fifo or device node like the source.
    fn special(&mut self, dst: &Path, meta: &std::fs::Metadata) -> Result<(), DeployError> {
        let ft = meta.file_type();
        let perm = Mode::from_bits_truncate(0o600);
        let made = if ft.is_fifo() {
            mkfifo(dst, perm)
        } else if ft.is_char_device() {
            mknod(dst, SFlag::S_IFCHR, perm, meta.rdev())
        } else if ft.is_block_device() {
            mknod(dst, SFlag::S_IFBLK, perm, meta.rdev())
        } else {
            return Err(DeployError::Uncopyable {
                path: dst.to_path_buf(),
                why: "unknown file type",
            });
        };
        made.map_err(|e| DeployError::sys("mknod", dst.display(), e))?;
        self.stats.special += 1;
        std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| DeployError::io("changing owner of", dst, e))?;
        std::fs::set_permissions(
            dst,
            std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
        )
        .map_err(|e| DeployError::io("changing mode of", dst, e))?;
        set_times(dst, meta, false)
    }
}

/// Owner first (chown clears set-id bits), then the mode.
fn set_owner_mode(f: &File, path: &Path, meta: &std::fs::Metadata) -> Result<(), DeployError> {
    fchown(
        f,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
    )
    .map_err(|e| DeployError::sys("fchown", path.display(), e))?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
        meta.mode() & 0o7777,
    ))
    .map_err(|e| DeployError::io("changing mode of", path, e))
}

/// Access and modification times like the source's.
fn set_times(path: &Path, meta: &std::fs::Metadata, symlink: bool) -> Result<(), DeployError> {
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    let flag = if symlink {
        UtimensatFlags::NoFollowSymlink
    } else {
        UtimensatFlags::FollowSymlink
    };
    utimensat(nix::fcntl::AT_FDCWD, path, &atime, &mtime, flag)
        .map_err(|e| DeployError::sys("utimensat", path.display(), e))
}
