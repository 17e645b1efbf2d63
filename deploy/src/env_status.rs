//! An environment as it really is now: the record checked against /proc, the mount table and
//! the router's control socket.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::env_state::{EnvState, ServiceState};
use super::error::DeployError;
use super::layout;
use super::router::client::RouterClient;
use super::router::protocol::RouterStatus;
use super::router::{daemon, RouterInfo};
use super::volumes;

/// The live state of an environment.
#[derive(Debug, Clone, Serialize)]
pub struct EnvStatus {
    /// The environment.
    pub env: String,
    /// Its record, if one was written.
    pub record: Option<EnvState>,
    /// Its router.
    pub router: RouterLive,
    /// Its services, by name, as they run now.
    pub services: BTreeMap<String, ServiceLive>,
    /// Network namespaces mounted for it now.
    pub netns: Vec<String>,
    /// Its volumes in the store.
    pub volumes: Vec<String>,
}

/// The router as it runs now.
#[derive(Debug, Clone, Serialize)]
pub struct RouterLive {
    /// Whether its process is alive.
    pub running: bool,
    /// What it recorded when it started.
    pub info: Option<RouterInfo>,
    /// What it answers on its control socket (when running).
    pub status: Option<RouterStatus>,
}

/// A service as it runs now.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceLive {
    /// "running", "exited" (its process is gone) or "not started".
    pub state: &'static str,
    /// Its init pid, when running.
    pub pid: Option<u32>,
    /// Whether its network namespace is mounted.
    pub netns_present: bool,
    /// Who its root is on the host: `uid 0-65535 → host 1000000-1065535`, or `host root`
    /// (with `(opted out)` when kiln.toml says `security.host_root`).
    pub user: String,
    /// Whether it opted out of the user namespace.
    pub host_root: bool,
    /// Its init's `/proc/<pid>/uid_map` as the kernel shows it now (when running).
    pub uid_map: Option<String>,
}

/// Reads the live state of `env`.
pub fn status(runtime_root: &Path, store: &Path, env: &str) -> Result<EnvStatus, DeployError> {
    layout::validate_env(env)?;
    let record = EnvState::load(runtime_root, env)?;
    let info = daemon::recorded(runtime_root, env)?;
    let running = info.as_ref().is_some_and(|i| i.process.alive());
    let router_status = if running {
        RouterClient::connect(runtime_root, env)
            .and_then(|mut c| c.status())
            .ok()
    } else {
        None
    };
    let netns: Vec<String> = kiln_netns::mounted_in(&kiln_netns::env_dir(runtime_root, env))?
        .into_iter()
        .collect();
    let services = record
        .iter()
        .flat_map(|r| r.services.iter())
        .map(|(name, s)| (name.clone(), live(name, s, &netns)))
        .collect();
    Ok(EnvStatus {
        env: env.to_string(),
        record,
        router: RouterLive {
            running,
            info,
            status: router_status,
        },
        services,
        netns,
        volumes: volumes::list(store, env)?,
    })
}

/// One service's live state.
fn live(name: &str, s: &ServiceState, netns: &[String]) -> ServiceLive {
    let (state, pid) = match &s.process {
        Some(p) if p.alive() => ("running", Some(p.pid)),
        Some(_) => ("exited", None),
        None => ("not started", None),
    };
    let user = match (&s.id_map, s.host_root) {
        (Some(r), _) => format!(
            "uid 0-{} → host {}-{}",
            r.size.saturating_sub(1),
            r.host,
            r.host.saturating_add(r.size.saturating_sub(1))
        ),
        (None, true) => "host root (opted out)".to_string(),
        (None, false) => "host root".to_string(),
    };
    let uid_map = pid.and_then(|p| {
        std::fs::read_to_string(format!("/proc/{p}/uid_map"))
            .ok()
            .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
    });
    ServiceLive {
        state,
        pid,
        netns_present: netns.iter().any(|n| n == name),
        user,
        host_root: s.host_root,
        uid_map,
    }
}
