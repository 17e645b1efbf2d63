//! Fixtures for the ingress tests: a `kiln ingress` of a sandbox, raw HTTP/1.1 over TCP (to
//! send exactly the bytes an attacker would), and a reader for the responses that come back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use kiln_router::client::{IngressClient, RouterClient};
use kiln_router::protocol::RouterStatus;
use kiln_router::routes::RouteSpec;
use kiln_router::IngressInfo;

use crate::deploy_support::TestEnv;

/// Runs `kiln ingress start ARGS` (detached) in `env`'s sandbox; returns its record.
pub fn start_ingress(env: &TestEnv, args: &[&str]) -> IngressInfo {
    let mut all = vec!["ingress", "start"];
    all.extend_from_slice(args);
    let out = env.sandbox.ok(&all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("ingress record {out:?}: {e}"))
}

/// The ingress of `env`'s sandbox, stopped on drop (after the environment guard's destroy).
pub struct IngressGuard<'a> {
    /// Its record.
    pub info: IngressInfo,
    env: &'a TestEnv,
}

impl<'a> IngressGuard<'a> {
    /// Starts the ingress with `args`.
    pub fn start(env: &'a TestEnv, args: &[&str]) -> Self {
        Self {
            info: start_ingress(env, args),
            env,
        }
    }

    /// Its first plain listen address.
    pub fn addr(&self) -> SocketAddr {
        self.info.listen[0]
    }

    /// A control connection to it.
    pub fn control(&self) -> IngressClient {
        IngressClient::connect(&self.env.root()).expect("ingress control socket")
    }
}

impl Drop for IngressGuard<'_> {
    fn drop(&mut self) {
        let _ = self.env.sandbox.run(&["ingress", "stop"]);
    }
}

/// Registers environment `name` (in `env`'s sandbox) with upstream `upstream` and routes
/// `routes` of project `project`; returns its control connection.
pub fn register(
    env: &TestEnv,
    name: &str,
    upstream: &str,
    project: &str,
    routes: &[RouteSpec],
) -> RouterClient {
    env.sandbox
        .ok(&["env", "router", name, "start", "--upstream", upstream]);
    let mut c = RouterClient::connect(&env.root(), name).expect("registered");
    c.routes(project, routes).expect("routes");
    c
}

/// The status of environment `name` once nothing is in flight.
pub fn settled(env: &TestEnv, name: &str) -> RouterStatus {
    let mut ctl = RouterClient::connect(&env.root(), name).expect("control");
    for _ in 0..1000 {
        let st = ctl.status().expect("status");
        if st.gate.in_flight == 0 {
            return st;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("requests still in flight after 2 s");
}

/// A response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of field `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection.
pub struct Raw {
    /// Reads responses.
    pub r: BufReader<TcpStream>,
    /// Writes requests.
    pub w: TcpStream,
}

impl Raw {
    /// Connects to `addr` (5 s read timeout).
    pub fn new(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).expect("connect ingress");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Self {
            w: s.try_clone().expect("clone"),
            r: BufReader::new(s),
        }
    }

    /// Sends bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("send");
    }

    /// Sends `GET path` for `host`.
    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        self.response(false).expect("a response")
    }

    /// Reads one response (`head_only`: a HEAD's, no body); `None` when the connection closed
    /// first.
    pub fn response(&mut self, head_only: bool) -> Option<Response> {
        read_response(&mut self.r, head_only)
    }

    /// Whether the ingress closed the connection (EOF within the read timeout).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0) | Err(_))
    }
}

/// Reads one response from `r`; `None` on EOF before a status line.
pub fn read_response(r: &mut impl BufRead, head_only: bool) -> Option<Response> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || (100..200).contains(&status) || status == 204 || status == 304 {
        return Some(resp);
    }
    if resp.header("transfer-encoding") == Some("chunked") {
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                // Trailers up to the blank line.
                loop {
                    line.clear();
                    if r.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                return Some(resp);
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).ok()?;
            resp.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = resp.header("content-length") {
        let mut body = vec![0; len.parse().ok()?];
        r.read_exact(&mut body).ok()?;
        resp.body = body;
    } else {
        r.read_to_end(&mut resp.body).ok()?;
    }
    Some(resp)
}

/// A request as a test upstream reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The request target.
    pub path: String,
    /// Header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of field `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request (Content-Length or chunked body); `None` at EOF or on bad framing.
pub fn read_request(r: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut req = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                loop {
                    line.clear();
                    if r.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).ok()?;
            req.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = req.header("content-length") {
        let mut body = vec![0; len.parse().ok()?];
        r.read_exact(&mut body).ok()?;
        req.body = body;
    }
    Some(req)
}

/// What a scripted upstream does with one request: write its answer to the stream; `false`
/// ends the connection.
pub type Script = fn(&Request, &mut TcpStream) -> bool;

/// A scripted upstream on the host loopback, a thread per connection; runs until the test
/// process ends.
pub fn scripted_upstream(script: Script) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut out) = conn.try_clone() else {
                    return;
                };
                let mut r = BufReader::new(conn);
                while let Some(req) = read_request(&mut r) {
                    if !script(&req, &mut out) {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A script answering `METHOD PATH BODYLEN` (Content-Length framed).
pub fn echo(req: &Request, out: &mut TcpStream) -> bool {
    let text = format!("{} {} {}", req.method, req.path, req.body.len());
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    out.write_all(reply.as_bytes()).is_ok()
}
