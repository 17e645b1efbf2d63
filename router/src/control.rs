//! The ingress's side of the control socket: each connection a thread, each line a command.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::protocol::{Command, IngressStatus, Reply, RouterStatus};
use crate::access::AccessLog;
use crate::endpoint::Endpoint;
use crate::gate::Gate;
use crate::layout;
use crate::routes::{self, RouteSpec};
use crate::server::{self, EnvEntry, Ingress, Kind};
use crate::RouterInfo;
use kiln_util::fs as atomic;
use kiln_util::process::ProcessRef;

/// What the control threads share.
pub struct Control {
    /// The data path's state.
    pub ing: Arc<Ingress>,
    /// The runtime the data path runs on.
    pub rt: tokio::runtime::Handle,
    /// The runtime root.
    pub root: PathBuf,
    /// End when the last environment leaves.
    pub auto: bool,
    /// Where it listens (for status).
    pub listen: Vec<SocketAddr>,
    /// Where it listens for TLS (for status).
    pub tls_listen: Vec<SocketAddr>,
    /// Asks the ingress to end.
    pub stop: Sender<()>,
    /// What a restart hands the new process (listening sockets are duplicates).
    pub handoff: crate::handoff::Template,
    /// Set once a restart handed the sockets over (the new process owns the files then).
    pub handed_off: Arc<std::sync::atomic::AtomicBool>,
}

/// What an environment's routes file keeps across registrations (env stop/start, ingress
/// restart): the project, the declared routes and each app's upstream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoutesFile {
    /// The project.
    pub project: Option<String>,
    /// The routes as declared.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Each named app's upstream.
    #[serde(default)]
    pub apps: BTreeMap<String, Endpoint>,
}

/// Accepts control connections until the process ends.
pub fn serve(listener: UnixListener, control: Arc<Control>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let control = Arc::clone(&control);
        let spawned = std::thread::Builder::new()
            .name("kiln-ingress-control".into())
            .spawn(move || session(conn, &control));
        if let Err(e) = spawned {
            // The connection was moved into the failed closure and is closed with it.
            eprintln!("kiln ingress: control connection refused: {e}");
        }
    }
}

/// Numbers control connections, for leases.
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Answers the commands of one connection; when it ends, the holds it leased are released.
fn session(conn: UnixStream, control: &Control) {
    let id = SESSIONS.fetch_add(1, Ordering::Relaxed);
    let mut leased = Vec::new();
    commands(conn, id, control, &mut leased);
    for env in leased {
        if control.ing.env(&env).is_some_and(|e| e.gate.end_lease(id)) {
            tracing::warn!("control connection {id} closed while holding {env}: released");
            eprintln!("kiln ingress: control connection {id} closed while holding {env}: released");
        }
    }
}

/// Answers the commands of connection `id` until it closes.
fn commands(conn: UnixStream, id: u64, control: &Control, leased: &mut Vec<String>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let (reply, stopping) = match Command::parse(&line) {
            Ok(cmd) => {
                if let Command::Lease { env } = &cmd {
                    leased.push(env.clone());
                }
                let reply = answer(control, id, &cmd);
                let stopping =
                    cmd == Command::Stop || reply.ending == Some(true) || reply.new_pid.is_some();
                (reply, stopping)
            }
            Err(e) => (Reply::error(e), false),
        };
        let mut text = serde_json::to_vec(&reply).unwrap_or_else(|e| {
            format!("{{\"ok\":false,\"error\":\"serialising reply: {e}\"}}").into_bytes()
        });
        text.push(b'\n');
        let sent = out.write_all(&text).and_then(|()| out.flush());
        if stopping {
            // The ingress ends after the reply is out; a closed channel means it already is.
            let _ = control.stop.send(());
            return;
        }
        if sent.is_err() {
            return;
        }
    }
}

/// The status of one environment.
fn env_status(e: &EnvEntry) -> RouterStatus {
    RouterStatus {
        env: e.name.clone(),
        pid: std::process::id(),
        listen: e.listen,
        urls: e.urls(),
        gate: e.gate.status(),
    }
}

/// Does what a command says and builds the reply.
fn answer(c: &Control, session: u64, cmd: &Command) -> Reply {
    if let Some(env) = cmd.env() {
        if let Err(e) = layout::validate_env(env) {
            return Reply::error(e.to_string());
        }
    }
    match cmd {
        Command::Register {
            env,
            listen,
            upstream,
            held,
            retry_ms,
        } => register(
            c,
            env,
            Listen::Bind(*listen),
            upstream.clone(),
            *held,
            Duration::from_millis(*retry_ms),
        ),
        Command::Unregister { env } => unregister(c, env),
        Command::Status { env: None } => {
            let envs = c.ing.envs.read().unwrap_or_else(|p| p.into_inner());
            let table = c.ing.table.read().unwrap_or_else(|p| p.into_inner());
            Reply {
                ingress: Some(IngressStatus {
                    pid: std::process::id(),
                    listen: c.listen.clone(),
                    tls_listen: c.tls_listen.clone(),
                    domain: c.ing.domain.clone(),
                    hosts: table.hosts(),
                    envs: envs.iter().map(|(n, e)| (n.clone(), e.listen)).collect(),
                    connections: c.ing.conns.open(),
                }),
                ..Reply::ok()
            }
        }
        Command::Stop => Reply::ok(),
        Command::Restart => match crate::handoff::restart(c) {
            Ok(pid) => {
                c.handed_off.store(true, Ordering::SeqCst);
                Reply {
                    new_pid: Some(pid),
                    ..Reply::ok()
                }
            }
            Err(e) => Reply::error(e.to_string()),
        },
        _ => {
            let Some(name) = cmd.env() else {
                return Reply::error("command without environment".into());
            };
            let Some(e) = c.ing.env(name) else {
                return Reply::error(format!(
                    "environment {name:?} has no running router (it is not registered with the ingress)"
                ));
            };
            let mut reply = Reply::ok();
            match cmd {
                Command::Hold { drain_ms, .. } => {
                    reply.drained = Some(e.gate.hold(Duration::from_millis(*drain_ms)));
                }
                Command::Switch { upstream, app, .. } => {
                    e.gate.switch(upstream.clone(), app.as_deref());
                    if let Some(a) = app {
                        let saved = update_routes_file(c, name, |f| {
                            f.apps.insert(a.clone(), upstream.clone());
                        });
                        if let Err(err) = saved {
                            return Reply::error(err.to_string());
                        }
                    }
                }
                Command::Release { .. } => reply.released = Some(e.gate.release()),
                Command::Lease { .. } => e.gate.lease(session),
                Command::Routes {
                    project, routes, ..
                } => match set_routes(c, &e, project, routes) {
                    Ok(r) => reply.routes = Some(r),
                    Err(err) => return Reply::error(err.to_string()),
                },
                _ => {}
            }
            reply.status = Some(env_status(&e));
            reply
        }
    }
}

/// Reads, changes and writes an environment's routes file.
fn update_routes_file(
    c: &Control,
    env: &str,
    change: impl FnOnce(&mut RoutesFile),
) -> Result<(), crate::RouterError> {
    let path = layout::routes_file(&c.root, env);
    let mut file: RoutesFile = atomic::read_json(&path)?.unwrap_or_default();
    change(&mut file);
    Ok(atomic::write_json(&path, &file)?)
}

/// Expands and installs an environment's routes; refuses (changing nothing) a route another
/// environment already serves.
fn set_routes(
    c: &Control,
    e: &EnvEntry,
    project: &str,
    specs: &[RouteSpec],
) -> Result<Vec<routes::Route>, crate::RouterError> {
    layout::validate_env(project).map_err(|_| crate::RouterError::BadRoute {
        route: project.to_string(),
        why: "the project name is not a plain DNS label".into(),
    })?;
    let host = routes::default_host(&e.name, project, &c.ing.domain);
    let expanded = routes::expand(&e.name, &host, specs)?;
    c.ing.rebuild_table(&e.name, Some(&expanded))?;
    *e.routes.write().unwrap_or_else(|p| p.into_inner()) = expanded.clone();
    update_routes_file(c, &e.name, |f| {
        f.project = Some(project.to_string());
        f.routes = specs.to_vec();
    })?;
    Ok(expanded)
}

/// Where an environment's own port comes from.
pub enum Listen {
    /// Bind this address (none: a free loopback port).
    Bind(Option<SocketAddr>),
    /// A listening socket handed over by the ingress this one replaces.
    Inherited(std::net::TcpListener),
}

/// Starts serving an environment.
pub fn register(
    c: &Control,
    env: &str,
    listen: Listen,
    upstream: Option<Endpoint>,
    held: bool,
    retry: Duration,
) -> Reply {
    let mut envs = c.ing.envs.write().unwrap_or_else(|p| p.into_inner());
    if envs.contains_key(env) {
        return Reply::error(
            crate::RouterError::Running {
                env: env.to_string(),
                pid: std::process::id(),
            }
            .to_string(),
        );
    }
    let made = (|| -> Result<Arc<EnvEntry>, crate::RouterError> {
        let dir = layout::env_dir(&c.root, env);
        std::fs::create_dir_all(&dir).map_err(|e| crate::RouterError::io("creating", &dir, e))?;
        let addr = match &listen {
            Listen::Bind(a) => a.unwrap_or(([127, 0, 0, 1], 0).into()),
            Listen::Inherited(l) => l
                .local_addr()
                .map_err(|e| crate::RouterError::io("reading address of", "inherited socket", e))?,
        };
        let std_listener = match listen {
            Listen::Bind(_) => std::net::TcpListener::bind(addr)
                .map_err(|e| crate::RouterError::io("listening on", addr.to_string(), e))?,
            Listen::Inherited(l) => l,
        };
        let kept = std_listener
            .try_clone()
            .map_err(|e| crate::RouterError::io("duplicating", addr.to_string(), e))?;
        let bound = std_listener
            .local_addr()
            .map_err(|e| crate::RouterError::io("reading address of", addr.to_string(), e))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| crate::RouterError::io("setting non-blocking", bound.to_string(), e))?;
        let listener = {
            let _guard = c.rt.enter();
            tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| crate::RouterError::io("registering", bound.to_string(), e))?
        };
        let saved: RoutesFile =
            atomic::read_json(&layout::routes_file(&c.root, env))?.unwrap_or_default();
        let gate = Arc::new(Gate::new(upstream, held, retry));
        for (app, ep) in &saved.apps {
            gate.switch(ep.clone(), Some(app));
        }
        let routes = match &saved.project {
            Some(p) => routes::expand(
                env,
                &routes::default_host(env, p, &c.ing.domain),
                &saved.routes,
            )?,
            None => Vec::new(),
        };
        let (stop_accept, stop_rx) = watch::channel(false);
        let entry = Arc::new(EnvEntry {
            name: env.to_string(),
            gate,
            listen: bound,
            routes: RwLock::new(routes),
            log: AccessLog::open(&layout::access_log(&c.root, env))?,
            stop_accept,
            listener: kept,
        });
        let info = RouterInfo {
            env: env.to_string(),
            process: ProcessRef::current().ok_or_else(|| crate::RouterError::Start {
                message: "cannot read its own /proc entry".into(),
            })?,
            listen: bound,
            socket: layout::ingress_socket(&c.root),
            log: layout::access_log(&c.root, env),
        };
        atomic::write_json(&layout::router_record(&c.root, env), &info)?;
        let ing = Arc::clone(&c.ing);
        c.rt.spawn(server::accept_loop(
            ing,
            listener,
            Kind::Env(env.to_string()),
            stop_rx,
        ));
        Ok(entry)
    })();
    match made {
        Ok(entry) => {
            let status = env_status(&entry);
            envs.insert(env.to_string(), entry);
            drop(envs);
            if let Err(e) = c.ing.rebuild_table(env, None) {
                // Another environment took its hosts meanwhile: it serves on its own port only.
                eprintln!("kiln ingress: {env}: {e}");
                if let Some(en) = c.ing.env(env) {
                    en.routes.write().unwrap_or_else(|p| p.into_inner()).clear();
                }
            }
            eprintln!("kiln ingress: serving {env} (own port {})", status.listen);
            Reply {
                status: Some(status),
                ..Reply::ok()
            }
        }
        Err(e) => Reply::error(e.to_string()),
    }
}

/// Stops serving an environment; an ingress started for deploys ends with its last one.
fn unregister(c: &Control, env: &str) -> Reply {
    let removed = c
        .ing
        .envs
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(env);
    let was = removed.is_some();
    if let Some(e) = removed {
        let _ = e.stop_accept.send(true);
        // Held requests are let through (to whatever upstream it had): never dropped.
        e.gate.release();
        let _ = c.ing.rebuild_table(env, Some(&[]));
    }
    let _ = atomic::remove_file(&layout::router_record(&c.root, env));
    let empty = c
        .ing
        .envs
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty();
    Reply {
        was_registered: Some(was),
        ending: Some(c.auto && empty),
        ..Reply::ok()
    }
}
