//! The ingress's data path: accept loops, connection bounds, hyper serving each connection
//! (HTTP/1.1 in plain, HTTP/2 or 1.1 over TLS), and the proxy handler: find the route, pass
//! the environment's gate, relay to the upstream, stream the response back, log it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::access::{AccessLog, Entry};
use crate::gate::{Gate, Outcome, Ticket};
use crate::limits::{ConnLimiter, Limits, Refusal};
use crate::routes::{self, Route, RouteTable, Scheme, Target};
use crate::strict;
use crate::upstream::{Body, BoxError};

/// How long a draining connection keeps serving (each response says `Connection: close`, so
/// a busy client moves to the new process) before an idle one is closed.
const DRAIN_GRACE: Duration = Duration::from_millis(1000);

/// Pause after an accept error such as EMFILE before trying again (so a full fd table costs
/// no CPU, and accepting resumes once descriptors are free).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a listener is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Plain HTTP, routed by Host.
    Plain,
    /// TLS, routed by Host (SNI picks the certificate).
    Tls,
    /// Plain HTTP on an environment's own port: every request goes to it.
    Env(String),
}

/// One environment the ingress serves.
#[derive(Debug)]
pub struct EnvEntry {
    /// Its name.
    pub name: String,
    /// Its gate.
    pub gate: Arc<Gate>,
    /// Its own port.
    pub listen: SocketAddr,
    /// Its routes, expanded (empty until a deploy sets them: then only its own port serves).
    pub routes: RwLock<Vec<Route>>,
    /// Its access log.
    pub log: AccessLog,
    /// Ends its own port's accept loop.
    pub stop_accept: watch::Sender<bool>,
    /// Its own port's listening socket (a duplicate, to hand over on restart).
    pub listener: std::net::TcpListener,
}

impl EnvEntry {
    /// Its URLs, primary first.
    pub fn urls(&self) -> Vec<String> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut urls: Vec<(bool, String)> =
            routes.iter().map(|r| (!r.primary, r.url.clone())).collect();
        urls.sort();
        urls.into_iter().map(|(_, u)| u).collect()
    }
}

/// Everything the ingress's tasks share.
pub struct Ingress {
    /// The domain of environment hosts.
    pub domain: String,
    /// The bounds.
    pub limits: Limits,
    /// Environments by name.
    pub envs: RwLock<BTreeMap<String, Arc<EnvEntry>>>,
    /// Every environment's routes by host.
    pub table: RwLock<Arc<RouteTable>>,
    /// Open client connections.
    pub conns: Arc<ConnLimiter>,
    /// The TLS acceptor, when certificates are configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Redirect every plain request on the host listeners to https.
    pub redirect_https: bool,
    /// The port of the first TLS listener (for redirects).
    pub https_port: Option<u16>,
    /// `true` once the ingress stops accepting (stop, or a restart took the sockets).
    pub draining: watch::Sender<bool>,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("domain", &self.domain)
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Ingress {
    /// The environment named `env`.
    pub fn env(&self, env: &str) -> Option<Arc<EnvEntry>> {
        self.envs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(env)
            .cloned()
    }

    /// Rebuilds the route table from every environment's routes (with `candidate` in place of
    /// `env`'s); an error leaves the table as it was.
    pub fn rebuild_table(
        &self,
        env: &str,
        candidate: Option<&[Route]>,
    ) -> Result<(), crate::RouterError> {
        let envs = self.envs.read().unwrap_or_else(|p| p.into_inner());
        let held: Vec<(String, Vec<Route>)> = envs
            .values()
            .filter(|e| e.name != env)
            .map(|e| {
                (
                    e.name.clone(),
                    e.routes.read().unwrap_or_else(|p| p.into_inner()).clone(),
                )
            })
            .collect();
        let mut lists: Vec<&[Route]> = held.iter().map(|(_, r)| r.as_slice()).collect();
        let own: Vec<Route>;
        match candidate {
            Some(c) => lists.push(c),
            None => {
                if let Some(e) = envs.get(env) {
                    own = e.routes.read().unwrap_or_else(|p| p.into_inner()).clone();
                    lists.push(&own);
                }
            }
        }
        let table = RouteTable::build(lists)?;
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        Ok(())
    }
}

/// Accepts connections on `listener` until the ingress drains (or `stop` says so, for an
/// environment's own port); survives EMFILE and every other accept error.
pub async fn accept_loop(
    ing: Arc<Ingress>,
    listener: TcpListener,
    kind: Kind,
    mut stop: watch::Receiver<bool>,
) {
    let mut draining = ing.draining.subscribe();
    let mut warned = Instant::now() - Duration::from_secs(60);
    loop {
        if *draining.borrow() || *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = draining.changed() => continue,
            _ = stop.changed() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ing = Arc::clone(&ing);
                    let kind = kind.clone();
                    tokio::spawn(async move { serve_conn(ing, stream, peer, kind).await });
                }
                Err(e) => {
                    if warned.elapsed() > Duration::from_secs(10) {
                        tracing::warn!("accept on {:?}: {e}; backing off", listener.local_addr().ok());
                        eprintln!("kiln ingress: accept: {e}; backing off");
                        warned = Instant::now();
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

/// Writes a response the ingress makes itself on a raw connection, then closes it.
async fn raw_reply(stream: &mut TcpStream, status: u16, reason: &str, why: &str) {
    let body = format!("kiln ingress: {why}\n");
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // Best effort: the client may be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(text.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// Serves one client connection.
async fn serve_conn(ing: Arc<Ingress>, mut stream: TcpStream, peer: SocketAddr, kind: Kind) {
    let slot = match ing.conns.admit(peer.ip(), &ing.limits) {
        Ok(s) => s,
        Err(why) => {
            if kind != Kind::Tls {
                let what = match why {
                    Refusal::Total => "too many connections",
                    Refusal::PerClient => "too many connections from your address",
                };
                raw_reply(&mut stream, 503, "Service Unavailable", what).await;
            }
            return;
        }
    };
    if let Kind::Env(name) = &kind {
        if let Some(e) = ing.env(name) {
            e.gate.connection();
        }
    }
    // Best effort: without it only latency suffers.
    let _ = stream.set_nodelay(true);
    let head = ing.limits.head_timeout;
    let ctx = |tls| {
        Arc::new(Conn {
            ing: Arc::clone(&ing),
            peer,
            kind: kind.clone(),
            tls,
        })
    };
    if kind == Kind::Tls {
        let Some(acceptor) = ing.tls.clone() else {
            return;
        };
        let Ok(Ok(tls)) = tokio::time::timeout(head, acceptor.accept(stream)).await else {
            return;
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let conn = ctx(true);
        if h2 {
            serve_auto(conn, TokioIo::new(tls)).await;
        } else if let Some(io) = first_head(tls, head).await {
            serve_auto(conn, TokioIo::new(io)).await;
        }
    } else if let Some(io) = first_head(stream, head).await {
        serve_h1(ctx(false), TokioIo::new(io)).await;
    }
    drop(slot);
}

/// Reads the connection's first request head itself (within `timeout`), refuses it with 400
/// if [`strict::check_head`] does, and hands every byte read so far on with the stream.
async fn first_head<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    timeout: Duration,
) -> Option<Rewind<S>> {
    let mut buf = BytesMut::with_capacity(4096);
    let read = async {
        loop {
            if strict::head_end(&buf).is_some() || buf.len() >= strict::MAX_HEAD {
                return true;
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(true) => {}
        // Closed, or slower than the head deadline: nothing to answer.
        Ok(false) | Err(_) => return None,
    }
    let end = strict::head_end(&buf).unwrap_or(buf.len());
    if let Err(why) = strict::check_head(&buf[..end]) {
        let body = format!("kiln ingress: {why}\n");
        let text = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(1), stream.write_all(text.as_bytes())).await;
        let _ = stream.shutdown().await;
        return None;
    }
    Some(Rewind {
        prefix: buf.freeze(),
        inner: stream,
    })
}

/// A stream whose first bytes were already read.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// HTTP/1.1 on a plain connection, until it closes or the ingress drains (then the request in
/// flight finishes and the connection closes).
async fn serve_h1<I>(conn: Arc<Conn>, io: TokioIo<I>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut draining = conn.ing.draining.subscribe();
    let limits = conn.ing.limits;
    let svc = service_fn(move |req| handle(Arc::clone(&conn), req));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .keep_alive(true)
        .half_close(false)
        .serve_connection(io, svc)
        .with_upgrades();
    tokio::pin!(served);
    if *draining.borrow() {
        served.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = &mut served => {
                if let Err(e) = r {
                    tracing::debug!("client connection: {e}");
                }
                return;
            }
            changed = draining.changed() => {
                if changed.is_err() || *draining.borrow() {
                    tokio::select! {
                        _ = &mut served => return,
                        () = tokio::time::sleep(DRAIN_GRACE) => {}
                    }
                    served.as_mut().graceful_shutdown();
                    // Keep polling until in-flight requests finish.
                    let _ = (&mut served).await;
                    return;
                }
            }
        }
    }
}

/// HTTP/2 or HTTP/1.1 (by what the client speaks) on a TLS connection.
async fn serve_auto<I>(conn: Arc<Conn>, io: TokioIo<I>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut draining = conn.ing.draining.subscribe();
    let limits = conn.ing.limits;
    let svc = service_fn(move |req| handle(Arc::clone(&conn), req));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(limits.head_timeout))
        .keep_alive_timeout(limits.head_timeout);
    let served = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(served);
    loop {
        tokio::select! {
            r = &mut served => {
                if let Err(e) = r {
                    tracing::debug!("client connection: {e}");
                }
                return;
            }
            changed = draining.changed() => {
                if changed.is_err() || *draining.borrow() {
                    served.as_mut().graceful_shutdown();
                    let _ = (&mut served).await;
                    return;
                }
            }
        }
    }
}

/// One client connection's context.
struct Conn {
    ing: Arc<Ingress>,
    peer: SocketAddr,
    kind: Kind,
    tls: bool,
}

/// What a request was, for its log line.
struct Seen {
    host: String,
    method: String,
    path: String,
    client: String,
}

/// A response the ingress makes itself.
fn own(status: StatusCode, why: &str, close: bool) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("kiln ingress: {why}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// A redirect to `to`.
fn redirect(code: u16, to: &str) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let mut r = own(status, &format!("moved to {to}"), false);
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Handles one request (hyper's service): never fails, every problem is a response.
async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let mut resp = route(&conn, req).await;
    if *conn.ing.draining.borrow() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Ending (a restart took the sockets): the client reconnects, to the new process.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// Routes one request and answers it.
async fn route(conn: &Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let seen = Seen {
        host: req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_string(),
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.to_string()),
        client: conn.peer.ip().to_string(),
    };
    if let Err(why) = strict::check_framing(req.headers()) {
        return own(StatusCode::BAD_REQUEST, why, true);
    }
    let (env, route) = match &conn.kind {
        Kind::Env(name) => match conn.ing.env(name) {
            Some(e) => (e, None),
            None => {
                return own(
                    StatusCode::NOT_FOUND,
                    &format!("environment {name:?} is gone"),
                    false,
                )
            }
        },
        Kind::Plain | Kind::Tls => {
            let host = match routes::host_of(&seen.host) {
                Ok(h) => h,
                Err(why) => return own(StatusCode::BAD_REQUEST, why, true),
            };
            let table = Arc::clone(&conn.ing.table.read().unwrap_or_else(|p| p.into_inner()));
            let Some(route) = table.lookup(&host, req.uri().path()).cloned() else {
                return own(
                    StatusCode::NOT_FOUND,
                    &format!("no environment serves host {host:?}"),
                    false,
                );
            };
            match conn.ing.env(&route.env) {
                Some(e) => (e, Some(route)),
                None => {
                    return own(
                        StatusCode::NOT_FOUND,
                        &format!("no environment serves host {host:?}"),
                        false,
                    )
                }
            }
        }
    };
    let start = Instant::now();
    let log = |status: u16, upstream_ms: Option<f64>| {
        env.log.write(&Entry {
            time: kiln_util::time::now_rfc3339(),
            client: seen.client.clone(),
            host: seen.host.clone(),
            method: seen.method.clone(),
            path: seen.path.clone(),
            status,
            bytes: 0,
            upstream_ms,
        });
    };
    let app = match route.as_ref().map(|r| (&r.target, r.scheme)) {
        Some((Target::Redirect { to, code }, _)) => {
            log(*code, None);
            return redirect(*code, to);
        }
        Some((_, scheme))
            if !conn.tls
                && conn.ing.tls.is_some()
                && (scheme == Scheme::Https || conn.ing.redirect_https) =>
        {
            let host = route.as_ref().map_or("", |r| r.host.as_str());
            let port = conn
                .ing
                .https_port
                .filter(|p| *p != 443)
                .map_or(String::new(), |p| format!(":{p}"));
            log(308, None);
            return redirect(308, &format!("https://{host}{port}{}", seen.path));
        }
        Some((Target::Upstream { upstream }, _)) => upstream.clone(),
        None => None,
    };
    let Some(ticket) = env.gate.admit(app.as_deref()).await else {
        env.gate.record(Outcome::Failed);
        log(503, None);
        return own(StatusCode::SERVICE_UNAVAILABLE, "no upstream yet", true);
    };
    proxy(conn, env.clone(), ticket, req, seen, start).await
}

/// Hop-by-hop fields, never relayed (RFC 9110 §7.6.1).
const HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop fields and those the Connection field names.
fn strip_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in HOP.iter().chain(&named) {
        headers.remove(n);
    }
}

/// Whether a request asks to switch protocols (WebSocket).
fn wants_upgrade(req: &Request<Incoming>) -> Option<HeaderValue> {
    let up = req.headers().get(header::UPGRADE)?.clone();
    let connection_says = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    connection_says.then_some(up)
}

/// Relays one admitted request to its upstream and the response back.
async fn proxy(
    conn: &Conn,
    env: Arc<EnvEntry>,
    ticket: Ticket,
    mut req: Request<Incoming>,
    seen: Seen,
    start: Instant,
) -> Response<Body> {
    let limits = conn.ing.limits;
    let upgrade = wants_upgrade(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop(&mut parts.headers);
    parts.headers.remove(header::EXPECT);
    if let Some(up) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, up.clone());
    }
    if !parts.headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(&seen.host) {
            parts.headers.insert(header::HOST, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&seen.client) {
        parts
            .headers
            .append(HeaderName::from_static("x-forwarded-for"), v);
    }
    parts.headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match format!("http://upstream{path}").parse() {
        Ok(u) => u,
        Err(_) => {
            return finish_own(
                &env,
                &seen,
                StatusCode::BAD_REQUEST,
                "unusable request target",
                true,
            )
        }
    };
    parts.version = Version::HTTP_11;
    let bad_body = Arc::new(AtomicBool::new(false));
    let body = ClientBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(limits.body_timeout)),
        bad: Arc::clone(&bad_body),
    }
    .boxed();
    let up_req = Request::from_parts(parts, body);
    let answered = tokio::time::timeout(
        limits.upstream_timeout,
        ticket.upstream.client.request(up_req),
    )
    .await;
    let upstream_ms = start.elapsed().as_secs_f64() * 1000.0;
    let mut resp = match answered {
        Err(_) => {
            env.gate.record(Outcome::Failed);
            return finish_own(
                &env,
                &seen,
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "{} did not answer within {} ms",
                    ticket.upstream.endpoint,
                    limits.upstream_timeout.as_millis()
                ),
                true,
            );
        }
        Ok(Err(e)) => {
            if bad_body.load(Ordering::Relaxed) {
                env.gate.record(Outcome::Aborted);
                let why = format!("request body: {}", kiln_util::error::chain(&e));
                return finish_own(&env, &seen, StatusCode::BAD_REQUEST, &why, true);
            }
            env.gate.record(Outcome::Failed);
            let why = kiln_util::error::chain(&e);
            return finish_own(&env, &seen, StatusCode::BAD_GATEWAY, &why, true);
        }
        Ok(Ok(r)) => r,
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = client_upgrade {
            let up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(u)) = (client_up.await, up.await) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u))
                            .await;
                }
            });
            env.gate.record(Outcome::Served);
            write_log(&env, &seen, 101, 0, Some(upstream_ms));
            drop(ticket);
            let (parts, _) = resp.into_parts();
            return Response::from_parts(
                parts,
                Full::new(Bytes::new()).map_err(|n| match n {}).boxed(),
            );
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop(&mut parts.headers);
    let status = parts.status.as_u16();
    let bodyless = seen.method == "HEAD" || status == 204 || status == 304;
    let tracked = Tracked {
        bodyless,
        inner: body,
        done: Some(Done {
            ticket,
            env: Arc::clone(&env),
            seen,
            status,
            upstream_ms,
        }),
        bytes: 0,
    };
    Response::from_parts(parts, tracked.boxed())
}

/// Records, logs and builds a response the ingress makes itself after admitting a request.
fn finish_own(
    env: &EnvEntry,
    seen: &Seen,
    status: StatusCode,
    why: &str,
    close: bool,
) -> Response<Body> {
    write_log(env, seen, status.as_u16(), 0, None);
    own(status, why, close)
}

/// Writes one access-log line.
fn write_log(env: &EnvEntry, seen: &Seen, status: u16, bytes: u64, upstream_ms: Option<f64>) {
    env.log.write(&Entry {
        time: kiln_util::time::now_rfc3339(),
        client: seen.client.clone(),
        host: seen.host.clone(),
        method: seen.method.clone(),
        path: seen.path.clone(),
        status,
        bytes,
        upstream_ms,
    });
}

/// A client's request body on its way upstream: it must arrive in full before the body
/// deadline; a framing error or a missed deadline is flagged (the client gets 400).
struct ClientBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    bad: Arc<AtomicBool>,
}

/// A request body that missed its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within its deadline")]
struct BodyDeadline;

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.bad.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    self.bad.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyDeadline))));
                }
                Poll::Pending
            }
            other => other.map(|o| o.map(|r| r.map_err(|e| -> BoxError { Box::new(e) }))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a response body does when it ends.
struct Done {
    ticket: Ticket,
    env: Arc<EnvEntry>,
    seen: Seen,
    status: u16,
    upstream_ms: f64,
}

/// An upstream response body on its way to the client, frame by frame (nothing buffered);
/// its end counts the request and logs it, and ends its ticket.
struct Tracked {
    inner: Incoming,
    /// A response that has no body (to HEAD, or 204/304): hyper drops it unpolled.
    bodyless: bool,
    done: Option<Done>,
    bytes: u64,
}

impl Tracked {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(d) = self.done.take() {
            // Counted before the ticket ends: once nothing is in flight, every count is in.
            d.env.gate.record(outcome);
            write_log(&d.env, &d.seen, d.status, self.bytes, Some(d.upstream_ms));
            drop(d.ticket);
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
                // Trailers are the last frame.
                if f.is_trailers() || self.inner.is_end_stream() {
                    self.finish(Outcome::Served);
                }
            }
            Poll::Ready(None) => self.finish(Outcome::Served),
            Poll::Ready(Some(Err(_))) => self.finish(Outcome::Failed),
            Poll::Pending => {}
        }
        polled.map(|o| o.map(|r| r.map_err(|e| -> BoxError { Box::new(e) })))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or the body was empty and never polled).
        if self.bodyless || self.inner.is_end_stream() {
            self.finish(Outcome::Served);
        } else {
            self.finish(Outcome::Aborted);
        }
    }
}
