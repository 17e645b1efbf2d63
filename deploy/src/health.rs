//! Health checks: the app's port accepts a connection inside its network namespace, or a
//! health command exits 0, within a timeout.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_util::error::chain;
use kiln_util::wait::{self, Deadline};

use super::container;
use super::env_state::HealthCheck;
use super::error::{DeployError, ExecError};
use super::Endpoint;

/// Pause between attempts.
const PAUSE: Duration = Duration::from_millis(10);
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
        return wait_command(kiln_bin, runtime_root, id, command, timeout);
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
    wait::retry(Deadline::after(timeout), PAUSE, |left| {
        endpoint.connect(ATTEMPT.min(left).max(PAUSE))
    })
    .map(|_| start.elapsed())
    .map_err(|err| DeployError::Unhealthy {
        check: format!("port {endpoint}"),
        waited_ms: start.elapsed().as_millis(),
        last: chain(&err),
    })
}

/// Runs `command` in container `id` until a run exits 0, each run and all of them within
/// `timeout` (a run cut off is killed with what it started).
fn wait_command(
    kiln_bin: &Path,
    runtime_root: &Path,
    id: &str,
    command: &str,
    timeout: Duration,
) -> Result<(), DeployError> {
    let start = Instant::now();
    let mut last = String::new();
    let passed = wait::retry(Deadline::after(timeout), PAUSE, |left| {
        match container::run_in(kiln_bin, runtime_root, id, command, left) {
            Ok(()) => return Ok(()),
            // A run cut off by the deadline says less than the failure before it.
            Err(e) if last.is_empty() || !matches!(e, ExecError::TimedOut { .. }) => {
                last = chain(&e)
            }
            Err(e) => last = format!("{}; the run before: {last}", chain(&e)),
        }
        Err(())
    });
    passed.map_err(|()| DeployError::Unhealthy {
        check: format!("command `{command}`"),
        waited_ms: start.elapsed().as_millis(),
        last,
    })
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
}
