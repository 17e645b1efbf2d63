//! Deploy: environments of a project, their router, volumes and health, composed from the
//! crates by the `kiln deploy` / `kiln env` commands.
//!
//! The pieces the deploy orchestration calls, in the order a deploy uses them:
//! - [`router`]: the environment's ingress process; [`router::daemon::start`] it, then
//!   [`router::client::RouterClient`] `hold` → `switch` → `release` around the swap.
//! - [`volumes`]: persistent mounts under `$KILN_STORE/volumes/<env>/`, cloned from a parent
//!   environment with a [`volumes::Freezer`] keeping the parent still meanwhile.
//! - [`health`]: the app's port answers inside its namespace, or a command exits 0.
//! - [`env_state`]: the environment's record, liveness checks, listing and teardown.

pub mod atomic;
pub mod endpoint;
pub mod env_state;
pub mod env_status;
pub mod error;
pub mod health;
pub mod layout;
pub mod loadgen;
pub mod process;
pub mod router;
pub mod teardown;
pub mod volumes;

pub use endpoint::Endpoint;
pub use error::DeployError;
