//! The public lifecycle: create, start, state, kill, delete, pause/resume, ps, stats, run.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_util::wait::Deadline;

use oci_spec::runtime::{Hook, Spec};

use crate::cgroups::{self, ContainerCgroup};
use crate::error::{Ctx, Error, Result};
use crate::init::{self, InitArgs};
use crate::namespaces::{self, Plan};
use crate::process::Prepared;
use crate::signals::Forwarder;
use crate::state::{self, ContainerState, Lock, Status, EXEC_FIFO};
use crate::sync::{Channel, Msg};
use crate::{hooks, sys};

/// How long delete waits for killed processes and busy cgroups.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// Options of `create` (runc's flags).
#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    /// Unix socket to send the pty master to (process.terminal = true).
    pub console_socket: Option<PathBuf>,
    /// File to write the init's host pid to.
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root (rootfs on a ramfs).
    pub no_pivot: bool,
    /// Do not join a fresh session keyring `_ses.<id>` (runc's --no-new-keyring).
    pub no_new_keyring: bool,
    /// Pass descriptors 3..3+N of the caller into the container process (--preserve-fds).
    pub preserve_fds: u32,
    /// In the foreground `run`, forward the signals kiln receives to the container process.
    pub forward_signals: bool,
}

/// A container runtime rooted at a state directory (`--root`, default /run/kiln).
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

/// A container known to the runtime.
#[derive(Debug)]
pub struct Container {
    root: PathBuf,
    state: ContainerState,
}

/// The outcome of `create` in the foreground (`run`): the container and, with a terminal and
/// no console socket, the pty master to proxy.
pub struct Created {
    /// The created container.
    pub container: Container,
    /// The pty master, when kiln itself holds the terminal.
    pub pty: Option<OwnedFd>,
}

/// Removes what a failed create made (process, cgroup, state dir) unless disarmed.
struct CreateGuard<'a> {
    dir: &'a Path,
    pid: Option<libc::pid_t>,
    cgroup: Option<ContainerCgroup>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = sys::kill(pid, libc::SIGKILL);
            let _ = sys::waitpid(pid, 0);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.remove(REAP_WAIT);
        }
        let _ = fs::remove_dir_all(self.dir);
    }
}

/// Reads and parses `<bundle>/config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let data = fs::read(&path).at("reading", &path)?;
    serde_json::from_slice(&data).map_err(|e| Error::Spec {
        path,
        msg: e.to_string(),
    })
}

fn hook_list(spec: &Spec, pick: fn(&oci_spec::runtime::Hooks) -> &Option<Vec<Hook>>) -> Vec<Hook> {
    spec.hooks()
        .as_ref()
        .and_then(|h| pick(h).clone())
        .unwrap_or_default()
}

impl Runtime {
    /// A runtime keeping container state under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates container `id` from the bundle at `bundle` (its config.json).
    pub fn create(&self, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<Container> {
        let bundle = fs::canonicalize(bundle).at("resolving bundle", bundle)?;
        let (spec, opts) = socket_activation(load_spec(&bundle)?, opts);
        Ok(self
            .create_from_spec(id, &bundle, &spec, &opts, false)?
            .container)
    }

    /// Creates container `id` from an already prepared spec; relative paths in it (root.path,
    /// bind sources) are taken from `bundle`. `foreground` lets kiln hold the terminal itself.
    pub fn create_from_spec(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        opts: &CreateOptions,
        foreground: bool,
    ) -> Result<Created> {
        state::validate_id(id)?;
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::Config("config has no process".into()))?;
        let terminal = process.terminal().unwrap_or(false);
        if terminal && opts.console_socket.is_none() && !foreground {
            return Err(Error::Config(
                "process.terminal is true: --console-socket is required (or use run in the foreground)"
                    .into(),
            ));
        }
        let root_path = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| Error::Config("config has no root.path".into()))?;
        let rootfs = bundle.join(root_path);
        let rootfs = fs::canonicalize(&rootfs).at("resolving root.path", &rootfs)?;
        let linux = spec.linux().as_ref();
        let prepared = Prepared::new(process, linux.and_then(|l| l.seccomp().as_ref()))?;
        let plan = Plan::new(linux)?;
        crate::sysctl::validate(spec)?;

        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .at("creating state root", &self.root)?;
        let dir = ContainerState::dir(&self.root, id);
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(id.to_string()))
            }
            Err(e) => return Err(e).at("creating state dir", &dir),
        }
        let mut guard = CreateGuard {
            dir: &dir,
            pid: None,
            cgroup: None,
            armed: true,
        };
        let lock = Lock::on(fs::File::open(&dir).at("opening", &dir)?, &dir)?;

        let cgroups_path = linux.and_then(|l| l.cgroups_path().as_deref());
        let resources = linux.and_then(|l| l.resources().as_ref());
        let cg = ContainerCgroup::create(cgroups_path, id, resources)?;
        let cg_path = cg.key().to_string();
        guard.cgroup = Some(cg);

        let fifo = dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
            .map_err(std::io::Error::from)
            .at("mkfifo", &fifo)?;
        // Writable by anyone (not cut by the umask): the init opens it after switching to the
        // process's user. Only the init holds a descriptor that leads to it.
        fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o622))
            .at("chmod", &fifo)?;
        if plan.new_userns {
            // The init opens the fifo as the container's root: give it to that user.
            let host = |m: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
                m.and_then(|v| v.iter().find(|e| e.container_id() == 0))
                    .map(|e| e.host_id())
            };
            let uid = host(linux.and_then(|l| l.uid_mappings().as_ref()));
            let gid = host(linux.and_then(|l| l.gid_mappings().as_ref()));
            std::os::unix::fs::chown(&fifo, uid, gid).at("chown", &fifo)?;
        }
        let console = match (&opts.console_socket, terminal) {
            (Some(p), true) => Some(UnixStream::connect(p).at("connecting to console socket", p)?),
            _ => None,
        };

        let created = kiln_util::time::now_rfc3339();
        let mut st = ContainerState {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            pid: 0,
            pid_start: 0,
            bundle: bundle.to_path_buf(),
            rootfs: rootfs.clone(),
            created,
            annotations: spec.annotations().clone().unwrap_or_default(),
            cgroup: Some(cg_path.clone()),
            poststop: hook_list(spec, |h| h.poststop()),
            poststart: hook_list(spec, |h| h.poststart()),
            started: false,
        };
        let prestart = hook_list(spec, |h| h.prestart());
        let create_runtime = hook_list(spec, |h| h.create_runtime());
        let runtime_hooks = !prestart.is_empty() || !create_runtime.is_empty();

        let host_sys = crate::rootfs::host_sys_fallback(spec, &plan)?;
        let (parent_end, child_end) = sys::seqpacket_pair().step("socketpair")?;
        let joined = namespaces::parent_enter(&plan.parent_join)?;
        // Joining a pid namespace, the init is visible there from its first instruction, while
        // its root is still the host's: it is born non-dumpable (dumpability is inherited), so
        // nothing in that namespace can ptrace it or open its /proc files before it has pivoted.
        let joins_pidns = plan
            .parent_join
            .iter()
            .any(|j| j.flag == libc::CLONE_NEWPID);
        if joins_pidns {
            sys::prctl(libc::PR_SET_DUMPABLE, 0, 0).step("prctl(PR_SET_DUMPABLE, 0)")?;
        }
        let pid = sys::clone_fork(plan.clone_flags);
        if joins_pidns && !matches!(pid, Ok(0)) {
            let _ = sys::prctl(libc::PR_SET_DUMPABLE, 1, 0);
        }
        let pid = pid?;
        if pid == 0 {
            // The flock belongs to the open file shared with the child: only the parent keeps it.
            drop(lock);
            drop(parent_end);
            init::run(InitArgs {
                spec,
                bundle,
                rootfs: &rootfs,
                plan: &plan,
                process: &prepared,
                chan: Channel(child_end),
                fifo: &fifo,
                console: console.as_ref().map(|c| c.as_raw_fd()),
                no_pivot: opts.no_pivot,
                cgroup: Some(&cg_path),
                runtime_hooks,
                hook_state: st.oci_json(Status::Created),
                keyring: (!opts.no_new_keyring).then(|| format!("_ses.{id}")),
                preserve_fds: opts.preserve_fds,
                host_sys: host_sys.as_ref(),
            });
        }
        guard.pid = Some(pid);
        // The init holds its own reference: this is not the last one, so no RCU wait here.
        drop(host_sys);
        drop(child_end);
        drop(console);
        joined.restore()?;
        let chan = Channel(parent_end);
        if plan.new_userns {
            namespaces::write_id_maps(pid, linux)?;
        }
        chan.send(&Msg::Go, None)
            .step("releasing the container init")
            .map_err(|e| init_failure(&chan, e))?;
        if let Some(cg) = &guard.cgroup {
            cg.add(pid)?;
        }
        chan.send(&Msg::CgroupJoined, None)
            .step("telling the init its cgroup is joined")
            .map_err(|e| init_failure(&chan, e))?;
        st.pid = pid;
        st.pid_start = sys::proc_start_time(pid).map(|(s, _)| s).unwrap_or(0);
        // Saved (two fsyncs) while the init sets up the root on another CPU, not after it: the
        // state dir is removed again if the setup fails.
        st.save(&self.root)?;
        let mut pty = None;
        loop {
            let (msg, fd) = chan.recv().map_err(|e| {
                init_failure(
                    &chan,
                    Error::Init(format!("init exited during setup ({e})")),
                )
            })?;
            match msg {
                Msg::RunHooks => {
                    let s = st.oci_json(Status::Created);
                    hooks::run("prestart", &prestart, &s)?;
                    hooks::run("createRuntime", &create_runtime, &s)?;
                    chan.send(&Msg::HooksDone, None)
                        .step("resuming the container init")?;
                }
                Msg::Pty => pty = fd,
                Msg::Ready => break,
                Msg::Error(m) => return Err(Error::Init(m)),
                other => return Err(Error::Init(format!("unexpected message {other:?}"))),
            }
        }
        if let Some(pf) = &opts.pid_file {
            write_pid_file(pf, pid)?;
        }
        guard.armed = false;
        drop(guard);
        drop(lock);
        Ok(Created {
            container: Container {
                root: self.root.clone(),
                state: st,
            },
            pty,
        })
    }

    /// Loads an existing container.
    pub fn load(&self, id: &str) -> Result<Container> {
        state::validate_id(id)?;
        Ok(Container {
            root: self.root.clone(),
            state: ContainerState::load(&self.root, id)?,
        })
    }

    /// Every container under the state root (unreadable entries are skipped).
    pub fn list(&self) -> Result<Vec<Container>> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).at("listing", &self.root),
        };
        let mut out: Vec<Container> = rd
            .flatten()
            .filter_map(|e| self.load(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| a.state.id.cmp(&b.state.id));
        Ok(out)
    }

    /// `run`: create, start, and (unless `detach`) wait for the process, delete the container
    /// and return its exit code. Detached, returns 0 once started.
    pub fn run(&self, id: &str, bundle: &Path, opts: &CreateOptions, detach: bool) -> Result<i32> {
        let bundle = fs::canonicalize(bundle).at("resolving bundle", bundle)?;
        let (spec, opts) = socket_activation(load_spec(&bundle)?, opts);
        self.run_spec(id, &bundle, &spec, &opts, detach)
    }

    /// `run` for a prepared spec (the library entry point for build steps and services).
    pub fn run_spec(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        opts: &CreateOptions,
        detach: bool,
    ) -> Result<i32> {
        let Created { mut container, pty } =
            self.create_from_spec(id, bundle, spec, opts, !detach)?;
        if let Err(e) = container.start() {
            let _ = container.delete(true);
            return Err(e);
        }
        if detach {
            return Ok(0);
        }
        let pid = container.pid();
        let code = wait_foreground(pid, pty, opts.forward_signals);
        let del = container.delete(true);
        let code = code?;
        del?;
        Ok(code)
    }
}

/// systemd socket activation, as runc does: when kiln was started with `LISTEN_FDS=N` and
/// `LISTEN_PID` naming kiln itself, descriptors 3..3+N pass into the container ahead of the
/// `--preserve-fds` ones, and its process gets `LISTEN_FDS=N` and `LISTEN_PID=1`. Only for
/// `create`/`run` of a bundle (not kiln's own containers, nor `exec`, as runc).
fn socket_activation(mut spec: Spec, opts: &CreateOptions) -> (Spec, CreateOptions) {
    let mut opts = opts.clone();
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    let n = match (var("LISTEN_FDS"), var("LISTEN_PID")) {
        (Some(n), Some(pid)) if n > 0 && pid == std::process::id() => n,
        _ => return (spec, opts),
    };
    opts.preserve_fds = opts.preserve_fds.saturating_add(n);
    if let Some(mut p) = spec.process().clone() {
        let mut env = p.env().clone().unwrap_or_default();
        env.retain(|e| !e.starts_with("LISTEN_FDS=") && !e.starts_with("LISTEN_PID="));
        env.push(format!("LISTEN_FDS={n}"));
        env.push("LISTEN_PID=1".to_string());
        p.set_env(Some(env));
        spec.set_process(Some(p));
    }
    (spec, opts)
}

/// Waits for a foreground process (proxying its pty, forwarding signals when asked); returns
/// its exit code.
pub(crate) fn wait_foreground(pid: i32, pty: Option<OwnedFd>, forward: bool) -> Result<i32> {
    let fwd = forward.then(Forwarder::install).transpose()?;
    match (pty, &fwd) {
        (Some(m), _) => crate::tty::proxy(m, pid, fwd.as_ref()),
        (None, Some(f)) => f.wait_for(pid),
        (None, None) => sys::waitpid(pid, 0)
            .map(|(_, s)| sys::exit_code(s))
            .step("waiting for the container process"),
    }
}

/// When the init stops listening, its own error message (already queued) explains why.
fn init_failure(chan: &Channel, e: Error) -> Error {
    match chan.recv() {
        Ok((Msg::Error(m), _)) => Error::Init(m),
        _ => e,
    }
}

/// Writes a pid file atomically and durably.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    state::write_atomic(path, pid.to_string().as_bytes())
}

impl Container {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Host pid of the init process.
    pub fn pid(&self) -> i32 {
        self.state.pid
    }

    /// The bundle directory.
    pub fn bundle(&self) -> &Path {
        &self.state.bundle
    }

    /// The persisted state.
    pub fn persisted(&self) -> &ContainerState {
        &self.state
    }

    /// The live status.
    pub fn status(&self) -> Status {
        self.state.status(&self.root)
    }

    /// The OCI state document.
    pub fn state_json(&self) -> serde_json::Value {
        self.state.oci_json(self.status())
    }

    fn need(&self, action: &'static str, ok: &[Status], needed: &'static str) -> Result<Status> {
        let s = self.status();
        if ok.contains(&s) {
            Ok(s)
        } else {
            Err(Error::BadState {
                id: self.state.id.clone(),
                status: s.to_string(),
                action,
                needed,
            })
        }
    }

    fn cgroup(&self) -> Option<ContainerCgroup> {
        self.state.cgroup.as_deref().map(ContainerCgroup::load)
    }

    /// Starts the user process (releases the init blocked on the exec fifo), then runs the
    /// poststart hooks; their failures come back as warnings.
    pub fn start(&mut self) -> Result<Vec<Error>> {
        let _lock = Lock::acquire(&self.root, &self.state.id)?;
        self.need("start", &[Status::Created], "created")?;
        let fifo = ContainerState::dir(&self.root, &self.state.id).join(EXEC_FIFO);
        let fd = sys::open(
            &fifo,
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            0,
        )
        .at("opening exec fifo", &fifo)?;
        self.wait_released(&fd)?;
        self.state.started = true;
        // The removed fifo is what marks a started container; only when it cannot be removed
        // does the state file have to say so (a durable save costs two fsyncs).
        if fs::remove_file(&fifo).is_err() {
            self.state.save(&self.root)?;
        }
        let s = self.state.oci_json(Status::Running);
        let mut warnings = Vec::new();
        for h in &self.state.poststart {
            if let Err(e) = hooks::run("poststart", std::slice::from_ref(h), &s) {
                warnings.push(e);
            }
        }
        Ok(warnings)
    }

    /// Waits for the init's byte on the exec fifo (startContainer hooks done), then for EOF:
    /// its write end is close-on-exec, so EOF means the user process runs (or the init died).
    fn wait_released(&self, fd: &OwnedFd) -> Result<()> {
        let mut got_byte = false;
        loop {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut p, 1, 50) };
            if rc > 0 {
                let mut b = [0u8; 1];
                // SAFETY: reading into a live buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
                if n == 1 {
                    got_byte = true;
                    continue;
                }
                if n == 0 && got_byte {
                    return Ok(());
                }
            }
            let alive = matches!(
                sys::proc_start_time(self.state.pid),
                Some((s, false)) if s == self.state.pid_start
            );
            if !alive {
                return if got_byte {
                    Ok(())
                } else {
                    Err(Error::Init("the container init exited before start".into()))
                };
            }
        }
    }

    /// Sends `sig` to the init process, or with `all` to every process of the container.
    pub fn kill(&self, sig: i32, all: bool) -> Result<()> {
        self.need(
            "kill",
            &[Status::Created, Status::Running, Status::Paused],
            "created, running or paused",
        )?;
        if all {
            if let Some(cg) = self.cgroup() {
                for p in self.members(&cg) {
                    let _ = sys::kill(p, sig);
                }
                return Ok(());
            }
        }
        sys::kill(self.state.pid, sig).step(format!("kill({}, {sig})", self.state.pid))
    }

    /// Pids of the container's processes (from its cgroup).
    pub fn processes(&self) -> Vec<i32> {
        self.cgroup().map(|c| c.procs()).unwrap_or_default()
    }

    /// Freezes the container.
    pub fn pause(&self) -> Result<()> {
        self.need("pause", &[Status::Running], "running")?;
        self.cgroup()
            .ok_or_else(|| Error::Config("container has no cgroup".into()))?
            .freeze()
    }

    /// Thaws the container.
    pub fn resume(&self) -> Result<()> {
        self.need("resume", &[Status::Paused], "paused")?;
        self.cgroup()
            .ok_or_else(|| Error::Config("container has no cgroup".into()))?
            .thaw()
    }

    /// Resource usage (cpu, memory, pids) as JSON.
    pub fn stats(&self) -> serde_json::Value {
        self.cgroup().map(|c| c.stats()).unwrap_or_default()
    }

    /// Deletes the container: a stopped or created one always; a running one only with
    /// `force` (everything in it is killed). Runs poststop hooks; their failures are warnings.
    pub fn delete(self, force: bool) -> Result<Vec<Error>> {
        let _lock = Lock::acquire(&self.root, &self.state.id)?;
        let status = self.status();
        let cg = self.cgroup();
        match status {
            // The init is gone; anything it left in the cgroup goes too.
            Status::Stopped => {
                if let Some(cg) = &cg {
                    for p in self.members(cg) {
                        let _ = sys::kill(p, libc::SIGKILL);
                    }
                }
            }
            Status::Created => self.kill_all(cg.as_ref()),
            Status::Running | Status::Paused if force => self.kill_all(cg.as_ref()),
            _ => {
                return Err(Error::BadState {
                    id: self.state.id.clone(),
                    status: status.to_string(),
                    action: "delete",
                    needed: "stopped or created (or --force)",
                })
            }
        }
        if status != Status::Stopped {
            self.wait_gone();
        }
        if let Some(cg) = &cg {
            cg.remove(REAP_WAIT)?;
        }
        let mut warnings = Vec::new();
        if !self.state.poststop.is_empty() {
            let s = self.state.oci_json(Status::Stopped);
            for h in &self.state.poststop {
                if let Err(e) = hooks::run("poststop", std::slice::from_ref(h), &s) {
                    warnings.push(e);
                }
            }
        }
        let dir = ContainerState::dir(&self.root, &self.state.id);
        fs::remove_dir_all(&dir).at("removing state dir", &dir)?;
        Ok(warnings)
    }

    fn kill_all(&self, cg: Option<&ContainerCgroup>) {
        if let Some(cg) = cg {
            if cgroups::frozen(cg) {
                let _ = cg.thaw();
            }
            for p in self.members(cg) {
                let _ = sys::kill(p, libc::SIGKILL);
            }
        }
        let _ = sys::kill(self.state.pid, libc::SIGKILL);
    }

    /// The processes of `cg` that are the container's: all of them in a cgroup kiln created;
    /// in one that existed before (which may hold anyone's), only those in the init's own pid
    /// namespace (none once the init is gone: the kernel ends that namespace with it).
    fn members(&self, cg: &ContainerCgroup) -> Vec<i32> {
        let procs = cg.procs();
        if cg.owned() {
            return procs;
        }
        let ns_of = |pid: i32| {
            std::fs::metadata(format!("/proc/{pid}/ns/pid"))
                .ok()
                .map(|m| m.ino())
        };
        let init_alive = matches!(sys::proc_start_time(self.state.pid),
            Some((s, false)) if s == self.state.pid_start);
        let (Some(init_ns), true) = (ns_of(self.state.pid), init_alive) else {
            return Vec::new();
        };
        if Some(init_ns) == ns_of(std::process::id() as i32) {
            return Vec::new();
        }
        procs
            .into_iter()
            .filter(|&p| ns_of(p) == Some(init_ns))
            .collect()
    }

    /// Waits until the init is gone (reaping it if it is our child) or a zombie of someone else.
    fn wait_gone(&self) {
        kiln_util::wait::until(Deadline::after(REAP_WAIT), Duration::from_millis(1), || {
            let _ = sys::waitpid(self.state.pid, libc::WNOHANG);
            !matches!(sys::proc_start_time(self.state.pid),
                    Some((s, false)) if s == self.state.pid_start)
        });
    }
}
