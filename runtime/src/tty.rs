//! Terminals: a pty inside the container, the master handed to a console socket (as runc does)
//! or proxied to kiln's own stdin/stdout for an interactive `exec -t`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::error::{Ctx, Result};
use crate::signals::Forwarder;
use crate::sys;

/// Opens a new pty pair from the current root's /dev/ptmx: the master and the slave's path.
pub fn open_pty() -> Result<(OwnedFd, PathBuf)> {
    let ptmx = Path::new("/dev/ptmx");
    let master =
        sys::open(ptmx, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC, 0).at("opening", ptmx)?;
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int.
    unsafe {
        sys::ioctl(
            master.as_raw_fd(),
            libc::TIOCSPTLCK,
            &mut unlock as *mut _ as usize,
        )
    }
    .at("unlocking pty", ptmx)?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the pty number to an unsigned int.
    unsafe {
        sys::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTN,
            &mut n as *mut _ as usize,
        )
    }
    .at("getting pty number", ptmx)?;
    Ok((master, PathBuf::from(format!("/dev/pts/{n}"))))
}

/// Makes the pty slave the controlling terminal and stdio of this process (new session).
pub fn become_tty(slave: &Path, size: Option<(u16, u16)>) -> Result<()> {
    sys::setsid().step("setsid")?;
    let fd = sys::open(slave, libc::O_RDWR | libc::O_CLOEXEC, 0).at("opening pty slave", slave)?;
    // SAFETY: TIOCSCTTY takes an integer argument.
    unsafe { sys::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) }
        .at("making controlling tty", slave)?;
    if let Some((h, w)) = size {
        set_size(fd.as_raw_fd(), h, w);
    }
    for target in 0..3 {
        sys::dup2(fd.as_raw_fd(), target).at("dup2 pty onto stdio", slave)?;
    }
    Ok(())
}

/// Sets a terminal's window size (best effort).
pub fn set_size(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the call.
    let _ = unsafe { sys::ioctl(fd, libc::TIOCSWINSZ, &ws as *const _ as usize) };
}

/// Sends a pty master over a connected console socket, as runc does.
pub fn send_console(sock: RawFd, master: &OwnedFd) -> Result<()> {
    crate::sync::send_with_fd(sock, b"/dev/ptmx", Some(master.as_raw_fd()))
        .step("sending the pty master over the console socket")
}

/// Puts our stdin terminal in raw mode; restores it on drop.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: an all-zero termios is a valid out buffer.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr fills `t` for fd 0.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return RawMode(None);
        }
        let saved = t;
        // SAFETY: cfmakeraw edits the struct in place.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: tcsetattr reads `t`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the saved attributes of fd 0.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

/// Gives the pty master kiln's own terminal size (best effort).
fn copy_size(m: RawFd) {
    // SAFETY: an all-zero winsize is a valid out buffer.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize struct.
    if unsafe { sys::ioctl(1, libc::TIOCGWINSZ, &mut ws as *mut _ as usize) }.is_ok() {
        set_size(m, ws.ws_row, ws.ws_col);
    }
}

/// Copies kiln's stdin to the pty master and the master to kiln's stdout until the container
/// side closes; then reaps `pid` and returns its exit code. With a forwarder, signals kiln gets
/// go to `pid` (SIGWINCH resizes the pty instead).
pub fn proxy(master: OwnedFd, pid: libc::pid_t, signals: Option<&Forwarder>) -> Result<i32> {
    let m = master.as_raw_fd();
    copy_size(m);
    let _raw = RawMode::enter();
    let mut stdin_open = true;
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: m,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.map_or(-1, Forwarder::fd),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of three pollfd.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e).step("poll on the pty");
        }
        while let Some(s) = signals.and_then(Forwarder::next) {
            match s {
                libc::SIGCHLD => {}
                libc::SIGWINCH => copy_size(m),
                s => {
                    let _ = sys::kill(pid, s);
                }
            }
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            // SAFETY: reading into a live buffer.
            let n = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            write_all(1, &buf[..n as usize]);
        }
        if stdin_open && fds[1].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            // SAFETY: reading into a live buffer.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                stdin_open = false;
                // Send EOF (^D) to the terminal's line discipline.
                write_all(m, &[4]);
            } else {
                write_all(m, &buf[..n as usize]);
            }
        }
    }
    let (_, status) = sys::waitpid(pid, 0).step("waiting for the container process")?;
    Ok(sys::exit_code(status))
}

fn write_all(fd: RawFd, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: writing from a live buffer.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        b = &b[n as usize..];
    }
}
