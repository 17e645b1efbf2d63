//! Restarting the ingress without dropping a connection: the running ingress starts the new
//! one with its listening sockets inherited (duplicated without close-on-exec) and a state
//! file naming them and each environment's gate; once the new process listens, the old one
//! stops accepting, answers what it has in flight with `Connection: close` (clients reconnect,
//! to the new process: the listening sockets are the same) and ends.

use std::net::TcpListener;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::endpoint::Endpoint;
use crate::error::RouterError;
use crate::{layout, CertFiles, IngressConfig, IngressInfo, Limits};

/// What a running ingress keeps to hand over: its settings and duplicates of its listening
/// sockets.
#[derive(Debug)]
pub struct Template {
    /// Its config (listen addresses unused: the sockets go instead).
    pub config: IngressConfig,
    /// Plain listening sockets.
    pub plain: Vec<TcpListener>,
    /// TLS listening sockets.
    pub tls: Vec<TcpListener>,
}

/// One environment as handed over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvHandoff {
    /// Its name.
    pub env: String,
    /// Its own port's inherited descriptor.
    pub fd: RawFd,
    /// Its main upstream.
    pub upstream: Option<Endpoint>,
    /// Whether it holds requests.
    pub held: bool,
    /// Retry time of a refusing upstream, in ms.
    pub retry_ms: u64,
}

/// The state file the new ingress reads (`$KILN_RUNTIME/ingress/handoff.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Domain of environment hosts.
    pub domain: String,
    /// Ends with its last environment.
    pub auto: bool,
    /// Redirect plain requests to https.
    pub redirect_https: bool,
    /// Connection limits: total, per client.
    pub max_connections: u64,
    /// Connection limit per client.
    pub max_per_client: u64,
    /// Deadlines in ms: head, body, upstream.
    pub deadlines_ms: [u64; 3],
    /// Certificates: (host, cert, key).
    pub certs: Vec<(Option<String>, PathBuf, PathBuf)>,
    /// Inherited plain listening descriptors.
    pub plain: Vec<RawFd>,
    /// Inherited TLS listening descriptors.
    pub tls: Vec<RawFd>,
    /// The environments.
    pub envs: Vec<EnvHandoff>,
}

/// What the new ingress takes over.
#[derive(Debug)]
pub struct Inherited {
    /// Plain listening sockets.
    pub plain: Vec<TcpListener>,
    /// TLS listening sockets.
    pub tls: Vec<TcpListener>,
    /// Environments with their own port's socket.
    pub envs: Vec<(EnvHandoff, TcpListener)>,
}

/// Milliseconds of a duration.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Starts the new ingress with everything handed over; returns its pid once it listens.
pub fn restart(c: &Control) -> Result<u32, RouterError> {
    let path = layout::handoff_file(&c.root);
    let mut keep: Vec<OwnedFd> = Vec::new();
    let mut dup = |l: &TcpListener| -> Result<RawFd, RouterError> {
        // dup(2) leaves close-on-exec off: the new process inherits it.
        let fd = nix::unistd::dup(l)
            .map_err(|e| RouterError::errno("duplicating a socket for", &path, e))?;
        let raw = fd.as_raw_fd();
        keep.push(fd);
        Ok(raw)
    };
    let t = &c.handoff;
    let plain = t
        .plain
        .iter()
        .map(&mut dup)
        .collect::<Result<Vec<_>, _>>()?;
    let tls = t.tls.iter().map(&mut dup).collect::<Result<Vec<_>, _>>()?;
    let mut envs = Vec::new();
    for e in c
        .ing
        .envs
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
    {
        let st = e.gate.status();
        envs.push(EnvHandoff {
            env: e.name.clone(),
            fd: dup(&e.listener)?,
            upstream: st.upstream.as_deref().and_then(|u| u.parse().ok()),
            held: st.held,
            retry_ms: ms(e.gate.retry()),
        });
    }
    let l = &t.config.limits;
    let state = State {
        domain: t.config.domain.clone(),
        auto: t.config.auto,
        redirect_https: t.config.redirect_https,
        max_connections: l.max_connections,
        max_per_client: l.max_per_client,
        deadlines_ms: [
            ms(l.head_timeout),
            ms(l.body_timeout),
            ms(l.upstream_timeout),
        ],
        certs: t
            .config
            .certs
            .iter()
            .map(|c| (c.host.clone(), c.cert.clone(), c.key.clone()))
            .collect(),
        plain,
        tls,
        envs,
    };
    kiln_util::fs::write_json(&path, &state)?;
    let exe = match &t.config.kiln_bin {
        Some(bin) => bin.clone(),
        None => {
            std::env::current_exe().map_err(|e| RouterError::io("locating", "/proc/self/exe", e))?
        }
    };
    let out = Command::new(&exe)
        .arg("--root")
        .arg(&c.root)
        .args(["ingress", "start", "--takeover"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RouterError::io("running", &exe, e));
    drop(keep);
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    let info: IngressInfo = text
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| RouterError::Start {
            message: format!(
                "the new ingress did not come up: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })?;
    eprintln!(
        "kiln ingress: handed over to pid {}; finishing in-flight requests",
        info.process.pid
    );
    Ok(info.process.pid)
}

/// Reads a handoff state file: `config` with its settings, and the inherited sockets.
pub fn load(
    path: &Path,
    config: &IngressConfig,
) -> Result<(IngressConfig, Inherited), RouterError> {
    let state: State = kiln_util::fs::read_json(path)?.ok_or_else(|| RouterError::Start {
        message: format!("no handoff state at {}", path.display()),
    })?;
    let take = |fd: RawFd| -> Result<TcpListener, RouterError> {
        nix::fcntl::fcntl(
            // SAFETY: `fd` was handed to this process at exec (listed in the state file the
            // ingress it replaces wrote just before); nothing else here uses that number.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| RouterError::errno("taking over an inherited socket listed in", path, e))?;
        // SAFETY: as above; the listener becomes its only owner.
        Ok(unsafe { TcpListener::from_raw_fd(fd) })
    };
    let inherited = Inherited {
        plain: state
            .plain
            .iter()
            .map(|&fd| take(fd))
            .collect::<Result<_, _>>()?,
        tls: state
            .tls
            .iter()
            .map(|&fd| take(fd))
            .collect::<Result<_, _>>()?,
        envs: state
            .envs
            .iter()
            .map(|e| take(e.fd).map(|l| (e.clone(), l)))
            .collect::<Result<_, _>>()?,
    };
    let [head, body, upstream] = state.deadlines_ms.map(Duration::from_millis);
    let mut config = config.clone();
    config.domain = state.domain;
    config.auto = state.auto;
    config.redirect_https = state.redirect_https;
    config.limits = Limits {
        max_connections: state.max_connections,
        max_per_client: state.max_per_client,
        head_timeout: head,
        body_timeout: body,
        upstream_timeout: upstream,
    };
    config.certs = state
        .certs
        .into_iter()
        .map(|(host, cert, key)| CertFiles { host, cert, key })
        .collect();
    config.listen.clear();
    config.tls_listen.clear();
    Ok((config, inherited))
}
