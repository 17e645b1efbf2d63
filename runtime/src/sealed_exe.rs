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

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The environment variable naming the host path of the kiln binary after the re-exec.
pub const HOST_EXE_ENV: &str = "_KILN_HOST_EXE";

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
/// Seals that make a memfd immutable.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn owned(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `rc` is a descriptor the kernel just returned to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

fn fsopen(fstype: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: fsopen(2) with a valid C string and flags.
    owned(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
}

fn fsconfig(
    fs: &OwnedFd,
    cmd: libc::c_uint,
    key: Option<&CStr>,
    value: Option<&CStr>,
) -> io::Result<()> {
    let p = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: fsconfig(2) on our fs context with NULL or valid C strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            p(key),
            p(value),
            0 as libc::c_int,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn fsmount(fs: &OwnedFd, attrs: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: fsmount(2) on a created fs context; the result is a new mount fd.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

/// Opens kiln's binary through a fresh, detached, read-only overlayfs mount of its directory.
fn overlay_copy(exe: &Path) -> io::Result<OwnedFd> {
    let dir = exe
        .parent()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let name = exe
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    // overlayfs without an upper layer needs two lower layers: the second is an empty tmpfs.
    let tmpfs = fsopen(c"tmpfs")?;
    fsconfig(&tmpfs, FSCONFIG_CMD_CREATE, None, None)?;
    let empty = fsmount(&tmpfs, MOUNT_ATTR_RDONLY)?;
    let ovl = fsopen(c"overlay")?;
    let lower = cstring(dir.as_os_str().as_bytes())?;
    fsconfig(&ovl, FSCONFIG_SET_STRING, Some(c"lowerdir+"), Some(&lower))?;
    let empty_path = cstring(format!("/proc/self/fd/{}", empty.as_raw_fd()).as_bytes())?;
    fsconfig(
        &ovl,
        FSCONFIG_SET_STRING,
        Some(c"lowerdir+"),
        Some(&empty_path),
    )?;
    fsconfig(&ovl, FSCONFIG_SET_FLAG, Some(c"ro"), None)?;
    fsconfig(&ovl, FSCONFIG_CMD_CREATE, None, None)?;
    let mnt = fsmount(
        &ovl,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )?;
    let name = cstring(name.as_bytes())?;
    // SAFETY: openat(2) relative to our mount fd with a valid C string.
    owned(unsafe {
        libc::openat(
            mnt.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
        .into()
    })
}

/// Copies the running binary into a memfd and seals it against any change.
fn memfd_copy() -> io::Result<OwnedFd> {
    let src = File::open("/proc/self/exe")?;
    let len = src.metadata()?.len();
    // SAFETY: memfd_create(2) with a valid C string and flags.
    let fd = owned(unsafe {
        libc::memfd_create(
            c"kiln".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
        .into()
    })?;
    let mut copied = 0u64;
    while copied < len {
        // SAFETY: sendfile(2) between two fds we hold; the kernel advances the file offsets.
        let n = unsafe {
            libc::sendfile(
                fd.as_raw_fd(),
                src.as_raw_fd(),
                std::ptr::null_mut(),
                (len - copied) as usize,
            )
        };
        match n {
            n if n > 0 => copied += n as u64,
            0 => return Err(io::Error::from_raw_os_error(libc::EIO)),
            _ => return Err(io::Error::last_os_error()),
        }
    }
    // SAFETY: fcntl(2) adding seals to our memfd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Whether the running binary cannot be written through `/proc/self/exe`: a fully sealed
/// memfd or a file on a read-only overlayfs superblock.
pub fn is_sealed() -> bool {
    let Ok(f) = File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS on an fd we hold; it takes no argument.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & SEALS == SEALS {
        return true;
    }
    // SAFETY: an all-zero statfs is a valid out buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs(2) fills `st` for an fd we hold.
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    if st.f_type != libc::OVERLAYFS_SUPER_MAGIC {
        return false;
    }
    // SAFETY: an all-zero statvfs is a valid out buffer.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs(3) fills `vfs` for an fd we hold.
    let rc = unsafe { libc::fstatvfs(f.as_raw_fd(), &mut vfs) };
    rc == 0 && vfs.f_flag & libc::ST_RDONLY != 0
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
    let fd = match overlay_copy(&exe) {
        Ok(fd) if same_file(&fd, &exe) => fd,
        _ => memfd_copy().map_err(fail)?,
    };
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<_>>()
        .map_err(fail)?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != HOST_EXE_ENV)
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
    Err(fail(crate::sys::execveat_fd(&fd, &argv, &envp)))
}

/// Whether `fd` (the copy) is the same binary as `exe` (size and modification time).
fn same_file(fd: &OwnedFd, exe: &Path) -> bool {
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    match (std::fs::metadata(path), std::fs::metadata("/proc/self/exe")) {
        (Ok(a), Ok(b)) => a.size() == b.size() && a.mtime() == b.mtime() && exe.is_absolute(),
        _ => false,
    }
}
