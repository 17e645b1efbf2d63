//! kiln-router: the host's ingress, one long-running process per runtime root, in front of
//! every environment.
//!
//! It routes by Host and path prefix (`{env}.{project}.{domain}` and the routes a project
//! declares, see [`routes`]), answers an unknown host 404, terminates TLS (rustls, HTTP/2 by
//! ALPN) and relays to each environment's app over pooled HTTP/1.1 connections opened inside
//! the app's network namespace (see [`upstream`]). HTTP itself is hyper's; the ingress checks
//! only what hyper leaves lenient ([`strict`]). Every environment also gets a loopback port of
//! its own (every request on it goes to that environment, whatever its Host), which is what a
//! deploy reports. Per environment, the deploy drives a gate over the control socket (see
//! [`protocol`]): `hold` (queue new requests, wait for in-flight ones, never past the hold's
//! deadline), `switch` (new upstream), `release`. A held request is served after release,
//! never dropped.
//!
//! Bounded everywhere ([`limits`]): connections per client and in total (503 past them), a
//! head deadline that is also the keep-alive idle timeout, a body deadline, an upstream
//! response timeout; accept backs off on EMFILE and goes on. The data path is async (tokio),
//! so no client costs a thread.
//!
//! Files: see [`layout`]. A deploy starts the ingress when none runs (`--auto`: it then ends
//! when its last environment is destroyed); `kiln ingress start` starts one that stays.

pub mod access;
pub mod client;
mod control;
pub mod daemon;
pub mod endpoint;
pub mod error;
pub mod gate;
mod handoff;
pub mod layout;
pub mod limits;
pub mod protocol;
pub mod routes;
mod server;
pub mod strict;
mod tls;
pub mod upstream;

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use kiln_util::fs as atomic;
use kiln_util::process::ProcessRef;

pub use endpoint::Endpoint;
pub use error::RouterError;
pub use limits::Limits;
pub use tls::CertFiles;

/// How an environment is registered with the ingress (what a deploy asks for).
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Its environment.
    pub env: String,
    /// The runtime root (`$KILN_RUNTIME`).
    pub runtime_root: PathBuf,
    /// The environment's own loopback port (port 0: any free port).
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

/// An environment's registration, recorded in `envs/<env>/router.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInfo {
    /// Its environment.
    pub env: String,
    /// The ingress process serving it.
    pub process: ProcessRef,
    /// The environment's own port.
    pub listen: SocketAddr,
    /// The ingress's control socket.
    pub socket: PathBuf,
    /// The environment's access log.
    pub log: PathBuf,
}

/// How the ingress is set up.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// The runtime root (`$KILN_RUNTIME`).
    pub runtime_root: PathBuf,
    /// Plain HTTP listen addresses (routed by Host).
    pub listen: Vec<SocketAddr>,
    /// TLS listen addresses (routed by Host); need `certs`.
    pub tls_listen: Vec<SocketAddr>,
    /// Certificates: one without a host is the default (a wildcard).
    pub certs: Vec<CertFiles>,
    /// The domain of environment hosts (`{env}.{project}.{domain}`).
    pub domain: String,
    /// Redirect plain requests to https (when TLS is configured).
    pub redirect_https: bool,
    /// End when the last environment is unregistered (an ingress a deploy started).
    pub auto: bool,
    /// The bounds.
    pub limits: Limits,
    /// Take over from a restarting ingress: its handoff state file (settings, inherited
    /// sockets, environments) replaces the rest of this config.
    pub takeover: Option<PathBuf>,
    /// The kiln binary a restart runs (default: this process's executable).
    pub kiln_bin: Option<PathBuf>,
}

impl IngressConfig {
    /// An ingress on a free loopback port for `runtime_root`, defaults otherwise.
    pub fn loopback(runtime_root: &Path) -> Self {
        Self {
            runtime_root: runtime_root.to_path_buf(),
            listen: vec![([127, 0, 0, 1], 0).into()],
            tls_listen: Vec::new(),
            certs: Vec::new(),
            domain: DEFAULT_DOMAIN.into(),
            redirect_https: false,
            auto: false,
            limits: Limits::default(),
            takeover: None,
            kiln_bin: None,
        }
    }
}

/// The default domain: `localhost` (its subdomains resolve to loopback).
pub const DEFAULT_DOMAIN: &str = "localhost";

/// What a running ingress records in `ingress/ingress.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressInfo {
    /// Its process.
    pub process: ProcessRef,
    /// Where it listens for plain HTTP.
    pub listen: Vec<SocketAddr>,
    /// Where it listens for TLS.
    pub tls_listen: Vec<SocketAddr>,
    /// The domain of environment hosts.
    pub domain: String,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// Whether it ends with its last environment.
    pub auto: bool,
}

/// Runs the ingress in this process until it is told to stop (control `stop`, SIGTERM,
/// SIGINT or SIGHUP, or its last environment leaving when `auto`); in-flight requests finish
/// first. `ready` is called once it listens and its files are written. Call it before this
/// process starts other threads: it blocks the stop signals for every thread it spawns.
pub fn run(config: &IngressConfig, ready: impl FnOnce(&IngressInfo)) -> Result<(), RouterError> {
    let root = &config.runtime_root;
    let dir = layout::ingress_dir(root);
    std::fs::create_dir_all(&dir).map_err(|e| RouterError::io("creating", &dir, e))?;
    let (config, inherited) = match &config.takeover {
        Some(path) => {
            let (c, i) = handoff::load(path, config)?;
            (c, Some(i))
        }
        None => (config.clone(), None),
    };
    let config = &config;
    // Held for the ingress's life: a second one is refused, and the kernel lets go of it
    // whenever this process ends. A new ingress taking over waits for the old one's.
    let _lock = match inherited {
        None => Some(lock(root)?),
        Some(_) => {
            lock_when_free(root)?;
            None
        }
    };
    if !config.tls_listen.is_empty() && config.certs.is_empty() {
        return Err(RouterError::Tls {
            what: "certificate",
            path: PathBuf::new(),
            why: "a TLS listen address needs --tls-cert and --tls-key".into(),
        });
    }
    let tls = if config.certs.is_empty() {
        None
    } else {
        Some(tokio_rustls::TlsAcceptor::from(tls::server_config(
            &config.certs,
        )?))
    };
    let bind = |addr: &SocketAddr| -> Result<std::net::TcpListener, RouterError> {
        let l = std::net::TcpListener::bind(addr)
            .map_err(|e| RouterError::io("listening on", addr.to_string(), e))?;
        l.set_nonblocking(true)
            .map_err(|e| RouterError::io("setting non-blocking", addr.to_string(), e))?;
        Ok(l)
    };
    let (plain, secure, envs) = match inherited {
        Some(i) => (i.plain, i.tls, i.envs),
        None => (
            config.listen.iter().map(bind).collect::<Result<_, _>>()?,
            config
                .tls_listen
                .iter()
                .map(bind)
                .collect::<Result<_, _>>()?,
            Vec::new(),
        ),
    };
    let dups = |ls: &[std::net::TcpListener]| -> Result<Vec<std::net::TcpListener>, RouterError> {
        ls.iter()
            .map(|l| {
                l.try_clone()
                    .map_err(|e| RouterError::io("duplicating", "listener", e))
            })
            .collect()
    };
    let template = handoff::Template {
        config: config.clone(),
        plain: dups(&plain)?,
        tls: dups(&secure)?,
    };
    let addr_of = |l: &std::net::TcpListener| {
        l.local_addr()
            .map_err(|e| RouterError::io("reading address of", "listener", e))
    };
    let listen: Vec<SocketAddr> = plain.iter().map(addr_of).collect::<Result<_, _>>()?;
    let tls_listen: Vec<SocketAddr> = secure.iter().map(addr_of).collect::<Result<_, _>>()?;
    let socket = layout::ingress_socket(root);
    atomic::remove_file(&socket)?;
    let control =
        UnixListener::bind(&socket).map_err(|e| RouterError::io("binding", &socket, e))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| RouterError::io("chmod 0600", &socket, e))?;
    let stops: SigSet = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]
        .into_iter()
        .collect();
    stops
        .thread_block()
        .map_err(|e| RouterError::errno("blocking SIGTERM SIGINT SIGHUP for", &socket, e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("kiln-ingress")
        .enable_all()
        .build()
        .map_err(|e| RouterError::io("starting the async runtime for", &socket, e))?;
    let (draining, _) = watch::channel(false);
    let ing = Arc::new(server::Ingress {
        domain: config.domain.to_ascii_lowercase(),
        limits: config.limits,
        envs: RwLock::default(),
        table: RwLock::default(),
        conns: Arc::default(),
        tls,
        redirect_https: config.redirect_https,
        https_port: tls_listen.first().map(SocketAddr::port),
        draining,
    });
    {
        let _guard = rt.enter();
        for (listeners, kind) in [(plain, server::Kind::Plain), (secure, server::Kind::Tls)] {
            for l in listeners {
                let l = tokio::net::TcpListener::from_std(l)
                    .map_err(|e| RouterError::io("registering", "listener", e))?;
                let (_keep, never) = watch::channel(false);
                let ing = Arc::clone(&ing);
                let kind = kind.clone();
                rt.spawn(async move {
                    let _keep = _keep;
                    server::accept_loop(ing, l, kind, never).await;
                });
            }
        }
    }
    let (stop_tx, stop_rx) = mpsc::channel();
    let handed_off = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ctl = Arc::new(control::Control {
        handoff: template,
        handed_off: Arc::clone(&handed_off),
        ing: Arc::clone(&ing),
        rt: rt.handle().clone(),
        root: root.clone(),
        auto: config.auto,
        listen: listen.clone(),
        tls_listen: tls_listen.clone(),
        stop: stop_tx.clone(),
    });
    for (e, listener) in envs {
        let reply = control::register(
            &ctl,
            &e.env,
            control::Listen::Inherited(listener),
            e.upstream,
            e.held,
            Duration::from_millis(e.retry_ms),
        );
        if let Some(why) = reply.error {
            eprintln!("kiln ingress: taking over {}: {why}", e.env);
        }
    }
    std::thread::Builder::new()
        .name("kiln-ingress-control".into())
        .spawn(move || control::serve(control, ctl))
        .map_err(|e| RouterError::io("starting the control thread on", &socket, e))?;
    std::thread::Builder::new()
        .name("kiln-ingress-signals".into())
        .spawn(move || {
            if stops.wait().is_ok() {
                let _ = stop_tx.send(());
            }
        })
        .map_err(|e| RouterError::io("starting the signal thread for", &socket, e))?;
    let info = IngressInfo {
        process: ProcessRef::current().ok_or_else(|| RouterError::Start {
            message: "cannot read its own /proc entry".into(),
        })?,
        listen: listen.clone(),
        tls_listen: tls_listen.clone(),
        domain: ing.domain.clone(),
        socket: socket.clone(),
        log: layout::ingress_log(root),
        auto: config.auto,
    };
    if let Err(e) = atomic::write_json(&layout::ingress_record(root), &info) {
        remove_files(root, &ing);
        return Err(e.into());
    }
    eprintln!(
        "kiln ingress: listening on {listen:?} (TLS {tls_listen:?}), domain {}, {}",
        ing.domain,
        if config.auto {
            "ends with its last environment"
        } else {
            "stays"
        }
    );
    ready(&info);
    // Either a stop arrives or every sender is gone: both end the ingress.
    let _ = stop_rx.recv();
    let _ = ing.draining.send(true);
    // In-flight requests finish (bounded: every phase has a deadline).
    let grace = config.limits.upstream_timeout.min(Duration::from_secs(30));
    kiln_util::wait::until(
        kiln_util::wait::Deadline::after(grace),
        Duration::from_millis(10),
        || ing.conns.open() == 0,
    );
    if !handed_off.load(std::sync::atomic::Ordering::SeqCst) {
        remove_files(root, &ing);
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// Takes the ingress lock without waiting.
fn lock(root: &Path) -> Result<Flock<File>, RouterError> {
    let path = layout::ingress_lock(root);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| RouterError::io("opening", &path, e))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        Errno::EWOULDBLOCK => RouterError::IngressRunning {
            root: root.to_path_buf(),
            pid: daemon::ingress_recorded(root)
                .ok()
                .flatten()
                .map_or(0, |i| i.process.pid),
        },
        e => RouterError::errno("locking", &path, e),
    })
}

/// Takes the ingress lock once the ingress being replaced lets go of it, on a thread that
/// then holds it for this process's life.
fn lock_when_free(root: &Path) -> Result<(), RouterError> {
    let path = layout::ingress_lock(root);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| RouterError::io("opening", &path, e))?;
    std::thread::Builder::new()
        .name("kiln-ingress-lock".into())
        .spawn(move || {
            if let Ok(held) = Flock::lock(file, FlockArg::LockExclusive) {
                loop {
                    std::thread::park();
                    let _ = &held;
                }
            }
        })
        .map_err(|e| RouterError::io("starting the lock thread for", &path, e))?;
    Ok(())
}

/// Removes the ingress's socket and record and its environments' registrations (best
/// effort: it is ending).
fn remove_files(root: &Path, ing: &server::Ingress) {
    for env in ing.envs.read().unwrap_or_else(|p| p.into_inner()).keys() {
        let _ = atomic::remove_file(&layout::router_record(root, env));
    }
    for path in [layout::ingress_socket(root), layout::ingress_record(root)] {
        let _ = atomic::remove_file(&path);
    }
}
