//! The router's current upstream: where requests go, and its idle keep-alive connections.

use std::io::{BufReader, Write as _};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use kiln_util::wait::{self, Deadline};

use crate::endpoint::Endpoint;
use crate::error::RouterError;

/// Longest a single connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between connect attempts while an upstream refuses.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Most idle connections kept per upstream.
const MAX_IDLE: usize = 64;

/// A connection to an upstream: buffered for reading, writable through `get_mut`.
pub type Conn = BufReader<TcpStream>;

/// An upstream and its pool of idle connections (dropped with it when the router switches).
#[derive(Debug)]
pub struct Upstream {
    /// Where it is.
    pub endpoint: Endpoint,
    /// Connections whose last response ended cleanly, ready for the next request.
    idle: Mutex<Vec<Conn>>,
}

impl Upstream {
    /// An upstream with no connections yet.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection if there is one (`true`: reused), or a new one; a refused connect
    /// is retried until `deadline`.
    pub fn checkout(&self, deadline: Deadline) -> Result<(Conn, bool), RouterError> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok((conn, true));
        }
        Ok((self.connect(deadline)?, false))
    }

    /// A new connection, retrying until `deadline`.
    pub fn connect(&self, deadline: Deadline) -> Result<Conn, RouterError> {
        wait::retry(deadline, RETRY_PAUSE, |left| {
            self.endpoint
                .connect(CONNECT_TIMEOUT.min(left.max(RETRY_PAUSE)))
                .map(BufReader::new)
        })
    }

    /// Puts a connection back for reuse.
    pub fn checkin(&self, mut conn: Conn) {
        if conn.get_mut().flush().is_err() || !conn.buffer().is_empty() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }
}
