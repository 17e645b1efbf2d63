//! kiln-runtime: an OCI runtime — a bundle and its config.json become a process in namespaces.
//!
//! ```no_run
//! use kiln_runtime::{CreateOptions, Runtime};
//! let rt = Runtime::new("/run/kiln");
//! let mut c = rt.create("web", "/srv/bundle".as_ref(), &CreateOptions::default())?;
//! c.start()?;
//! println!("{}", c.state_json());
//! # Ok::<(), kiln_runtime::Error>(())
//! ```

pub mod cgroups;
mod config;
mod container;
mod error;
mod exec;
pub mod hardening;
mod hooks;
mod init;
mod namespaces;
mod process;
pub mod rootfs;
pub mod sealed_exe;
pub mod seccomp;
mod signals;
pub mod spec;
pub mod state;
mod sync;
mod sys;
mod sysctl;
mod tty;

pub use config::check_config;
pub use container::{load_spec, Container, CreateOptions, Created, Runtime};
pub use error::{Error, Result};
pub use exec::{ExecOptions, ExecOutcome};
pub use oci_spec::runtime::{Process, Spec};
pub use state::{ContainerState, Status};

/// Signal number for a name like `TERM`, `SIGKILL` or a number like `9`.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim_start_matches("SIG");
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            let rt = name.strip_prefix("RTMIN")?;
            let off: i32 = if rt.is_empty() {
                0
            } else {
                rt.trim_start_matches('+').parse().ok()?
            };
            let n = libc::SIGRTMIN() + off;
            return (n <= libc::SIGRTMAX()).then_some(n);
        }
    })
}

/// Names of every capability kiln knows (CAP_CHOWN ...), sorted.
pub fn capability_names() -> Vec<String> {
    let mut v: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("TERM"), Some(15));
        assert_eq!(parse_signal("SIGKILL"), Some(9));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }
}
