//! `kiln net`: apply, show and tear down an environment's declared-only network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use kiln_netns::{Plan, Pool, Status, Topology};
use serde::Serialize;

use super::Global;

/// `kiln net` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Create or update an environment's namespaces and links from a topology file
    /// (JSON, or TOML when it ends in .toml); only what changed is touched.
    Apply {
        /// Environment name.
        #[arg(long)]
        env: String,
        /// Address pool the links' /31 blocks come from.
        #[arg(long, default_value_t = Pool::DEFAULT)]
        pool: Pool,
        /// Print what changed as JSON.
        #[arg(long)]
        json: bool,
        /// Topology file: {"services": [...], "edges": [{from, name, to, port, scheme}]}.
        file: PathBuf,
    },
    /// Show an environment's plan and live state (links, addresses, routes, up/down).
    Show {
        /// Environment name.
        #[arg(long)]
        env: String,
        /// Print JSON (plan, live state, and each service's hosts file and relationships).
        #[arg(long)]
        json: bool,
    },
    /// Remove every namespace and veth of an environment (idempotent).
    Teardown {
        /// Environment name.
        #[arg(long)]
        env: String,
    },
}

/// Runs a `kiln net` subcommand.
pub fn run(global: &Global, cmd: NetCommand) -> ExitCode {
    match dispatch(global, cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln net: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses nothing more: calls the library and prints.
fn dispatch(global: &Global, cmd: NetCommand) -> Result<()> {
    let root = &global.root;
    match cmd {
        NetCommand::Apply {
            env,
            pool,
            json,
            file,
        } => {
            let topology = Topology::load(&file)?;
            let plan = kiln_netns::plan_for(&env, &topology, pool, root)?;
            let applied = kiln_netns::apply(&env, &plan, root)
                .with_context(|| format!("applying {} to environment {env}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&applied)?);
            } else {
                println!(
                    "env {env}: {} services, {} links ({} created, {} kept, {} interfaces removed, {} namespaces removed)",
                    plan.services.len(),
                    plan.links.len(),
                    applied.created_links.len(),
                    applied.kept_links.len(),
                    applied.removed_links.len(),
                    applied.removed_services.len()
                );
            }
        }
        NetCommand::Show { env, json } => {
            let status = kiln_netns::status(&env, root)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ShowJson::new(status)?)?);
            } else {
                print_status(&status);
            }
        }
        NetCommand::Teardown { env } => {
            let removed = kiln_netns::teardown(&env, root)?;
            println!("env {env}: removed {} namespaces", removed.len());
        }
    }
    Ok(())
}

/// What a container of a service gets: its hosts file and relationships.
#[derive(Serialize)]
struct ServiceOutputs {
    hosts: String,
    relationships: BTreeMap<String, Vec<kiln_netns::Relationship>>,
    relationships_env: String,
}

/// `kiln net show --json`.
#[derive(Serialize)]
struct ShowJson {
    #[serde(flatten)]
    status: Status,
    outputs: BTreeMap<String, ServiceOutputs>,
}

impl ShowJson {
    /// The status plus each planned service's outputs.
    fn new(status: Status) -> Result<Self> {
        let mut outputs = BTreeMap::new();
        if let Some(plan) = &status.plan {
            for s in &plan.services {
                outputs.insert(s.clone(), outputs_of(plan, s)?);
            }
        }
        Ok(Self { status, outputs })
    }
}

/// A service's outputs from the plan.
fn outputs_of(plan: &Plan, service: &str) -> Result<ServiceOutputs> {
    Ok(ServiceOutputs {
        hosts: plan.hosts(service)?,
        relationships: plan.relationships(service)?,
        relationships_env: plan.relationships_env(service)?,
    })
}

/// Prints the status as text: one block per service, one line per interface.
fn print_status(status: &Status) {
    match &status.plan {
        Some(p) => println!(
            "env {}: pool {}, {} services, {} links",
            status.env,
            p.pool,
            p.services.len(),
            p.links.len()
        ),
        None => println!("env {}: no plan recorded", status.env),
    }
    for s in &status.services {
        let state = if s.present { "" } else { "  (absent)" };
        println!("{}  {}{state}", s.service, s.path.display());
        for l in &s.links {
            println!(
                "  {:<15} #{:<4} {:<5} {:<4} {:<20} routes {}",
                l.ifname,
                l.ifindex,
                if l.kind.is_empty() { "-" } else { &l.kind },
                if l.up && l.lower_up {
                    "UP"
                } else if l.up {
                    "NO-CARRIER"
                } else {
                    "DOWN"
                },
                l.addresses.join(","),
                if l.routes.is_empty() {
                    "-".to_string()
                } else {
                    l.routes.join(",")
                }
            );
        }
    }
}
