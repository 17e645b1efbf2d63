//! Stopping and starting a whole environment (`kiln env stop|start`), and the containers hook
//! of `kiln env destroy`.

use std::path::Path;
use std::time::Duration;

use kiln_runtime::Runtime;

use super::container;
use super::env_state::{EnvLock, EnvState};
use super::error::DeployError;
use super::health;
use super::orchestrate::STOP_GRACE;
use super::router::client::RouterClient;
use super::router::{daemon, RouterConfig, DEFAULT_RETRY};

/// Stops and deletes every container of the record (for `destroy`).
pub fn destroy_containers(runtime_root: &Path, record: &EnvState) -> Result<(), DeployError> {
    let runtime = Runtime::new(runtime_root);
    let dir = container::containers_dir(runtime_root, &record.env);
    for id in container::ids(runtime_root, &record.env) {
        container::destroy(&runtime, &dir.join(&id), &id, STOP_GRACE)?;
    }
    Ok(())
}

/// Stops every container and the router of `env`; the record keeps what to start again.
pub fn stop(runtime_root: &Path, env: &str) -> Result<Vec<String>, DeployError> {
    let _lock = EnvLock::take(runtime_root, env)?;
    let mut state = EnvState::load(runtime_root, env)?.ok_or_else(|| no_env(runtime_root, env))?;
    let runtime = Runtime::new(runtime_root);
    let mut stopped = Vec::new();
    for (name, svc) in state.services.iter_mut() {
        if let Some(id) = &svc.container_id {
            container::stop(
                &runtime,
                &container::container_dir(runtime_root, env, id),
                id,
                STOP_GRACE,
            )?;
            if svc.process.take().is_some() {
                stopped.push(name.clone());
            }
        }
    }
    daemon::stop(runtime_root, env, Duration::from_secs(5))?;
    state.save(runtime_root)?;
    Ok(stopped)
}

/// Starts every container of `env` again (services first, apps once those answer) and its
/// router, sending requests to the app.
pub fn start(runtime_root: &Path, kiln_bin: &Path, env: &str) -> Result<Vec<String>, DeployError> {
    let _lock = EnvLock::take(runtime_root, env)?;
    let mut state = EnvState::load(runtime_root, env)?.ok_or_else(|| no_env(runtime_root, env))?;
    let runtime = Runtime::new(runtime_root);
    container::settle_orphans(&runtime, runtime_root, &mut state)?;
    // The namespaces and links again, should they be gone (`kiln net teardown`, a reboot).
    let plan = kiln_netns::load_record(runtime_root, env)?
        .map(|r| r.plan)
        .or_else(|| state.network.clone());
    if let Some(plan) = plan {
        kiln_netns::apply(env, &plan, runtime_root)?;
    }
    let mut order: Vec<String> = state.services.keys().cloned().collect();
    order.sort_by_key(|n| (state.services[n].port.is_some(), n.clone()));
    let mut started = Vec::new();
    for name in &order {
        let svc = state
            .services
            .get_mut(name)
            .ok_or_else(|| no_env(runtime_root, env))?;
        if svc.process.is_some_and(|p| p.alive()) {
            continue;
        }
        let Some(id) = svc.container_id.clone() else {
            continue;
        };
        let dir = container::container_dir(runtime_root, env, &id);
        // A container that died on its own is still known to the runtime: clear it first.
        container::stop(&runtime, &dir, &id, Duration::from_secs(1))?;
        svc.process = Some(container::relaunch(&runtime, &dir)?);
        started.push(name.clone());
        let netns = kiln_netns::netns_path(runtime_root, env, name);
        health::wait(kiln_bin, runtime_root, &id, &netns, &svc.health_check())?;
    }
    let listen = state
        .router
        .as_ref()
        .map_or(([127, 0, 0, 1], 0).into(), |r| r.listen);
    let upstream = state.upstream();
    let config = RouterConfig {
        env: env.to_string(),
        runtime_root: runtime_root.to_path_buf(),
        listen,
        upstream: upstream.clone(),
        held: false,
        retry: DEFAULT_RETRY,
    };
    let (info, fresh) = daemon::ensure(kiln_bin, &config)?;
    if !fresh {
        let mut ctl = RouterClient::connect(runtime_root, env)?;
        if let Some(up) = &upstream {
            ctl.switch(up)?;
        }
        ctl.release()?;
    }
    state.router = Some(info);
    state.save(runtime_root)?;
    Ok(started)
}

fn no_env(runtime_root: &Path, env: &str) -> DeployError {
    DeployError::State {
        path: super::layout::state_file(runtime_root, env),
        message: format!("environment {env:?} was never deployed"),
    }
}
