//! `kiln ingress`: the host's one HTTP front door for every environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use kiln_router::client::IngressClient;
use kiln_router::{daemon, CertFiles, IngressConfig, Limits};

use super::Global;

/// `kiln ingress` subcommands.
#[derive(Debug, Subcommand)]
pub enum IngressCommand {
    /// Start the ingress (detached unless --foreground); prints its record as JSON.
    Start(Box<StartArgs>),
    /// Hosts → environments, listen addresses, open connections.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the ingress (in-flight requests finish first).
    Stop,
    /// Replace the ingress process without refusing or dropping a connection: the new one
    /// inherits the listening sockets, the old one finishes its in-flight requests.
    Restart,
}

/// `kiln ingress start` arguments.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Plain HTTP address to listen on, routed by Host (repeatable; default a free loopback
    /// port, use 0.0.0.0:80 to serve the world).
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// TLS address to listen on (repeatable; needs --tls-cert/--tls-key or --tls-host).
    #[arg(long)]
    tls_listen: Vec<SocketAddr>,
    /// Domain of environment hosts: `{env}.{project}.{domain}`.
    #[arg(long, default_value = kiln_router::DEFAULT_DOMAIN)]
    domain: String,
    /// Default (wildcard) certificate chain, PEM.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Key of the default certificate, PEM.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A certificate for one host: HOST=CERT.pem,KEY.pem (repeatable).
    #[arg(long)]
    tls_host: Vec<String>,
    /// Redirect plain HTTP requests to https.
    #[arg(long)]
    redirect_https: bool,
    /// End when the last environment is unregistered (how a deploy starts it).
    #[arg(long)]
    auto: bool,
    /// Run in the foreground.
    #[arg(long)]
    foreground: bool,
    /// Most client connections at once (past it: 503).
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: u64,
    /// Most client connections at once from one address.
    #[arg(long, default_value_t = Limits::default().max_per_client)]
    max_per_client: u64,
    /// Deadline for a request head, and keep-alive idle timeout, in ms.
    #[arg(long, default_value_t = ms(Limits::default().head_timeout))]
    head_timeout_ms: u64,
    /// Deadline for a request body, in ms.
    #[arg(long, default_value_t = ms(Limits::default().body_timeout))]
    body_timeout_ms: u64,
    /// Internal: take over from a restarting ingress (its handoff state file).
    #[arg(long, hide = true)]
    takeover: Option<PathBuf>,
    /// Deadline for the upstream's response head, in ms.
    #[arg(long, default_value_t = ms(Limits::default().upstream_timeout))]
    upstream_timeout_ms: u64,
}

/// A duration in whole milliseconds.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl StartArgs {
    /// The ingress config these arguments describe.
    fn config(self, global: &Global) -> Result<IngressConfig> {
        let mut certs = Vec::new();
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            certs.push(CertFiles {
                host: None,
                cert,
                key,
            });
        }
        for spec in &self.tls_host {
            let Some((host, files)) = spec.split_once('=') else {
                bail!("--tls-host {spec:?}: expected HOST=CERT.pem,KEY.pem");
            };
            let Some((cert, key)) = files.split_once(',') else {
                bail!("--tls-host {spec:?}: expected HOST=CERT.pem,KEY.pem");
            };
            certs.push(CertFiles {
                host: Some(host.to_string()),
                cert: cert.into(),
                key: key.into(),
            });
        }
        let mut config = IngressConfig::loopback(&global.root);
        if !self.listen.is_empty() {
            config.listen = self.listen;
        }
        config.tls_listen = self.tls_listen;
        config.certs = certs;
        config.domain = self.domain;
        config.redirect_https = self.redirect_https;
        config.auto = self.auto;
        config.takeover = self.takeover;
        config.kiln_bin =
            Some(kiln_runtime::sealed_exe::host_exe().context("locating the kiln binary")?);
        config.limits = Limits {
            max_connections: self.max_connections,
            max_per_client: self.max_per_client,
            head_timeout: Duration::from_millis(self.head_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            upstream_timeout: Duration::from_millis(self.upstream_timeout_ms),
        };
        Ok(config)
    }
}

/// Runs a `kiln ingress` subcommand.
pub fn run(global: &Global, cmd: IngressCommand) -> ExitCode {
    super::finish("ingress", dispatch(global, cmd))
}

/// Calls the library and prints.
fn dispatch(global: &Global, cmd: IngressCommand) -> Result<()> {
    match cmd {
        IngressCommand::Start(args) => {
            let foreground = args.foreground;
            let config = (*args).config(global)?;
            if foreground {
                kiln_router::run(&config, |info| {
                    println!("{}", serde_json::to_string(info).unwrap_or_default());
                })?;
            } else {
                let info = daemon::run_detached(&config)?;
                println!("{}", serde_json::to_string(&info)?);
            }
        }
        IngressCommand::Status { json } => {
            let st = IngressClient::connect(&global.root)
                .and_then(|mut c| c.status())
                .with_context(|| format!("no ingress answers for {}", global.root.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!(
                    "ingress pid {}: listening on {:?} (TLS {:?}), domain {}, {} connections",
                    st.pid, st.listen, st.tls_listen, st.domain, st.connections
                );
                for (host, envs) in &st.hosts {
                    println!("  {host:<40} → {}", envs.join(", "));
                }
                for (env, port) in &st.envs {
                    println!("  env {env:<20} own port {port}");
                }
            }
        }
        IngressCommand::Restart => {
            let reply = IngressClient::connect(&global.root)
                .and_then(|mut c| c.send(&kiln_router::protocol::Command::Restart))
                .with_context(|| format!("restarting the ingress of {}", global.root.display()))?;
            println!("restarted: new pid {}", reply.new_pid.unwrap_or(0));
        }
        IngressCommand::Stop => {
            let stopped = daemon::stop_ingress(&global.root, Duration::from_secs(30))?;
            println!("{}", if stopped { "stopped" } else { "not running" });
        }
    }
    Ok(())
}
