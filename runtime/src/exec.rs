//! `exec`: a new process inside a running container's namespaces and cgroup.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use caps::Capability;
use oci_spec::runtime::{LinuxSeccomp, Process};

use crate::cgroups::ContainerCgroup;
use crate::container::{load_spec, wait_foreground, write_pid_file, Container};
use crate::error::{Ctx, Error, Result};
use crate::process::{self, Prepared};
use crate::state::Status;
use crate::sync::{Channel, Msg};
use crate::{sys, tty};

/// Options of `exec`.
#[derive(Debug, Default)]
pub struct ExecOptions {
    /// Unix socket to send the pty master to (process.terminal = true).
    pub console_socket: Option<PathBuf>,
    /// File to write the new process's host pid to.
    pub pid_file: Option<PathBuf>,
    /// Return once the process runs instead of waiting for it.
    pub detach: bool,
    /// Pass descriptors 3..3+N of the caller into the process (--preserve-fds).
    pub preserve_fds: u32,
    /// In the foreground, forward the signals kiln receives to the process.
    pub forward_signals: bool,
}

/// What `exec` ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The process runs detached with this host pid.
    Detached(i32),
    /// The process exited with this code.
    Exited(i32),
}

/// Namespaces in the order they are joined. User last: the runtime is root in the host user
/// namespace, which may join namespaces of any user namespace, while a joined user namespace
/// could not join one the host's owns (a network namespace kiln made).
const NS_ORDER: &[(&str, libc::c_int)] = &[
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("mnt", libc::CLONE_NEWNS),
    ("user", libc::CLONE_NEWUSER),
];

/// Opens the namespaces of `pid` that differ from ours.
fn foreign_namespaces(
    pid: i32,
    kinds: &[(&'static str, libc::c_int)],
) -> Result<Vec<(OwnedFd, libc::c_int, PathBuf)>> {
    let mut out = Vec::new();
    for &(name, flag) in kinds {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let mine = format!("/proc/self/ns/{name}");
        let (a, b) = match (std::fs::metadata(&theirs), std::fs::metadata(&mine)) {
            (Ok(a), Ok(b)) => (a.ino(), b.ino()),
            (Err(e), _) => return Err(e).at("reading namespace", &theirs),
            _ => continue,
        };
        if a != b {
            let f = File::open(&theirs).at("opening namespace", &theirs)?;
            out.push((OwnedFd::from(f), flag, theirs));
        }
    }
    Ok(out)
}

impl Container {
    /// Builds the process for `exec ID CMD...` from the container's own process (env, user,
    /// capabilities, rlimits ...) with the given args, extra env, cwd and user.
    pub fn exec_process(
        &self,
        args: Vec<String>,
        env: &[String],
        cwd: Option<PathBuf>,
        user: Option<(u32, u32)>,
        tty: bool,
    ) -> Result<Process> {
        let spec = load_spec(self.bundle())?;
        let mut p = spec.process().clone().unwrap_or_default();
        p.set_args(Some(args));
        let mut e = p.env().clone().unwrap_or_default();
        for kv in env {
            let key = kv.split('=').next().unwrap_or("");
            e.retain(|old| old.split('=').next() != Some(key));
            e.push(kv.clone());
        }
        p.set_env(Some(e));
        if let Some(c) = cwd {
            p.set_cwd(c);
        }
        if let Some((uid, gid)) = user {
            let mut u = p.user().clone();
            u.set_uid(uid);
            u.set_gid(gid);
            p.set_user(u);
        }
        p.set_terminal(Some(tty));
        Ok(p)
    }

    /// Runs `process` inside the container.
    pub fn exec(&self, process: &Process, opts: &ExecOptions) -> Result<ExecOutcome> {
        let status = self.status();
        if !matches!(status, Status::Running | Status::Created) {
            return Err(Error::BadState {
                id: self.id().to_string(),
                status: status.to_string(),
                action: "exec in",
                needed: "running",
            });
        }
        let spec = load_spec(self.bundle())?;
        let seccomp: Option<&LinuxSeccomp> =
            spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
        let prepared = Prepared::new(process, seccomp)?;
        let terminal = process.terminal().unwrap_or(false);
        if terminal && opts.detach && opts.console_socket.is_none() {
            return Err(Error::Config(
                "a detached exec with a terminal needs --console-socket".into(),
            ));
        }
        let pid = self.pid();
        // Opened now, joined by the helper: user first, mount before anything can see it, pid
        // last (it only applies to the helper's child).
        let mut joins = foreign_namespaces(pid, NS_ORDER)?;
        joins.extend(foreign_namespaces(
            pid,
            &[("cgroup", libc::CLONE_NEWCGROUP)],
        )?);
        joins.extend(foreign_namespaces(pid, &[("pid", libc::CLONE_NEWPID)])?);
        let console = match (&opts.console_socket, terminal) {
            (Some(p), true) => Some(UnixStream::connect(p).at("connecting to console socket", p)?),
            _ => None,
        };
        let (parent_end, child_end) = sys::seqpacket_pair().step("socketpair")?;
        let helper = sys::clone_fork(0)?;
        if helper == 0 {
            drop(parent_end);
            let chan = Channel(child_end);
            let r = helper_main(
                &chan,
                &joins,
                &prepared,
                &Extra {
                    terminal,
                    console: console.as_ref().map(|c| c.as_raw_fd()),
                    keyring: format!("_ses.{}", self.id()),
                    preserve_fds: opts.preserve_fds,
                },
            );
            let msg = match r {
                Err(e) => e.to_string(),
                Ok(never) => match never {},
            };
            let _ = chan.send(&Msg::Error(msg), None);
            sys::exit_now(127);
        }
        drop(joins);
        drop(child_end);
        drop(console);
        let chan = Channel(parent_end);
        let mut child = None;
        let fail = |child: Option<i32>, e: Error| {
            for p in [Some(helper), child].into_iter().flatten() {
                let _ = sys::kill(p, libc::SIGKILL);
                let _ = sys::waitpid(p, 0);
            }
            e
        };
        if let Some(cg) = self.persisted().cgroup.as_deref() {
            ContainerCgroup::load(cg)
                .add(helper)
                .map_err(|e| fail(None, e))?;
        }
        chan.send(&Msg::Go, None)
            .step("releasing the exec helper")
            .map_err(|e| fail(None, e))?;
        let mut pty = None;
        loop {
            match chan.recv() {
                // Only the helper reports it, once; the process it names must be kiln's own
                // child (CLONE_PARENT): the socket is also held by the forked process, which a
                // tracer in the container could make send anything.
                Ok((Msg::Pid(p), _)) if child.is_none() && is_own_child(p) => child = Some(p),
                Ok((Msg::Pty, fd)) => pty = fd,
                Ok((Msg::Error(m), _)) => return Err(fail(child, Error::Init(m))),
                Ok((other, _)) => {
                    return Err(fail(
                        child,
                        Error::Init(format!("unexpected message {other:?}")),
                    ))
                }
                // EOF: the helper exited and the process image was replaced (close-on-exec).
                Err(_) => break,
            }
        }
        let _ = sys::waitpid(helper, 0);
        let child = child.ok_or_else(|| {
            Error::Init("the exec helper exited without starting the process".into())
        })?;
        if let Some(pf) = &opts.pid_file {
            write_pid_file(pf, child)?;
        }
        if opts.detach {
            return Ok(ExecOutcome::Detached(child));
        }
        let code = wait_foreground(child, pty, opts.forward_signals)?;
        Ok(ExecOutcome::Exited(code))
    }
}

/// Whether `pid` is a child of this process.
fn is_own_child(pid: i32) -> bool {
    let me = std::process::id();
    u32::try_from(pid)
        .ok()
        .and_then(kiln_util::process::stat)
        .is_some_and(|s| s.ppid == me)
}

/// What the exec helper needs besides the namespaces and the process.
struct Extra {
    terminal: bool,
    console: Option<RawFd>,
    keyring: String,
    preserve_fds: u32,
}

/// The exec helper, a child of kiln in the host's pid namespace (invisible to the container):
/// it joins the container's namespaces (its mount namespace sets root and cwd to the
/// container's), drops every descriptor it does not need (the namespace fds among them), and
/// only then forks the process that appears in the container's pid namespace, as a sibling
/// (CLONE_PARENT) so that kiln reaps it.
fn helper_main(
    chan: &Channel,
    joins: &[(OwnedFd, libc::c_int, PathBuf)],
    p: &Prepared,
    x: &Extra,
) -> Result<Infallible> {
    sys::prctl(libc::PR_SET_DUMPABLE, 0, 0).step("prctl(PR_SET_DUMPABLE, 0)")?;
    match chan.recv().step("reading from kiln")?.0 {
        Msg::Go => {}
        other => return Err(Error::Init(format!("expected Go, got {other:?}"))),
    }
    for (fd, flag, path) in joins {
        sys::setns(fd, *flag).at("joining namespace", path)?;
    }
    let own: Vec<RawFd> = [Some(chan.0.as_raw_fd()), x.console]
        .into_iter()
        .flatten()
        .collect();
    process::close_leaked_fds(x.preserve_fds, &own)?;
    sys::join_session_keyring(&x.keyring).step(format!("joining session keyring {}", x.keyring))?;
    // Before the fork that puts a process in the container's pid namespace, where a container
    // process with CAP_SYS_PTRACE can trace it: the rlimits while raising them is permitted,
    // then only the process's own capabilities and the three that switching the identity
    // needs (dropped by switch_identity). Non-dumpable since the start (PR_SET_DUMPABLE 0).
    p.apply_rlimits()?;
    p.limit_capabilities(&[
        Capability::CAP_SETUID,
        Capability::CAP_SETGID,
        Capability::CAP_SETPCAP,
    ])?;
    let child = sys::clone_again(libc::CLONE_PARENT)?;
    if child != 0 {
        chan.send(&Msg::Pid(child), None)
            .step("reporting the exec process")?;
        sys::exit_now(0);
    }
    let entered = p.chdir_early()?;
    if x.terminal {
        let (master, slave) = tty::open_pty()?;
        match x.console {
            Some(sock) => tty::send_console(sock, &master)?,
            None => chan
                .send(&Msg::Pty, Some(master.as_raw_fd()))
                .step("passing the pty master to kiln")?,
        }
        drop(master);
        tty::become_tty(&slave, None)?;
    }
    p.switch_identity()?;
    if !entered {
        p.chdir()?;
    }
    let exe = p.resolve_exe()?;
    p.restrict()?;
    Err(p.exec(&exe))
}
