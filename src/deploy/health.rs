//! Health checks: the app's port accepts a connection inside its network namespace, or a
//! health command exits 0, within a timeout.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::container;
use super::endpoint::Endpoint;
use super::env_state::HealthCheck;
use super::error::DeployError;

/// Pause between attempts.
const PAUSE: Duration = Duration::from_millis(10);
/// What a health command run cut off by the deadline reports.
const TIMED_OUT: &str = "timed out";
/// Longest single connect attempt.
const ATTEMPT: Duration = Duration::from_millis(500);

/// Waits until container `id` passes `check`: its command (run by `kiln exec`) exits 0, or
/// else every port accepts a connection inside `netns`.
pub fn wait(
    kiln_bin: &Path,
    runtime_root: &Path,
    id: &str,
    netns: &Path,
    check: &HealthCheck,
) -> Result<(), DeployError> {
    let timeout = Duration::from_secs(check.timeout_secs);
    if let Some(command) = &check.command {
        let mut make = || container::exec_command(kiln_bin, runtime_root, id, command);
        return wait_command(command, &mut make, timeout).map(drop);
    }
    for port in &check.ports {
        let ep = Endpoint::in_netns(([127, 0, 0, 1], *port).into(), netns);
        wait_port(&ep, timeout)?;
    }
    Ok(())
}

/// Waits until `endpoint` accepts a TCP connection (from inside its namespace); returns how
/// long that took.
pub fn wait_port(endpoint: &Endpoint, timeout: Duration) -> Result<Duration, DeployError> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match endpoint.connect(ATTEMPT.min(left).max(PAUSE)) {
            Ok(_) => return Ok(start.elapsed()),
            Err(e) => e,
        };
        if Instant::now() + PAUSE >= deadline {
            return Err(DeployError::Unhealthy {
                check: format!("port {endpoint}"),
                waited_ms: start.elapsed().as_millis(),
                last: err.to_string(),
            });
        }
        std::thread::sleep(PAUSE);
    }
}

/// Runs the command `make` builds until one run exits 0, each run and all of them within
/// `timeout`; returns how long that took. `what` names the check in errors.
pub fn wait_command(
    what: &str,
    make: &mut dyn FnMut() -> Command,
    timeout: Duration,
) -> Result<Duration, DeployError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last = String::new();
    loop {
        match run_once(make(), deadline) {
            Ok(()) => return Ok(start.elapsed()),
            // A run cut off by the deadline says less than the failure before it.
            Err(e) if last.is_empty() || e != TIMED_OUT => last = e,
            Err(_) => last = format!("{TIMED_OUT}; the run before: {last}"),
        }
        if Instant::now() + PAUSE >= deadline {
            return Err(DeployError::Unhealthy {
                check: format!("command {what}"),
                waited_ms: start.elapsed().as_millis(),
                last,
            });
        }
        std::thread::sleep(PAUSE);
    }
}

/// One run of a health command, killed at `deadline`; why it failed otherwise.
fn run_once(mut cmd: Command, deadline: Instant) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {:?}: {e}", cmd.get_program()))?;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= deadline => {
                // Best effort: it is being abandoned either way.
                let _ = child.kill();
                let _ = child.wait();
                return Err(TIMED_OUT.into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("waiting: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("reading output: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!("{}: {}", out.status, tail.join(" | ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_is_healthy_and_a_closed_one_times_out_naming_it() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let up = Endpoint::host(l.local_addr().expect("addr"));
        wait_port(&up, Duration::from_secs(1)).expect("healthy");
        drop(l);
        let err = wait_port(&up, Duration::from_millis(50))
            .expect_err("closed")
            .to_string();
        assert!(
            err.contains(&up.to_string()) && err.contains("ECONNREFUSED"),
            "{err}"
        );
    }

    #[test]
    fn a_health_command_passes_once_it_exits_zero_and_fails_with_its_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("ready");
        let mut tries = 0;
        let flag2 = flag.clone();
        let took = wait_command(
            "ready-flag",
            &mut || {
                tries += 1;
                if tries == 3 {
                    std::fs::write(&flag2, "").expect("flag");
                }
                let mut c = Command::new("test");
                c.arg("-e").arg(&flag2);
                c
            },
            Duration::from_secs(5),
        );
        took.expect("healthy on the third try");
        let err = wait_command(
            "failing",
            &mut || {
                let mut c = Command::new("sh");
                c.args(["-c", "echo not yet >&2; exit 3"]);
                c
            },
            Duration::from_millis(300),
        )
        .expect_err("never healthy")
        .to_string();
        assert!(
            err.contains("failing") && err.contains("not yet") && err.contains('3'),
            "{err}"
        );
    }
}
