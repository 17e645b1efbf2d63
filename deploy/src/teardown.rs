//! Destroying an environment: its containers (through the caller's hook), router, network
//! namespaces, volumes and record.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::env_state::{EnvLock, EnvState};
use super::error::DeployError;
use super::layout;
use super::router::daemon;
use super::volumes;

/// How long the router gets to stop before it is killed.
const ROUTER_GRACE: Duration = Duration::from_secs(5);

/// What a destroy removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Destroyed {
    /// Whether a running router was stopped.
    pub router_stopped: bool,
    /// Network namespaces removed.
    pub netns_removed: Vec<String>,
    /// Whether volumes were removed.
    pub volumes_removed: bool,
    /// Whether a record was removed.
    pub record_removed: bool,
}

/// Removes everything of `env`; `stop_containers` is called first with its record (when
/// there is one) to stop and delete its containers. Idempotent: a second call removes nothing.
pub fn destroy(
    runtime_root: &Path,
    store: &Path,
    env: &str,
    stop_containers: &mut dyn FnMut(&EnvState) -> Result<(), DeployError>,
) -> Result<Destroyed, DeployError> {
    layout::validate_env(env)?;
    let lock = EnvLock::take(runtime_root, env)?;
    let record = EnvState::load(runtime_root, env)?;
    if let Some(r) = &record {
        stop_containers(r)?;
    }
    let destroyed = Destroyed {
        router_stopped: daemon::stop(runtime_root, env, ROUTER_GRACE)?,
        netns_removed: kiln_netns::teardown(env, runtime_root)?,
        volumes_removed: volumes::remove_all(store, env)?,
        record_removed: record.is_some(),
    };
    let dir = layout::env_dir(runtime_root, env);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(DeployError::io("removing", &dir, e))
        }
        _ => {}
    }
    super::env_state::release_id_range(runtime_root, env);
    drop(lock);
    // Best effort: a leftover empty lock file is harmless.
    let _ = std::fs::remove_file(layout::env_lock(runtime_root, env));
    Ok(destroyed)
}
