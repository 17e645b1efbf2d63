//! `exec`: a new process inside a running container's namespaces and cgroup.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxSeccomp, Process};

use crate::cgroups::ContainerCgroup;
use crate::container::{load_spec, write_pid_file, Container};
use crate::error::{Ctx, Error, Result};
use crate::process::Prepared;
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
        let joins = foreign_namespaces(pid, NS_ORDER)?;
        let cgroupns = foreign_namespaces(pid, &[("cgroup", libc::CLONE_NEWCGROUP)])?;
        // The pid namespace applies to children: enter it here, before forking.
        for (fd, flag, path) in foreign_namespaces(pid, &[("pid", libc::CLONE_NEWPID)])? {
            sys::setns(&fd, flag).at("joining pid namespace", &path)?;
        }
        let console = match (&opts.console_socket, terminal) {
            (Some(p), true) => Some(UnixStream::connect(p).at("connecting to console socket", p)?),
            _ => None,
        };
        let (parent_end, child_end) = sys::seqpacket_pair().step("socketpair")?;
        let child = sys::clone_fork(0).step("fork for exec")?;
        if child == 0 {
            drop(parent_end);
            let chan = Channel(child_end);
            let r = child_main(
                &chan,
                &joins,
                &cgroupns,
                &prepared,
                terminal,
                console.as_ref().map(|c| c.as_raw_fd()),
            );
            let msg = match r {
                Err(e) => e.to_string(),
                Ok(never) => match never {},
            };
            let _ = chan.send(&Msg::Error(msg), None);
            sys::exit_now(127);
        }
        drop(child_end);
        drop(console);
        let chan = Channel(parent_end);
        let fail = |e: Error| {
            let _ = sys::kill(child, libc::SIGKILL);
            let _ = sys::waitpid(child, 0);
            e
        };
        if let Some(cg) = self.persisted().cgroup.as_deref() {
            ContainerCgroup::load(cg).add(child).map_err(fail)?;
        }
        chan.send(&Msg::Go, None)
            .step("releasing the exec process")
            .map_err(fail)?;
        let mut pty = None;
        loop {
            match chan.recv() {
                Ok((Msg::Pty, fd)) => pty = fd,
                Ok((Msg::Error(m), _)) => return Err(fail(Error::Init(m))),
                Ok((other, _)) => {
                    return Err(fail(Error::Init(format!("unexpected message {other:?}"))))
                }
                // EOF: the close-on-exec socket closed, the process image was replaced.
                Err(_) => break,
            }
        }
        if let Some(pf) = &opts.pid_file {
            write_pid_file(pf, child)?;
        }
        if opts.detach {
            return Ok(ExecOutcome::Detached(child));
        }
        let code = match pty {
            Some(m) => tty::proxy(m, child)?,
            None => sys::waitpid(child, 0)
                .map(|(_, s)| sys::exit_code(s))
                .step("waiting for the exec process")?,
        };
        Ok(ExecOutcome::Exited(code))
    }
}

fn child_main(
    chan: &Channel,
    joins: &[(OwnedFd, libc::c_int, PathBuf)],
    cgroupns: &[(OwnedFd, libc::c_int, PathBuf)],
    p: &Prepared,
    terminal: bool,
    console: Option<RawFd>,
) -> Result<Infallible> {
    match chan.recv().step("reading from kiln")?.0 {
        Msg::Go => {}
        other => return Err(Error::Init(format!("expected Go, got {other:?}"))),
    }
    for (fd, flag, path) in joins.iter().chain(cgroupns) {
        sys::setns(fd, *flag).at("joining namespace", path)?;
    }
    p.apply_rlimits()?;
    p.chdir()?;
    if terminal {
        let (master, slave) = tty::open_pty()?;
        match console {
            Some(sock) => tty::send_console(sock, &master)?,
            None => chan
                .send(&Msg::Pty, Some(master.as_raw_fd()))
                .step("passing the pty master to kiln")?,
        }
        drop(master);
        tty::become_tty(&slave, None)?;
    }
    let exe = p.resolve_exe()?;
    p.finalize_identity()?;
    Err(p.exec(&exe))
}
