//! Idmapped mounts: a directory shown elsewhere with its owners shifted by an id range, so
//! files owned by container ids on disk (the image's snapshots, volumes) appear owned by the
//! host ids a user namespace maps them to — without chowning a copy.
//!
//! The mapping comes from a user namespace: a short-lived child unshares CLONE_NEWUSER, its
//! uid and gid maps are written, its namespace is opened and the child ends. The mount is a
//! detached clone of the directory (open_tree(OPEN_TREE_CLONE)), given the mapping
//! (mount_setattr(MOUNT_ATTR_IDMAP)) and attached at the target (move_mount).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `OPEN_TREE_CLONE` (uapi/linux/mount.h).
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `MOUNT_ATTR_IDMAP`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `MOVE_MOUNT_F_EMPTY_PATH`.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// `struct mount_attr` (uapi/linux/mount.h, version 0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Ids `0..size` of a container mapped to host ids `host..host + size` (uids and gids alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRange {
    /// The first host id (container id 0).
    pub host: u32,
    /// How many ids.
    pub size: u32,
}

impl IdRange {
    /// The line of `/proc/<pid>/uid_map` (and gid_map) for this range.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.host, self.size)
    }
}

/// A user namespace holding one id mapping, for idmapped mounts.
#[derive(Debug)]
pub struct UserNs {
    fd: OwnedFd,
    range: IdRange,
}

fn sys(syscall: &'static str, path: &Path) -> impl FnOnce(Errno) -> Error {
    let path = path.to_path_buf();
    move |errno| Error::Sys {
        syscall,
        path,
        errno,
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Sys {
        syscall: "path",
        path: p.to_path_buf(),
        errno: Errno::EINVAL,
    })
}

impl UserNs {
    /// A user namespace mapping container ids `0..range.size` to `range.host..`.
    pub fn new(range: IdRange) -> Result<Self> {
        let here = Path::new("/proc/self/ns/user");
        let (ready_r, ready_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2", here))?;
        let (done_r, done_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2", here))?;
        // SAFETY: the child only makes async-signal-safe system calls (close, unshare, write,
        // read, _exit) and never returns into Rust code of the parent's threads.
        match unsafe { nix::unistd::fork() }.map_err(sys("fork", here))? {
            ForkResult::Child => {
                drop(ready_r);
                drop(done_w);
                let ok = nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok();
                let _ = nix::unistd::write(&ready_w, &[u8::from(ok)]);
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(&done_r, &mut b);
                // SAFETY: ends the forked child at once, without running the parent's exit
                // handlers or destructors.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                drop(ready_w);
                drop(done_r);
                let result = Self::adopt(child, &ready_r, range);
                // EOF on the done pipe ends the child.
                drop(done_w);
                let _ = waitpid(child, None);
                result
            }
        }
    }

    /// Writes the maps of the child's fresh namespace and opens it.
    fn adopt(child: nix::unistd::Pid, ready: &OwnedFd, range: IdRange) -> Result<Self> {
        let proc = PathBuf::from(format!("/proc/{child}"));
        let mut b = [0u8; 1];
        let n = nix::unistd::read(ready, &mut b).map_err(sys("read", &proc))?;
        if n != 1 || b[0] != 1 {
            return Err(Error::Sys {
                syscall: "unshare(CLONE_NEWUSER)",
                path: proc,
                errno: Errno::EPERM,
            });
        }
        for file in ["uid_map", "gid_map"] {
            let p = proc.join(file);
            std::fs::write(&p, range.map_line()).map_err(|error| Error::Io {
                op: "write",
                path: p.clone(),
                error,
            })?;
        }
        let ns = proc.join("ns/user");
        let file = File::open(&ns).map_err(|error| Error::Io {
            op: "open",
            path: ns.clone(),
            error,
        })?;
        Ok(Self {
            fd: file.into(),
            range,
        })
    }

    /// The mapping this namespace holds.
    pub fn range(&self) -> IdRange {
        self.range
    }

    /// Attaches at `target` (an existing directory) a clone of the directory `source` whose
    /// owners appear shifted by this namespace's mapping; detached when the guard drops.
    pub fn mount(&self, source: &Path, target: &Path) -> Result<IdmappedMount> {
        let src = cpath(source)?;
        let dst = cpath(target)?;
        let empty = c"";
        // SAFETY: `src` is a valid C string; open_tree returns a new fd or -1.
        let raw = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                src.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
            )
        };
        let raw = i32::try_from(Errno::result(raw).map_err(sys("open_tree", source))?)
            .map_err(|_| sys("open_tree", source)(Errno::EBADF))?;
        // SAFETY: open_tree returned a new descriptor that nothing else owns.
        let tree = unsafe { OwnedFd::from_raw_fd(raw) };
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: u64::try_from(self.fd.as_raw_fd()).unwrap_or(u64::MAX),
        };
        // SAFETY: `tree` is an open mount fd, `empty` a valid C string, `attr` a live
        // mount_attr of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        Errno::result(r).map_err(sys("mount_setattr(MOUNT_ATTR_IDMAP)", source))?;
        // SAFETY: `tree` is an open detached mount, `dst` and `empty` valid C strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        Errno::result(r).map_err(sys("move_mount", target))?;
        Ok(IdmappedMount {
            target: target.to_path_buf(),
        })
    }
}

/// An idmapped mount attached by [`UserNs::mount`]; detached (MNT_DETACH) on drop. Mounts
/// made from it (an overlay over it, a bind of it in a container) keep working.
#[derive(Debug)]
pub struct IdmappedMount {
    target: PathBuf,
}

impl IdmappedMount {
    /// Where it is attached.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for IdmappedMount {
    fn drop(&mut self) {
        // Best effort: a failure leaves a mount that nothing refers to any more.
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn owners_appear_shifted_through_the_mount() {
        if !nix::unistd::Uid::effective().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "idmapped mounts need root"
            );
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        std::fs::create_dir_all(&src).expect("src");
        std::fs::create_dir_all(&dst).expect("dst");
        std::fs::write(src.join("f"), b"x").expect("file");
        std::os::unix::fs::chown(src.join("f"), Some(7), Some(8)).expect("chown");
        let range = IdRange {
            host: 1_000_000,
            size: 65536,
        };
        let ns = UserNs::new(range).expect("userns");
        {
            let m = ns.mount(&src, &dst).expect("idmapped mount");
            let md = std::fs::metadata(m.path().join("f")).expect("stat");
            assert_eq!((md.uid(), md.gid()), (1_000_007, 1_000_008));
        }
        // Detached on drop; the source kept its owners.
        assert!(!dst.join("f").exists());
        let md = std::fs::metadata(src.join("f")).expect("stat");
        assert_eq!((md.uid(), md.gid()), (7, 8));
    }
}
