//! Starting the ingress as a detached process, finding it, registering environments with it,
//! and stopping them.
//!
//! [`start_ingress`] runs `kiln ingress start …`; that process forks, the child starts a new
//! session with its output going to `ingress.log` and runs the ingress, and the parent exits
//! as soon as the child reports it listens (or why it could not). So no kiln process waits on
//! the ingress and nothing is left to reap.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe, setsid, ForkResult};

use super::client::{IngressClient, RouterClient};
use super::{run, IngressConfig, IngressInfo, RouterConfig, RouterInfo};
use crate::error::RouterError;
use crate::layout;
use kiln_util::fs as atomic;
use kiln_util::wait::{self, Deadline};

/// Lines of the ingress's log quoted when it fails to start.
const LOG_TAIL: usize = 10;
/// How long a start waits for an ingress another process is starting.
const START_WAIT: Duration = Duration::from_secs(10);

/// Starts the ingress for `root` as a detached process by running `kiln_bin ingress start
/// ARGS`; returns once it listens.
pub fn start_ingress(
    kiln_bin: &Path,
    root: &Path,
    args: &[String],
) -> Result<IngressInfo, RouterError> {
    let out = Command::new(kiln_bin)
        .arg("--root")
        .arg(root)
        .args(["ingress", "start"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RouterError::io("running", kiln_bin, e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.trim().trim_start_matches("kiln ingress: ");
        if why.contains("an ingress already runs") {
            return Err(RouterError::IngressRunning {
                root: root.to_path_buf(),
                pid: 0,
            });
        }
        return Err(RouterError::Start {
            message: format!("{}: {why}", out.status),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with('{')).unwrap_or("");
    serde_json::from_str(line).map_err(|e| RouterError::Start {
        message: format!("unreadable report {text:?}: {e}"),
    })
}

/// The running ingress of `root`, or a new one (on a free loopback port, ending with its last
/// environment) when none runs. Safe to call from several processes at once: one starts it,
/// the others wait for it.
pub fn ensure_ingress(kiln_bin: &Path, root: &Path) -> Result<IngressInfo, RouterError> {
    if let Some(info) = ingress_running(root)? {
        if IngressClient::connect(root).is_ok() {
            return Ok(info);
        }
    }
    match start_ingress(kiln_bin, root, &["--auto".into()]) {
        Ok(info) => Ok(info),
        Err(RouterError::IngressRunning { .. }) => {
            let mut found = None;
            wait::until(
                Deadline::after(START_WAIT),
                Duration::from_millis(10),
                || {
                    found = ingress_running(root)
                        .ok()
                        .flatten()
                        .filter(|_| IngressClient::connect(root).is_ok());
                    found.is_some()
                },
            );
            found.ok_or_else(|| RouterError::Start {
                message: format!(
                    "another process holds {} but no ingress answers on {}",
                    layout::ingress_lock(root).display(),
                    layout::ingress_socket(root).display()
                ),
            })
        }
        Err(e) => Err(e),
    }
}

/// Registers `config.env` with the ingress (started if none runs); refused if it is
/// registered already.
pub fn start(kiln_bin: &Path, config: &RouterConfig) -> Result<RouterInfo, RouterError> {
    layout::validate_env(&config.env)?;
    ensure_ingress(kiln_bin, &config.runtime_root)?;
    IngressClient::connect(&config.runtime_root)?.register(config)?;
    recorded(&config.runtime_root, &config.env)?.ok_or_else(|| RouterError::Start {
        message: format!("registered {} but found no record of it", config.env),
    })
}

/// The registration of `config.env`, or a new one made with `config` (`true`: made now). A
/// deploy calls this first, with `held: true` for a first deploy.
pub fn ensure(kiln_bin: &Path, config: &RouterConfig) -> Result<(RouterInfo, bool), RouterError> {
    layout::validate_env(&config.env)?;
    if let Some(info) = running(&config.runtime_root, &config.env)? {
        if RouterClient::connect(&config.runtime_root, &config.env).is_ok() {
            return Ok((info, false));
        }
    }
    match start(kiln_bin, config) {
        Ok(info) => Ok((info, true)),
        Err(RouterError::Refused { message, .. }) if message.contains("already has a router") => {
            let info =
                recorded(&config.runtime_root, &config.env)?.ok_or_else(|| RouterError::Start {
                    message: format!("{} is registered but has no record", config.env),
                })?;
            Ok((info, false))
        }
        Err(e) => Err(e),
    }
}

/// Forks: the child becomes the detached ingress (it never returns from here); the parent
/// returns the child's [`IngressInfo`] once it listens. Call it only while this process has a
/// single thread (straight from `main`).
pub fn run_detached(config: &IngressConfig) -> Result<IngressInfo, RouterError> {
    let dir = layout::ingress_dir(&config.runtime_root);
    std::fs::create_dir_all(&dir).map_err(|e| RouterError::io("creating", &dir, e))?;
    let log_path = layout::ingress_log(&config.runtime_root);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| RouterError::io("opening", &log_path, e))?;
    let (read_end, write_end) =
        pipe().map_err(|e| RouterError::errno("making the report pipe for", &log_path, e))?;
    // SAFETY: the caller guarantees this process is single-threaded, so the child may run
    // arbitrary code (allocate, spawn threads) after the fork.
    match unsafe { fork() }
        .map_err(|e| RouterError::errno("forking the ingress for", &log_path, e))?
    {
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
            let report = report.trim();
            if let Ok(info) = serde_json::from_str(report) {
                return Ok(info);
            }
            if report.contains("an ingress already runs") {
                return Err(RouterError::IngressRunning {
                    root: config.runtime_root.clone(),
                    pid: 0,
                });
            }
            Err(RouterError::Start {
                message: if report.is_empty() {
                    format!(
                        "it exited; last lines of {}:\n{}",
                        log_path.display(),
                        tail(&log_path)
                    )
                } else {
                    report.to_string()
                },
            })
        }
    }
}

/// The child's side of [`run_detached`]: new session, stdio to the log, run; the exit code.
fn detached_child(config: &IngressConfig, log: &File, mut report: File) -> i32 {
    let setup = setsid()
        .map(drop)
        .and_then(|()| File::open("/dev/null").map_err(|_| nix::errno::Errno::ENOENT))
        .and_then(|null| dup2_stdin(&null))
        .and_then(|()| dup2_stdout(log))
        .and_then(|()| dup2_stderr(log));
    if let Err(e) = setup {
        let _ = writeln!(report, "setting up the detached ingress: {e}");
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
            eprintln!("kiln ingress: {e}");
            if let Some(mut r) = report.take() {
                let _ = writeln!(r, "{e}");
            }
            1
        }
    }
}

/// The ingress recorded for `root`, whether or not it still runs.
pub fn ingress_recorded(root: &Path) -> Result<Option<IngressInfo>, RouterError> {
    Ok(atomic::read_json(&layout::ingress_record(root))?)
}

/// The ingress of `root` if its process is alive.
pub fn ingress_running(root: &Path) -> Result<Option<IngressInfo>, RouterError> {
    Ok(ingress_recorded(root)?.filter(|i| i.process.alive()))
}

/// Stops the ingress of `root` (control `stop`, then SIGTERM/SIGKILL after `grace`); true
/// when one was running.
pub fn stop_ingress(root: &Path, grace: Duration) -> Result<bool, RouterError> {
    let Some(info) = ingress_running(root)? else {
        return Ok(false);
    };
    let asked = IngressClient::connect(root).and_then(|mut c| c.stop());
    if asked.is_err() || !info.process.wait_gone(grace) {
        info.process.terminate(grace);
    }
    Ok(true)
}

/// The registration recorded for `env`, whether or not its ingress still runs.
pub fn recorded(runtime_root: &Path, env: &str) -> Result<Option<RouterInfo>, RouterError> {
    layout::validate_env(env)?;
    Ok(atomic::read_json(&layout::router_record(
        runtime_root,
        env,
    ))?)
}

/// The registration of `env` if its ingress process is alive.
pub fn running(runtime_root: &Path, env: &str) -> Result<Option<RouterInfo>, RouterError> {
    Ok(recorded(runtime_root, env)?.filter(|info| info.process.alive()))
}

/// Unregisters `env` from the ingress (held requests are let through first) and removes its
/// registration record; an ingress a deploy started ends with its last environment (waited
/// for up to `grace`). True when `env` was registered.
pub fn stop(runtime_root: &Path, env: &str, grace: Duration) -> Result<bool, RouterError> {
    layout::validate_env(env)?;
    let mut was = false;
    if let Some(ingress) = ingress_running(runtime_root)? {
        if let Ok(mut c) = IngressClient::connect(runtime_root) {
            let (registered, ending) = c.unregister(env)?;
            was = registered;
            if ending && !ingress.process.wait_gone(grace) {
                ingress.process.terminate(grace);
            }
        }
    }
    atomic::remove_file(&layout::router_record(runtime_root, env))?;
    Ok(was)
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}
