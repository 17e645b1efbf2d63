//! The container's root filesystem: config mounts in order, devices, /dev links, pivot_root,
//! masked and read-only paths, root propagation and read-only root.

use std::fs;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use crate::error::{Ctx, Error, Result};
use crate::sys;

/// Parsed `options` of a config mount.
#[derive(Default, Debug)]
pub struct MountOpts {
    /// mount(2) flags (without propagation).
    pub flags: libc::c_ulong,
    /// flags explicitly cleared (e.g. "rw", "suid").
    pub cleared: libc::c_ulong,
    /// Propagation flags to apply after mounting, in order.
    pub propagation: Vec<libc::c_ulong>,
    /// Filesystem-specific options passed as data.
    pub data: Vec<String>,
    /// Whether this is a bind mount.
    pub bind: bool,
}

/// Parses OCI/fstab-style mount options.
pub fn parse_options(opts: &[String]) -> MountOpts {
    let mut o = MountOpts::default();
    for opt in opts {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match opt.as_str() {
            "defaults" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                (libc::MS_BIND, 0)
            }
            "rbind" => {
                o.bind = true;
                (libc::MS_BIND | libc::MS_REC, 0)
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                o.propagation.push(propagation_flag(opt).unwrap_or(0));
                (0, 0)
            }
            // Options kiln accepts and does not need (runc's copy-up, idmapped mounts).
            "tmpcopyup" | "idmap" | "ridmap" => (0, 0),
            other => {
                o.data.push(other.to_string());
                (0, 0)
            }
        };
        o.flags = (o.flags | set) & !clear;
        o.cleared |= clear;
    }
    o
}

/// The mount(2) flag for a propagation name ("rslave", "private" ...).
pub fn propagation_flag(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// Joins `path` under `root`, resolving symlinks as if `root` were `/` (no escape via `..` or
/// absolute links). Components that do not exist yet are appended as they are.
pub fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut links = 0;
    while let Some(p) = pending.pop() {
        let comps: Vec<Component> = p.components().collect();
        for (i, c) in comps.iter().enumerate() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if out != root {
                        out.pop();
                    }
                }
                Component::Normal(name) => {
                    let next = out.join(name);
                    match fs::read_link(&next) {
                        Ok(target) if links < 40 => {
                            links += 1;
                            if target.is_absolute() {
                                out = root.to_path_buf();
                            }
                            let rest: PathBuf = comps[i + 1..].iter().collect();
                            pending.push(rest);
                            pending.push(target);
                            break;
                        }
                        _ => out = next,
                    }
                }
            }
        }
    }
    out
}

/// Makes `/` a slave (or what the config asks), and bind-mounts the rootfs onto itself so it can
/// become the new root.
pub fn prepare_root(rootfs: &Path, propagation: Option<&str>) -> Result<()> {
    // A shared or unbindable root cannot be pivoted into: those are applied after pivot_root.
    let flag = match propagation {
        Some("private" | "rprivate") => libc::MS_PRIVATE | libc::MS_REC,
        _ => libc::MS_SLAVE | libc::MS_REC,
    };
    sys::mount(None, Path::new("/"), None, flag, None).at("setting propagation of", "/")?;
    sys::mount(
        Some(rootfs),
        rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .at("bind-mounting rootfs onto itself", rootfs)
}

/// What a mount needs to know about the container.
pub struct MountCtx<'a> {
    /// Absolute rootfs path (before pivot).
    pub rootfs: &'a Path,
    /// Bundle dir (relative bind sources are relative to it).
    pub bundle: &'a Path,
    /// The container's cgroup path, for `cgroup` mounts.
    pub cgroup: Option<&'a str>,
    /// Whether the container has its own user namespace.
    pub userns: bool,
}

/// Mounts one config entry under the rootfs.
pub fn mount_one(m: &Mount, ctx: &MountCtx) -> Result<()> {
    let dest = resolve_in_root(ctx.rootfs, m.destination());
    let o = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let bind = o.bind || typ == "bind";
    let data = o.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if bind {
        let src = m.source().as_ref().ok_or_else(|| {
            Error::Config(format!("bind mount {:?} has no source", m.destination()))
        })?;
        let src = if src.is_absolute() {
            src.clone()
        } else {
            ctx.bundle.join(src)
        };
        let md = fs::metadata(&src).at("stat bind source", &src)?;
        make_target(&dest, md.is_dir())?;
        let base = libc::MS_BIND | (o.flags & libc::MS_REC);
        sys::mount(Some(&src), &dest, None, base, None)
            .at(format!("bind-mounting {} on", src.display()), &dest)?;
        let extra = o.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
        if extra != 0 {
            let locked = if ctx.userns { locked_flags(&dest) } else { 0 };
            sys::mount(
                None,
                &dest,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | extra | locked,
                None,
            )
            .at("remounting bind mount with its flags", &dest)?;
        }
    } else if typ == "cgroup" {
        crate::cgroups::mount_view(&dest, o.flags, ctx.cgroup)?;
    } else {
        make_target(&dest, true)?;
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let r = sys::mount(Some(&src), &dest, Some(typ), o.flags, data);
        match r {
            // mqueue and sysfs can be refused in a user namespace: bind the host's instead.
            Err(e)
                if ctx.userns
                    && e.raw_os_error() == Some(libc::EPERM)
                    && (typ == "sysfs" || typ == "mqueue") =>
            {
                let host = if typ == "sysfs" {
                    "/sys"
                } else {
                    "/dev/mqueue"
                };
                sys::mount(
                    Some(Path::new(host)),
                    &dest,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .at(format!("bind-mounting host {host} on"), &dest)?;
            }
            r => r.at(format!("mounting {typ} on"), &dest)?,
        }
    }
    for p in &o.propagation {
        sys::mount(None, &dest, None, *p, None).at("setting propagation of", &dest)?;
    }
    Ok(())
}

/// Flags of the mount at `p` that an unprivileged remount may not clear.
fn locked_flags(p: &Path) -> libc::c_ulong {
    let c = match sys::cpath(p) {
        Ok(c) => c,
        Err(_) => return 0,
    };
    // SAFETY: an all-zero statvfs is a valid out buffer; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let f = st.f_flag;
    let mut out = 0;
    for (st_flag, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            out |= ms;
        }
    }
    out
}

/// Creates a mount target: a directory, or an empty file for a file bind mount.
fn make_target(dest: &Path, dir: bool) -> Result<()> {
    if dir {
        return fs::create_dir_all(dest).at("creating mount point", dest);
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).at("creating mount point parent", parent)?;
    }
    if !dest.exists() {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(dest)
            .at("creating mount point file", dest)?;
    }
    Ok(())
}

/// The default devices every container gets: (name, major, minor).
const DEFAULT_DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Creates the default devices, the configured ones, and /dev's standard symlinks.
pub fn setup_dev(rootfs: &Path, devices: &[LinuxDevice], userns: bool) -> Result<()> {
    let dev = resolve_in_root(rootfs, Path::new("/dev"));
    fs::create_dir_all(&dev).at("creating", &dev)?;
    for &(name, major, minor) in DEFAULT_DEVICES {
        if devices
            .iter()
            .any(|d| d.path() == &Path::new("/dev").join(name))
        {
            continue;
        }
        let p = dev.join(name);
        make_device(&p, libc::S_IFCHR | 0o666, major, minor, 0, 0, userns)?;
    }
    for d in devices {
        let p = resolve_in_root(rootfs, d.path());
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::Config(format!(
                    "device {:?} has type 'a', which only device cgroup rules may use",
                    d.path()
                )))
            }
        };
        let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
        make_device(
            &p,
            kind | mode,
            d.major() as u32,
            d.minor() as u32,
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
            userns,
        )?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        let p = dev.join(link);
        if link == "ptmx" {
            // Replace a ptmx node (e.g. from the image) with the link into this devpts.
            if fs::symlink_metadata(&p).is_ok_and(|m| !m.file_type().is_symlink()) {
                let _ = fs::remove_file(&p);
            }
        }
        match symlink(target, &p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).at(format!("linking {target} at"), &p),
        }
    }
    Ok(())
}

/// Makes one device node (mknod; in a user namespace, a bind mount of the host's node).
fn make_device(
    p: &Path,
    mode: libc::mode_t,
    major: u32,
    minor: u32,
    uid: u32,
    gid: u32,
    userns: bool,
) -> Result<()> {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).at("creating", parent)?;
    }
    if userns {
        let host = Path::new("/dev").join(p.file_name().unwrap_or_default());
        make_target(p, false)?;
        return sys::mount(Some(&host), p, None, libc::MS_BIND, None).at(
            format!("bind-mounting host device {} on", host.display()),
            p,
        );
    }
    let _ = fs::remove_file(p);
    sys::mknod(p, mode, libc::makedev(major, minor)).at("mknod", p)?;
    // mknod's mode is filtered by the umask: set it exactly.
    let c = sys::cpath(p).at("chmod", p)?;
    // SAFETY: valid C string.
    if unsafe { libc::chmod(c.as_ptr(), mode & 0o7777) } != 0 {
        return Err(std::io::Error::last_os_error()).at("chmod", p);
    }
    sys::lchown(p, uid, gid).at("chown", p)
}

/// Makes `rootfs` the root: pivot_root, then detach the old root.
pub fn pivot(rootfs: &Path) -> Result<()> {
    let flags = libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC;
    let old = sys::open(Path::new("/"), flags, 0).at("opening", "/")?;
    let new = sys::open(rootfs, flags, 0).at("opening", rootfs)?;
    sys::fchdir(&new).at("chdir", rootfs)?;
    sys::pivot_root(Path::new("."), Path::new(".")).at("pivot_root to", rootfs)?;
    sys::fchdir(&old).at("chdir to old root", "/")?;
    sys::mount(
        None,
        Path::new("."),
        None,
        libc::MS_SLAVE | libc::MS_REC,
        None,
    )
    .at("making old root a slave", "/")?;
    sys::umount2(Path::new("."), libc::MNT_DETACH).at("detaching old root", "/")?;
    std::env::set_current_dir("/").at("chdir", "/")
}

/// `--no-pivot`: move the rootfs mount over `/` and chroot into it.
pub fn move_root(rootfs: &Path) -> Result<()> {
    std::env::set_current_dir(rootfs).at("chdir", rootfs)?;
    sys::mount(Some(rootfs), Path::new("/"), None, libc::MS_MOVE, None)
        .at("moving rootfs to /", rootfs)?;
    sys::chroot(Path::new(".")).at("chroot", rootfs)?;
    std::env::set_current_dir("/").at("chdir", "/")
}

/// Hides each path: /dev/null over files, an empty read-only tmpfs over directories.
pub fn mask_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        let md = match fs::metadata(path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let r = if md.is_dir() {
            sys::mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                libc::MS_RDONLY,
                None,
            )
        } else {
            sys::mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                libc::MS_BIND,
                None,
            )
        };
        r.at("masking", path)?;
    }
    Ok(())
}

/// Bind-mounts each path read-only onto itself.
pub fn readonly_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        sys::mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None)
            .at("bind-mounting read-only path", path)?;
        remount_ro(path)?;
    }
    Ok(())
}

/// Remounts the mount at `p` read-only, keeping its other (possibly locked) flags.
pub fn remount_ro(p: &Path) -> Result<()> {
    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | locked_flags(p);
    sys::mount(None, p, None, flags, None).at("remounting read-only", p)
}

/// Applies rootfsPropagation to the new `/` (after pivot_root).
pub fn set_root_propagation(name: &str) -> Result<()> {
    let flag = propagation_flag(name).ok_or_else(|| {
        Error::Config(format!(
            "rootfsPropagation {name:?} is not a propagation mode"
        ))
    })?;
    sys::mount(None, Path::new("/"), None, flag, None).at(format!("making / {name}"), "/")
}
