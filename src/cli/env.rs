//! `kiln env`: list, inspect and destroy environments; drive an environment's router.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use kiln_deploy::env_state::{self, EnvState};
use kiln_deploy::env_status::{self, EnvStatus};
use kiln_deploy::{lifecycle, teardown, Endpoint};
use kiln_router::client::RouterClient;
use kiln_router::daemon;

use super::router::RouterOpts;
use super::Global;

/// `kiln env` subcommands.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List environments.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an environment as it runs now (router, services, namespaces, volumes).
    Status {
        /// Environment name.
        env: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop an environment's containers and router (its record, volumes and network stay).
    Stop {
        /// Environment name.
        env: String,
    },
    /// Start a stopped environment's containers and router again.
    Start {
        /// Environment name.
        env: String,
    },
    /// Remove an environment: containers, router, network namespaces, volumes, record.
    Destroy {
        /// Environment name.
        env: String,
    },
    /// Drive an environment's router.
    Router {
        /// Environment name.
        env: String,
        #[command(subcommand)]
        action: RouterAction,
    },
}

/// What to tell a router.
#[derive(Debug, Subcommand)]
pub enum RouterAction {
    /// Start the router (detached); prints its address.
    Start(RouterOpts),
    /// Hold new requests; returns once in-flight requests finished (or the drain timeout).
    Hold {
        /// Longest wait for in-flight requests, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        drain_ms: u64,
    },
    /// Send new requests to another upstream.
    Switch {
        /// IP:PORT or IP:PORT@NETNS_PATH.
        upstream: Endpoint,
    },
    /// Let held requests through.
    Release,
    /// The router's counters as JSON.
    Status,
    /// Stop the router.
    Stop,
}

/// Runs a `kiln env` subcommand.
pub fn run(global: &Global, cmd: EnvCommand) -> ExitCode {
    super::finish("env", dispatch(global, cmd))
}

/// Calls the library and prints.
fn dispatch(global: &Global, cmd: EnvCommand) -> Result<()> {
    let (root, store) = (&global.root, &global.store);
    match cmd {
        EnvCommand::Ls { json } => {
            let mut rows = Vec::new();
            for env in env_state::list(root, store)? {
                rows.push(env_status::status(root, store, &env)?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for s in &rows {
                    println!("{}", summary(s));
                }
            }
        }
        EnvCommand::Status { env, json } => {
            let s = env_status::status(root, store, &env)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
        }
        EnvCommand::Destroy { env } => {
            let d = teardown::destroy(root, store, &env, &mut |r| {
                lifecycle::destroy_containers(root, r)
            })
            .with_context(|| format!("destroying environment {env}"))?;
            println!(
                "env {env}: router {}, {} namespaces removed, volumes {}",
                if d.router_stopped {
                    "stopped"
                } else {
                    "not running"
                },
                d.netns_removed.len(),
                if d.volumes_removed { "removed" } else { "none" }
            );
        }
        EnvCommand::Stop { env } => {
            let stopped = lifecycle::stop(root, &env)
                .with_context(|| format!("stopping environment {env}"))?;
            println!("env {env}: stopped {}", stopped.join(", "));
        }
        EnvCommand::Start { env } => {
            let exe = kiln_runtime::sealed_exe::host_exe().context("locating the kiln binary")?;
            let started = lifecycle::start(root, &exe, &env)
                .with_context(|| format!("starting environment {env}"))?;
            println!("env {env}: started {}", started.join(", "));
        }
        EnvCommand::Router { env, action } => router_action(global, &env, action)?,
    }
    Ok(())
}

/// `kiln env router ENV ACTION`.
fn router_action(global: &Global, env: &str, action: RouterAction) -> Result<()> {
    let root = &global.root;
    let client = || RouterClient::connect(root, env);
    match action {
        RouterAction::Start(opts) => {
            let config = opts.config(global, env);
            let exe = kiln_runtime::sealed_exe::host_exe().context("locating the kiln binary")?;
            let info = daemon::start(&exe, &config)?;
            EnvState::update(root, env, |s| {
                s.router = Some(info.clone());
                Ok(())
            })?;
            println!(
                "router of {env} listening on {} (pid {})",
                info.listen, info.process.pid
            );
        }
        RouterAction::Hold { drain_ms } => {
            let drained = client()?.hold(Duration::from_millis(drain_ms))?;
            println!(
                "held{}",
                if drained {
                    ", drained"
                } else {
                    ", NOT drained"
                }
            );
        }
        RouterAction::Switch { upstream } => {
            client()?.switch(&upstream)?;
            println!("switched to {upstream}");
        }
        RouterAction::Release => println!("released {}", client()?.release()?),
        RouterAction::Status => {
            println!("{}", serde_json::to_string_pretty(&client()?.status()?)?);
        }
        RouterAction::Stop => {
            let stopped = daemon::stop(root, env, Duration::from_secs(5))?;
            println!("{}", if stopped { "stopped" } else { "not running" });
        }
    }
    Ok(())
}

/// One line per environment.
fn summary(s: &EnvStatus) -> String {
    let commit = s
        .record
        .as_ref()
        .and_then(|r| r.commit.as_deref())
        .unwrap_or("-");
    let router = match (&s.router.info, s.router.running) {
        (Some(i), true) => i.listen.to_string(),
        (Some(_), false) => "dead".to_string(),
        (None, _) => "-".to_string(),
    };
    let running = s.services.values().filter(|v| v.state == "running").count();
    format!(
        "{:<20} commit {:<12} router {:<22} services {running}/{} running",
        s.env,
        commit,
        router,
        s.services.len()
    )
}

/// The status as text.
fn print_status(s: &EnvStatus) {
    println!("{}", summary(s));
    if let Some(st) = &s.router.status {
        println!(
            "  router: upstream {} held {} served {} failed {} longest hold {:.1} ms",
            st.gate.upstream.as_deref().unwrap_or("-"),
            st.gate.held,
            st.gate.served,
            st.gate.failed,
            st.gate.longest_hold_ms
        );
        for url in &st.urls {
            println!("  url: {url}");
        }
    }
    let record = s.record.as_ref();
    for (name, live) in &s.services {
        let svc = record.and_then(|r| r.services.get(name));
        println!(
            "  {name:<16} {:<12} pid {:<8} image {} {}",
            live.state,
            live.pid.map_or("-".into(), |p| p.to_string()),
            svc.map_or("-", |v| v.image.as_str()),
            svc.map_or("", |v| v.digest.as_str())
        );
        println!("    user: {}", live.user);
        for (rel, ends) in svc.map(|v| &v.links).into_iter().flatten() {
            for e in ends {
                println!(
                    "    → {rel}: {} {}:{} ({})",
                    e.service, e.ip, e.port, e.scheme
                );
            }
        }
    }
    println!("  netns: {}", s.netns.join(", "));
    println!("  volumes: {}", s.volumes.join(", "));
}
