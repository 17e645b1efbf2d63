//! Talking to a running router over its control socket: what the deploy orchestration calls.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{Command, Reply, RouterStatus};
use crate::endpoint::Endpoint;
use crate::error::RouterError;
use crate::layout;

/// A connection to an environment's router.
#[derive(Debug)]
pub struct RouterClient {
    env: String,
    socket: PathBuf,
    reader: BufReader<UnixStream>,
}

impl RouterClient {
    /// Connects to the router of `env` under `runtime_root`.
    pub fn connect(runtime_root: &Path, env: &str) -> Result<Self, RouterError> {
        layout::validate_env(env)?;
        let socket = layout::router_socket(runtime_root, env);
        let stream = UnixStream::connect(&socket).map_err(|_| RouterError::NotRunning {
            env: env.to_string(),
            socket: socket.clone(),
        })?;
        Ok(Self {
            env: env.to_string(),
            socket,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply; a refusal is an error naming the command.
    pub fn send(&mut self, command: &Command) -> Result<Reply, RouterError> {
        let line = command.to_line();
        let io = |e: std::io::Error| RouterError::io("talking to router at", &self.socket, e);
        let mut out = format!("{line}\n").into_bytes();
        self.reader.get_mut().write_all(&out).map_err(io)?;
        out.clear();
        self.reader.read_until(b'\n', &mut out).map_err(io)?;
        let fail = |message: String| RouterError::Refused {
            env: self.env.clone(),
            command: line.clone(),
            message,
        };
        if out.is_empty() {
            return Err(fail("closed the connection without answering".into()));
        }
        let reply: Reply =
            serde_json::from_slice(&out).map_err(|e| fail(format!("unreadable reply: {e}")))?;
        if !reply.ok {
            return Err(fail(reply.error.unwrap_or_default()));
        }
        Ok(reply)
    }

    /// Holds new requests and waits up to `drain` for those in flight; returns whether they
    /// all finished.
    pub fn hold(&mut self, drain: Duration) -> Result<bool, RouterError> {
        Ok(self.send(&Command::Hold(drain))?.drained.unwrap_or(false))
    }

    /// Sends requests admitted from now on to `upstream`.
    pub fn switch(&mut self, upstream: &Endpoint) -> Result<(), RouterError> {
        self.send(&Command::Switch(upstream.clone())).map(drop)
    }

    /// Ties holds to this connection: the router releases them if it closes unreleased.
    pub fn lease(&mut self) -> Result<(), RouterError> {
        self.send(&Command::Lease).map(drop)
    }

    /// Lets held requests through; returns how many were waiting.
    pub fn release(&mut self) -> Result<u64, RouterError> {
        Ok(self.send(&Command::Release)?.released.unwrap_or(0))
    }

    /// The router's counters.
    pub fn status(&mut self) -> Result<RouterStatus, RouterError> {
        let reply = self.send(&Command::Status)?;
        reply.status.ok_or_else(|| RouterError::Refused {
            env: self.env.clone(),
            command: "status".into(),
            message: "reply without status".into(),
        })
    }

    /// Asks the router to end (it answers first).
    pub fn stop(&mut self) -> Result<(), RouterError> {
        self.send(&Command::Stop).map(drop)
    }
}
