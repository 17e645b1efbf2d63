//! Fixtures for the deploy tests: an environment with network namespaces made by `kiln net`,
//! the tiny HTTP app of [`crate::loadgen`] listening inside them, and a router.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::loadgen::{load, Client, NameApp};
use kiln_router::client::RouterClient;
use kiln_router::protocol::RouterStatus;
use kiln_router::Endpoint;

pub use crate::common::{unique, Sandbox};

/// Port the test apps listen on inside their namespaces.
pub const APP_PORT: u16 = 8000;

/// An environment in a sandbox; `kiln env destroy` runs on drop (router, netns, volumes).
pub struct TestEnv {
    /// The sandbox (store and runtime root).
    pub sandbox: Sandbox,
    /// The environment name.
    pub name: String,
}

impl TestEnv {
    /// A fresh environment with one network namespace per service in `services`.
    pub fn with_netns(services: &[&str]) -> Self {
        let env = Self {
            sandbox: Sandbox::new(),
            name: unique("dep"),
        };
        if !services.is_empty() {
            let topo = env.sandbox.dir.path().join("topology.json");
            let json = serde_json::json!({ "services": services, "edges": [] });
            std::fs::write(&topo, json.to_string()).expect("write topology");
            env.sandbox.ok(&[
                "net",
                "apply",
                "--env",
                &env.name,
                topo.to_str().expect("utf8"),
            ]);
        }
        env
    }

    /// The runtime root.
    pub fn root(&self) -> PathBuf {
        self.sandbox.root()
    }

    /// The namespace path of `service`.
    pub fn netns(&self, service: &str) -> PathBuf {
        kiln_netns::netns_path(&self.root(), &self.name, service)
    }

    /// The app endpoint of `service` (its port, from inside its namespace).
    pub fn app(&self, service: &str) -> Endpoint {
        Endpoint::in_netns(([127, 0, 0, 1], APP_PORT).into(), &self.netns(service))
    }

    /// Runs `kiln env router <env> ARGS`, returning stdout (panics on failure).
    pub fn router(&self, args: &[&str]) -> String {
        let mut all = vec!["env", "router", &self.name];
        all.extend_from_slice(args);
        self.sandbox.ok(&all)
    }

    /// Starts the router (extra start flags in `args`) and returns its listen address.
    pub fn start_router(&self, args: &[&str]) -> SocketAddr {
        let mut all = vec!["start"];
        all.extend_from_slice(args);
        let out = self.router(&all);
        let addr = out
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no address in {out:?}"));
        addr
    }

    /// A control connection to the router.
    pub fn control(&self) -> RouterClient {
        RouterClient::connect(&self.root(), &self.name).expect("router control socket")
    }

    /// The router's status once no request is in flight (a client has its answer a moment
    /// before the router has counted it).
    pub fn settled(&self) -> RouterStatus {
        let mut ctl = self.control();
        for _ in 0..1000 {
            let st = ctl.status().expect("status");
            if st.gate.in_flight == 0 {
                return st;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("requests still in flight after 2 s");
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = self.sandbox.run(&["env", "destroy", &self.name]);
    }
}

/// Starts the name app on the app port inside the namespace at `netns`.
pub fn app_in(netns: &Path, name: &str) -> NameApp {
    NameApp::start_in(netns, ([127, 0, 0, 1], APP_PORT).into(), name).expect("app in netns")
}

/// The router at `addr`, from the host.
pub fn via(addr: SocketAddr) -> Endpoint {
    Endpoint::host(addr)
}
