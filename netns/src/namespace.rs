//! Named network namespaces: created and entered only on disposable threads, kept alive by a
//! bind mount of the namespace file at a path, removed by unmounting it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::NetError;
use crate::netlink::{Netlink, LOOPBACK_INDEX};

/// A service's namespace, held open, with a netlink socket inside it.
pub(crate) struct Netns {
    /// The service it belongs to.
    pub service: String,
    /// The namespace file, open (for moving links into it).
    pub file: File,
    /// A netlink socket inside the namespace.
    pub nl: Netlink,
}

impl Netns {
    /// Creates a namespace at `path` with `lo` up. Moves the calling thread into it: call it
    /// only on a worker thread (see [`on_worker`]).
    pub(crate) fn create(service: &str, path: &Path) -> Result<Self, NetError> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| NetError::io("creating netns file", path, e))?;
        let made = unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::sys("unshare(CLONE_NEWNET)", service, e))
            .and_then(|()| {
                mount(
                    Some("/proc/thread-self/ns/net"),
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| NetError::sys("bind-mounting netns", path.display().to_string(), e))
            })
            .and_then(|()| Self::open_here(service, path))
            .and_then(|mut ns| {
                ns.nl
                    .set_up(LOOPBACK_INDEX)
                    .map_err(|e| NetError::netlink("set lo up", service, e))?;
                every_port_unprivileged()?;
                Ok(ns)
            });
        if made.is_err() {
            // Best effort: the error that stopped creation is the one to report.
            let _ = remove(path);
        }
        made
    }

    /// Enters the namespace at `path`. Moves the calling thread into it: call it only on a
    /// worker thread (see [`on_worker`]).
    pub(crate) fn enter(service: &str, path: &Path) -> Result<Self, NetError> {
        let file = File::open(path).map_err(|e| NetError::io("opening netns", path, e))?;
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::sys("setns(CLONE_NEWNET)", path.display().to_string(), e))?;
        // A namespace made before kiln set this gets it on the next apply.
        every_port_unprivileged()?;
        Self::open_here(service, path)
    }

    /// Opens the namespace file and a netlink socket in the thread's current namespace.
    fn open_here(service: &str, path: &Path) -> Result<Self, NetError> {
        let file = File::open(path).map_err(|e| NetError::io("opening netns", path, e))?;
        let nl = Netlink::open().map_err(|e| NetError::netlink("open socket", service, e))?;
        Ok(Self {
            service: service.to_string(),
            file,
            nl,
        })
    }
}

/// `net.ipv4.ip_unprivileged_port_start`, per network namespace (IPv6 binds obey it too).
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// Lets any process of the calling thread's network namespace bind any port, as Docker does
/// for a container's namespace: a service in a user namespace has no `CAP_NET_BIND_SERVICE`
/// over its network namespace (the host's user namespace owns it, and the container's own
/// sysctl writes are refused for the same reason), so it could not bind port 80 otherwise.
/// The namespace holds one service only, and the host's namespace is not changed.
fn every_port_unprivileged() -> Result<(), NetError> {
    std::fs::write(UNPRIVILEGED_PORT_START, "0")
        .map_err(|e| NetError::io("writing", UNPRIVILEGED_PORT_START, e))
}

/// Unmounts every mount stacked on `path` and removes the file; absent is fine.
pub(crate) fn remove(path: &Path) -> Result<(), NetError> {
    loop {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => break,
            Err(e) => {
                return Err(NetError::sys(
                    "umount2(MNT_DETACH)",
                    path.display().to_string(),
                    e,
                ))
            }
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(NetError::io("removing netns file", path, e))
        }
        _ => Ok(()),
    }
}

/// Runs `f` on a new thread that may change namespaces freely and then ends.
pub(crate) fn on_worker<T: Send>(
    f: impl FnOnce() -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    std::thread::scope(|s| s.spawn(f).join().unwrap_or(Err(NetError::WorkerPanicked)))
}

/// Runs `f` inside the network namespace at `path`, on a thread of its own, and returns what
/// it returns: sockets it opens belong to that namespace. The caller's thread never moves.
pub fn with_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetError> {
    std::thread::scope(|s| {
        let worker = s.spawn(|| -> Result<T, NetError> {
            let file = File::open(path).map_err(|e| NetError::io("opening netns", path, e))?;
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetError::sys("setns(CLONE_NEWNET)", path.display().to_string(), e))?;
            Ok(f())
        });
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
