//! The build sandbox: every build-time command (a `kiln build` step, a vendor recipe's `run`
//! step) runs as a container of kiln's runtime over an overlay of the layers below it, with one
//! spec: its own pid, ipc, uts, mount and network namespaces; a minimal capability set and
//! no_new_privs; a device cgroup that allows only the standard `/dev` nodes; a root mounted
//! nodev and nosuid. A step that needs the network gets it through slirp4netns (see `net.rs`),
//! never the host's namespace. The container is created only while kiln is single-threaded, and
//! nothing (mount, container, cgroup, slirp4netns) is left behind whatever happens.

mod error;
mod net;
mod trust;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_overlay::{mount_overlay, OverlayMount, Upper};
use kiln_runtime::{Container, CreateOptions, Runtime};
use kiln_util::oci;
pub(crate) use kiln_util::oci::{bind, tmpfs};
use kiln_util::wait::{self, Deadline};
use nix::mount::{mount, MsFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespaceType,
    LinuxResources, Mount, RootBuilder, Spec, User,
};

use error::io_err;
pub use error::SandboxError;
use net::UserNet;
pub use trust::{HostTrust, TrustScope, BUNDLE_IN_CONTAINER, SCOPE_VAR};

/// How often the sandbox looks at the container (and calls the caller's watcher).
const POLL: Duration = Duration::from_millis(20);

/// How long a step waits for kiln's other threads (a joined worker still exiting) to be gone.
const THREADS_WAIT: Duration = Duration::from_secs(1);

/// How often it looks at the thread count meanwhile.
const THREADS_POLL: Duration = Duration::from_millis(1);

/// Capabilities of a step's root processes: what a package manager running as root in a
/// throwaway rootfs needs, nothing that reaches past that rootfs.
///
/// - `CHOWN`, `FOWNER`, `FSETID`: unpacking archives (dpkg, tar, pip wheels, npm tarballs) with
///   their owners, modes, set-id bits and times;
/// - `DAC_OVERRIDE`: root writing into folders it does not own (apt's `_apt` partial dir, caches
///   made by an earlier step as another user);
/// - `SETUID`, `SETGID`: dropping to another user (apt's sandbox user, npm lifecycle scripts,
///   `su`/`runuser` in a hook);
/// - `KILL`: signalling those processes once they run as that other user.
///
/// Left out, among others: `MKNOD` (device nodes), `NET_RAW`, `NET_ADMIN`, `NET_BIND_SERVICE`
/// (a build serves nothing), `SYS_ADMIN`, `SYS_CHROOT`, `SYS_PTRACE`, `SETFCAP`, `SETPCAP`,
/// `AUDIT_WRITE`.
const CAPS: [Capability; 7] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Setuid,
    Capability::Setgid,
    Capability::Kill,
];

/// The devices a step may use (device cgroup, after a deny-all rule): the standard `/dev`
/// nodes, as (major, minor or any, access). No mknod (`m`) for any of them.
const DEVICES: [(i64, Option<i64>); 9] = [
    (1, Some(3)), // null
    (1, Some(5)), // zero
    (1, Some(7)), // full
    (1, Some(8)), // random
    (1, Some(9)), // urandom
    (5, Some(0)), // tty
    (5, Some(1)), // console
    (5, Some(2)), // ptmx
    (136, None),  // pts/*
];

/// One build-time command to run in a step container.
pub(crate) struct Job<'a> {
    /// The runtime whose container runs it.
    pub runtime: &'a Runtime,
    /// The container id (unique on the host).
    pub id: String,
    /// A private folder of the step (the bundle): its resolver config and slirp4netns' log go
    /// there.
    pub bundle: &'a Path,
    /// The layers under the step, bottom first.
    pub lowers: Vec<PathBuf>,
    /// Where the step's changes go.
    pub upper: Upper,
    /// The overlay's mount point (the container's root).
    pub merged: PathBuf,
    /// The command line.
    pub args: Vec<String>,
    /// The environment, `K=V`.
    pub env: Vec<String>,
    /// The working directory inside the root.
    pub cwd: PathBuf,
    /// uid and gid of the process.
    pub user: (u32, u32),
    /// Whether the step reaches the network (through slirp4netns).
    pub network: bool,
    /// Mounts beyond the standard ones (proc, /dev, /sys).
    pub mounts: Vec<Mount>,
    /// Killed after this long.
    pub timeout: Option<Duration>,
}

/// How a step's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It exited with this status (128 + n for signal n).
    Exited(i32),
    /// It ran past the timeout and was killed.
    TimedOut,
}

/// Runs `job`, calling `watch` every poll while it runs; the upper dir keeps its changes (minus
/// the mount points the runtime had to create).
pub(crate) fn run(job: &Job<'_>, watch: &mut dyn FnMut()) -> Result<Outcome, SandboxError> {
    for d in [&job.merged, &job.upper.work] {
        std::fs::create_dir_all(d).map_err(io_err("create directory", d))?;
    }
    let mount = mount_overlay(&job.lowers, Some(&job.upper), &job.merged)?;
    let ready = harden_root(mount.target()).and_then(|()| mounts(job));
    let mounts = match ready {
        Ok(m) => m,
        Err(e) => {
            finish_mount(mount)?;
            return Err(e);
        }
    };
    let created = missing_mount_points(mount.target(), &mounts);
    let outcome = spec(job, mount.target(), mounts).and_then(|s| run_container(job, &s, watch));
    finish_mount(mount)?;
    let outcome = outcome?;
    prune_mount_points(&job.upper.upper, &created)?;
    Ok(outcome)
}

/// Remounts the step's root nodev and nosuid: a device node in a layer opens nothing, a set-id
/// file raises nothing (the container's own /dev is a separate tmpfs).
fn harden_root(root: &Path) -> Result<(), SandboxError> {
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(|e| io_err("remount nodev,nosuid", root)(e.into()))
}

/// Unmounts the step's overlay (lazily if it is still busy).
fn finish_mount(mount: OverlayMount) -> Result<(), SandboxError> {
    let target = mount.target().to_path_buf();
    if mount.unmount().is_err() {
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| io_err("unmount", target)(e.into()))?;
    }
    Ok(())
}

/// The job's mounts: the standard ones (no cgroup fs), the job's own, and with network a
/// resolver config naming slirp's DNS forwarder (the host's nameserver is not reachable as such).
fn mounts(job: &Job<'_>) -> Result<Vec<Mount>, SandboxError> {
    let mut mounts = oci::standard_mounts();
    mounts.extend(job.mounts.iter().cloned());
    if job.network {
        let resolv = job.bundle.join("resolv.conf");
        std::fs::write(&resolv, net::RESOLV_CONF).map_err(io_err("write", &resolv))?;
        mounts.push(bind(&resolv, "/etc/resolv.conf", true));
    }
    Ok(mounts)
}

/// Mount points outside `/dev` that do not exist in the merged root yet (the runtime creates them
/// in the upper dir), with any missing parents, deepest first.
fn missing_mount_points(root: &Path, mounts: &[Mount]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in mounts {
        let dest = m.destination();
        if dest.starts_with("/dev") {
            continue;
        }
        let rel = dest.strip_prefix("/").unwrap_or(dest);
        let mut p = Some(rel);
        while let Some(r) = p.filter(|r| !r.as_os_str().is_empty()) {
            if root.join(r).symlink_metadata().is_ok() {
                break;
            }
            if !out.contains(&r.to_path_buf()) {
                out.push(r.to_path_buf());
            }
            p = r.parent();
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Removes from the upper dir the mount points the runtime created, if the step left them empty.
fn prune_mount_points(upper: &Path, created: &[PathBuf]) -> Result<(), SandboxError> {
    for rel in created {
        let p = upper.join(rel);
        let Ok(meta) = p.symlink_metadata() else {
            continue;
        };
        let removed = if meta.is_dir() {
            std::fs::remove_dir(&p)
        } else if meta.is_file() && meta.len() == 0 {
            std::fs::remove_file(&p)
        } else {
            Ok(())
        };
        match removed {
            Err(e) if e.raw_os_error() != Some(libc::ENOTEMPTY) => {
                return Err(io_err("remove mount point", &p)(e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The device cgroup of a step: deny everything, then allow the standard nodes (rw, no mknod).
fn device_rules() -> Vec<LinuxDeviceCgroup> {
    let mut deny = LinuxDeviceCgroup::default();
    deny.set_allow(false);
    deny.set_access(Some("rwm".to_string()));
    let mut rules = vec![deny];
    for (major, minor) in DEVICES {
        let mut allow = LinuxDeviceCgroup::default();
        allow.set_allow(true);
        allow.set_typ(Some(LinuxDeviceType::C));
        allow.set_major(Some(major));
        allow.set_minor(minor);
        allow.set_access(Some("rw".to_string()));
        rules.push(allow);
    }
    rules
}

/// The container's config: the job's command, env, user and working dir; [`CAPS`] for root
/// (none for another user), no_new_privs, the runtime's default seccomp profile (the one
/// services get), [`device_rules`], its own pid, ipc, uts, mount and network namespaces.
fn spec(job: &Job<'_>, root: &Path, mounts: Vec<Mount>) -> Result<Spec, SandboxError> {
    let invalid = |e: oci_spec::OciSpecError| {
        SandboxError::Runtime(kiln_runtime::Error::Config(e.to_string()))
    };
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(job.args.clone()));
    process.set_env(Some(job.env.clone()));
    process.set_cwd(job.cwd.clone());
    process.set_terminal(Some(false));
    let mut user = User::default();
    user.set_uid(job.user.0);
    user.set_gid(job.user.1);
    user.set_additional_gids(None);
    process.set_user(user);
    let caps: oci_spec::runtime::Capabilities = if job.user.0 == 0 {
        CAPS.into_iter().collect()
    } else {
        Default::default()
    };
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    process.set_capabilities(Some(capabilities));
    process.set_no_new_privileges(Some(true));
    spec.set_process(Some(process));
    spec.set_hostname(Some("kiln-build".to_string()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(root)
            .readonly(false)
            .build()
            .map_err(invalid)?,
    ));
    spec.set_mounts(Some(mounts));
    let namespaces = oci::new_namespaces(&[
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]);
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(namespaces));
    linux.set_seccomp(Some(
        kiln_runtime::hardening::default_seccomp().map_err(invalid)?,
    ));
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(device_rules()));
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(Some(kiln_util::cgroup::container_path(&job.id)));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// `Threads:` of /proc/self/status.
fn thread_count() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Waits (briefly) until kiln is single-threaded: the runtime clones the container's init from
/// this process, and a clone next to a running thread could inherit a lock it holds.
fn ensure_single_threaded() -> Result<(), SandboxError> {
    let alone = || matches!(thread_count(), None | Some(1));
    if wait::until(Deadline::after(THREADS_WAIT), THREADS_POLL, alone) {
        return Ok(());
    }
    Err(SandboxError::Threads {
        count: thread_count().unwrap_or(0),
    })
}

/// Deletes the container (killing what is left) when dropped.
struct ContainerGuard(Option<Container>);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.kill(libc::SIGKILL, true);
            let _ = c.delete(true);
        }
    }
}

/// Creates the container, connects its network, starts it and waits for it, killing it at the
/// timeout. The container and slirp4netns are gone when this returns, in every case.
fn run_container(
    job: &Job<'_>,
    spec: &Spec,
    watch: &mut dyn FnMut(),
) -> Result<Outcome, SandboxError> {
    ensure_single_threaded()?;
    let created = job.runtime.create_from_spec(
        &job.id,
        job.bundle,
        spec,
        &CreateOptions::default(),
        false,
    )?;
    let mut guard = ContainerGuard(Some(created.container));
    let Some(container) = guard.0.as_mut() else {
        unreachable!("the guard was just filled")
    };
    let pid = container.pid();
    let network = if job.network {
        Some(UserNet::start(pid, &job.bundle.join("slirp4netns.log"))?)
    } else {
        None
    };
    container.start()?;
    let pid = Pid::from_raw(pid);
    let exited = wait::poll(Deadline::within(job.timeout), POLL, || {
        watch();
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(Ok(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(Ok(128 + sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => None,
            Err(errno) => Some(Err(SandboxError::Wait {
                pid: pid.as_raw(),
                errno,
            })),
        }
    });
    let outcome = match exited {
        Some(code) => Outcome::Exited(code?),
        None => {
            if let Some(c) = guard.0.as_ref() {
                let _ = c.kill(libc::SIGKILL, true);
                let _ = waitpid(pid, None);
            }
            Outcome::TimedOut
        }
    };
    watch();
    if let Some(c) = guard.0.take() {
        c.delete(true)?;
    }
    drop(network);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_mount_points_list_missing_parents_deepest_first() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("proc")).unwrap();
        let mut mounts = oci::standard_mounts();
        mounts.push(bind(Path::new("/dev/null"), "/etc/resolv.conf", true));
        let missing = missing_mount_points(t.path(), &mounts);
        assert!(!missing
            .iter()
            .any(|p| p.starts_with("proc") || p.starts_with("dev")));
        assert!(missing.contains(&PathBuf::from("sys")));
        let file = missing
            .iter()
            .position(|p| p == Path::new("etc/resolv.conf"));
        let dir = missing.iter().position(|p| p == Path::new("etc"));
        assert!(file.is_some() && dir.is_some() && file < dir, "{missing:?}");
    }

    #[test]
    fn prune_removes_only_empty_mount_points() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sys")).unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/resolv.conf"), b"").unwrap();
        std::fs::write(t.path().join("etc/kept"), b"x").unwrap();
        let created = vec![
            PathBuf::from("etc/resolv.conf"),
            PathBuf::from("sys"),
            PathBuf::from("etc"),
        ];
        prune_mount_points(t.path(), &created).unwrap();
        assert!(!t.path().join("sys").exists());
        assert!(!t.path().join("etc/resolv.conf").exists());
        assert!(t.path().join("etc/kept").exists());
    }

    fn job_for<'a>(runtime: &'a Runtime, bundle: &'a Path, uid: u32) -> Job<'a> {
        Job {
            runtime,
            id: "t".to_string(),
            bundle,
            lowers: Vec::new(),
            upper: Upper {
                upper: bundle.join("upper"),
                work: bundle.join("work"),
            },
            merged: bundle.join("merged"),
            args: vec!["/bin/true".to_string()],
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: (uid, uid),
            network: true,
            mounts: Vec::new(),
            timeout: None,
        }
    }

    #[test]
    fn the_spec_has_minimal_caps_no_new_privs_devices_and_its_own_network() {
        let runtime = Runtime::new("/nonexistent");
        let bundle = Path::new("/b");
        let s = spec(&job_for(&runtime, bundle, 0), bundle, Vec::new()).unwrap();
        let process = s.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        for c in [
            Capability::Mknod,
            Capability::NetRaw,
            Capability::SysAdmin,
            Capability::NetAdmin,
        ] {
            assert!(!bounding.contains(&c), "{c:?}");
        }
        assert!(bounding.contains(&Capability::Chown));
        let linux = s.linux().as_ref().unwrap();
        let kinds: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(kinds.contains(&LinuxNamespaceType::Network));
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(!rules[0].allow() && rules[0].typ().is_none());
        assert!(rules[1..]
            .iter()
            .all(|r| r.allow() && r.access().as_deref() == Some("rw") && r.major() != Some(10)));

        let other = spec(&job_for(&runtime, bundle, 1000), bundle, Vec::new()).unwrap();
        let caps = other
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert!(caps.bounding().as_ref().unwrap().is_empty());
    }
}
