//! Fixtures for kiln-netns tests: topologies, unique names, an environment that tears down on drop.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use kiln_netns::{Edge, Plan, Pool, Topology};

/// A number unique to this test process and call.
pub fn unique() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A short prefix unique to this process and call, for service names (interface names are
/// derived from them, so they must not collide with other tests' names).
pub fn prefix() -> String {
    format!("t{}x{}", std::process::id() % 100_000, unique())
}

/// A pool of its own for each test: 10.(200+k).(n).0/24.
pub fn pool() -> Pool {
    let n = unique();
    format!("10.{}.{}.0/24", 200 + (std::process::id() % 50), n % 256)
        .parse()
        .expect("pool")
}

/// A topology from (service) names and (from, relationship, to) triples.
pub fn topology(services: &[String], edges: &[(&str, &str, &str)], prefix: &str) -> Topology {
    Topology {
        services: services.to_vec(),
        edges: edges
            .iter()
            .map(|(from, name, to)| Edge {
                from: format!("{prefix}{from}"),
                name: name.to_string(),
                to: format!("{prefix}{to}"),
                endpoint: None,
                port: 7000,
                scheme: "tcp".into(),
            })
            .collect(),
    }
}

/// Service names with a prefix.
pub fn services(prefix: &str, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("{prefix}{n}")).collect()
}

/// An environment under a temporary runtime root, torn down on drop.
pub struct Env {
    /// The environment name.
    pub name: String,
    /// The temporary runtime root.
    pub root: tempfile::TempDir,
}

impl Env {
    /// A fresh environment.
    pub fn new() -> Self {
        Self {
            name: format!("env{}", prefix()),
            root: tempfile::Builder::new()
                .prefix("kiln-netns-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// The runtime root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A service's namespace path.
    pub fn path(&self, service: &str) -> PathBuf {
        kiln_netns::netns_path(self.root(), &self.name, service)
    }

    /// The env dir.
    pub fn dir(&self) -> PathBuf {
        kiln_netns::env_dir(self.root(), &self.name)
    }

    /// Plans (against the recorded plan) and applies.
    pub fn apply(
        &self,
        t: &Topology,
        pool: Pool,
    ) -> Result<(Plan, kiln_netns::Applied), kiln_netns::NetError> {
        let plan = kiln_netns::plan_for(&self.name, t, pool, self.root())?;
        let applied = kiln_netns::apply(&self.name, &plan, self.root())?;
        Ok((plan, applied))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Err(e) = kiln_netns::teardown(&self.name, self.root()) {
            eprintln!("teardown of {} failed: {e}", self.name);
        }
    }
}

/// Mount points at or under `dir`, as /proc/self/mountinfo lists them.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    kiln_netns::mounts()
        .expect("mountinfo")
        .into_iter()
        .map(|m| m.point)
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// The host network namespace's interfaces (from a netlink dump).
fn host_links() -> Vec<kiln_netns::LiveLink> {
    kiln_netns::inspect_netns(Path::new("/proc/self/ns/net")).expect("dump host namespace")
}

/// Interface names in the host's network namespace.
pub fn host_ifnames() -> Vec<String> {
    host_links().into_iter().map(|l| l.ifname).collect()
}

/// The host namespace's IPv4 addresses.
pub fn host_addresses() -> Vec<Ipv4Addr> {
    host_links()
        .into_iter()
        .flat_map(|l| l.addresses)
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}
