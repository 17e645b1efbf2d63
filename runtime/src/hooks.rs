//! Lifecycle hooks: run each hook with the container state on stdin, honouring its timeout.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_util::wait::Deadline;

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

/// Runs `hooks` in order; the first failure stops the list and is returned.
pub fn run(kind: &'static str, hooks: &[Hook], state: &serde_json::Value) -> Result<()> {
    if hooks.is_empty() {
        return Ok(());
    }
    let input = serde_json::to_vec(state).unwrap_or_default();
    hooks.iter().try_for_each(|h| run_one(kind, h, &input))
}

fn run_one(kind: &'static str, h: &Hook, input: &[u8]) -> Result<()> {
    let fail = |msg: String| Error::Hook {
        kind,
        path: h.path().clone(),
        msg,
    };
    let mut cmd = Command::new(h.path());
    if let Some(args) = h.args() {
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in h.env().as_deref().unwrap_or(&[]) {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("spawning: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(input);
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Deadline::after(Duration::from_secs(t.unsigned_abs())));
    let status = match deadline {
        None => child.wait().map_err(|e| fail(format!("waiting: {e}")))?,
        Some(deadline) => {
            let mut status = None;
            let mut failed = None;
            kiln_util::wait::until(deadline, Duration::from_millis(5), || {
                match child.try_wait() {
                    Ok(s) => status = s,
                    Err(e) => failed = Some(e),
                }
                status.is_some() || failed.is_some()
            });
            if let Some(e) = failed {
                return Err(fail(format!("waiting: {e}")));
            }
            match status {
                Some(s) => s,
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "timed out after {}s and was killed",
                        h.timeout().unwrap_or(0)
                    )));
                }
            }
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(fail(format!("exited with {status}")))
    }
}
