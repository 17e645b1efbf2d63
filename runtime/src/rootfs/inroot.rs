//! Paths inside a container's root, resolved by the kernel with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to an fd of the root and used
//! through the resulting fd (CVE-2021-30465): a symlink in the image, however long its chain or
//! wherever it points, can never make kiln create, mount on or delete a host file.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

use crate::error::{Ctx, Error, Result};

/// The most symlinks followed while creating a path (the kernel's own limit, MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// An open directory that paths are resolved inside of, as if it were `/`.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// What [`Root::ensure`] creates when the path is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// The `/proc/self/fd/N` path of an fd: mount(2) on it acts on exactly the file the fd holds.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The components of `p` relative to the root (`/`, `.` and empty components dropped).
fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn join(parts: &[OsString]) -> PathBuf {
    let mut p = PathBuf::new();
    for c in parts {
        p.push(c);
    }
    p
}

impl Root {
    /// Opens the directory `path` (a host path the runtime trusts) as a root.
    pub fn open(path: &Path) -> Result<Root> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
        .at("opening rootfs", path)?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The host path this root was opened at (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `p` (absolute or relative, as the container sees it) inside the root with `flags`
    /// (O_CLOEXEC is added). Symlinks resolve inside the root; magic links are refused; a chain
    /// longer than the kernel's limit fails with ELOOP naming `p`.
    pub fn resolve(&self, p: &Path, flags: OFlag) -> Result<OwnedFd> {
        self.openat2(&join(&components(p)), flags)
            .map_err(io::Error::from)
            .at("resolving inside the rootfs", p)
    }

    /// Like [`Root::resolve`], but `None` when `p` does not exist (or a component of it is not
    /// a directory).
    pub fn resolve_existing(&self, p: &Path, flags: OFlag) -> Result<Option<OwnedFd>> {
        match self.openat2(&join(&components(p)), flags) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(io::Error::from(e)).at("resolving inside the rootfs", p),
        }
    }

    fn openat2(&self, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        loop {
            match openat2(self.fd.as_fd(), rel, how) {
                // openat2 asks for a retry when a rename raced the lookup.
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                r => return r,
            }
        }
    }

    /// The directory `p` inside the root as an O_PATH fd, created (0755) with its missing
    /// parents by mkdirat on verified parent fds.
    pub fn mkdir_all(&self, p: &Path) -> Result<OwnedFd> {
        self.ensure(p, Kind::Dir)
    }

    /// `p` inside the root as an O_PATH fd (any file type); when missing, its parents are made
    /// and it is created as an empty 0644 file (a mount point for a file bind mount).
    pub fn create_file(&self, p: &Path) -> Result<OwnedFd> {
        self.ensure(p, Kind::File)
    }

    /// The parent directory of `p` (created if missing) and `p`'s last component, for the
    /// *at() calls that make or replace `p` itself without following it.
    pub fn parent_of(&self, p: &Path) -> Result<(OwnedFd, OsString)> {
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => Ok((self.mkdir_all(parent)?, name.to_os_string())),
            _ => Err(Error::Config(format!(
                "path {} names no file inside the rootfs",
                p.display()
            ))),
        }
    }

    fn ensure(&self, p: &Path, kind: Kind) -> Result<OwnedFd> {
        self.ensure_inner(p, kind)
            .map_err(io::Error::from)
            .at("resolving inside the rootfs", p)
    }

    /// Walks `p` one prefix at a time, each prefix resolved from the root by openat2; a missing
    /// component is made with mkdirat/openat(O_EXCL|O_NOFOLLOW) in the verified parent fd, a
    /// dangling symlink is followed (inside the root, counted against [`MAX_LINKS`]).
    fn ensure_inner(&self, p: &Path, kind: Kind) -> nix::Result<OwnedFd> {
        let mut comps = components(p);
        let mut links = 0;
        'walk: loop {
            let mut cur = self.openat2(Path::new(""), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            for i in 0..comps.len() {
                let last = i + 1 == comps.len();
                let flags = if last && kind == Kind::File {
                    OFlag::O_PATH
                } else {
                    OFlag::O_PATH | OFlag::O_DIRECTORY
                };
                let prefix = join(&comps[..=i]);
                match self.openat2(&prefix, flags) {
                    Ok(fd) => {
                        cur = fd;
                        continue;
                    }
                    Err(Errno::ENOENT) if comps[i] != ".." => {}
                    Err(e) => return Err(e),
                }
                let name = comps[i].as_os_str();
                if let Ok(target) = readlinkat(cur.as_fd(), name) {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target = Path::new(&target);
                    let mut next = if target.is_absolute() {
                        Vec::new()
                    } else {
                        comps[..i].to_vec()
                    };
                    next.extend(components(target));
                    next.extend_from_slice(&comps[i + 1..]);
                    comps = next;
                    continue 'walk;
                }
                create_in(&cur, name, if last { kind } else { Kind::Dir })?;
                cur = self.openat2(&prefix, flags)?;
            }
            return Ok(cur);
        }
    }
}

/// Makes `name` in the directory `dir` (never following a symlink there); an entry that
/// appeared meanwhile is fine: the caller resolves it again inside the root.
fn create_in(dir: &OwnedFd, name: &OsStr, kind: Kind) -> nix::Result<()> {
    if name.as_bytes().contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    let r = match kind {
        Kind::Dir => mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)),
        Kind::File => openat(
            dir.as_fd(),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop),
    };
    match r {
        Err(Errno::EEXIST) => Ok(()),
        r => r,
    }
}
