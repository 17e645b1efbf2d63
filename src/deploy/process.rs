//! A process named by pid and kernel start time, so a recycled pid is never mistaken for it.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A process: its pid and its start time (clock ticks since boot, /proc/<pid>/stat field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    /// The pid.
    pub pid: u32,
    /// The start time the kernel reports for it.
    pub start_time: u64,
}

/// What /proc says about a pid: its state letter and start time.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl ProcessRef {
    /// The process running as `pid` now, if any.
    pub fn of(pid: u32) -> Option<Self> {
        stat(pid).map(|(_, start_time)| Self { pid, start_time })
    }

    /// The calling process.
    pub fn current() -> Option<Self> {
        Self::of(std::process::id())
    }

    /// Whether this very process still runs (not a zombie, not a recycled pid).
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((state, start)) if start == self.start_time && state != 'Z')
    }

    /// Sends `signal` if the process is still this one; false when it is gone.
    pub fn signal(&self, signal: Signal) -> bool {
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        self.alive() && kill(Pid::from_raw(pid), signal).is_ok()
    }

    /// Waits up to `timeout` for the process to end; true when it has.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.alive() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; true when the process is gone.
    pub fn terminate(&self, grace: Duration) -> bool {
        if !self.signal(Signal::SIGTERM) {
            return !self.alive();
        }
        if self.wait_gone(grace) {
            return true;
        }
        self.signal(Signal::SIGKILL);
        self.wait_gone(Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessRef::current().expect("own /proc entry");
        assert!(me.alive());
        let other = ProcessRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
    }

    #[test]
    fn a_reaped_child_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let r = ProcessRef::of(child.id()).expect("child in /proc");
        assert!(r.alive());
        assert!(r.signal(Signal::SIGKILL));
        child.wait().expect("reap");
        assert!(!r.alive());
    }
}
