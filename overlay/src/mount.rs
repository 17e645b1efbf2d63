//! overlayfs mounts of snapshot chains, with the new mount API (`fsopen` + one `lowerdir+` per
//! layer, so there is no page-size limit on the layer count) and a classic `mount(2)` fallback.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};
use crate::image::Image;
use crate::store::Store;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// A writable layer on top of a mount: overlayfs upper and work dirs (same filesystem, both exist).
#[derive(Debug, Clone)]
pub struct Upper {
    /// Where changes go.
    pub upper: PathBuf,
    /// overlayfs scratch dir.
    pub work: PathBuf,
}

/// An overlay mount; unmounted (lazily) when dropped unless [`OverlayMount::keep`] is called.
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
    mounted: bool,
}

impl OverlayMount {
    /// The mount point.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts now, reporting failure.
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        unmount(&self.target)
    }

    /// Leaves it mounted after this value is gone; returns the mount point.
    pub fn keep(mut self) -> PathBuf {
        self.mounted = false;
        std::mem::take(&mut self.target)
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount2(&self.target, MntFlags::MNT_DETACH);
        }
    }
}

/// Unmounts an overlay (or any) mount point.
pub fn unmount(target: &Path) -> Result<()> {
    umount2(target, MntFlags::empty()).map_err(|errno| Error::Sys {
        syscall: "umount2",
        path: target.to_path_buf(),
        errno,
    })
}

impl Store {
    /// Mounts `image` at `target`: its snapshots (unpacked first if needed) as lower dirs,
    /// read-only, or writable through `upper`.
    pub fn mount_image(
        &self,
        image: &Image,
        target: &Path,
        upper: Option<&Upper>,
    ) -> Result<OverlayMount> {
        let mut lowers = self.prepare_snapshots(image)?;
        if lowers.len() < 2 && upper.is_none() {
            // overlayfs wants two lower dirs when there is no upper dir.
            lowers.insert(0, self.empty_snapshot()?);
        }
        if lowers.is_empty() {
            lowers.push(self.empty_snapshot()?);
        }
        mount_overlay(&lowers, upper, target)
    }
}

/// Mounts an overlay of `lowers` (bottom first) at `target`, read-only unless `upper` is given.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: Option<&Upper>,
    target: &Path,
) -> Result<OverlayMount> {
    match mount_new_api(lowers, upper, target) {
        Ok(()) => {}
        Err(NewApi::Unsupported) => mount_legacy(lowers, upper, target)?,
        Err(NewApi::Failed(e)) => return Err(e),
    }
    Ok(OverlayMount {
        target: target.to_path_buf(),
        mounted: true,
    })
}

enum NewApi {
    Unsupported,
    Failed(Error),
}

fn cstr(s: &[u8], target: &Path) -> std::result::Result<CString, NewApi> {
    CString::new(s).map_err(|_| {
        NewApi::Failed(Error::Mount {
            target: target.to_path_buf(),
            detail: "a path contains a NUL byte".into(),
        })
    })
}

fn mount_new_api(
    lowers: &[PathBuf],
    upper: Option<&Upper>,
    target: &Path,
) -> std::result::Result<(), NewApi> {
    let name = cstr(b"overlay", target)?;
    // SAFETY: name is a valid NUL-terminated string; fsopen returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if raw < 0 {
        return Err(match Errno::last() {
            Errno::ENOSYS => NewApi::Unsupported,
            e => NewApi::Failed(Error::Mount {
                target: target.to_path_buf(),
                detail: format!("fsopen: {e}"),
            }),
        });
    }
    // SAFETY: raw is a fresh fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let fail = |what: &str, errno: Errno| {
        NewApi::Failed(Error::Mount {
            target: target.to_path_buf(),
            detail: format!("{what}: {errno}{}", kernel_log(&fs)),
        })
    };
    let set = |key: &str, value: Option<&[u8]>| -> std::result::Result<(), (Errno, String)> {
        let k = CString::new(key).map_err(|_| (Errno::EINVAL, key.to_string()))?;
        let v = value
            .map(CString::new)
            .transpose()
            .map_err(|_| (Errno::EINVAL, key.to_string()))?;
        let (cmd, vp) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: fs is a live fs-context fd; k and v are NUL-terminated and outlive the call.
        let r =
            unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), vp, 0) };
        if r < 0 {
            return Err((
                Errno::last(),
                format!(
                    "fsconfig {key}={}",
                    String::from_utf8_lossy(value.unwrap_or_default())
                ),
            ));
        }
        Ok(())
    };
    for (i, l) in lowers.iter().rev().enumerate() {
        if let Err((errno, what)) = set("lowerdir+", Some(l.as_os_str().as_bytes())) {
            // A kernel without lowerdir+ (before 6.8) refuses the first one: fall back.
            if i == 0 && errno == Errno::EINVAL {
                return Err(NewApi::Unsupported);
            }
            return Err(fail(&what, errno));
        }
    }
    if let Some(u) = upper {
        for (key, p) in [("upperdir", &u.upper), ("workdir", &u.work)] {
            set(key, Some(p.as_os_str().as_bytes())).map_err(|(e, w)| fail(&w, e))?;
        }
    } else {
        set("ro", None).map_err(|(e, w)| fail(&w, e))?;
    }
    // SAFETY: fs is a live fs-context fd; key and value are unused by FSCONFIG_CMD_CREATE.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(fail("fsconfig create", Errno::last()));
    }
    let attrs = if upper.is_none() {
        MOUNT_ATTR_RDONLY
    } else {
        0
    };
    // SAFETY: fs is a created fs-context fd; fsmount returns a new mount fd or -1.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    if m < 0 {
        return Err(fail("fsmount", Errno::last()));
    }
    // SAFETY: m is a fresh fd that nothing else owns.
    let mfd = unsafe { OwnedFd::from_raw_fd(m as i32) };
    let to = cstr(target.as_os_str().as_bytes(), target)?;
    let empty = cstr(b"", target)?;
    // SAFETY: mfd is a live mount fd, empty and to are NUL-terminated strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mfd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(fail("move_mount", Errno::last()));
    }
    Ok(())
}

/// The kernel's messages queued on an fs-context fd (` (overlayfs: ...)`), or nothing.
fn kernel_log(fs: &OwnedFd) -> String {
    let mut file = std::fs::File::from(match fs.try_clone() {
        Ok(f) => f,
        Err(_) => return String::new(),
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Each read returns one message; the fd is not readable once the queue is empty (ENODATA).
    for _ in 0..8 {
        match file.read(&mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    if out.is_empty() {
        String::new()
    } else {
        format!(" ({})", out.join("; "))
    }
}

fn mount_legacy(lowers: &[PathBuf], upper: Option<&Upper>, target: &Path) -> Result<()> {
    let joined: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let mut data = format!("lowerdir={}", joined.join(":"));
    if let Some(u) = upper {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            u.upper.display(),
            u.work.display()
        ));
    }
    if data.len() >= 4096 {
        return Err(Error::Mount {
            target: target.to_path_buf(),
            detail: format!(
                "{} layers do not fit in one page of mount options and this kernel lacks lowerdir+",
                lowers.len()
            ),
        });
    }
    let flags = if upper.is_none() {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|errno| Error::Mount {
        target: target.to_path_buf(),
        detail: format!("mount: {errno}"),
    })
}
