//! How an environment is registered with the host ingress: shared by `kiln env router ENV
//! start` and (through the library) deploy.

use std::net::SocketAddr;
use std::time::Duration;

use kiln_router::{Endpoint, RouterConfig};

use super::Global;

/// How an environment's router is set up (`kiln env router ENV start`).
#[derive(Debug, Clone, clap::Args)]
pub struct RouterOpts {
    /// The environment's own loopback port on the ingress (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Upstream: IP:PORT, or IP:PORT@NETNS_PATH to connect from inside a network namespace.
    #[arg(long)]
    upstream: Option<Endpoint>,
    /// Start holding requests until `release`.
    #[arg(long)]
    hold: bool,
    /// How long a refusing upstream is retried before answering 502, in milliseconds.
    #[arg(long, default_value_t = kiln_router::DEFAULT_RETRY.as_millis() as u64)]
    retry_ms: u64,
}

impl RouterOpts {
    /// The registration for `env` under the runtime root of `global`.
    pub fn config(self, global: &Global, env: &str) -> RouterConfig {
        RouterConfig {
            env: env.to_string(),
            runtime_root: global.root.clone(),
            listen: self.listen,
            upstream: self.upstream,
            held: self.hold,
            retry: Duration::from_millis(self.retry_ms),
        }
    }
}
