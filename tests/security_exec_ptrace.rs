//! Security (issue 11, review finding B): no process kiln puts in a container's pid namespace
//! holds more than the container's process will. The exec helper's child (the process that
//! becomes `kiln exec`'s command) runs kiln code in the container's pid namespace before its
//! execve, where a container process with CAP_SYS_PTRACE (no user namespace) can seize it: it
//! must already be limited to the config's capabilities (plus CAP_SETUID/SETGID/SETPCAP, which
//! switching the identity needs), so an injected open_by_handle_at (CAP_DAC_READ_SEARCH) fails,
//! and it must hold no host file. The init of a created container, blocked on the exec fifo, has
//! the config's capabilities (as runc: identity switched before the wait).

mod runtime_support;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use runtime_support::Bundle;
use serde_json::json;

/// The container's capabilities (bits: CAP_KILL 5, CAP_NET_BIND_SERVICE 10, CAP_SYS_PTRACE 19,
/// CAP_AUDIT_WRITE 29).
const CAPS: &[(&str, u32)] = &[
    ("CAP_KILL", 5),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_AUDIT_WRITE", 29),
];
/// CAP_SETGID, CAP_SETUID, CAP_SETPCAP: kept until the identity is switched.
const TRANSIENT: &[u32] = &[6, 7, 8];
/// CAP_DAC_READ_SEARCH: what open_by_handle_at needs.
const DAC_READ_SEARCH: u32 = 2;

fn mask(bits: impl IntoIterator<Item = u32>) -> u64 {
    bits.into_iter().fold(0, |m, b| m | 1 << b)
}

/// A bundle whose process has exactly [`CAPS`] in every set but ambient.
fn bundle(args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    let names: Vec<&str> = CAPS.iter().map(|c| c.0).collect();
    b.config["process"]["capabilities"] = json!({
        "bounding": names, "effective": names, "permitted": names, "inheritable": [], "ambient": []
    });
    b
}

/// A field of /proc/<pid>/status (hex capability sets parsed).
fn status_field(status: &str, name: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn caps_of(status: &str, set: &str) -> u64 {
    u64::from_str_radix(&status_field(status, set).expect("cap set"), 16).expect("hex caps")
}

fn pid_ns(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

#[test]
fn a_created_init_waiting_for_start_has_the_configs_capabilities() {
    let b = bundle(&["true"]);
    b.create();
    let pid = b.state()["pid"].as_u64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("init status");
    let want = mask(CAPS.iter().map(|c| c.1));
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            caps_of(&status, set),
            want,
            "{set} of the init blocked on the exec fifo is not the config's: {status}"
        );
    }
}

/// What the observer saw of one exec'd process before its execve.
struct Seen {
    pid: u32,
    status: String,
    fds: Vec<String>,
}

/// Seizes and interrupts `pid` (as a tracer in the container would), reads its status and
/// descriptors while it is stopped, and lets it go. `None` when it is not there any more.
fn inspect_stopped(pid: u32) -> Option<Seen> {
    let p = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: ptrace(2) requests with no pointers; failure is reported by the return value.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, p, 0, 0) } != 0 {
        return None;
    }
    // SAFETY: as above, on the process just seized.
    unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, p, 0, 0) };
    let mut st = 0;
    // SAFETY: waitpid(2) with a valid out pointer, for the tracee's stop.
    unsafe { libc::waitpid(p, &mut st, libc::__WALL) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // SAFETY: detaching our stopped tracee; no pointers.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, p, 0, 0) };
    Some(Seen {
        pid,
        status: status?,
        fds,
    })
}

#[test]
fn a_tracer_in_the_container_gets_nothing_from_an_exec_before_its_execve() {
    let b = bundle(&["sleep", "60"]);
    let c = std::fs::canonicalize(b.rootfs()).expect("rootfs");
    b.write();
    b.ok_detached(&[
        "run",
        "-d",
        "--bundle",
        b.dir.to_str().expect("utf8"),
        &b.id,
    ]);
    let init = b.state()["pid"].as_u64().expect("pid") as u32;
    let ns = pid_ns(init).expect("the container's pid namespace");
    // A PATH of many missing directories keeps the exec'd process in kiln's code (its lookup)
    // for a while, so the observer reliably finds it before its execve.
    let path: Vec<String> = (0..12000).map(|i| format!("/n{i}")).collect();
    let env = format!("PATH={}:/bin", path.join(":"));
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let observer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen: Vec<Seen> = Vec::new();
            let mut known = HashSet::new();
            let mut parents: Vec<u32> = Vec::new();
            while !done.load(Ordering::Relaxed) {
                parents.extend(rx.try_iter());
                for &k in &parents {
                    for child in kiln_util::process::children(k) {
                        if known.contains(&child) || pid_ns(child) != Some(ns) {
                            continue;
                        }
                        let Some(s) = inspect_stopped(child) else {
                            continue;
                        };
                        known.insert(child);
                        if status_field(&s.status, "Name").as_deref() != Some("sleep") {
                            seen.push(s);
                        }
                    }
                }
                parents.retain(|&k| kiln_util::process::stat(k).is_some());
            }
            seen
        })
    };
    for _ in 0..30 {
        let child =
            b.sb.kiln()
                .args(["exec", "--env", &env, &b.id, "sleep", "0.01"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn kiln exec");
        tx.send(child.id()).expect("observer");
        let out = child.wait_with_output().expect("kiln exec");
        assert!(out.status.success(), "kiln exec failed: {}", out.status);
    }
    done.store(true, Ordering::Relaxed);
    let seen = observer.join().expect("observer thread");
    assert!(
        !seen.is_empty(),
        "never caught an exec'd process before its execve (30 tries)"
    );
    eprintln!("caught {} exec'd processes before their execve", seen.len());
    let allowed = mask(CAPS.iter().map(|c| c.1).chain(TRANSIENT.iter().copied()));
    for s in &seen {
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            let have = caps_of(&s.status, set);
            assert_eq!(
                have & !allowed,
                0,
                "pid {} before execve has {set} {have:#x}, beyond the config's: {}",
                s.pid,
                s.status
            );
            assert_eq!(have & mask([DAC_READ_SEARCH]), 0, "{}", s.status);
        }
        for l in &s.fds {
            assert!(
                !l.starts_with('/') || l == "/dev/null" || l.starts_with(c.to_str().unwrap_or("")),
                "pid {} before execve holds the host file {l}",
                s.pid
            );
        }
    }
}
