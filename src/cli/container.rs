//! runc-compatible container commands: create, start, state, kill, delete, run, exec, ps, pause,
//! resume, list, spec, features, events. Thin: parse, call kiln-runtime, print.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_runtime::{CreateOptions, ExecOptions, ExecOutcome, Runtime, Status};

use super::Global;

/// The OCI runtime's commands (runc's command line).
#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Create a container from a bundle; its init waits for `start`.
    Create(CreateArgs),
    /// Start a created container's process.
    Start(IdArg),
    /// Print a container's OCI state as JSON.
    State(IdArg),
    /// Send a signal to a container's init (or all its processes).
    Kill(KillArgs),
    /// Delete a container (stopped or created; running with --force).
    Delete(DeleteArgs),
    /// Create and start a container; wait for it and delete it unless --detach.
    Run(RunArgs),
    /// Run a new process inside a running container.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps(PsArgs),
    /// Freeze every process of a container.
    Pause(IdArg),
    /// Thaw a paused container.
    Resume(IdArg),
    /// List containers.
    List(ListArgs),
    /// Write a default config.json into a bundle.
    Spec(SpecArgs),
    /// Print what this runtime supports (runtime-spec features document).
    Features,
    /// Print a container's resource usage (once with --stats).
    Events(EventsArgs),
}

/// A container id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Container id.
    pub id: String,
}

/// Options shared by create and run.
#[derive(Debug, Args)]
pub struct CreateFlags {
    /// Bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the init's pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master (process.terminal).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Do not use pivot_root (for a rootfs on ramfs).
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not join a fresh session keyring `_ses.<id>` (the caller's keyring stays visible).
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass descriptors 3..3+N of kiln into the container process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

impl CreateFlags {
    fn options(&self) -> CreateOptions {
        CreateOptions {
            console_socket: self.console_socket.clone(),
            pid_file: self.pid_file.clone(),
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
            preserve_fds: self.preserve_fds,
            forward_signals: true,
        }
    }
}

/// `create` arguments.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    flags: CreateFlags,
    /// Container id.
    id: String,
}

/// `run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    flags: CreateFlags,
    /// Return once started instead of waiting.
    #[arg(short, long)]
    detach: bool,
    /// Container id.
    id: String,
}

/// `kill` arguments.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal every process of the container.
    #[arg(short, long)]
    all: bool,
    /// Container id.
    id: String,
    /// Signal name (TERM, SIGKILL) or number.
    #[arg(default_value = "TERM")]
    signal: String,
}

/// `delete` arguments.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    force: bool,
    /// Container id.
    id: String,
}

/// `exec` arguments.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// process.json describing the process (instead of CMD).
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Return once the process runs.
    #[arg(short, long)]
    detach: bool,
    /// Write the process's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Extra environment KEY=VALUE.
    #[arg(short, long)]
    env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    user: Option<String>,
    /// Pass descriptors 3..3+N of kiln into the process.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Container id.
    id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

/// `ps` arguments.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    format: String,
    /// Container id.
    id: String,
}

/// `list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    format: String,
    /// Only print ids.
    #[arg(short, long)]
    quiet: bool,
}

/// `spec` arguments.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Bundle directory to write config.json into.
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
}

/// `events` arguments.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print the stats once and exit.
    #[arg(long)]
    stats: bool,
    /// Seconds between stats lines.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// Container id.
    id: String,
}

/// Where errors and debug lines go (`--log`, `--log-format`, `--debug`), as runc writes them.
struct Log {
    file: Option<std::fs::File>,
    json: bool,
}

impl Log {
    fn open(g: &Global) -> Log {
        let file = g.log.as_ref().and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
        Log {
            file,
            json: g.log_format == "json",
        }
    }

    fn write(&mut self, level: &str, msg: &str) {
        if let Some(f) = &mut self.file {
            let line = if self.json {
                serde_json::json!({"level": level, "msg": msg, "time": kiln_util::time::now_rfc3339()})
                    .to_string()
            } else {
                format!("{} {level} {msg}", kiln_util::time::now_rfc3339())
            };
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Runs one runtime command and maps errors to exit status 1 (logged like runc).
pub fn main(g: &Global, cmd: RuntimeCommand) -> ExitCode {
    let mut log = Log::open(g);
    if g.debug {
        log.write("debug", &format!("{cmd:?}"));
    }
    if g.systemd_cgroup {
        log.write(
            "warning",
            "--systemd-cgroup: kiln manages cgroupfs directly; ignored",
        );
    }
    match dispatch(g, cmd, &mut log) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let msg = format!("{e:#}");
            log.write("error", &msg);
            eprintln!("kiln: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn warn_all(log: &mut Log, warnings: Vec<kiln_runtime::Error>) {
    for w in warnings {
        log.write("warning", &w.to_string());
        eprintln!("kiln: warning: {w}");
    }
}

fn dispatch(g: &Global, cmd: RuntimeCommand, log: &mut Log) -> Result<i32> {
    let rt = Runtime::new(&g.root);
    match cmd {
        RuntimeCommand::Create(a) => {
            rt.create(&a.id, &a.flags.bundle, &a.flags.options())
                .with_context(|| format!("creating container {}", a.id))?;
        }
        RuntimeCommand::Start(a) => {
            let w = rt
                .load(&a.id)?
                .start()
                .with_context(|| format!("starting container {}", a.id))?;
            warn_all(log, w);
        }
        RuntimeCommand::State(a) => {
            let c = rt.load(&a.id)?;
            println!("{}", serde_json::to_string_pretty(&c.state_json())?);
        }
        RuntimeCommand::Kill(a) => {
            let sig = kiln_runtime::parse_signal(&a.signal)
                .ok_or_else(|| anyhow!("unknown signal {:?}", a.signal))?;
            rt.load(&a.id)?
                .kill(sig, a.all)
                .with_context(|| format!("killing container {}", a.id))?;
        }
        RuntimeCommand::Delete(a) => {
            let w = rt
                .load(&a.id)?
                .delete(a.force)
                .with_context(|| format!("deleting container {}", a.id))?;
            warn_all(log, w);
        }
        RuntimeCommand::Run(a) => {
            return rt
                .run(&a.id, &a.flags.bundle, &a.flags.options(), a.detach)
                .with_context(|| format!("running container {}", a.id));
        }
        RuntimeCommand::Exec(a) => return exec(&rt, a),
        RuntimeCommand::Ps(a) => ps(&rt, &a)?,
        RuntimeCommand::Pause(a) => rt.load(&a.id)?.pause()?,
        RuntimeCommand::Resume(a) => rt.load(&a.id)?.resume()?,
        RuntimeCommand::List(a) => list(&rt, &a)?,
        RuntimeCommand::Spec(a) => spec(&a.bundle)?,
        RuntimeCommand::Features => println!("{}", serde_json::to_string_pretty(&features())?),
        RuntimeCommand::Events(a) => events(&rt, &a)?,
    }
    Ok(0)
}

fn exec(rt: &Runtime, a: ExecArgs) -> Result<i32> {
    let c = rt.load(&a.id)?;
    let process = match &a.process {
        Some(p) => {
            let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_slice(&data).with_context(|| format!("parsing {}", p.display()))?
        }
        None => {
            if a.cmd.is_empty() {
                bail!("exec needs a command or --process");
            }
            let user = a
                .user
                .as_deref()
                .map(|u| -> Result<(u32, u32)> {
                    let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
                    Ok((
                        uid.parse()
                            .with_context(|| format!("--user {u:?}: uid must be a number"))?,
                        gid.parse()
                            .with_context(|| format!("--user {u:?}: gid must be a number"))?,
                    ))
                })
                .transpose()?;
            c.exec_process(a.cmd.clone(), &a.env, a.cwd.clone(), user, a.tty)?
        }
    };
    let opts = ExecOptions {
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        detach: a.detach,
        preserve_fds: a.preserve_fds,
        forward_signals: true,
    };
    match c
        .exec(&process, &opts)
        .with_context(|| format!("exec in container {}", a.id))?
    {
        ExecOutcome::Detached(_) => Ok(0),
        ExecOutcome::Exited(code) => Ok(code),
    }
}

fn ps(rt: &Runtime, a: &PsArgs) -> Result<()> {
    let c = rt.load(&a.id)?;
    let pids = c.processes();
    if a.format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    // Like runc: the host's ps is the interface for the table.
    let out = std::process::Command::new("ps")
        .arg("-ef")
        .output()
        .context("running ps -ef")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for (i, line) in text.lines().enumerate() {
        let pid: Option<i32> = line.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if i == 0 || pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}

fn list(rt: &Runtime, a: &ListArgs) -> Result<()> {
    let all = rt.list()?;
    if a.quiet {
        for c in &all {
            println!("{}", c.id());
        }
    } else if a.format == "json" {
        let v: Vec<_> = all.iter().map(|c| c.state_json()).collect();
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "{:<20} {:<8} {:<10} {:<40} CREATED",
            "ID", "PID", "STATUS", "BUNDLE"
        );
        for c in &all {
            let s = c.status();
            let pid = if s == Status::Stopped { 0 } else { c.pid() };
            println!(
                "{:<20} {:<8} {:<10} {:<40} {}",
                c.id(),
                pid,
                s,
                c.bundle().display(),
                c.persisted().created
            );
        }
    }
    Ok(())
}

fn spec(bundle: &Path) -> Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("{} exists: remove it first", path.display());
    }
    std::fs::write(&path, kiln_runtime::spec::DEFAULT_SPEC_JSON)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime",
            "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave",
            "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps_names(),
            "cgroup": {"v1": true, "v2": false, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86_64"],
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
    })
}

fn caps_names() -> Vec<String> {
    kiln_runtime::capability_names()
}

fn events(rt: &Runtime, a: &EventsArgs) -> Result<()> {
    loop {
        let c = rt.load(&a.id)?;
        let line = serde_json::json!({"type": "stats", "id": a.id, "data": c.stats()});
        println!("{line}");
        if a.stats || c.status() == Status::Stopped {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(a.interval.max(1)));
    }
}
