//! An environment's record: what was deployed and where it runs, at
//! `$KILN_RUNTIME/envs/<env>/state.json`, written atomically under the environment's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::atomic;
use super::error::DeployError;
use super::layout;
use super::process::ProcessRef;
use super::router::RouterInfo;

pub use kiln_overlay::idmap::IdRange;

/// The first host id of the first environment's range (above the usual /etc/subuid ranges).
pub const ID_BASE: u32 = 1_000_000;
/// Ids per environment: container ids 0..65535.
pub const ID_RANGE_SIZE: u32 = 65_536;

/// What kiln records about an environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvState {
    /// The environment.
    pub env: String,
    /// The project deployed.
    #[serde(default)]
    pub project: Option<String>,
    /// The commit deployed.
    #[serde(default)]
    pub commit: Option<String>,
    /// The branch it came from.
    #[serde(default)]
    pub branch: Option<String>,
    /// The environment its volumes were cloned from.
    #[serde(default)]
    pub parent: Option<String>,
    /// Services, by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    /// The router, as started.
    #[serde(default)]
    pub router: Option<RouterInfo>,
    /// The app the router sends requests to.
    #[serde(default)]
    pub routed: Option<String>,
    /// The network plan applied (to set the namespaces up again should they be gone).
    #[serde(default)]
    pub network: Option<kiln_netns::Plan>,
    /// The host ids its services' user namespaces map container ids 0.. to (claimed on the
    /// first deploy, kept for every later one and `env start`).
    #[serde(default)]
    pub id_range: Option<IdRange>,
    /// When the record was last written (seconds since the epoch).
    #[serde(default)]
    pub updated_unix: u64,
}

/// One service of an environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceState {
    /// The image reference (`<project>/<service>:<commit>`).
    pub image: String,
    /// The image's manifest digest.
    pub digest: String,
    /// A key of the service's run-time config (start command, env, relationships, mounts,
    /// hooks): a change needs a redeploy even when the image is the same.
    #[serde(default)]
    pub config_key: String,
    /// The running container's id.
    #[serde(default)]
    pub container_id: Option<String>,
    /// The container's init process.
    #[serde(default)]
    pub process: Option<ProcessRef>,
    /// The service's network namespace.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The port the app listens on (the router's upstream for the app).
    #[serde(default)]
    pub port: Option<u16>,
    /// Its relationships: name → where they lead.
    #[serde(default)]
    pub links: BTreeMap<String, Vec<kiln_netns::Relationship>>,
    /// Its mounts.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// How to tell it is ready (deploy, rollback and env start wait for it).
    #[serde(default)]
    pub health: HealthCheck,
    /// Its container's user namespace mapping; None: it runs as host root.
    #[serde(default)]
    pub id_map: Option<IdRange>,
    /// Whether it opted out of the user namespace (`security.host_root` in kiln.toml).
    #[serde(default)]
    pub host_root: bool,
}

/// What makes a service healthy: its command exits 0, or else every port answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The declared health command, run in the container.
    #[serde(default)]
    pub command: Option<String>,
    /// The ports it answers on inside its namespace.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Seconds it gets.
    #[serde(default = "default_health_timeout")]
    pub timeout_secs: u64,
}

fn default_health_timeout() -> u64 {
    kiln_builder::config::DEFAULT_HEALTH_TIMEOUT_SECS
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            command: None,
            ports: Vec::new(),
            timeout_secs: default_health_timeout(),
        }
    }
}

impl ServiceState {
    /// Its health check (a record without one: its app port, if any).
    pub fn health_check(&self) -> HealthCheck {
        let mut check = self.health.clone();
        if check.command.is_none() && check.ports.is_empty() {
            check.ports.extend(self.port);
        }
        check
    }
}

/// A volume mounted into a service's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// Path in the container.
    pub mount: String,
    /// Volume name.
    pub volume: String,
    /// Host directory.
    pub path: PathBuf,
}

/// The environment's lock, held while its record is read, changed and written.
#[derive(Debug)]
pub struct EnvLock(#[allow(dead_code)] Flock<File>);

impl EnvLock {
    /// Takes the lock of `env` (waits for other holders).
    pub fn take(runtime_root: &Path, env: &str) -> Result<Self, DeployError> {
        layout::validate_env(env)?;
        let path = layout::env_lock(runtime_root, env);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DeployError::io("creating", dir, e))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| DeployError::io("opening lock", &path, e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(Self)
            .map_err(|(_, e)| DeployError::sys("flock", path.display(), e))
    }
}

impl EnvState {
    /// The router's upstream: the routed app's port inside its namespace (a record without
    /// one: the first app with a port).
    pub fn upstream(&self) -> Option<super::Endpoint> {
        let svc = match &self.routed {
            Some(app) => self.services.get(app)?,
            None => self.services.values().find(|s| s.port.is_some())?,
        };
        svc.port
            .zip(svc.netns.as_ref())
            .map(|(p, n)| super::Endpoint::in_netns(([127, 0, 0, 1], p).into(), n))
    }

    /// An empty record for `env`.
    pub fn new(env: &str) -> Self {
        Self {
            env: env.to_string(),
            ..Self::default()
        }
    }

    /// The record of `env`, if one was written.
    pub fn load(runtime_root: &Path, env: &str) -> Result<Option<Self>, DeployError> {
        layout::validate_env(env)?;
        let path = layout::state_file(runtime_root, env);
        let state: Option<Self> = atomic::read_json(&path)?;
        match state {
            Some(s) if s.env != env => Err(DeployError::State {
                path,
                message: format!("records environment {:?}, not {env:?}", s.env),
            }),
            other => Ok(other),
        }
    }

    /// Writes the record atomically (stamping `updated_unix`).
    pub fn save(&mut self, runtime_root: &Path) -> Result<(), DeployError> {
        layout::validate_env(&self.env)?;
        self.updated_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(atomic::write_json(
            &layout::state_file(runtime_root, &self.env),
            self,
        )?)
    }

    /// Loads (or starts) the record of `env`, lets `change` edit it, and saves it, all under
    /// the environment's lock; returns what `change` returned.
    pub fn update<T>(
        runtime_root: &Path,
        env: &str,
        change: impl FnOnce(&mut Self) -> Result<T, DeployError>,
    ) -> Result<T, DeployError> {
        let _lock = EnvLock::take(runtime_root, env)?;
        let mut state = Self::load(runtime_root, env)?.unwrap_or_else(|| Self::new(env));
        let out = change(&mut state)?;
        state.save(runtime_root)?;
        Ok(out)
    }
}

/// `$KILN_RUNTIME/id-ranges`: one file per claimed range, named by its first host id, holding
/// the environment's name.
fn id_ranges_dir(runtime_root: &Path) -> PathBuf {
    runtime_root.join("id-ranges")
}

/// The id range of the environment `record` describes: the recorded one, else the one a
/// previous record of the same name claimed, else the lowest free one (claimed by creating its
/// file, so two environments never share one). Records it in `record`.
pub fn id_range(runtime_root: &Path, record: &mut EnvState) -> Result<IdRange, DeployError> {
    if let Some(r) = record.id_range {
        return Ok(r);
    }
    let dir = id_ranges_dir(runtime_root);
    std::fs::create_dir_all(&dir).map_err(|e| DeployError::io("creating", &dir, e))?;
    let range = |host| IdRange {
        host,
        size: ID_RANGE_SIZE,
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| DeployError::io("listing", &dir, e))?;
    for entry in entries.flatten() {
        let owner = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let host = entry.file_name().to_str().and_then(|n| n.parse().ok());
        if let (Some(host), true) = (host, owner.trim() == record.env) {
            record.id_range = Some(range(host));
            return Ok(range(host));
        }
    }
    let mut slot: u32 = 0;
    loop {
        let host = slot
            .checked_mul(ID_RANGE_SIZE)
            .and_then(|o| o.checked_add(ID_BASE))
            .filter(|h| h.checked_add(ID_RANGE_SIZE).is_some())
            .ok_or_else(|| DeployError::State {
                path: dir.clone(),
                message: "every host id range is claimed".into(),
            })?;
        let path = dir.join(host.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(record.env.as_bytes())
                    .map_err(|e| DeployError::io("writing", &path, e))?;
                record.id_range = Some(range(host));
                return Ok(range(host));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => slot += 1,
            Err(e) => return Err(DeployError::io("claiming", &path, e)),
        }
    }
}

/// Gives back the id range `env` claimed (after the environment is destroyed).
pub fn release_id_range(runtime_root: &Path, env: &str) {
    let dir = id_ranges_dir(runtime_root);
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if std::fs::read_to_string(entry.path()).is_ok_and(|o| o.trim() == env) {
            // Best effort: a range left claimed is only unused ids.
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Every environment known under the runtime root or with volumes in the store, sorted.
pub fn list(runtime_root: &Path, store: &Path) -> Result<Vec<String>, DeployError> {
    let mut names = BTreeSet::new();
    for dir in [runtime_root.join("envs"), store.join("volumes")] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(DeployError::io("listing", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| DeployError::io("listing", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && layout::validate_env(&name).is_ok() {
                names.insert(name);
            }
        }
    }
    Ok(names.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_update_under_the_lock() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        assert_eq!(EnvState::load(root, "main").expect("load"), None);
        EnvState::update(root, "main", |s| {
            s.commit = Some("abc".into());
            s.services.insert(
                "web".into(),
                ServiceState {
                    image: "shop/web:abc".into(),
                    digest: "sha256:00".into(),
                    port: Some(8000),
                    ..ServiceState::default()
                },
            );
            Ok(())
        })
        .expect("update");
        let s = EnvState::load(root, "main")
            .expect("load")
            .expect("present");
        assert_eq!(s.commit.as_deref(), Some("abc"));
        assert_eq!(s.services["web"].port, Some(8000));
        assert!(s.updated_unix > 0);
        assert_eq!(list(root, &root.join("nostore")).expect("list"), ["main"]);
        std::fs::write(layout::state_file(root, "main"), "{\"env\":\"other\"}").expect("write");
        let err = EnvState::load(root, "main")
            .expect_err("mismatch")
            .to_string();
        assert!(err.contains("state.json") && err.contains("other"), "{err}");
        assert!(EnvState::load(root, "../x").is_err());
    }

    #[test]
    fn id_ranges_are_distinct_stable_and_released() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        let mut a = EnvState::new("a");
        let mut b = EnvState::new("b");
        let ra = id_range(root, &mut a).expect("a");
        let rb = id_range(root, &mut b).expect("b");
        assert_eq!(ra.host, ID_BASE);
        assert_eq!(rb.host, ID_BASE + ID_RANGE_SIZE);
        assert_eq!(a.id_range, Some(ra));
        // A fresh record of the same environment finds its claim again.
        assert_eq!(id_range(root, &mut EnvState::new("a")).expect("again"), ra);
        release_id_range(root, "a");
        let rc = id_range(root, &mut EnvState::new("c")).expect("c");
        assert_eq!(rc, ra, "a released range is reused");
    }
}
