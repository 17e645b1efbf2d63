//! A tiny HTTP app and a keep-alive load generator, for the deploy tests and the bench: the
//! app answers every request with its name, so a client sees which version served it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_router::{Endpoint, RouterError};

/// How long a client waits for a connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failure reasons kept per client.
const KEEP_ERRORS: usize = 5;

/// A keep-alive HTTP/1.1 server answering `<name> <request body length>`; stops on drop.
#[derive(Debug)]
pub struct NameApp {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NameApp {
    /// Listens on `addr` inside the namespace at `netns` (the socket is made there by a worker
    /// thread; the caller's thread never changes namespace).
    pub fn start_in(
        netns: &Path,
        addr: std::net::SocketAddr,
        name: &str,
    ) -> Result<Self, RouterError> {
        let listener = kiln_netns::with_netns(netns, || TcpListener::bind(addr))?
            .map_err(|e| RouterError::io("listening in netns", netns, e))?;
        Self::serve(listener, name)
    }

    /// Serves `name` on a bound listener.
    pub fn serve(listener: TcpListener, name: &str) -> Result<Self, RouterError> {
        listener
            .set_nonblocking(true)
            .map_err(|e| RouterError::io("configuring", "app listener", e))?;
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
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for NameApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panicked server thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

/// Answers requests on one connection until it closes or the app stops.
fn answer(conn: TcpStream, name: &str, stop: &AtomicBool) {
    if conn.set_nonblocking(false).is_err()
        || conn
            .set_read_timeout(Some(Duration::from_millis(200)))
            .is_err()
    {
        return;
    }
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        let mut started = false;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(_) if stop.load(Ordering::Relaxed) => return,
                // Idle between requests: keep waiting.
                Err(_) if !started => continue,
                Err(_) => return,
            }
            started = true;
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
        let reply = format!("{name} {length}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A keep-alive HTTP client on one connection, reconnecting after an error.
#[derive(Debug)]
pub struct Client {
    target: Endpoint,
    conn: Option<(BufReader<TcpStream>, TcpStream)>,
}

impl Client {
    /// A client of `target` (connects on first use, from inside its namespace if it has one).
    pub fn new(target: Endpoint) -> Self {
        Self { target, conn: None }
    }

    /// Sends `GET path` with `body`; returns the status and response body.
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
            let s = self
                .target
                .connect(CONNECT_TIMEOUT)
                .map_err(|e| e.to_string())?;
            let w = s.try_clone().map_err(|e| format!("clone: {e}"))?;
            self.conn = Some((BufReader::new(s), w));
        }
        let (r, w) = self.conn.as_mut().ok_or("no connection")?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: kiln\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        w.write_all(req.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
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
            close |= lower.starts_with("connection:") && lower.contains("close");
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

/// What one load client saw.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests that failed (an error or a status other than 200).
    pub failed: u64,
    /// The first failure reasons.
    pub errors: Vec<String>,
    /// Who answered, in order, as runs: (first word of the answer, how many in a row).
    pub runs: Vec<(String, u64)>,
    /// Longest request.
    pub longest: Duration,
    /// Sum of request times (for the mean).
    pub total: Duration,
}

impl LoadResult {
    /// Counts one request.
    fn record(&mut self, took: Duration, answer: Result<(u16, String), String>) {
        self.longest = self.longest.max(took);
        self.total += took;
        match answer {
            Ok((200, text)) => {
                self.ok += 1;
                let who = text.split_whitespace().next().unwrap_or("").to_string();
                match self.runs.last_mut() {
                    Some((last, n)) if *last == who => *n += 1,
                    _ => self.runs.push((who, 1)),
                }
            }
            other => {
                self.failed += 1;
                if self.errors.len() < KEEP_ERRORS {
                    self.errors.push(match other {
                        Ok((status, text)) => format!("{status}: {text}"),
                        Err(e) => e,
                    });
                }
            }
        }
    }
}

/// Runs `clients` keep-alive clients against `target` until `stop` is set; join the handles
/// for their results.
pub fn load(
    target: &Endpoint,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<LoadResult>> {
    (0..clients)
        .map(|i| {
            let stop = Arc::clone(stop);
            let mut client = Client::new(target.clone());
            std::thread::spawn(move || {
                let mut res = LoadResult::default();
                let body = format!("client-{i}");
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let answer = client.request("/", &body);
                    res.record(t.elapsed(), answer);
                }
                res
            })
        })
        .collect()
}
