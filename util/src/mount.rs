//! The new mount API on fds: a detached copy of a mount tree (or a new filesystem) whose flags
//! are set before it is attached, and whose fd still names the mount once attached, so no path
//! is looked up again between making a mount and restricting it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

/// `OPEN_TREE_CLONE` (uapi/linux/mount.h).
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `MOVE_MOUNT_F_EMPTY_PATH`.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
/// `MOVE_MOUNT_T_EMPTY_PATH`.
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// `FSOPEN_CLOEXEC`.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
/// `FSCONFIG_SET_FLAG`.
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
/// `FSCONFIG_SET_STRING`.
const FSCONFIG_SET_STRING: libc::c_uint = 1;
/// `FSCONFIG_CMD_CREATE`.
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
/// `FSMOUNT_CLOEXEC`.
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// `MOUNT_ATTR_RDONLY`.
pub const ATTR_RDONLY: u64 = 0x01;
/// `MOUNT_ATTR_NOSUID`.
pub const ATTR_NOSUID: u64 = 0x02;
/// `MOUNT_ATTR_NODEV`.
pub const ATTR_NODEV: u64 = 0x04;
/// `MOUNT_ATTR_NOEXEC`.
pub const ATTR_NOEXEC: u64 = 0x08;
/// `MOUNT_ATTR__ATIME`: the atime mode field.
pub const ATTR_ATIME_MASK: u64 = 0x70;
/// `MOUNT_ATTR_NOATIME`.
pub const ATTR_NOATIME: u64 = 0x10;
/// `MOUNT_ATTR_STRICTATIME`.
pub const ATTR_STRICTATIME: u64 = 0x20;
/// `MOUNT_ATTR_NODIRATIME`.
pub const ATTR_NODIRATIME: u64 = 0x80;
/// `MOUNT_ATTR_IDMAP`.
pub const ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (uapi/linux/mount.h, version 0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The `MOUNT_ATTR_*` bits to set and clear for classic `MS_*` mount flags (rdonly, nosuid,
/// nodev, noexec, the atime modes); other flags are not mount attributes and are ignored.
pub fn attrs_of_flags(flags: libc::c_ulong) -> (u64, u64) {
    let mut set = 0;
    let mut clr = 0;
    for (ms, attr) in [
        (libc::MS_RDONLY, ATTR_RDONLY),
        (libc::MS_NOSUID, ATTR_NOSUID),
        (libc::MS_NODEV, ATTR_NODEV),
        (libc::MS_NOEXEC, ATTR_NOEXEC),
        (libc::MS_NODIRATIME, ATTR_NODIRATIME),
    ] {
        if flags & ms != 0 {
            set |= attr;
        }
    }
    let atime = if flags & libc::MS_NOATIME != 0 {
        Some(ATTR_NOATIME)
    } else if flags & libc::MS_STRICTATIME != 0 {
        Some(ATTR_STRICTATIME)
    } else if flags & libc::MS_RELATIME != 0 {
        Some(0)
    } else {
        None
    };
    if let Some(a) = atime {
        clr |= ATTR_ATIME_MASK;
        set |= a;
    }
    (set, clr)
}

/// A descriptor the kernel just returned (`rc` >= 0), or the error of a failed call.
fn owned(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = i32::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A new filesystem context of type `fstype` (fsopen(2)), to configure with [`fs_set`] and
/// mount with [`fs_mount`].
pub fn fs_open(fstype: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: fsopen(2) with a valid C string and flags; it returns a new fd or -1.
    owned(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
}

/// Sets option `key` of a filesystem context to `value`, or the flag `key` when `value` is
/// `None` (fsconfig(2) `FSCONFIG_SET_STRING` / `FSCONFIG_SET_FLAG`).
pub fn fs_set(fs: &impl AsRawFd, key: &CStr, value: Option<&CStr>) -> io::Result<()> {
    let (cmd, value) = match value {
        Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
        None => (FSCONFIG_SET_FLAG, std::ptr::null()),
    };
    fsconfig(fs, cmd, key.as_ptr(), value)
}

/// fsconfig(2) with raw key and value pointers (NULL or valid C strings).
fn fsconfig(
    fs: &impl AsRawFd,
    cmd: libc::c_uint,
    key: *const libc::c_char,
    value: *const libc::c_char,
) -> io::Result<()> {
    // SAFETY: fsconfig(2) on a caller-owned fs context; key and value are NULL or C strings
    // the callers keep alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key, value, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates the filesystem of a configured context and returns a detached mount of it with
/// the `MOUNT_ATTR_*` bits `attrs` (fsconfig `FSCONFIG_CMD_CREATE`, then fsmount(2)).
pub fn fs_mount(fs: &impl AsRawFd, attrs: u64) -> io::Result<OwnedFd> {
    fsconfig(fs, FSCONFIG_CMD_CREATE, std::ptr::null(), std::ptr::null())?;
    let attrs =
        libc::c_uint::try_from(attrs).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: fsmount(2) on a created fs context; it returns a new mount fd or -1.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

/// A detached copy of the mount tree at `fd` (the whole subtree when `recursive`).
pub fn clone_tree(fd: &impl AsRawFd, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree(2) on a caller-owned fd with an empty C string path; it returns a new
    // descriptor or -1 and reads nothing else.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) })
}

/// A detached copy of the mount tree at `fd`, like [`clone_tree`], made private (every mount
/// of it when `recursive`) before anyone can attach it: a plain clone of a shared mount joins
/// its peer group, so whatever is later mounted on the copy (wherever it is attached) would
/// propagate back to the original. For trees copied from the host's mount namespace.
pub fn clone_private(fd: &impl AsRawFd, recursive: bool) -> io::Result<OwnedFd> {
    let tree = clone_tree(fd, recursive)?;
    set_propagation(&tree, recursive, libc::MS_PRIVATE)?;
    Ok(tree)
}

/// Sets and clears `MOUNT_ATTR_*` bits on the mount at `fd` (and every mount below it when
/// `recursive`).
pub fn set_attrs(fd: &impl AsRawFd, recursive: bool, set: u64, clr: u64) -> io::Result<()> {
    setattr(
        fd,
        recursive,
        &MountAttr {
            attr_set: set,
            attr_clr: clr,
            propagation: 0,
            userns_fd: 0,
        },
    )
}

/// Sets the propagation of the mount at `fd` (and of every mount below it when `recursive`):
/// `propagation` is one of `MS_SHARED`, `MS_SLAVE`, `MS_PRIVATE`, `MS_UNBINDABLE`. On an fd
/// from [`clone_tree`] or [`fs_mount`] that was attached, this changes the attached mount.
pub fn set_propagation(fd: &impl AsRawFd, recursive: bool, propagation: u64) -> io::Result<()> {
    setattr(
        fd,
        recursive,
        &MountAttr {
            attr_set: 0,
            attr_clr: 0,
            propagation,
            userns_fd: 0,
        },
    )
}

/// Makes the detached mount at `fd` idmapped with the mapping of the user namespace `userns`.
pub fn idmap(fd: &impl AsRawFd, userns: &impl AsRawFd) -> io::Result<()> {
    let userns_fd =
        u64::try_from(userns.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    setattr(
        fd,
        false,
        &MountAttr {
            attr_set: ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd,
        },
    )
}

/// mount_setattr(2) on `fd` itself.
fn setattr(fd: &impl AsRawFd, recursive: bool, attr: &MountAttr) -> io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: mount_setattr(2) on a caller-owned fd, an empty C string path and a mount_attr
    // of the size passed, all alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches the detached tree `tree` onto the file or directory `target` is open on.
pub fn attach(tree: &impl AsRawFd, target: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: move_mount(2) between two caller-owned fds with empty C string paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_flags_map_to_mount_attrs() {
        let (set, clr) = attrs_of_flags(libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOATIME);
        assert_eq!(set, ATTR_RDONLY | ATTR_NOSUID | ATTR_NOATIME);
        assert_eq!(clr, ATTR_ATIME_MASK);
        assert_eq!(attrs_of_flags(libc::MS_BIND | libc::MS_REC), (0, 0));
    }
}
