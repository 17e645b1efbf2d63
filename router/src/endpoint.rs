//! An address to connect to, optionally inside a network namespace, and the connect itself.
//!
//! The socket is created inside the namespace (by kiln-netns' `with_netns`, on a short-lived
//! thread of its own) and connected from the caller's thread: a socket belongs to the
//! namespace it was created in, so no veth to the host is needed and no caller thread moves.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use serde::{Deserialize, Serialize};

use crate::error::RouterError;

/// `IP:PORT`, reached from the host namespace or from inside the namespace at `netns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// The network namespace (a bind-mounted namespace file) to connect from, if not the host's.
    pub netns: Option<PathBuf>,
}

impl Endpoint {
    /// `addr` inside the namespace at `netns`.
    pub fn in_netns(addr: SocketAddr, netns: &Path) -> Self {
        Self {
            addr,
            netns: Some(netns.to_path_buf()),
        }
    }

    /// `addr` from the host namespace.
    pub fn host(addr: SocketAddr) -> Self {
        Self { addr, netns: None }
    }

    /// Opens a TCP connection, giving up after `timeout`.
    pub fn connect(&self, timeout: Duration) -> Result<TcpStream, RouterError> {
        let fail = |call, errno| RouterError::Connect {
            upstream: self.to_string(),
            call,
            errno,
        };
        let family = match self.addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let make = || {
            socket::socket(
                family,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
        };
        let fd: OwnedFd = match &self.netns {
            Some(path) => kiln_netns::with_netns(path, make)?,
            None => make(),
        }
        .map_err(|e| fail("socket", e))?;
        let addr = SockaddrStorage::from(self.addr);
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {}
            Err(Errno::EINPROGRESS) => wait_connected(&fd, timeout).map_err(|(c, e)| fail(c, e))?,
            Err(e) => return Err(fail("connect", e)),
        }
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty())).map_err(|e| fail("fcntl(F_SETFL)", e))?;
        let stream = TcpStream::from(fd);
        // Small heads and bodies go out at once: Nagle would add delayed-ACK stalls.
        stream
            .set_nodelay(true)
            .map_err(|e| fail("setsockopt(TCP_NODELAY)", io_errno(&e)))?;
        Ok(stream)
    }
}

/// Waits for a non-blocking connect to finish and reports its outcome.
fn wait_connected(fd: &OwnedFd, timeout: Duration) -> Result<(), (&'static str, Errno)> {
    let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    loop {
        match poll(&mut fds, ms) {
            Ok(0) => return Err(("connect", Errno::ETIMEDOUT)),
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(("poll", e)),
        }
    }
    match socket::getsockopt(fd, sockopt::SocketError) {
        Ok(0) => Ok(()),
        Ok(code) => Err(("connect", Errno::from_raw(code))),
        Err(e) => Err(("getsockopt(SO_ERROR)", e)),
    }
}

/// The errno behind an I/O error (EIO when it has none).
pub(crate) fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.netns {
            Some(path) => write!(f, "{}@{}", self.addr, path.display()),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl FromStr for Endpoint {
    type Err = RouterError;

    /// Parses `IP:PORT` or `IP:PORT@NETNS_PATH` (an address never holds '@'; a path may).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| RouterError::BadUpstream {
            spec: spec.to_string(),
            why,
        };
        let (addr, netns) = match spec.split_once('@') {
            Some((addr, path)) => {
                if !path.starts_with('/') {
                    return Err(bad(format!("namespace path {path:?} is not absolute")));
                }
                (addr, Some(PathBuf::from(path)))
            }
            None => (spec, None),
        };
        let addr = addr
            .parse()
            .map_err(|e| bad(format!("address {addr:?}: {e}")))?;
        Ok(Self { addr, netns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print_back() {
        for text in [
            "127.0.0.1:8000",
            "10.0.0.1:80@/run/kiln/netns/main/app",
            "[::1]:9@/x@y",
        ] {
            let e: Endpoint = text.parse().expect(text);
            assert_eq!(e.to_string(), text);
        }
        for bad in [
            "",
            "localhost:80",
            "127.0.0.1",
            "127.0.0.1:80@relative/path",
        ] {
            let err = bad.parse::<Endpoint>().expect_err(bad).to_string();
            assert!(err.contains("invalid upstream"), "{err}");
        }
    }

    #[test]
    fn connect_reaches_a_listener_and_names_a_refusal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        Endpoint::host(addr)
            .connect(Duration::from_secs(1))
            .expect("connect");
        drop(listener);
        let err = Endpoint::host(addr)
            .connect(Duration::from_secs(1))
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains(&addr.to_string()) && err.contains("ECONNREFUSED"),
            "{err}"
        );
    }
}
