//! The network of a step that needs one: the container's own network namespace, connected to the
//! outside by slirp4netns (user-mode TCP/IP: the step's packets become ordinary sockets of a host
//! process). The namespace has only `lo` and slirp's `tap0` (10.0.2.100/24, gateway 10.0.2.2,
//! DNS forwarder 10.0.2.3); the gateway does not lead to the host's loopback
//! (`--disable-host-loopback`), and slirp4netns itself runs in a mount namespace of its own
//! without capabilities (`--enable-sandbox`) under a seccomp filter (`--enable-seccomp`).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::error::{io_err, SandboxError};

/// The program (Debian package `slirp4netns`).
const SLIRP: &str = "slirp4netns";

/// The step's resolver: slirp's DNS forwarder, which asks the host's nameservers.
pub(crate) const RESOLV_CONF: &str = "nameserver 10.0.2.3\n";

/// How long slirp4netns may take to bring the tap up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running slirp4netns serving one step's network namespace; killed and reaped when dropped.
pub(crate) struct UserNet {
    child: Child,
    /// slirp4netns exits when this pipe closes (`--exit-fd`), even if kiln is killed.
    exit: Option<ChildStdin>,
}

impl UserNet {
    /// Connects the network namespace of process `pid` and waits until its tap is configured;
    /// slirp4netns' messages go to `log`.
    pub(crate) fn start(pid: i32, log: &Path) -> Result<UserNet, SandboxError> {
        let messages = File::create(log).map_err(io_err("create", log))?;
        let spawned = Command::new(SLIRP)
            .args([
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
                "--ready-fd=1",
                "--exit-fd=0",
            ])
            .arg(pid.to_string())
            .arg("tap0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(messages)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SandboxError::Network {
                    reason: "slirp4netns is not installed (apt-get install slirp4netns; \
                             scripts/setup installs it)"
                        .to_string(),
                })
            }
            Err(e) => {
                return Err(SandboxError::Network {
                    reason: format!("cannot start {SLIRP}: {e}"),
                })
            }
        };
        let mut net = UserNet {
            exit: child.stdin.take(),
            child,
        };
        match net.wait_ready() {
            Ok(()) => Ok(net),
            Err(reason) => {
                net.stop();
                let said = std::fs::read_to_string(log).unwrap_or_default();
                let said = said.trim();
                Err(SandboxError::Network {
                    reason: if said.is_empty() {
                        reason
                    } else {
                        format!("{reason}; it said: {said}")
                    },
                })
            }
        }
    }

    /// Reads slirp4netns' stdout until it writes the `1` of `--ready-fd` (after any warnings).
    fn wait_ready(&mut self) -> Result<(), String> {
        let Some(mut out) = self.child.stdout.take() else {
            return Err("its stdout is not a pipe".to_string());
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the network was not up after {} s",
                    READY_TIMEOUT.as_secs()
                ));
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for it: {e}")),
            }
            let mut buf = [0u8; 256];
            match out.read(&mut buf) {
                Ok(0) => return Err("it exited before the network was up".to_string()),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading its ready pipe: {e}")),
            }
            if seen == b"1" || seen.ends_with(b"\n1") {
                return Ok(());
            }
        }
    }

    /// Closes the exit pipe, kills slirp4netns and reaps it.
    fn stop(&mut self) {
        drop(self.exit.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UserNet {
    fn drop(&mut self) {
        self.stop();
    }
}
