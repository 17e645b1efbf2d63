//! `kiln router`: an environment's router process (internal: `kiln env router start` and
//! deploy run it detached).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use kiln_router::Endpoint;
use kiln_router::{daemon, RouterConfig};

use super::Global;

/// How a router is set up: shared by `kiln router` and `kiln env router ENV start`.
#[derive(Debug, Clone, clap::Args)]
pub struct RouterOpts {
    /// Host address to listen on (port 0: any free port).
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
    /// The router config for `env` under the runtime root of `global`.
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

/// `kiln router` arguments.
#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    /// Environment name.
    #[arg(long)]
    env: String,
    #[command(flatten)]
    opts: RouterOpts,
    /// Fork into the background; print the router's record as JSON once it listens.
    #[arg(long)]
    detach: bool,
}

/// Runs the router (in the foreground, or detached).
pub fn run(global: &Global, args: RouterArgs) -> ExitCode {
    super::finish("router", dispatch(global, args))
}

/// Builds the config and runs it.
fn dispatch(global: &Global, args: RouterArgs) -> Result<()> {
    let config = args.opts.config(global, &args.env);
    if args.detach {
        let info = daemon::run_detached(&config)?;
        println!("{}", serde_json::to_string(&info)?);
    } else {
        // The router reports where it listens on stderr itself.
        kiln_router::run(&config, |_| {})?;
    }
    Ok(())
}
