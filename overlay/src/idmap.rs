//! Idmapped mounts: a directory shown elsewhere with its owners shifted by an id range, so
//! files owned by container ids on disk (the image's snapshots, volumes) appear owned by the
//! host ids a user namespace maps them to — without chowning a copy.
//!
//! The mapping comes from a user namespace: a short-lived child unshares CLONE_NEWUSER, its
//! uid and gid maps are written, its namespace is opened and the child ends. The mount is a
//! detached clone of the directory (open_tree(OPEN_TREE_CLONE)), given the mapping
//! (mount_setattr(MOUNT_ATTR_IDMAP)) and attached at the target (move_mount).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
        let open = |p: &Path, what: &'static str| {
            nix::fcntl::open(
                p,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(sys(what, p))
        };
        let src = open(source, "open")?;
        let dst = open(target, "open")?;
        let io_err = |call: &'static str, p: &Path| {
            let f = sys(call, p);
            move |e: std::io::Error| f(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
        };
        let tree =
            kiln_util::mount::clone_private(&src, false).map_err(io_err("open_tree", source))?;
        kiln_util::mount::idmap(&tree, &self.fd)
            .map_err(io_err("mount_setattr(MOUNT_ATTR_IDMAP)", source))?;
        kiln_util::mount::attach(&tree, &dst).map_err(io_err("move_mount", target))?;
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
