//! kiln-router: an environment's ingress, one long-running process per environment.
//!
//! It listens on a host loopback port and relays HTTP/1.1 requests, one at a time per client
//! connection, to the app's upstream, opening upstream sockets inside the app's network
//! namespace. It routes per request, so a kept-alive client connection follows a switch. The
//! deploy orchestration drives it over a unix control socket (see [`protocol`]): `hold` (queue
//! new requests, wait for in-flight ones), `switch` (new upstream), `release`. A held request
//! is served after release, never dropped; a refusing upstream is retried briefly before 502.
//!
//! Files under `$KILN_RUNTIME/envs/<env>/`: `router.sock`, `router.pid`, `router.json`
//! ([`RouterInfo`]), `router.log`.

pub mod client;
mod control;
pub mod daemon;
pub mod endpoint;
pub mod error;
pub mod gate;
pub mod http;
pub mod layout;
pub mod protocol;
mod proxy;
mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use std::fs::{File, OpenOptions};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};

use gate::Gate;
use kiln_util::fs as atomic;
use kiln_util::process::ProcessRef;
use protocol::RouterStatus;

pub use endpoint::Endpoint;
pub use error::RouterError;

/// How a router is set up.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Its environment.
    pub env: String,
    /// The runtime root (`$KILN_RUNTIME`).
    pub runtime_root: PathBuf,
    /// Host address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The first upstream, if there is one yet.
    pub upstream: Option<Endpoint>,
    /// Start holding requests (a first deploy: release once the app is healthy).
    pub held: bool,
    /// How long a refusing upstream is retried before a request is answered 502.
    pub retry: Duration,
}

/// Default for [`RouterConfig::retry`].
pub const DEFAULT_RETRY: Duration = Duration::from_secs(3);

/// What a running router records in `router.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInfo {
    /// Its environment.
    pub env: String,
    /// Its process.
    pub process: ProcessRef,
    /// The host address it listens on (with the port it got).
    pub listen: SocketAddr,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

/// What the router's threads share.
pub(crate) struct Shared {
    /// The gate every request passes.
    gate: Gate,
    /// Its environment.
    env: String,
    /// Its listen address.
    listen: SocketAddr,
    /// How long a refusing upstream is retried.
    retry: Duration,
}

impl Shared {
    /// The status the control socket reports.
    fn status(&self) -> RouterStatus {
        RouterStatus {
            env: self.env.clone(),
            pid: std::process::id(),
            listen: self.listen,
            gate: self.gate.status(),
        }
    }
}

/// Runs the router in this process until it is told to stop (control `stop`, SIGTERM, SIGINT
/// or SIGHUP). `ready` is called once it listens and its files are written. Call it before
/// this process starts other threads: it blocks the stop signals for every thread it spawns.
pub fn run(config: &RouterConfig, ready: impl FnOnce(&RouterInfo)) -> Result<(), RouterError> {
    layout::validate_env(&config.env)?;
    let root = &config.runtime_root;
    let env = &config.env;
    let dir = layout::env_dir(root, env);
    std::fs::create_dir_all(&dir).map_err(|e| RouterError::io("creating", &dir, e))?;
    // Held for the router's life: a second router of the environment is refused, and the
    // kernel lets go of it whenever this process ends.
    let _lock = lock(config)?;
    let listener = TcpListener::bind(config.listen)
        .map_err(|e| RouterError::io("listening on", config.listen.to_string(), e))?;
    let listen = listener
        .local_addr()
        .map_err(|e| RouterError::io("reading address of", config.listen.to_string(), e))?;
    let socket = layout::router_socket(root, env);
    atomic::remove_file(&socket)?;
    let control =
        UnixListener::bind(&socket).map_err(|e| RouterError::io("binding", &socket, e))?;
    let stops: SigSet = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]
        .into_iter()
        .collect();
    stops
        .thread_block()
        .map_err(|e| RouterError::sys("pthread_sigmask", "SIGTERM SIGINT SIGHUP", e))?;
    let info = RouterInfo {
        env: env.clone(),
        process: ProcessRef::current().ok_or_else(|| RouterError::Start {
            env: env.clone(),
            message: "cannot read its own /proc entry".into(),
        })?,
        listen,
        socket: socket.clone(),
        log: layout::router_log(root, env),
    };
    let written = atomic::write_atomic(
        &layout::router_pid_file(root, env),
        format!("{}\n", info.process.pid).as_bytes(),
    )
    .and_then(|()| atomic::write_json(&layout::router_record(root, env), &info));
    if let Err(e) = written {
        remove_files(config);
        return Err(e.into());
    }
    let shared = Arc::new(Shared {
        gate: Gate::new(config.upstream.clone(), config.held),
        env: env.clone(),
        listen,
        retry: config.retry,
    });
    let (stop_tx, stop_rx) = mpsc::channel();
    {
        let shared = Arc::clone(&shared);
        let stop = stop_tx.clone();
        std::thread::spawn(move || control::serve(control, shared, stop));
    }
    {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || accept(listener, shared));
    }
    std::thread::spawn(move || {
        if stops.wait().is_ok() {
            let _ = stop_tx.send(());
        }
    });
    eprintln!(
        "kiln router: env {env} listening on {listen}, upstream {}, {}",
        config
            .upstream
            .as_ref()
            .map_or("none yet".to_string(), ToString::to_string),
        if config.held { "holding" } else { "open" }
    );
    ready(&info);
    // Either a stop arrives or every sender is gone: both end the router.
    let _ = stop_rx.recv();
    remove_files(config);
    Ok(())
}

/// Takes the environment's router lock without waiting.
fn lock(config: &RouterConfig) -> Result<Flock<File>, RouterError> {
    let path = layout::router_lock(&config.runtime_root, &config.env);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| RouterError::io("opening", &path, e))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        Errno::EWOULDBLOCK => RouterError::Running {
            env: config.env.clone(),
            pid: daemon::recorded(&config.runtime_root, &config.env)
                .ok()
                .flatten()
                .map_or(0, |i| i.process.pid),
        },
        e => RouterError::sys("flock", path.display(), e),
    })
}

/// Accepts client connections, one thread each.
fn accept(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || proxy::serve(&shared.gate, conn, shared.retry));
    }
}

/// Removes the router's socket, pid file and record (best effort: it is ending).
fn remove_files(config: &RouterConfig) {
    let (root, env) = (&config.runtime_root, &config.env);
    for path in [
        layout::router_socket(root, env),
        layout::router_pid_file(root, env),
        layout::router_record(root, env),
    ] {
        let _ = atomic::remove_file(&path);
    }
}
