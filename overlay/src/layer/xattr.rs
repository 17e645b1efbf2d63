//! Extended attributes on paths (never following symlinks) and on open files.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

/// The overlayfs xattr that marks an upper directory opaque.
pub(crate) const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::BadSource {
        path: path.to_path_buf(),
        reason: "path contains a NUL byte".into(),
    })
}

fn errno_err(syscall: &'static str, path: &Path) -> Error {
    Error::Sys {
        syscall,
        path: path.to_path_buf(),
        errno: nix::errno::Errno::last(),
    }
}

/// Reads one xattr of `path` itself; `None` when it is not set or xattrs are unsupported.
pub(crate) fn get(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|_| Error::BadSource {
        path: path.to_path_buf(),
        reason: format!("xattr name {name:?} contains NUL"),
    })?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: p and n are valid NUL-terminated strings; buf is writable for buf.len() bytes.
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        match nix::errno::Errno::last() {
            nix::errno::Errno::ENODATA | nix::errno::Errno::ENOTSUP => return Ok(None),
            nix::errno::Errno::ERANGE => buf.resize(buf.len() * 4, 0),
            _ => return Err(errno_err("lgetxattr", path)),
        }
    }
}

/// Lists the xattr names of `path` itself, sorted.
pub(crate) fn list(path: &Path) -> Result<Vec<String>> {
    let p = cpath(path)?;
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: p is a valid NUL-terminated string; buf is writable for buf.len() bytes.
        let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            break r as usize;
        }
        match nix::errno::Errno::last() {
            nix::errno::Errno::ENOTSUP => return Ok(Vec::new()),
            nix::errno::Errno::ERANGE => buf.resize(buf.len() * 4, 0),
            _ => return Err(errno_err("llistxattr", path)),
        }
    };
    let mut names: Vec<String> = buf[..len]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Sets an xattr on an open file or directory; `path` is only used in the error.
pub(crate) fn set_fd(fd: BorrowedFd<'_>, name: &str, value: &[u8], path: &Path) -> Result<()> {
    let n = CString::new(name).map_err(|_| Error::BadSource {
        path: path.to_path_buf(),
        reason: format!("xattr name {name:?} contains NUL"),
    })?;
    // SAFETY: fd is a live descriptor, n is NUL-terminated, value is readable for its length.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(errno_err("fsetxattr", path));
    }
    Ok(())
}
