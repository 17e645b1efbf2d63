//! Where an environment's files live, and the names that may become path components.
//!
//! ```text
//! $KILN_RUNTIME/envs/<env>/state.json     the environment's record (see env_state)
//! $KILN_RUNTIME/envs/<env>/router.json    the env's registration with the host ingress (kiln-router)
//! $KILN_RUNTIME/envs/<env>/access.log     the ingress's access log for the env (kiln-router)
//! $KILN_RUNTIME/envs/<env>/containers/    one directory per container (see container)
//! $KILN_RUNTIME/envs/<env>/logs/          one log per service
//! $KILN_RUNTIME/envs/<env>.lock           flock held while the record is changed
//! $KILN_STORE/volumes/<env>/<volume>/      persistent mounts
//! $KILN_STORE/tmp/                         scratch for volume clones (rename is the commit)
//! ```

use std::path::{Path, PathBuf};

pub use kiln_router::layout::{
    access_log, env_dir, ingress_socket, router_record, routes_file, validate_env, validate_volume,
};

/// The lock file guarding an environment's record.
pub fn env_lock(runtime_root: &Path, env: &str) -> PathBuf {
    runtime_root.join("envs").join(format!("{env}.lock"))
}

/// The environment's state record.
pub fn state_file(runtime_root: &Path, env: &str) -> PathBuf {
    env_dir(runtime_root, env).join("state.json")
}

/// The directory holding an environment's volumes.
pub fn volumes_dir(store: &Path, env: &str) -> PathBuf {
    store.join("volumes").join(env)
}

/// One volume's directory.
pub fn volume_dir(store: &Path, env: &str, volume: &str) -> PathBuf {
    volumes_dir(store, env).join(volume)
}

/// The store's scratch directory (same filesystem as the volumes).
pub fn store_tmp(store: &Path) -> PathBuf {
    store.join("tmp")
}
