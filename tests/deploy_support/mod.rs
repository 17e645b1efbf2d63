//! Fixtures for the deploy tests: an environment with network namespaces made by `kiln net`,
//! tiny HTTP servers listening inside them, keep-alive HTTP clients, and a router.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln::deploy::router::client::RouterClient;
use kiln::deploy::Endpoint;

#[path = "../common/mod.rs"]
mod common;
pub use common::{unique, Sandbox};

/// Port the test apps listen on inside their namespaces.
pub const APP_PORT: u16 = 8000;

/// An environment in a sandbox; `kiln env destroy` runs on drop (router, netns, volumes).
pub struct TestEnv {
    /// The sandbox (store and runtime root).
    pub sandbox: Sandbox,
    /// The environment name.
    pub name: String,
}

impl TestEnv {
    /// A fresh environment with one network namespace per service in `services`.
    pub fn with_netns(services: &[&str]) -> Self {
        let env = Self {
            sandbox: Sandbox::new(),
            name: unique("dep"),
        };
        if !services.is_empty() {
            let topo = env.sandbox.dir.path().join("topology.json");
            let json = serde_json::json!({ "services": services, "edges": [] });
            std::fs::write(&topo, json.to_string()).expect("write topology");
            env.sandbox.ok(&[
                "net",
                "apply",
                "--env",
                &env.name,
                topo.to_str().expect("utf8"),
            ]);
        }
        env
    }

    /// The runtime root.
    pub fn root(&self) -> PathBuf {
        self.sandbox.root()
    }

    /// The namespace path of `service`.
    pub fn netns(&self, service: &str) -> PathBuf {
        kiln_netns::netns_path(&self.root(), &self.name, service)
    }

    /// The app endpoint of `service` (its port, from inside its namespace).
    pub fn app(&self, service: &str) -> Endpoint {
        Endpoint::in_netns(([127, 0, 0, 1], APP_PORT).into(), &self.netns(service))
    }

    /// Runs `kiln env router <env> ARGS`, returning stdout (panics on failure).
    pub fn router(&self, args: &[&str]) -> String {
        let mut all = vec!["env", "router", &self.name];
        all.extend_from_slice(args);
        self.sandbox.ok(&all)
    }

    /// Starts the router (extra start flags in `args`) and returns its listen address.
    pub fn start_router(&self, args: &[&str]) -> SocketAddr {
        let mut all = vec!["start"];
        all.extend_from_slice(args);
        let out = self.router(&all);
        let addr = out
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no address in {out:?}"));
        addr
    }

    /// A control connection to the router.
    pub fn control(&self) -> RouterClient {
        RouterClient::connect(&self.root(), &self.name).expect("router control socket")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = self.sandbox.run(&["env", "destroy", &self.name]);
    }
}

/// A tiny keep-alive HTTP/1.1 server answering every request with its name, stopped on drop.
pub struct AppServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AppServer {
    /// Listens on 127.0.0.1:APP_PORT inside the namespace at `netns` (the socket is made
    /// there by a worker thread; this thread never changes namespace) and answers `name`.
    pub fn start_in(netns: &std::path::Path, name: &str) -> Self {
        let listener = kiln_netns::with_netns(netns, || TcpListener::bind(("127.0.0.1", APP_PORT)))
            .expect("enter netns")
            .expect("bind inside netns");
        Self::serve(listener, name)
    }

    /// Serves `name` on an already bound listener.
    pub fn serve(listener: TcpListener, name: &str) -> Self {
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let name = name.to_string();
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let name = name.clone();
                        let flag = Arc::clone(&flag);
                        std::thread::spawn(move || answer(conn, &name, &flag));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers requests on one connection until it closes (or the server stops).
fn answer(conn: TcpStream, name: &str, stop: &AtomicBool) {
    conn.set_nonblocking(false).expect("blocking");
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut out = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    loop {
        let mut length = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) if first => continue,
                Err(_) => return,
            }
            first = false;
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let reply = format!("{name} {}", body.len());
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A keep-alive HTTP client on one connection (reconnecting after an error).
pub struct Client {
    addr: SocketAddr,
    conn: Option<(BufReader<TcpStream>, TcpStream)>,
}

impl Client {
    /// A client of `addr` (connects on first use).
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// Sends `GET path` (with a body when `body` is not empty); returns status and body.
    pub fn request(&mut self, path: &str, body: &str) -> Result<(u16, String), String> {
        let result = self.try_request(path, body);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// One attempt on the current connection.
    fn try_request(&mut self, path: &str, body: &str) -> Result<(u16, String), String> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr).map_err(|e| format!("connect: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            let w = s.try_clone().map_err(|e| e.to_string())?;
            self.conn = Some((BufReader::new(s), w));
        }
        let (r, w) = self.conn.as_mut().ok_or("no connection")?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        w.write_all(req.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut status_line = String::new();
        r.read_line(&mut status_line)
            .map_err(|e| format!("read: {e}"))?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).map_err(|e| format!("read: {e}"))? == 0 {
                return Err("closed mid-head".into());
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad length {line:?}"))?;
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0; length];
        r.read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// What a load run of one client saw.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests that failed (error or non-200), with the first reasons.
    pub failed: u64,
    /// The first few failure reasons.
    pub errors: Vec<String>,
    /// Answers in order, collapsed into runs: (answer prefix, count).
    pub runs: Vec<(String, u64)>,
    /// Longest request.
    pub longest: Duration,
}

/// Runs `clients` keep-alive clients against `addr` until `stop` is set.
pub fn load(
    addr: SocketAddr,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<LoadResult>> {
    (0..clients)
        .map(|i| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut c = Client::new(addr);
                let mut res = LoadResult::default();
                let body = format!("client-{i}");
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let answer = c.request("/", &body);
                    res.longest = res.longest.max(t.elapsed());
                    match answer {
                        Ok((200, text)) => {
                            res.ok += 1;
                            let who = text.split_whitespace().next().unwrap_or("").to_string();
                            match res.runs.last_mut() {
                                Some((last, n)) if *last == who => *n += 1,
                                _ => res.runs.push((who, 1)),
                            }
                        }
                        Ok((status, text)) => {
                            res.failed += 1;
                            if res.errors.len() < 5 {
                                res.errors.push(format!("{status}: {text}"));
                            }
                        }
                        Err(e) => {
                            res.failed += 1;
                            if res.errors.len() < 5 {
                                res.errors.push(e);
                            }
                        }
                    }
                }
                res
            })
        })
        .collect()
}
