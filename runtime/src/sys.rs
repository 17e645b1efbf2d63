//! Thin, safe wrappers over the Linux system calls the runtime uses (each returns `io::Result`).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Ctx, Error, Result};

/// Turns a -1 return into the thread's errno.
fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A path as a C string (paths with an interior NUL are refused).
pub fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// mount(2) through nix; `None` arguments are passed as NULL.
pub fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let flags = nix::mount::MsFlags::from_bits_retain(flags);
    Ok(nix::mount::mount(src, target, fstype, flags, data)?)
}

/// umount2(2).
pub fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    Ok(nix::mount::umount2(
        target,
        nix::mount::MntFlags::from_bits_retain(flags),
    )?)
}

/// pivot_root(2).
pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    Ok(nix::unistd::pivot_root(new_root, put_old)?)
}

/// chroot(2).
pub fn chroot(p: &Path) -> io::Result<()> {
    Ok(nix::unistd::chroot(p)?)
}

/// fchdir(2).
pub fn fchdir(fd: &impl AsFd) -> io::Result<()> {
    Ok(nix::unistd::fchdir(fd)?)
}

/// setns(2) into the namespace behind `fd` (`nstype` 0 accepts any kind).
pub fn setns(fd: &impl AsFd, nstype: libc::c_int) -> io::Result<()> {
    Ok(nix::sched::setns(
        fd,
        nix::sched::CloneFlags::from_bits_retain(nstype),
    )?)
}

/// unshare(2).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    Ok(nix::sched::unshare(
        nix::sched::CloneFlags::from_bits_retain(flags),
    )?)
}

/// The number of threads of the calling process (from /proc/self/status).
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Forks with `clone(flags | SIGCHLD)` on the current stack, like fork(2) but able to create
/// namespaces. Returns 0 in the child and the child's pid in the parent.
///
/// Refuses (with [`Error::MultiThreaded`]) when the caller has more than one thread: the child
/// would inherit locks (the allocator's among them) held by threads that do not exist there.
/// Refuses (with [`Error::UnsealedExe`]) when the caller runs from a writable binary, which the
/// child would carry into the container (see [`crate::sealed_exe`]).
pub fn clone_fork(flags: libc::c_int) -> Result<libc::pid_t> {
    let threads = thread_count().step("counting the threads of this process")?;
    if threads != 1 {
        return Err(Error::MultiThreaded { threads });
    }
    crate::sealed_exe::check()?;
    clone_raw(flags)
}

/// [`clone_fork`] from a child that [`clone_fork`] made (single-threaded by construction, same
/// binary), where /proc may no longer describe this process (it joined another mount
/// namespace).
pub fn clone_again(flags: libc::c_int) -> Result<libc::pid_t> {
    clone_raw(flags)
}

fn clone_raw(flags: libc::c_int) -> Result<libc::pid_t> {
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: with a NULL stack the child runs on a copy-on-write copy of our stack, exactly
    // like fork(2); both callers guarantee a single-threaded process (clone_fork checks it,
    // clone_again runs in a child of clone_fork), so no lock can be held by another thread.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    check(rc).map(|pid| pid as libc::pid_t).step("clone")
}

/// Closes every descriptor from `first` up except those in `keep` (close_range(2) over the
/// gaps): what is left open is `0..first` and `keep`.
pub fn close_fds_from(first: RawFd, keep: &[RawFd]) -> io::Result<()> {
    // No allocation: this runs in forked children.
    let mut lo = first;
    loop {
        let next = keep.iter().copied().filter(|&k| k >= lo).min();
        let end = next.map_or(libc::c_uint::MAX, |k| (k - 1) as libc::c_uint);
        if next.is_none_or(|k| k > lo) {
            // SAFETY: close_range(2) on a range of our own descriptors; nothing in the range is
            // used afterwards (`keep` is outside it).
            check(unsafe { libc::syscall(libc::SYS_close_range, lo as libc::c_uint, end, 0) })?;
        }
        match next {
            Some(k) => lo = k + 1,
            None => return Ok(()),
        }
    }
}

/// Whether `fd` is an open descriptor.
#[cfg(test)]
fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: fcntl(2) F_GETFD takes no argument and only reads the descriptor table.
    let rc = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    rc != -1
}

/// Joins a session keyring named `name` (created when missing), as runc does for each
/// container; kernels without keyrings (ENOSYS) or out of key quota (EDQUOT) are tolerated.
pub fn join_session_keyring(name: &str) -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;
    let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: keyctl(2) KEYCTL_JOIN_SESSION_KEYRING with a valid C string.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    match check(rc) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EDQUOT)) => Ok(()),
        r => r.map(drop),
    }
}

/// execveat(2) of an open executable (`AT_EMPTY_PATH`); returns only on failure.
pub fn execveat_fd(fd: &impl AsRawFd, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: argv/envp are NULL-terminated arrays of valid C strings that outlive the call,
    // the path is the empty C string with AT_EMPTY_PATH, and `fd` is a descriptor we hold.
    unsafe {
        libc::execveat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            a.as_ptr().cast(),
            e.as_ptr().cast(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// Exits the calling process immediately without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// kill(2).
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::kill(pid, sig) }.into()).map(drop)
}

/// waitpid(2), retrying on EINTR; returns (pid, raw status). With WNOHANG pid may be 0.
pub fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<(libc::pid_t, libc::c_int)> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, flags) };
        if rc == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok((rc, status));
    }
}

/// The shell-style exit code of a wait status (128+signal for a killed process).
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Sets the loopback interface `lo` of the current network namespace up, as runc does.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the fd is owned right below.
    let fd = check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }.into(),
    )?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; SIOCGIFFLAGS fills its flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) }.into())?;
    // SAFETY: SIOCGIFFLAGS just initialised the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: `req` is a valid ifreq naming "lo" with the flags to set.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) }.into()).map(drop)
}

/// sethostname(2).
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }.into()).map(drop)
}

/// setdomainname(2).
pub fn setdomainname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`.
    check(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) }.into()).map(drop)
}

/// Opens a path with raw open(2) flags, returning an owned fd.
pub fn open(p: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let c = cpath(p)?;
    // SAFETY: valid C string; the returned fd is owned by us.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags, mode as libc::c_uint) }.into())?;
    // SAFETY: `fd` was just returned by open(2) and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// dup2(2).
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall on fds.
    check(unsafe { libc::dup2(from, to) }.into()).map(drop)
}

/// setsid(2).
pub fn setsid() -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setsid() }.into()).map(drop)
}

/// An ioctl whose argument is an integer or a pointer the caller vouches for.
///
/// # Safety
/// `arg` must be what the kernel expects for `req` on this fd.
pub unsafe fn ioctl(fd: RawFd, req: libc::c_ulong, arg: usize) -> io::Result<libc::c_int> {
    // SAFETY: forwarded to the caller's contract.
    let rc = unsafe { libc::ioctl(fd, req as _, arg) };
    check(rc.into()).map(|r| r as libc::c_int)
}

/// prctl(2) with up to two arguments.
pub fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the prctl ops we use take integer arguments only.
    let rc = unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    check(rc.into()).map(|r| r as libc::c_int)
}

/// A socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    let ty = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two descriptors.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) };
    check(rc.into())?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// execve(2) with an already-resolved path; returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: argv/envp are NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

/// The start time (in clock ticks since boot) of a process, from `/proc/<pid>/stat`; also tells
/// whether it is a zombie. `None` when the process does not exist.
pub fn proc_start_time(pid: libc::pid_t) -> Option<(u64, bool)> {
    let stat = kiln_util::process::stat(u32::try_from(pid).ok()?)?;
    Some((stat.start_time, stat.exited()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_refuses_a_multi_threaded_caller() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        let r = clone_fork(0);
        drop(tx);
        let _ = t.join();
        match r {
            Err(Error::MultiThreaded { threads }) => assert!(threads >= 2),
            Ok(0) => exit_now(0),
            other => panic!("clone from a multi-threaded process was not refused: {other:?}"),
        }
    }

    #[test]
    fn close_fds_from_keeps_only_what_is_asked() {
        let fds: Vec<OwnedFd> = (0..4)
            .map(|_| open(Path::new("/dev/null"), libc::O_RDONLY | libc::O_CLOEXEC, 0))
            .collect::<io::Result<_>>()
            .expect("open /dev/null");
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let pid = clone_raw(0).expect("fork");
        if pid == 0 {
            let ok = close_fds_from(raw[1], &[raw[2]]).is_ok()
                && fd_is_open(raw[0])
                && !fd_is_open(raw[1])
                && fd_is_open(raw[2])
                && !fd_is_open(raw[3]);
            exit_now(if ok { 0 } else { 1 });
        }
        let (_, status) = waitpid(pid, 0).expect("waitpid");
        assert_eq!(exit_code(status), 0, "wrong descriptors left open");
    }
}
