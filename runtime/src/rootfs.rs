//! The container's root filesystem: config mounts in order, devices, /dev links, pivot_root,
//! masked and read-only paths, root propagation and read-only root.

mod inroot;

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, mknodat, umask, Mode, SFlag};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};
use nix::sys::statvfs::{fstatvfs, FsFlags};
use nix::unistd::{fchdir, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

pub use inroot::{fd_path, Root};

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
    /// The detached host sysfs from `host_sys_fallback`, taken by the first `sysfs` mount
    /// that cannot be made.
    pub host_sys: std::cell::Cell<Option<&'a OwnedFd>>,
}

/// A user namespace without its own network namespace (or in one it does not own) cannot
/// mount sysfs: the host's is bound in its place, as runc does. Made here, by the runtime in
/// the host's mount namespace, as a detached copy of the sysfs mount alone with the flags of
/// the config's `sysfs` mount: none of the host's mounts under /sys (its cgroup hierarchy
/// roots, securityfs, debugfs ...) comes along, as they would in a recursive bind made inside
/// the container's namespace, where they are locked to /sys and only covered by later mounts.
pub(crate) fn host_sys_fallback(
    spec: &oci_spec::runtime::Spec,
    plan: &crate::namespaces::Plan,
) -> Result<Option<OwnedFd>> {
    let joins_userns = plan
        .child_join
        .iter()
        .any(|j| j.flag == libc::CLONE_NEWUSER);
    let own_netns = plan.new_userns && plan.clone_flags & libc::CLONE_NEWNET != 0;
    if !(plan.new_userns || joins_userns) || own_netns {
        return Ok(None);
    }
    let Some(m) = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.typ().as_deref() == Some("sysfs"))
    else {
        return Ok(None);
    };
    let o = parse_options(m.options().as_deref().unwrap_or(&[]));
    let host = Path::new("/sys");
    let src = sys::open(host, libc::O_PATH | libc::O_CLOEXEC, 0).at("opening", host)?;
    // Private before it is attached: a clone of a shared host /sys would be a peer of it, and
    // every mount made on the copy (the cgroup view, the masks, the container's own) would
    // appear on the host's /sys.
    let tree = kiln_util::mount::clone_private(&src, false).at("copying the mount of", host)?;
    let (set, clr) = kiln_util::mount::attrs_of_flags(o.flags);
    kiln_util::mount::set_attrs(&tree, false, set, clr)
        .at("setting the flags of the copy of", host)?;
    Ok(Some(tree))
}

/// mount(2) onto the file an fd holds (through `/proc/self/fd/N`, as runc does); errors name
/// `shown`, the path as the container sees it.
fn mount_on(
    src: Option<&Path>,
    target: &OwnedFd,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
    step: impl Into<String>,
    shown: &Path,
) -> Result<()> {
    sys::mount(src, &fd_path(target), fstype, flags, data).at(step, shown)
}

/// Mounts one config entry under the rootfs.
pub fn mount_one(m: &Mount, ctx: &MountCtx) -> Result<()> {
    let root = Root::open(ctx.rootfs)?;
    let dest = m.destination().as_path();
    let o = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let bind = o.bind || typ == "bind";
    let mounted = if o.flags & libc::MS_REMOUNT != 0 {
        // A remount changes the mount already at `dest` (an earlier entry's): the fd resolved
        // here is that mount's root, and stays the fd it is changed through.
        let target = root.resolve(dest, OFlag::O_PATH)?;
        let data = o.data.join(",");
        let data = (!data.is_empty()).then_some(data.as_str());
        let src = m.source().as_deref();
        let fstype = (!typ.is_empty() && typ != "bind").then_some(typ);
        mount_on(src, &target, fstype, o.flags, data, "remounting", dest)?;
        target
    } else if bind {
        let src = m.source().as_ref().ok_or_else(|| {
            Error::Config(format!("bind mount {:?} has no source", m.destination()))
        })?;
        let src = if src.is_absolute() {
            src.clone()
        } else {
            ctx.bundle.join(src)
        };
        // The source is a host path from the config: open it once and mount what was opened.
        let src_fd =
            sys::open(&src, libc::O_PATH | libc::O_CLOEXEC, 0).at("opening bind source", &src)?;
        let is_dir = fstat(src_fd.as_fd())
            .map_err(std::io::Error::from)
            .at("stat bind source", &src)?
            .st_mode
            & libc::S_IFMT
            == libc::S_IFDIR;
        let target = if is_dir {
            root.mkdir_all(dest)?
        } else {
            root.create_file(dest)?
        };
        // A detached copy of the source gets its flags before it is attached onto the target
        // fd: nothing inside the rootfs sees the mount without them, and no path is walked
        // again between mounting and restricting (a swapped component cannot redirect it).
        let recursive = o.flags & libc::MS_REC != 0;
        let shown = format!("bind-mounting {} on", src.display());
        let tree = kiln_util::mount::clone_tree(&src_fd, recursive).at(shown.clone(), dest)?;
        let (set, clr) = kiln_util::mount::attrs_of_flags(o.flags);
        if set | clr != 0 {
            kiln_util::mount::set_attrs(&tree, false, set, clr)
                .at("setting the flags of bind mount", dest)?;
        }
        kiln_util::mount::attach(&tree, &target).at(shown, dest)?;
        tree
    } else if typ == "cgroup" {
        mount_cgroup_view(&root, dest, &o, ctx)?
    } else {
        let target = root.mkdir_all(dest)?;
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let r = new_mount(typ, &src, &o).and_then(|fs| {
            kiln_util::mount::attach(&fs, &target)?;
            Ok(fs)
        });
        match r {
            // mqueue and sysfs can be refused in a user namespace: bind the host's instead.
            Err(e)
                if ctx.userns
                    && e.raw_os_error() == Some(libc::EPERM)
                    && (typ == "sysfs" || typ == "mqueue") =>
            {
                let host = if typ == "sysfs" {
                    if let Some(sysfs) = ctx.host_sys.take() {
                        kiln_util::mount::attach(sysfs, &target)
                            .at("bind-mounting host /sys on", dest)?;
                        return set_propagations(sysfs, &o, dest);
                    }
                    "/sys"
                } else {
                    "/dev/mqueue"
                };
                // The host's tree, with the mount's own flags (ro, nosuid, nodev, noexec) set
                // on every mount of it before it is attached.
                let shown = format!("bind-mounting host {host} on");
                let src = sys::open(Path::new(host), libc::O_PATH | libc::O_CLOEXEC, 0)
                    .at("opening", host)?;
                let tree = kiln_util::mount::clone_tree(&src, true).at(shown.clone(), dest)?;
                let (set, clr) = kiln_util::mount::attrs_of_flags(o.flags);
                kiln_util::mount::set_attrs(&tree, true, set, clr)
                    .at(format!("setting the flags of host {host} on"), dest)?;
                kiln_util::mount::attach(&tree, &target).at(shown, dest)?;
                tree
            }
            r => r.at(format!("mounting {typ} on"), dest)?,
        }
    };
    set_propagations(&mounted, &o, dest)
}

/// Applies the mount's propagation options, in order, to the mount at `mounted` (the fd of the
/// attached mount itself: no lookup of `dest` again).
fn set_propagations(mounted: &OwnedFd, o: &MountOpts, dest: &Path) -> Result<()> {
    for p in &o.propagation {
        kiln_util::mount::set_propagation(mounted, p & libc::MS_REC != 0, p & !libc::MS_REC)
            .at("setting propagation of", dest)?;
    }
    Ok(())
}

/// Superblock flags of `MS_*` mount flags, as `fsconfig` flag names.
const SB_FLAGS: &[(libc::c_ulong, &CStr)] = &[
    (libc::MS_RDONLY, c"ro"),
    (libc::MS_SYNCHRONOUS, c"sync"),
    (libc::MS_DIRSYNC, c"dirsync"),
    (libc::MS_LAZYTIME, c"lazytime"),
];

/// A new, detached mount of filesystem `typ` from `src` with the mount's options and flags,
/// made with fsopen/fsconfig/fsmount (as mount(2) does inside the kernel, one option at a
/// time); attached by the caller, and named by the returned fd from then on.
fn new_mount(typ: &str, src: &Path, o: &MountOpts) -> std::io::Result<OwnedFd> {
    let cstr =
        |b: &[u8]| CString::new(b).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL));
    let fs = kiln_util::mount::fs_open(&cstr(typ.as_bytes())?)?;
    kiln_util::mount::fs_set(&fs, c"source", Some(&cstr(src.as_os_str().as_bytes())?))?;
    for opt in &o.data {
        match opt.split_once('=') {
            Some((k, v)) => {
                kiln_util::mount::fs_set(&fs, &cstr(k.as_bytes())?, Some(&cstr(v.as_bytes())?))?
            }
            None => kiln_util::mount::fs_set(&fs, &cstr(opt.as_bytes())?, None)?,
        }
    }
    for (flag, name) in SB_FLAGS {
        if o.flags & flag != 0 {
            kiln_util::mount::fs_set(&fs, name, None)?;
        }
    }
    kiln_util::mount::fs_mount(&fs, kiln_util::mount::attrs_of_flags(o.flags).0)
}

/// Flags of the mount an fd is on that an unprivileged remount may not clear.
fn locked_flags(fd: &OwnedFd) -> libc::c_ulong {
    let Ok(st) = fstatvfs(fd.as_fd()) else {
        return 0;
    };
    let f = st.flags();
    let mut out = 0;
    for (st_flag, ms) in [
        (FsFlags::ST_NOSUID, libc::MS_NOSUID),
        (FsFlags::ST_NODEV, libc::MS_NODEV),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_RDONLY, libc::MS_RDONLY),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f.contains(st_flag) {
            out |= ms;
        }
    }
    out
}

/// Opens the directory `name` right under `dir` without following a symlink there.
fn open_child_dir(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir.as_fd(),
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The `cgroup` mount: a tmpfs holding [`crate::cgroups::view`] (each hierarchy's own cgroup
/// of the container, bound under its name), the cgroups read-only unless the mount asks rw,
/// the tmpfs read-only always (nothing may be added beside the hierarchies). The tmpfs and each
/// bind are made detached and changed through their own fds: `dest` is looked up once.
fn mount_cgroup_view(root: &Root, dest: &Path, o: &MountOpts, ctx: &MountCtx) -> Result<OwnedFd> {
    use kiln_util::mount::{attach, attrs_of_flags, clone_tree, set_attrs, ATTR_RDONLY};
    let view = crate::cgroups::view(ctx.cgroup)?;
    let target = root.mkdir_all(dest)?;
    let ro = o.flags & libc::MS_RDONLY;
    let base = o.flags & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
    let tmpfs = (|| {
        let fs = kiln_util::mount::fs_open(c"tmpfs")?;
        kiln_util::mount::fs_set(&fs, c"mode", Some(c"755"))?;
        let tmpfs = kiln_util::mount::fs_mount(&fs, attrs_of_flags(base).0)?;
        attach(&tmpfs, &target)?;
        Ok(tmpfs)
    })()
    .at("mounting tmpfs for cgroups on", dest)?;
    for (name, src) in &view.dirs {
        let shown = dest.join(name);
        match mkdirat(
            tmpfs.as_fd(),
            name.as_os_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(std::io::Error::from(e)).at("creating cgroup mount point", &shown)
            }
        }
        let point = open_child_dir(&tmpfs, name)
            .map_err(std::io::Error::from)
            .at("opening cgroup mount point", &shown)?;
        let step = format!("bind-mounting cgroup {} on", src.display());
        let src_fd = sys::open(src, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)
            .at("opening cgroup", src)?;
        let tree = clone_tree(&src_fd, false).at(step.clone(), &shown)?;
        let (set, clr) = attrs_of_flags(libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | ro);
        set_attrs(&tree, false, set, clr).at("setting the flags of cgroup mount", &shown)?;
        attach(&tree, &point).at(step, &shown)?;
    }
    for (alias, link) in &view.aliases {
        symlinkat(link.as_path(), tmpfs.as_fd(), alias.as_os_str())
            .map_err(std::io::Error::from)
            .at("creating cgroup alias", dest.join(alias))?;
    }
    set_attrs(&tmpfs, false, ATTR_RDONLY, 0).at("making the cgroup tmpfs read-only", dest)?;
    Ok(tmpfs)
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

/// One device node to make.
struct Node {
    kind: SFlag,
    perm: Mode,
    dev: libc::dev_t,
    uid: u32,
    gid: u32,
}

/// Creates the default devices, the configured ones, and /dev's standard symlinks.
pub fn setup_dev(rootfs: &Path, devices: &[LinuxDevice], userns: bool) -> Result<()> {
    let root = Root::open(rootfs)?;
    let dev_path = Path::new("/dev");
    let dev = root.mkdir_all(dev_path)?;
    for &(name, major, minor) in DEFAULT_DEVICES {
        let p = dev_path.join(name);
        if devices.iter().any(|d| d.path() == &p) {
            continue;
        }
        let node = Node {
            kind: SFlag::S_IFCHR,
            perm: Mode::from_bits_truncate(0o666),
            dev: libc::makedev(major, minor),
            uid: 0,
            gid: 0,
        };
        make_device(&root, &p, &node, userns)?;
    }
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::Config(format!(
                    "device {:?} has type 'a', which only device cgroup rules may use",
                    d.path()
                )))
            }
        };
        let node = Node {
            kind,
            perm: Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666) & 0o7777),
            dev: libc::makedev(d.major() as u32, d.minor() as u32),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        };
        make_device(&root, d.path(), &node, userns)?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        let shown = dev_path.join(link);
        if link == "ptmx" {
            // Replace a ptmx node (e.g. from the image) with the link into this devpts.
            if fstatat(dev.as_fd(), link, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT != libc::S_IFLNK)
            {
                let _ = unlinkat(dev.as_fd(), link, UnlinkatFlags::NoRemoveDir);
            }
        }
        match symlinkat(target, dev.as_fd(), link) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(std::io::Error::from(e)).at(format!("linking {target} at"), &shown)
            }
        }
    }
    Ok(())
}

/// Makes one device node at `p` inside the root: mknodat in its verified parent (in a user
/// namespace, a bind mount of the host's node instead).
fn make_device(root: &Root, p: &Path, node: &Node, userns: bool) -> Result<()> {
    if userns {
        let (_, name) = root.parent_of(p)?;
        let host = Path::new("/dev").join(name);
        let target = root.create_file(p)?;
        return mount_on(
            Some(&host),
            &target,
            None,
            libc::MS_BIND,
            None,
            format!("bind-mounting host device {} on", host.display()),
            p,
        );
    }
    let (parent, name) = root.parent_of(p)?;
    let _ = unlinkat(parent.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir);
    // mknod's mode is filtered by the umask: clear it for the call (init is single-threaded).
    let old = umask(Mode::empty());
    let r = mknodat(
        parent.as_fd(),
        name.as_os_str(),
        node.kind,
        node.perm,
        node.dev,
    );
    umask(old);
    r.map_err(std::io::Error::from).at("mknod", p)?;
    fchownat(
        parent.as_fd(),
        name.as_os_str(),
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(std::io::Error::from)
    .at("chown", p)
}

/// Creates `process.cwd` (and its parents) inside the rootfs, resolved in the root.
pub fn create_cwd(rootfs: &Path, cwd: &Path) -> Result<()> {
    Root::open(rootfs)?.mkdir_all(cwd).map(drop)
}

/// Changes directory to `cwd` resolved inside the current root `/` (the container's, after
/// pivot_root or setns): the directory opened is the one entered, by fchdir. For `exec --cwd`.
pub fn chdir_in_root(cwd: &Path) -> Result<()> {
    let dir = Root::open(Path::new("/"))?.resolve(cwd, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    fchdir(dir.as_fd())
        .map_err(std::io::Error::from)
        .at("chdir to", cwd)
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

/// After pivot_root, checks that `/proc` is a procfs, so `/proc/self/fd/N` is the fd itself and
/// not a path an image planted.
fn check_procfs() -> Result<()> {
    let proc = Path::new("/proc");
    let fd = sys::open(proc, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)
        .at("opening", proc)?;
    let st = fstatfs(fd.as_fd())
        .map_err(std::io::Error::from)
        .at("statfs", proc)?;
    if st.filesystem_type() != PROC_SUPER_MAGIC {
        return Err(Error::Config(
            "maskedPaths/readonlyPaths need procfs mounted at /proc in the container".into(),
        ));
    }
    Ok(())
}

/// Calls `f` with each path of `paths` that exists inside the current root `/` (the
/// container's) and an fd of it, opened just before `f` uses it: a mount made for an earlier
/// path (a parent of a later one) is seen through.
fn for_each_existing(
    paths: &[String],
    mut f: impl FnMut(&Root, &Path, OwnedFd) -> Result<()>,
) -> Result<()> {
    let root = Root::open(Path::new("/"))?;
    let mut procfs_checked = false;
    for p in paths {
        let p = Path::new(p);
        let Some(fd) = root.resolve_existing(p, OFlag::O_PATH)? else {
            continue;
        };
        if !procfs_checked {
            check_procfs()?;
            procfs_checked = true;
        }
        f(&root, p, fd)?;
    }
    Ok(())
}

/// Hides each path: /dev/null over files, an empty read-only tmpfs over directories.
pub fn mask_paths(paths: &[String]) -> Result<()> {
    for_each_existing(paths, |_, path, fd| {
        let st = fstat(fd.as_fd())
            .map_err(std::io::Error::from)
            .at("stat", path)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            mount_on(
                Some(Path::new("tmpfs")),
                &fd,
                Some("tmpfs"),
                libc::MS_RDONLY,
                None,
                "masking",
                path,
            )
        } else {
            mount_on(
                Some(Path::new("/dev/null")),
                &fd,
                None,
                libc::MS_BIND,
                None,
                "masking",
                path,
            )
        }
    })
}

/// Bind-mounts each path read-only onto itself.
pub fn readonly_paths(paths: &[String]) -> Result<()> {
    for_each_existing(paths, |_root, path, fd| {
        // Made read-only while detached, then attached onto the same fd: no second lookup.
        let tree =
            kiln_util::mount::clone_tree(&fd, true).at("bind-mounting read-only path", path)?;
        kiln_util::mount::set_attrs(&tree, true, kiln_util::mount::ATTR_RDONLY, 0)
            .at("making read-only", path)?;
        kiln_util::mount::attach(&tree, &fd).at("bind-mounting read-only path", path)
    })
}

/// Remounts the mount at `p` read-only, keeping its other (possibly locked) flags.
///
/// `p` is a path of the runtime's own (the new root `/`), not one an image controls.
pub fn remount_ro(p: &Path) -> Result<()> {
    let fd = sys::open(p, libc::O_PATH | libc::O_CLOEXEC, 0).at("opening", p)?;
    sys::mount(None, p, None, ro_flags(&fd), None).at("remounting read-only", p)
}

/// The flags that remount the mount an fd is on read-only, keeping its locked flags.
fn ro_flags(fd: &OwnedFd) -> libc::c_ulong {
    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | locked_flags(fd)
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
