//! Talking to the running ingress over its control socket: what the deploy orchestration and
//! the CLI call.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{Command, IngressStatus, Reply, RouterStatus};
use crate::endpoint::Endpoint;
use crate::error::RouterError;
use crate::layout;
use crate::routes::{Route, RouteSpec};
use crate::RouterConfig;

/// A control connection to the ingress.
#[derive(Debug)]
pub struct IngressClient {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
}

impl IngressClient {
    /// Connects to the ingress of `runtime_root`.
    pub fn connect(runtime_root: &Path) -> Result<Self, RouterError> {
        let socket = layout::ingress_socket(runtime_root);
        let stream = UnixStream::connect(&socket)
            .map_err(|e| RouterError::io("connecting to the ingress at", &socket, e))?;
        Ok(Self {
            socket,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply; a refusal is an error naming the command.
    pub fn send(&mut self, command: &Command) -> Result<Reply, RouterError> {
        let line = command.to_line();
        let io = |e: std::io::Error| RouterError::io("talking to the ingress at", &self.socket, e);
        let mut out = format!("{line}\n").into_bytes();
        self.reader.get_mut().write_all(&out).map_err(io)?;
        out.clear();
        self.reader.read_until(b'\n', &mut out).map_err(io)?;
        let fail = |message: String| RouterError::Refused {
            env: command.env().unwrap_or_default().to_string(),
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

    /// Registers an environment.
    pub fn register(&mut self, config: &RouterConfig) -> Result<RouterStatus, RouterError> {
        let reply = self.send(&Command::Register {
            env: config.env.clone(),
            listen: Some(config.listen),
            upstream: config.upstream.clone(),
            held: config.held,
            retry_ms: u64::try_from(config.retry.as_millis()).unwrap_or(u64::MAX),
        })?;
        status_of(&config.env, reply)
    }

    /// Unregisters an environment: (whether it was registered, whether the ingress ends now).
    pub fn unregister(&mut self, env: &str) -> Result<(bool, bool), RouterError> {
        let reply = self.send(&Command::Unregister { env: env.into() })?;
        Ok((
            reply.was_registered.unwrap_or(false),
            reply.ending.unwrap_or(false),
        ))
    }

    /// The ingress's status.
    pub fn status(&mut self) -> Result<IngressStatus, RouterError> {
        let reply = self.send(&Command::Status { env: None })?;
        reply.ingress.ok_or_else(|| RouterError::Refused {
            env: String::new(),
            command: "status".into(),
            message: "reply without status".into(),
        })
    }

    /// Asks the ingress to end (it answers first; in-flight requests finish).
    pub fn stop(&mut self) -> Result<(), RouterError> {
        self.send(&Command::Stop).map(drop)
    }
}

/// The environment status in a reply.
fn status_of(env: &str, reply: Reply) -> Result<RouterStatus, RouterError> {
    reply.status.ok_or_else(|| RouterError::Refused {
        env: env.to_string(),
        command: "status".into(),
        message: "reply without status".into(),
    })
}

/// A control connection about one environment.
#[derive(Debug)]
pub struct RouterClient {
    env: String,
    inner: IngressClient,
}

impl RouterClient {
    /// Connects to the ingress serving `env` under `runtime_root`; an error when none runs or
    /// it does not serve `env`.
    pub fn connect(runtime_root: &Path, env: &str) -> Result<Self, RouterError> {
        layout::validate_env(env)?;
        let not_running = || RouterError::NotRunning {
            env: env.to_string(),
            socket: layout::ingress_socket(runtime_root),
        };
        let inner = IngressClient::connect(runtime_root).map_err(|_| not_running())?;
        let mut c = Self {
            env: env.to_string(),
            inner,
        };
        c.status().map_err(|_| not_running())?;
        Ok(c)
    }

    /// Sends one command.
    pub fn send(&mut self, command: &Command) -> Result<Reply, RouterError> {
        self.inner.send(command)
    }

    /// Holds new requests and waits up to `drain` for those in flight; returns whether they
    /// all finished.
    pub fn hold(&mut self, drain: Duration) -> Result<bool, RouterError> {
        let drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX);
        let env = self.env.clone();
        Ok(self
            .send(&Command::Hold { env, drain_ms })?
            .drained
            .unwrap_or(false))
    }

    /// Sends requests for the main app admitted from now on to `upstream`.
    pub fn switch(&mut self, upstream: &Endpoint) -> Result<(), RouterError> {
        self.switch_app(upstream, None)
    }

    /// Sends requests for `app` (`None`: the main app) admitted from now on to `upstream`.
    pub fn switch_app(
        &mut self,
        upstream: &Endpoint,
        app: Option<&str>,
    ) -> Result<(), RouterError> {
        let env = self.env.clone();
        self.send(&Command::Switch {
            env,
            upstream: upstream.clone(),
            app: app.map(str::to_string),
        })
        .map(drop)
    }

    /// Sets the environment's routes (none: `http://{default}/`); returns them expanded.
    pub fn routes(
        &mut self,
        project: &str,
        routes: &[RouteSpec],
    ) -> Result<Vec<Route>, RouterError> {
        let env = self.env.clone();
        Ok(self
            .send(&Command::Routes {
                env,
                project: project.to_string(),
                routes: routes.to_vec(),
            })?
            .routes
            .unwrap_or_default())
    }

    /// Ties holds to this connection: the ingress releases them if it closes unreleased.
    pub fn lease(&mut self) -> Result<(), RouterError> {
        let env = self.env.clone();
        self.send(&Command::Lease { env }).map(drop)
    }

    /// Lets held requests through; returns how many were waiting.
    pub fn release(&mut self) -> Result<u64, RouterError> {
        let env = self.env.clone();
        Ok(self.send(&Command::Release { env })?.released.unwrap_or(0))
    }

    /// The environment's counters.
    pub fn status(&mut self) -> Result<RouterStatus, RouterError> {
        let env = self.env.clone();
        let reply = self.send(&Command::Status {
            env: Some(env.clone()),
        })?;
        status_of(&env, reply)
    }

    /// Stops serving the environment.
    pub fn stop(&mut self) -> Result<(), RouterError> {
        let env = self.env.clone();
        self.inner.unregister(&env).map(drop)
    }
}
