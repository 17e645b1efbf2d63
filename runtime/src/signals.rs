//! Signal forwarding for a foreground `run`/`exec`, as runc does: the catchable signals kiln
//! receives go to the container's process, and kiln leaves when that process exits.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Ctx, Result};
use crate::sys;

/// The signals passed on to the container's process (SIGWINCH resizes a proxied pty instead).
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGURG,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGWINCH,
];

/// While alive, the forwarded signals and SIGCHLD are blocked and read from a signalfd; drop
/// drains what is pending and restores the previous mask.
pub struct Forwarder {
    fd: OwnedFd,
    old: libc::sigset_t,
}

fn set_of(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid buffer for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid constants.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

impl Forwarder {
    /// Starts catching the forwarded signals and SIGCHLD (on the calling thread).
    pub fn install() -> Result<Forwarder> {
        let mut sigs = FORWARDED.to_vec();
        sigs.push(libc::SIGCHLD);
        let set = set_of(&sigs);
        // SAFETY: an all-zero sigset_t is a valid out buffer.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid sigset_t.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc)).step("blocking signals to forward");
        }
        // SAFETY: signalfd(2) creating a new descriptor for a valid set.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: restoring the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            return Err(e).step("signalfd");
        }
        Ok(Forwarder {
            // SAFETY: `fd` was just returned by signalfd and nobody else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            old,
        })
    }

    /// The descriptor to poll for signals.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads one pending signal number, if any.
    pub fn next(&self) -> Option<libc::c_int> {
        // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading at most `size` bytes into `info`.
        let n = unsafe {
            libc::read(
                self.fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n != size as isize {
            return None;
        }
        Some(info.ssi_signo as libc::c_int)
    }

    /// Waits up to `timeout_ms` (-1: forever) for a signal to be readable.
    pub fn wait(&self, timeout_ms: libc::c_int) {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
    }

    /// Forwards signals to `pid` until it exits; returns its exit code.
    pub fn wait_for(&self, pid: libc::pid_t) -> Result<i32> {
        loop {
            let (got, status) =
                sys::waitpid(pid, libc::WNOHANG).step("waiting for the container process")?;
            if got == pid {
                return Ok(sys::exit_code(status));
            }
            self.wait(-1);
            while let Some(s) = self.next() {
                if s != libc::SIGCHLD {
                    let _ = sys::kill(pid, s);
                }
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Pending signals were meant for the container: do not let them hit kiln on unblock.
        while self.next().is_some() {}
        // SAFETY: restoring the mask saved by install.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}
