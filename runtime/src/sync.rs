//! The parent/child handshake: small messages over a SOCK_SEQPACKET socketpair, with an optional
//! file descriptor riding along (SCM_RIGHTS), e.g. a pty master.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One message of the create/exec handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// Parent → child: id maps written; go on.
    Go,
    /// Parent → child: the child is in its cgroup (the migration is slow on cgroup v1, so the
    /// child sets up its root filesystem meanwhile).
    CgroupJoined,
    /// Child → parent: mounts are ready; run the prestart and createRuntime hooks now.
    RunHooks,
    /// Parent → child: the runtime-namespace hooks have run.
    HooksDone,
    /// Child → parent: a pty master follows as the attached fd.
    Pty,
    /// Child → parent: set up and waiting for `start` (or about to exec).
    Ready,
    /// Child → parent: the pid of a grandchild that does the real work.
    Pid(i32),
    /// Child → parent: setup failed with this message.
    Error(String),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Go => vec![1],
            Msg::RunHooks => vec![2],
            Msg::HooksDone => vec![3],
            Msg::Pty => vec![4],
            Msg::Ready => vec![5],
            Msg::Pid(p) => {
                let mut v = vec![6];
                v.extend_from_slice(&p.to_le_bytes());
                v
            }
            Msg::CgroupJoined => vec![8],
            Msg::Error(s) => {
                let mut v = vec![7];
                v.extend_from_slice(s.as_bytes());
                v
            }
        }
    }

    fn decode(b: &[u8]) -> io::Result<Msg> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sync message");
        Ok(match b.first().ok_or_else(bad)? {
            1 => Msg::Go,
            2 => Msg::RunHooks,
            3 => Msg::HooksDone,
            4 => Msg::Pty,
            5 => Msg::Ready,
            6 => {
                let a: [u8; 4] = b.get(1..5).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
                Msg::Pid(i32::from_le_bytes(a))
            }
            7 => Msg::Error(String::from_utf8_lossy(&b[1..]).into_owned()),
            8 => Msg::CgroupJoined,
            _ => return Err(bad()),
        })
    }
}

/// One end of the handshake socket.
pub struct Channel(pub OwnedFd);

/// Room for one SCM_RIGHTS fd in a control message.
const CMSG_ROOM: usize = 64;

impl Channel {
    /// Sends a message, optionally passing `fd` along with it.
    pub fn send(&self, msg: &Msg, fd: Option<RawFd>) -> io::Result<()> {
        send_with_fd(self.0.as_raw_fd(), &msg.encode(), fd)
    }

    /// Receives the next message and the fd sent with it, if any. EOF is `UnexpectedEof`.
    pub fn recv(&self) -> io::Result<(Msg, Option<OwnedFd>)> {
        let mut buf = [0u8; 4096];
        let (n, fd) = recv_with_fd(self.0.as_raw_fd(), &mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other side closed the sync socket",
            ));
        }
        Ok((Msg::decode(&buf[..n])?, fd))
    }
}

/// sendmsg(2) of `data` with an optional fd as SCM_RIGHTS (also used for console sockets).
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cmsg_buf = [0u64; CMSG_ROOM / 8];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        hdr.msg_control = cmsg_buf.as_mut_ptr().cast();
        hdr.msg_controllen = space;
        // SAFETY: msg_control points at a buffer of `space` bytes, enough for one header + fd.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
    }
    loop {
        // SAFETY: `hdr` points at live buffers for the duration of the call.
        let rc = unsafe { libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL) };
        if rc >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// recvmsg(2) into `buf`, returning the byte count and a passed fd (made close-on-exec).
pub fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg_buf = [0u64; CMSG_ROOM / 8];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = cmsg_buf.as_mut_ptr().cast();
    hdr.msg_controllen = CMSG_ROOM;
    let n = loop {
        // SAFETY: `hdr` points at live buffers for the duration of the call.
        let rc = unsafe { libc::recvmsg(sock, &mut hdr, libc::MSG_CMSG_CLOEXEC) };
        if rc >= 0 {
            break rc as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    };
    let mut fd = None;
    // SAFETY: the kernel filled msg_control; the CMSG_* macros walk it within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    Ok((n, fd))
}
