//! The container's init process: runs in the child of `create`, sets up namespaces, the root
//! filesystem and the terminal, reports `Ready`, blocks on the exec fifo until `start`, then
//! becomes the user process.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook, Spec};

use crate::error::{Ctx, Error, Result};
use crate::namespaces::Plan;
use crate::process::{self, Prepared};
use crate::rootfs::{self, MountCtx};
use crate::sync::{Channel, Msg};
use crate::{hooks, sys, tty};

/// Everything the init process needs, prepared by the parent before the clone.
pub struct InitArgs<'a> {
    /// The container config.
    pub spec: &'a Spec,
    /// Bundle directory.
    pub bundle: &'a Path,
    /// Absolute rootfs path.
    pub rootfs: &'a Path,
    /// The namespace plan.
    pub plan: &'a Plan,
    /// The converted process.
    pub process: &'a Prepared,
    /// The child's end of the handshake.
    pub chan: Channel,
    /// The exec fifo `start` opens.
    pub fifo: &'a Path,
    /// A connected console socket, when the process has a terminal and one was given.
    pub console: Option<RawFd>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// The container's cgroup path (for `cgroup` mounts).
    pub cgroup: Option<&'a str>,
    /// Whether the parent has prestart/createRuntime hooks to run mid-setup.
    pub runtime_hooks: bool,
    /// The state document passed to createContainer/startContainer hooks (pid filled in here).
    pub hook_state: serde_json::Value,
    /// The session keyring to join (`_ses.<id>`), unless `--no-new-keyring`.
    pub keyring: Option<String>,
    /// How many descriptors from 3 up pass into the container process (`--preserve-fds`).
    pub preserve_fds: u32,
    /// The host's sysfs alone, detached with the config's flags, for a user namespace that
    /// cannot mount its own (see [`rootfs::host_sys_fallback`]).
    pub host_sys: Option<&'a OwnedFd>,
}

/// Runs the init; never returns (exits or execs). Errors are sent to the parent.
pub fn run(args: InitArgs) -> ! {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| setup_and_exec(&args)));
    let msg = match r {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(never)) => match never {},
        Err(_) => "init panicked".to_string(),
    };
    if args.chan.send(&Msg::Error(msg.clone()), None).is_err() {
        // The parent is gone (after start): the user sees the error on the container's stderr.
        eprintln!("kiln init: {msg}");
    }
    sys::exit_now(1)
}

fn expect(chan: &Channel, want: Msg) -> Result<()> {
    match chan.recv().step("reading from the parent")?.0 {
        m if m == want => Ok(()),
        other => Err(Error::Init(format!(
            "expected {want:?} from the parent, got {other:?}"
        ))),
    }
}

fn hooks_of(spec: &Spec, pick: fn(&oci_spec::runtime::Hooks) -> &Option<Vec<Hook>>) -> &[Hook] {
    spec.hooks()
        .as_ref()
        .and_then(|h| pick(h).as_deref())
        .unwrap_or(&[])
}

fn setup_and_exec(a: &InitArgs) -> Result<Infallible> {
    let spec = a.spec;
    let linux = spec.linux().as_ref();
    let userns = a.plan.new_userns
        || a.plan
            .child_join
            .iter()
            .any(|j| j.flag == libc::CLONE_NEWUSER);
    if !userns {
        // Nobody may ptrace or open /proc/<pid>/{root,cwd,fd,exe} of the init before it is the
        // user process (exec makes it dumpable again). With a user namespace it stays dumpable:
        // its own /proc files would otherwise belong to the host's root. Joining a pid
        // namespace, it is born non-dumpable (see `create_from_spec`) and stays so until its
        // root is the container's.
        sys::prctl(libc::PR_SET_DUMPABLE, 0, 0).step("prctl(PR_SET_DUMPABLE, 0)")?;
    }
    let joined_pidns = a
        .plan
        .parent_join
        .iter()
        .any(|j| j.flag == libc::CLONE_NEWPID);
    expect(&a.chan, Msg::Go)?;
    if a.plan.new_userns {
        become_root()?;
    }
    crate::namespaces::child_enter(&a.plan.child_join)?;
    // Nothing the caller leaked (a host directory, a socket) may reach the container: from here
    // on the init holds only stdio, the preserved fds and its own close-on-exec descriptors.
    let own: Vec<RawFd> = [
        Some(a.chan.0.as_raw_fd()),
        a.console,
        a.host_sys.map(AsRawFd::as_raw_fd),
    ]
    .into_iter()
    .flatten()
    .collect();
    process::close_leaked_fds(a.preserve_fds, &own)?;
    if let Some(name) = &a.keyring {
        sys::join_session_keyring(name).step(format!("joining session keyring {name}"))?;
    }
    let host_pid: i32 = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse().ok())
        .unwrap_or(0);

    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        crate::sysctl::apply(sysctl)?;
    }
    if let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        let p = Path::new("/proc/self/oom_score_adj");
        std::fs::write(p, adj.to_string()).at(format!("setting oom_score_adj {adj} in"), p)?;
    }
    a.process.apply_rlimits()?;

    let propagation = linux.and_then(|l| l.rootfs_propagation().as_deref());
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    // Without a mount namespace the mounts land in the runtime's namespace (as with runc).
    {
        if a.plan.has_mntns {
            rootfs::prepare_root(a.rootfs, propagation)?;
        }
        let ctx = MountCtx {
            rootfs: a.rootfs,
            bundle: a.bundle,
            cgroup: a.cgroup,
            userns,
            host_sys: std::cell::Cell::new(a.host_sys),
        };
        for m in mounts {
            rootfs::mount_one(m, &ctx)?;
        }
        let dev_is_bind = mounts.iter().any(|m| {
            m.destination() == Path::new("/dev")
                && (m.typ().as_deref() == Some("bind")
                    || m.options()
                        .as_deref()
                        .unwrap_or(&[])
                        .iter()
                        .any(|o| o == "bind" || o == "rbind"))
        });
        if !dev_is_bind {
            let devices = linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]);
            rootfs::setup_dev(a.rootfs, devices, userns)?;
        }
        rootfs::create_cwd(a.rootfs, a.process.cwd())?;
    }
    expect(&a.chan, Msg::CgroupJoined)?;
    if a.plan.new_cgroupns {
        sys::unshare(libc::CLONE_NEWCGROUP).step("unshare(CLONE_NEWCGROUP)")?;
    }
    let fifo =
        sys::open(a.fifo, libc::O_PATH | libc::O_CLOEXEC, 0).at("opening exec fifo", a.fifo)?;

    if a.runtime_hooks {
        a.chan
            .send(&Msg::RunHooks, None)
            .step("asking the parent to run hooks")?;
        expect(&a.chan, Msg::HooksDone)?;
    }
    let mut state = a.hook_state.clone();
    state["pid"] = host_pid.into();
    hooks::run(
        "createContainer",
        hooks_of(spec, |h| h.create_container()),
        &state,
    )?;

    if a.plan.has_mntns {
        if a.no_pivot {
            rootfs::move_root(a.rootfs)?;
        } else {
            rootfs::pivot(a.rootfs)?;
        }
        if let Some(p) = propagation {
            rootfs::set_root_propagation(p)?;
        }
    } else {
        sys::chroot(a.rootfs).at("chroot", a.rootfs)?;
        std::env::set_current_dir("/").at("chdir", "/")?;
    }
    if userns && joined_pidns {
        // The root is the container's now: /proc/<pid>/root no longer leads to the host's.
        sys::prctl(libc::PR_SET_DUMPABLE, 1, 0).step("prctl(PR_SET_DUMPABLE, 1)")?;
    }

    if a.plan.clone_flags & libc::CLONE_NEWNET != 0 {
        sys::loopback_up().step("setting lo up in the new network namespace")?;
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if !a.plan.has_utsns {
            return Err(Error::Config(
                "hostname is set but the container has no uts namespace".into(),
            ));
        }
        sys::sethostname(h).step(format!("sethostname({h:?})"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        sys::setdomainname(d).step(format!("setdomainname({d:?})"))?;
    }
    if let Some(l) = linux {
        rootfs::readonly_paths(l.readonly_paths().as_deref().unwrap_or(&[]))?;
        rootfs::mask_paths(l.masked_paths().as_deref().unwrap_or(&[]))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        rootfs::remount_ro(Path::new("/"))?;
    }

    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal {
        let (master, slave) = tty::open_pty()?;
        send_master(a, &master)?;
        drop(master);
        let size = spec
            .process()
            .as_ref()
            .and_then(|p| p.console_size())
            .map(|b| (b.height() as u16, b.width() as u16));
        tty::become_tty(&slave, size)?;
    }
    let entered = a.process.chdir_early()?;
    // The identity and capabilities of the process before it blocks on the fifo (as runc):
    // while it waits, anything that can trace it gains nothing the process will not have.
    // no_new_privs and its seccomp filter stay for the last step before execve.
    a.process.switch_identity()?;
    if !entered {
        a.process.chdir()?;
    }
    let exe = a.process.resolve_exe()?;
    a.chan.send(&Msg::Ready, None).step("reporting ready")?;

    // Blocks until `start`; the write end stays open (close-on-exec) so that `start` sees EOF
    // only once the user process has replaced this one.
    let released = wait_for_start(&fifo)?;
    drop(fifo);
    state["status"] = "running".into();
    hooks::run(
        "startContainer",
        hooks_of(spec, |h| h.start_container()),
        &state,
    )?;
    if nix::unistd::write(&released, b"0")
        .map_err(std::io::Error::from)
        .step("writing exec fifo")?
        != 1
    {
        return Err(Error::Init("short write to the exec fifo".into()));
    }
    a.process.restrict()?;
    Err(a.process.exec(&exe))
}

/// setresgid/setresuid to root of the new user namespace (mapped by the parent by now).
fn become_root() -> Result<()> {
    use nix::unistd::{setresgid, setresuid, Gid, Uid};
    let (root, group) = (Uid::from_raw(0), Gid::from_raw(0));
    setresgid(group, group, group)
        .map_err(std::io::Error::from)
        .step("setresgid(0) in the new user namespace")?;
    setresuid(root, root, root)
        .map_err(std::io::Error::from)
        .step("setresuid(0) in the new user namespace")
}

/// Hands the pty master to the console socket, or to the parent (foreground `run`).
fn send_master(a: &InitArgs, master: &OwnedFd) -> Result<()> {
    match a.console {
        Some(sock) => tty::send_console(sock, master),
        None => a
            .chan
            .send(&Msg::Pty, Some(master.as_raw_fd()))
            .step("passing the pty master to kiln"),
    }
}

/// Blocks until `start` opens the fifo for reading; returns the write end.
fn wait_for_start(fifo: &OwnedFd) -> Result<OwnedFd> {
    let path = PathBuf::from(format!("/proc/self/fd/{}", fifo.as_raw_fd()));
    sys::open(&path, libc::O_WRONLY | libc::O_CLOEXEC, 0)
        .at("opening exec fifo for writing (is /proc mounted?)", &path)
}
