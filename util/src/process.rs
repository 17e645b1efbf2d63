//! Processes as `/proc` shows them: `/proc/<pid>/stat`, a process named by pid and kernel
//! start time (so a recycled pid is never mistaken for it), and killing a process tree.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::wait::{self, Deadline};

/// How often a wait for a process to end looks again.
const POLL: Duration = Duration::from_millis(5);

/// The fields of `/proc/<pid>/stat` kiln uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The state letter (`R`, `S`, `Z`, `X`…), field 3.
    pub state: char,
    /// The parent's pid, field 4.
    pub ppid: u32,
    /// Start time in clock ticks since boot, field 22.
    pub start_time: u64,
}

impl Stat {
    /// Whether the process has exited (a zombie not yet reaped, or dead).
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses the text of a stat file.
fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may hold anything: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// A process: its pid and its start time (clock ticks since boot, `/proc/<pid>/stat` field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    /// The pid.
    pub pid: u32,
    /// The start time the kernel reports for it.
    pub start_time: u64,
}

impl ProcessRef {
    /// The process running as `pid` now, if any.
    pub fn of(pid: u32) -> Option<Self> {
        stat(pid).map(|s| Self {
            pid,
            start_time: s.start_time,
        })
    }

    /// The calling process.
    pub fn current() -> Option<Self> {
        Self::of(std::process::id())
    }

    /// Whether this very process still runs (not a zombie, not a recycled pid).
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some(s) if s.start_time == self.start_time && !s.exited())
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
        wait::until(Deadline::after(timeout), POLL, || !self.alive())
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

/// Kills process `pid` and all its descendants: each is stopped (SIGSTOP: it can fork no more)
/// as it is found, until a walk finds no new one; then all get SIGKILL.
pub fn kill_tree(pid: u32) {
    let mut all: Vec<u32> = Vec::new();
    let mut found = vec![pid];
    while !found.is_empty() {
        for p in &found {
            if let Some(r) = ProcessRef::of(*p) {
                r.signal(Signal::SIGSTOP);
            }
        }
        all.extend(&found);
        found = all
            .iter()
            .flat_map(|p| children(*p))
            .filter(|c| !all.contains(c))
            .collect();
        found.sort_unstable();
        found.dedup();
    }
    for p in all {
        if let Some(r) = ProcessRef::of(p) {
            r.signal(Signal::SIGKILL);
        }
    }
}

/// The child pids of `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let text = "42 (a) b (c) S 7 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let s = parse_stat(text).expect("parsed");
        assert_eq!((s.state, s.ppid, s.start_time), ('S', 7, 12345));
    }

    #[test]
    fn the_current_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessRef::current().expect("own /proc entry");
        assert!(me.alive());
        let other = ProcessRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
        assert_eq!(
            stat(me.pid).map(|s| s.ppid),
            Some(nix::unistd::getppid().as_raw().unsigned_abs())
        );
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

    #[test]
    fn a_killed_tree_takes_the_grandchildren_with_it() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .expect("spawn sh");
        let sh = child.id();
        assert!(wait::until(
            Deadline::after(Duration::from_secs(5)),
            POLL,
            || { children(sh).len() == 2 }
        ));
        let kids: Vec<ProcessRef> = children(sh)
            .into_iter()
            .filter_map(ProcessRef::of)
            .collect();
        kill_tree(sh);
        child.wait().expect("reap sh");
        for k in kids {
            assert!(k.wait_gone(Duration::from_secs(5)), "{k:?} survived");
        }
    }
}
