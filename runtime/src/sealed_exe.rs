//! CVE-2019-5736: a process that enters a container must never have a writable host binary as
//! its `/proc/self/exe`, or the container can rewrite kiln through it (an entrypoint
//! `#!/proc/self/exe` makes the kernel load kiln again, with the container's loader).
//!
//! [`ensure`] re-executes kiln from a read-only copy before it can clone a container init or
//! an exec helper: a detached overlayfs mount (no upper layer, so its superblock is read-only
//! and no remount can make it writable) whose lower layers are kiln's directory and an empty
//! tmpfs, exec'd by fd (`execveat(AT_EMPTY_PATH)`), as runc 1.2 does. Where overlayfs or the
//! new mount API is missing, kiln copies itself into a sealed memfd instead (runc 1.1). The
//! runtime refuses to clone ([`check`]) from a process whose exe is still writable.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, SealFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// The environment variable naming the host path of the kiln binary after the re-exec.
pub const HOST_EXE_ENV: &str = "_KILN_HOST_EXE";

/// The environment variable naming the pid of the child that holds the sealed copy's mount
/// fds across the re-exec (see [`reap_closer`]).
const CLOSER_ENV: &str = "_KILN_SEAL_CLOSER";
/// Seals that make a memfd immutable.
const SEALS: SealFlag = SealFlag::F_SEAL_SEAL
    .union(SealFlag::F_SEAL_SHRINK)
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_WRITE);

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens kiln's binary through a fresh, detached, read-only overlayfs mount of its directory;
/// also returns the two detached mounts' fds (closing them dissolves the mounts, which waits an
/// RCU grace period: [`ensure`] leaves that to a child).
fn overlay_copy(exe: &Path) -> io::Result<(OwnedFd, [OwnedFd; 2])> {
    use kiln_util::mount::{fs_mount, fs_open, fs_set, ATTR_NODEV, ATTR_NOSUID, ATTR_RDONLY};
    let dir = exe
        .parent()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let name = exe
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    // overlayfs without an upper layer needs two lower layers: the second is an empty tmpfs.
    let empty = fs_mount(&fs_open(c"tmpfs")?, ATTR_RDONLY)?;
    let ovl = fs_open(c"overlay")?;
    let lower = cstring(dir.as_os_str().as_bytes())?;
    fs_set(&ovl, c"lowerdir+", Some(&lower))?;
    let empty_path = cstring(format!("/proc/self/fd/{}", empty.as_raw_fd()).as_bytes())?;
    fs_set(&ovl, c"lowerdir+", Some(&empty_path))?;
    fs_set(&ovl, c"ro", None)?;
    let mnt = fs_mount(&ovl, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV)?;
    let name = cstring(name.as_bytes())?;
    let file = nix::fcntl::openat(
        mnt.as_fd(),
        name.as_c_str(),
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok((file, [mnt, empty]))
}

/// Hands `mounts` to a child that closes them once this process has exec'd (its end of a
/// close-on-exec pipe is gone), so the RCU wait of dissolving them is not on kiln's way.
/// Returns the child's pid and the pipe end to keep until the exec; `None` (the mounts are
/// closed here) when the process has other threads and must not fork.
fn spawn_closer(mounts: [OwnedFd; 2]) -> Option<(libc::pid_t, OwnedFd)> {
    if crate::sys::thread_count().ok() != Some(1) {
        return None;
    }
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok()?;
    // SAFETY: the process is single-threaded (checked above), so the child holds no lock of
    // another thread; it only closes descriptors, reads a pipe and exits, without allocating.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let keep = [mounts[0].as_raw_fd(), mounts[1].as_raw_fd(), r.as_raw_fd()];
            // Nothing else of the caller's (a pipe it waits on for EOF) stays open here.
            let _ = crate::sys::close_fds_from(0, &keep);
            let mut b = [0u8; 1];
            // EOF: the parent exec'd (or gave up and closed its end).
            let _ = nix::unistd::read(&r, &mut b);
            drop(mounts);
            crate::sys::exit_now(0)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => Some((child.as_raw(), w)),
        Err(_) => None,
    }
}

/// Reaps the child that closed the sealed copy's mounts after the re-exec (its pid comes in
/// the environment); kiln calls it before it exits. Waiting for a pid that is not a child of
/// this process returns at once.
pub fn reap_closer() {
    let Some(pid) = std::env::var(CLOSER_ENV)
        .ok()
        .and_then(|p| p.parse::<libc::pid_t>().ok())
    else {
        return;
    };
    let _ = crate::sys::waitpid(pid, 0);
}

/// Copies the running binary into a memfd and seals it against any change.
fn memfd_copy() -> io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let mut src = File::open("/proc/self/exe")?;
    let fd = memfd_create(c"kiln", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut dst = File::from(fd);
    // std copies file to file inside the kernel (copy_file_range / sendfile).
    io::copy(&mut src, &mut dst)?;
    nix::fcntl::fcntl(&dst, FcntlArg::F_ADD_SEALS(SEALS))?;
    Ok(OwnedFd::from(dst))
}

/// Whether the running binary cannot be written through `/proc/self/exe`: a fully sealed
/// memfd or a file on a read-only overlayfs superblock.
pub fn is_sealed() -> bool {
    use nix::sys::statfs::{fstatfs, OVERLAYFS_SUPER_MAGIC};
    use nix::sys::statvfs::{fstatvfs, FsFlags};
    let Ok(f) = File::open("/proc/self/exe") else {
        return false;
    };
    if nix::fcntl::fcntl(&f, FcntlArg::F_GET_SEALS)
        .is_ok_and(|s| SealFlag::from_bits_truncate(s).contains(SEALS))
    {
        return true;
    }
    fstatfs(&f).is_ok_and(|st| st.filesystem_type() == OVERLAYFS_SUPER_MAGIC)
        && fstatvfs(&f).is_ok_and(|v| v.flags().contains(FsFlags::ST_RDONLY))
}

/// Fails with a typed error unless the running binary is sealed (see [`ensure`]).
pub fn check() -> Result<()> {
    if is_sealed() {
        Ok(())
    } else {
        Err(Error::UnsealedExe)
    }
}

/// The host path of the kiln binary (for spawning kiln helpers): after the re-exec,
/// `/proc/self/exe` names the sealed copy, so the original path travels in [`HOST_EXE_ENV`].
pub fn host_exe() -> io::Result<PathBuf> {
    match std::env::var_os(HOST_EXE_ENV) {
        Some(p) if is_sealed() => Ok(PathBuf::from(p)),
        _ => std::env::current_exe(),
    }
}

/// Re-executes the current program (same argv and environment) from a read-only copy unless it
/// already runs from one. Returns only when already sealed, or with the error that stopped it.
pub fn ensure() -> Result<()> {
    if is_sealed() {
        return Ok(());
    }
    let fail = |e: io::Error| Error::Sys {
        step: "re-executing kiln from a sealed copy of its binary".into(),
        errno: e,
    };
    let exe = std::fs::read_link("/proc/self/exe").map_err(fail)?;
    let (fd, mounts) = match overlay_copy(&exe) {
        Ok((fd, mounts)) if same_file(&fd, &exe) => (fd, Some(mounts)),
        _ => (memfd_copy().map_err(fail)?, None),
    };
    let closer = mounts.and_then(spawn_closer);
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<_>>()
        .map_err(fail)?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != HOST_EXE_ENV && k != CLOSER_ENV)
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstring(&kv)
        })
        .collect::<io::Result<_>>()
        .map_err(fail)?;
    let mut host = OsString::from(format!("{HOST_EXE_ENV}=")).into_vec();
    host.extend(exe.as_os_str().as_bytes());
    envp.push(cstring(&host).map_err(fail)?);
    if let Some((pid, _)) = &closer {
        envp.push(cstring(format!("{CLOSER_ENV}={pid}").as_bytes()).map_err(fail)?);
    }
    let e = crate::sys::execveat_fd(&fd, &argv, &envp);
    if let Some((pid, pipe)) = closer {
        drop(pipe);
        let _ = crate::sys::waitpid(pid, 0);
    }
    Err(fail(e))
}

/// Whether `fd` (the copy) is the same binary as `exe` (size and modification time).
fn same_file(fd: &OwnedFd, exe: &Path) -> bool {
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    match (std::fs::metadata(path), std::fs::metadata("/proc/self/exe")) {
        (Ok(a), Ok(b)) => a.size() == b.size() && a.mtime() == b.mtime() && exe.is_absolute(),
        _ => false,
    }
}
