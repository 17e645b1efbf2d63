//! An environment's upstream: where its requests go, and a pool of kept-alive HTTP/1.1
//! connections to it (hyper's client: a connection that saw anything unexpected, a cut body
//! or a malformed response, is closed, never reused).
//!
//! Upstream sockets are created inside the app's network namespace by a dedicated thread that
//! entered it once (`setns(CLONE_NEWNET)`) and then only makes sockets; the socket stays in
//! that namespace and is connected from tokio. No veth to the host, no thread per connect.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

use crate::endpoint::{io_errno, Endpoint};
use crate::error::RouterError;

/// Longest a single connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between connect attempts while an upstream refuses.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Most idle connections kept per upstream.
const MAX_IDLE: usize = 1024;
/// How long an idle upstream connection is kept.
const IDLE: Duration = Duration::from_secs(30);

/// The error type bodies carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request or response body of any origin.
pub type Body = BoxBody<Bytes, BoxError>;

/// An upstream and its pool of idle connections (dropped with it when the gate switches).
#[derive(Debug)]
pub struct Upstream {
    /// Where it is.
    pub endpoint: Endpoint,
    /// The pooled HTTP/1.1 client.
    pub client: Client<Dialer, Body>,
}

impl Upstream {
    /// An upstream with no connections yet; a refused connect is retried for `retry`.
    pub fn new(endpoint: Endpoint, retry: Duration) -> Self {
        let dialer = Dialer {
            inner: Arc::new(DialerInner {
                endpoint: endpoint.clone(),
                retry,
                maker: Mutex::new(None),
            }),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(MAX_IDLE)
            .set_host(false)
            .build(dialer);
        Self { endpoint, client }
    }
}

/// Connects to one endpoint (hyper's connector: the URI is ignored).
#[derive(Debug, Clone)]
pub struct Dialer {
    inner: Arc<DialerInner>,
}

/// What a [`Dialer`] shares with its clones.
#[derive(Debug)]
struct DialerInner {
    endpoint: Endpoint,
    retry: Duration,
    /// The thread making sockets inside the namespace, once started.
    maker: Mutex<Option<SocketMaker>>,
}

/// A request for a socket: its family and where to send it.
type SocketRequest = (AddressFamily, oneshot::Sender<Result<OwnedFd, RouterError>>);

/// A thread inside a network namespace that makes sockets on request; it ends when this is
/// dropped.
#[derive(Debug)]
struct SocketMaker {
    tx: mpsc::Sender<SocketRequest>,
}

impl SocketMaker {
    /// Starts the thread for the namespace at `path`.
    fn start(path: PathBuf) -> Result<Self, RouterError> {
        let (tx, rx) = mpsc::channel::<SocketRequest>();
        let spawned = std::thread::Builder::new()
            .name("kiln-netns-sockets".into())
            .spawn(move || {
                let entered = std::fs::File::open(&path)
                    .map_err(|e| RouterError::io("opening netns", &path, e))
                    .and_then(|f| {
                        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| RouterError::errno("setns(CLONE_NEWNET) into", &path, e))
                    });
                for (family, reply) in rx {
                    let made = match &entered {
                        Ok(()) => new_socket(family).map_err(|e| RouterError::Connect {
                            upstream: path.display().to_string(),
                            call: "socket",
                            errno: e,
                        }),
                        Err(e) => Err(RouterError::io(
                            "entering netns",
                            &path,
                            std::io::Error::other(e.to_string()),
                        )),
                    };
                    // The asker may have gone (its request timed out): nothing to do.
                    let _ = reply.send(made);
                }
            });
        match spawned {
            Ok(_) => Ok(Self { tx }),
            Err(e) => Err(RouterError::io(
                "starting the netns socket thread for",
                "",
                e,
            )),
        }
    }
}

/// A non-blocking, close-on-exec TCP socket of `family` in the calling thread's namespace.
fn new_socket(family: AddressFamily) -> Result<OwnedFd, Errno> {
    socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}

impl DialerInner {
    /// A socket for the endpoint, made in its namespace.
    async fn socket(&self) -> Result<OwnedFd, RouterError> {
        let family = match self.endpoint.addr {
            std::net::SocketAddr::V4(_) => AddressFamily::Inet,
            std::net::SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let Some(path) = &self.endpoint.netns else {
            return new_socket(family).map_err(|e| self.fail("socket", e));
        };
        let (reply, answer) = oneshot::channel();
        {
            let mut maker = self.maker.lock().unwrap_or_else(|p| p.into_inner());
            if maker.is_none() {
                *maker = Some(SocketMaker::start(path.clone())?);
            }
            let sent = maker.as_ref().map(|m| m.tx.send((family, reply)));
            if !matches!(sent, Some(Ok(()))) {
                // The thread is gone: start another next time.
                *maker = None;
                return Err(self.fail("socket", Errno::ECHILD));
            }
        }
        answer
            .await
            .map_err(|_| self.fail("socket", Errno::ECHILD))?
    }

    /// One connect attempt.
    async fn once(&self) -> Result<TcpStream, RouterError> {
        let fd = self.socket().await?;
        let sock = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(self.endpoint.addr)).await {
                Err(_) => return Err(self.fail("connect", Errno::ETIMEDOUT)),
                Ok(Err(e)) => return Err(self.fail("connect", io_errno(&e))),
                Ok(Ok(s)) => s,
            };
        stream
            .set_nodelay(true)
            .map_err(|e| self.fail("setsockopt(TCP_NODELAY)", io_errno(&e)))?;
        Ok(stream)
    }

    /// Connects, retrying a refusing upstream until the retry time is up.
    async fn dial(&self) -> Result<TcpStream, RouterError> {
        let deadline = Instant::now() + self.retry;
        loop {
            match self.once().await {
                Ok(s) => return Ok(s),
                Err(e @ RouterError::Connect { .. }) if Instant::now() + RETRY_PAUSE < deadline => {
                    tracing::debug!("{e}; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A connect error naming the upstream.
    fn fail(&self, call: &'static str, errno: Errno) -> RouterError {
        RouterError::Connect {
            upstream: self.endpoint.to_string(),
            call,
            errno,
        }
    }
}

impl tower_service::Service<http::Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = RouterError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.dial().await.map(TokioIo::new) })
    }
}
