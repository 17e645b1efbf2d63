//! The new mount API on fds: a detached copy of a mount tree whose flags are set before it is
//! attached, so no path is looked up again between making a mount and restricting it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

/// `OPEN_TREE_CLONE` (uapi/linux/mount.h).
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `MOVE_MOUNT_F_EMPTY_PATH`.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
/// `MOVE_MOUNT_T_EMPTY_PATH`.
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

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

/// A detached copy of the mount tree at `fd` (the whole subtree when `recursive`).
pub fn clone_tree(fd: &impl AsRawFd, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree(2) on a caller-owned fd with an empty C string path; it returns a new
    // descriptor or -1 and reads nothing else.
    let rc = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = i32::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
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
