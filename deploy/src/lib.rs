//! kiln-deploy: environments of a project, their volumes and health, and the deploy of a
//! commit ([`deploy_commit`]: build, then swap the changed services in behind the router),
//! composed from the lower crates for the `kiln deploy` / `kiln env` commands.
//!
//! The pieces the deploy orchestration calls, in the order a deploy uses them:
//! - [`changes`]: which services to keep, replace, start and stop (digest + config key).
//! - [`router`]: the environment's ingress process; [`router::daemon::start`] it, then
//!   [`router::client::RouterClient`] `hold` → `switch` → `release` around the swap.
//! - [`volumes`]: persistent mounts under `$KILN_STORE/volumes/<env>/`, cloned from a parent
//!   environment with a [`volumes::Freezer`] keeping the parent still meanwhile.
//! - [`health`]: the app's port answers inside its namespace, or a command exits 0.
//! - [`env_state`]: the environment's record; [`env_status`] checks it against the kernel;
//!   [`teardown`] destroys an environment.
//!
//! A deploy, as the orchestration will compose it (containers come from kiln-runtime):
//!
//! ```no_run
//! # fn main() -> Result<(), kiln_deploy::DeployError> {
//! use std::path::Path;
//! use std::time::Duration;
//! use kiln_deploy::env_state::EnvState;
//! use kiln_deploy::router::{client::RouterClient, daemon, RouterConfig, DEFAULT_RETRY};
//! use kiln_deploy::volumes::{self, NoFreezer};
//! use kiln_deploy::{health, Endpoint};
//! let (root, store, env) = (Path::new("/run/kiln"), Path::new("/var/lib/kiln"), "pr-42");
//! // 1. The router: started held on a first deploy, else found running.
//! let config = RouterConfig {
//!     env: env.into(),
//!     runtime_root: root.into(),
//!     listen: ([127, 0, 0, 1], 0).into(),
//!     upstream: None,
//!     held: true,
//!     retry: DEFAULT_RETRY,
//! };
//! let (router, _started) = daemon::ensure(Path::new("/usr/local/bin/kiln"), &config)?;
//! let mut ctl = RouterClient::connect(root, env)?;
//! let drained = ctl.hold(Duration::from_secs(30))?;
//! // 3. Volumes: a new environment clones its parent's (a CgroupFreezer over the parent's
//! //    containers keeps them consistent).
//! let names = [volumes::mount_volume_name("web", "/app/data")];
//! volumes::clone_from(store, "main", env, &names, &mut NoFreezer)?;
//! // … stop old containers, kiln_netns::apply, start new ones in their netns …
//! // 6. Health inside the app's namespace.
//! let app = Endpoint::in_netns(([127, 0, 0, 1], 8000).into(), &kiln_netns::netns_path(root, env, "web"));
//! health::wait_port(&app, Duration::from_secs(30))?;
//! // 8. Switch and release (on failure: switch back to the old app, then release).
//! ctl.switch(&app)?;
//! ctl.release()?;
//! EnvState::update(root, env, |s| {
//!     s.router = Some(router.clone());
//!     Ok(())
//! })?;
//! # let _ = drained;
//! # Ok(())
//! # }
//! ```

pub mod build;
pub mod changes;
pub mod container;
pub mod env_state;
pub mod env_status;
pub mod error;
pub mod health;
pub mod layout;
pub mod lifecycle;
pub mod network;
pub mod orchestrate;
pub mod teardown;
pub mod volumes;

/// Atomic record files (kiln-util's, under the name deploy's modules use).
pub(crate) use kiln_util::fs as atomic;
/// Processes named by pid and start time (kiln-util's), as deploy records them.
pub use kiln_util::process;

pub use error::DeployError;
/// The environment's router (kiln-router), driven by the deploy.
pub use kiln_router as router;
pub use kiln_router::Endpoint;
pub use orchestrate::{deploy_commit, CommitRequest, DeployReport};
