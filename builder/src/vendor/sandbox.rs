//! Build-time `run` steps: a command chrooted into an overlay of the image's layers, in its own
//! mount, network (none), IPC and UTS namespaces, whose changes land in the upper directory.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, chroot, setgid, setgroups, setuid, Gid, Uid};

use super::error::{io_err, Result, VendorError};
use super::recipe::RunStep;
use super::setup::Users;

/// Where a run step's overlay lives.
#[derive(Debug)]
pub struct Overlay {
    /// Read-only layers, top first.
    pub lower: Vec<PathBuf>,
    /// Where changes go (becomes the layer).
    pub upper: PathBuf,
    /// overlayfs work dir (same filesystem as upper).
    pub work: PathBuf,
    /// Mount point.
    pub merged: PathBuf,
}

/// Runs `step` in the overlay; its stdout/stderr go to ours.
pub fn run(step: &RunStep, ov: &Overlay) -> Result<()> {
    let fail = |reason: String| VendorError::RunStep {
        args: step.args.clone(),
        reason,
    };
    for d in [&ov.work, &ov.merged] {
        std::fs::create_dir_all(d).map_err(io_err("mkdir", d))?;
    }
    let layers: Vec<&Path> = std::iter::once(ov.upper.as_path())
        .chain(ov.lower.iter().map(|p| p.as_path()))
        .collect();
    let (uid, gid, home) = Users::read(&layers)
        .lookup(&step.user)
        .ok_or_else(|| fail(format!("unknown user {:?}", step.user)))?;
    let lower = ov
        .lower
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        ov.upper.display(),
        ov.work.display()
    );
    let opts = CString::new(opts).map_err(|e| fail(e.to_string()))?;
    let merged = ov.merged.clone();
    let mut cmd = Command::new(&step.args[0]);
    cmd.args(&step.args[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", home)
        .env("LANG", "C.UTF-8");
    // SAFETY: the closure runs in the forked child before exec; it only makes syscalls (nix
    // wrappers) on data prepared before the fork and returns errors instead of panicking.
    unsafe {
        cmd.pre_exec(move || enter(&merged, &opts, uid, gid).map_err(std::io::Error::from));
    }
    let status = cmd
        .status()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    if !status.success() {
        return Err(fail(format!("exited with {status}")));
    }
    Ok(())
}

/// In the child: private namespaces, the overlay, /proc /dev /tmp /run, chroot, drop to the user.
fn enter(merged: &Path, opts: &CString, uid: u32, gid: u32) -> nix::Result<()> {
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS,
    )?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_c_str()),
    )?;
    mount(
        Some("proc"),
        &merged.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )?;
    for t in ["tmp", "run", "dev"] {
        mount(
            Some("tmpfs"),
            &merged.join(t),
            Some("tmpfs"),
            MsFlags::MS_NOSUID,
            Some("mode=1777"),
        )?;
    }
    let dev = merged.join("dev");
    for n in ["null", "zero", "full", "random", "urandom"] {
        let p = dev.join(n);
        std::fs::File::create(&p).map_err(|_| nix::Error::EIO)?;
        mount(
            Some(&Path::new("/dev").join(n)),
            &p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
    }
    std::fs::create_dir(dev.join("shm")).map_err(|_| nix::Error::EIO)?;
    chroot(merged)?;
    chdir("/")?;
    setgroups(&[])?;
    setgid(Gid::from_raw(gid))?;
    setuid(Uid::from_raw(uid))?;
    Ok(())
}
