//! Starting a router as a detached process, finding it, and stopping it.
//!
//! [`start`] runs `kiln router --detach …`; that process forks, the child starts a new session
//! with its output going to `router.log` and runs the router, and the parent exits as soon as
//! the child reports it listens (or why it could not). So no kiln process waits on the router
//! and nothing is left to reap.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe, setsid, ForkResult};

use super::client::RouterClient;
use super::{run, RouterConfig, RouterInfo};
use crate::error::RouterError;
use crate::layout;
use kiln_util::fs as atomic;

/// Lines of the router's log quoted when it fails to start.
const LOG_TAIL: usize = 10;

/// Starts the router for `config.env` as a detached process by running `kiln_bin router
/// --detach`; returns once it listens.
pub fn start(kiln_bin: &Path, config: &RouterConfig) -> Result<RouterInfo, RouterError> {
    layout::validate_env(&config.env)?;
    if let Some(running) = running(&config.runtime_root, &config.env)? {
        return Err(RouterError::Running {
            env: config.env.clone(),
            pid: running.process.pid,
        });
    }
    let mut cmd = Command::new(kiln_bin);
    cmd.arg("--root")
        .arg(&config.runtime_root)
        .args(["router", "--detach", "--env", &config.env])
        .arg("--listen")
        .arg(config.listen.to_string())
        .arg("--retry-ms")
        .arg(config.retry.as_millis().to_string());
    if let Some(up) = &config.upstream {
        cmd.arg("--upstream").arg(up.to_string());
    }
    if config.held {
        cmd.arg("--hold");
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RouterError::io("running", kiln_bin, e))?;
    let fail = |message: String| RouterError::Start {
        env: config.env.clone(),
        message,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.trim().trim_start_matches("kiln router: ");
        return Err(fail(format!("{}: {why}", out.status)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        fail(format!(
            "unreadable report {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// The running router of `config.env`, or a new one started with `config` (`true`: started
/// now). A deploy calls this first, with `held: true` for a first deploy.
pub fn ensure(kiln_bin: &Path, config: &RouterConfig) -> Result<(RouterInfo, bool), RouterError> {
    match running(&config.runtime_root, &config.env)? {
        Some(info) => Ok((info, false)),
        None => Ok((start(kiln_bin, config)?, true)),
    }
}

/// Forks: the child becomes the detached router (it never returns from here); the parent
/// returns the child's [`RouterInfo`] once it listens. Call it only while this process has a
/// single thread (straight from `main`).
pub fn run_detached(config: &RouterConfig) -> Result<RouterInfo, RouterError> {
    layout::validate_env(&config.env)?;
    let dir = layout::env_dir(&config.runtime_root, &config.env);
    std::fs::create_dir_all(&dir).map_err(|e| RouterError::io("creating", &dir, e))?;
    let log_path = layout::router_log(&config.runtime_root, &config.env);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| RouterError::io("opening", &log_path, e))?;
    let (read_end, write_end) = pipe().map_err(|e| RouterError::sys("pipe", "router report", e))?;
    // SAFETY: the caller guarantees this process is single-threaded, so the child may run
    // arbitrary code (allocate, spawn threads) after the fork.
    match unsafe { fork() }.map_err(|e| RouterError::sys("fork", "router", e))? {
        ForkResult::Child => {
            drop(read_end);
            let code = detached_child(config, &log, File::from(write_end));
            std::process::exit(code);
        }
        ForkResult::Parent { .. } => {
            drop(write_end);
            let mut report = String::new();
            // A read error reads as an empty report, which is reported below.
            let _ = File::from(read_end).read_to_string(&mut report);
            match serde_json::from_str(report.trim()) {
                Ok(info) => Ok(info),
                Err(_) => Err(RouterError::Start {
                    env: config.env.clone(),
                    message: if report.trim().is_empty() {
                        format!(
                            "it exited; last lines of {}:\n{}",
                            log_path.display(),
                            tail(&log_path)
                        )
                    } else {
                        report.trim().to_string()
                    },
                }),
            }
        }
    }
}

/// The child's side of [`run_detached`]: new session, stdio to the log, run; the exit code.
fn detached_child(config: &RouterConfig, log: &File, mut report: File) -> i32 {
    let setup = setsid()
        .map(drop)
        .and_then(|()| File::open("/dev/null").map_err(|_| nix::errno::Errno::ENOENT))
        .and_then(|null| dup2_stdin(&null))
        .and_then(|()| dup2_stdout(log))
        .and_then(|()| dup2_stderr(log));
    if let Err(e) = setup {
        let _ = writeln!(report, "setting up the detached router: {e}");
        return 1;
    }
    let mut report = Some(report);
    let result = run(config, |info| {
        if let Some(mut r) = report.take() {
            let line = serde_json::to_string(info).unwrap_or_default();
            let _ = writeln!(r, "{line}");
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kiln router: {e}");
            if let Some(mut r) = report.take() {
                let _ = writeln!(r, "{e}");
            }
            1
        }
    }
}

/// The router recorded for `env`, whether or not it still runs.
pub fn recorded(runtime_root: &Path, env: &str) -> Result<Option<RouterInfo>, RouterError> {
    layout::validate_env(env)?;
    Ok(atomic::read_json(&layout::router_record(
        runtime_root,
        env,
    ))?)
}

/// The router of `env` if its process is alive.
pub fn running(runtime_root: &Path, env: &str) -> Result<Option<RouterInfo>, RouterError> {
    Ok(recorded(runtime_root, env)?.filter(|info| info.process.alive()))
}

/// Stops the router of `env` (control `stop`, then SIGTERM/SIGKILL after `grace`) and removes
/// its socket, pid file, record and log; true when a router was running.
pub fn stop(runtime_root: &Path, env: &str, grace: Duration) -> Result<bool, RouterError> {
    let was_running = match running(runtime_root, env)? {
        Some(info) => {
            let asked = RouterClient::connect(runtime_root, env).and_then(|mut c| c.stop());
            if asked.is_err() || !info.process.wait_gone(grace) {
                info.process.terminate(grace);
            }
            true
        }
        None => false,
    };
    for path in [
        layout::router_socket(runtime_root, env),
        layout::router_pid_file(runtime_root, env),
        layout::router_record(runtime_root, env),
        layout::router_log(runtime_root, env),
        layout::router_lock(runtime_root, env),
    ] {
        atomic::remove_file(&path)?;
    }
    Ok(was_running)
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}
