//! `deploy`: zero-downtime deploys, in two parts.
//!
//! - `router`: the router alone in front of two tiny in-process apps (router start, throughput
//!   through the router next to direct, swaps with simulated deploy work); see `router.rs`.
//! - `full`: a whole `kiln deploy` of examples/shop (python web app + redis, deploy hook and
//!   post tasks removed) into a throwaway store and runtime: first deploy, no-op redeploys,
//!   code changes without load (hold window, per-step times) and under keep-alive load (hold
//!   window, longest client wait, failed requests), then deploys alternating between user
//!   namespaces (the default) and `security.host_root` (what the user namespace costs); see
//!   `full.rs`.
//!
//! Knobs: `only` (`router`, `full` or `all`, default all), `reps` (swaps, redeploys and code
//! changes of each kind, default 7), `clients` (8), `measure_ms` (router throughput runs, 1000),
//! `warm_ms` (load before and after each swap or deploy, 200), `work_ms` (simulated deploy work
//! while the router alone is held, 0), `kiln` (the kiln binary; default: beside this one),
//! `repo` (the kiln checkout holding examples/ and vendor-images/; default: the one this bench
//! was built from), `store` (a kiln store to reuse, kept afterwards; vendor images already in it
//! are not rebuilt; default: a fresh one, removed afterwards).

mod full;
mod load;
mod router;
mod sandbox;

use std::time::Duration;

use anyhow::{bail, Result};

use super::kiln_bin;
use crate::report::{Params, Report};

/// Knobs shared by both parts.
pub struct Knobs {
    /// Swaps, redeploys or code changes of each kind.
    pub reps: usize,
    /// Keep-alive load clients.
    pub clients: usize,
    /// Length of a router throughput run.
    pub measure: Duration,
    /// Load before and after each swap or deploy.
    pub warm: Duration,
    /// Simulated deploy work while the router alone is held.
    pub work: Duration,
}

/// Runs the scenario.
pub fn run(params: &Params) -> Result<Report> {
    let knobs = Knobs {
        reps: params.num("reps", 7)?,
        clients: params.num("clients", 8)?,
        measure: Duration::from_millis(params.num("measure_ms", 1000)?),
        warm: Duration::from_millis(params.num("warm_ms", 200)?),
        work: Duration::from_millis(params.num("work_ms", 0)?),
    };
    let only = params.str("only", "all");
    if !["router", "full", "all"].contains(&only) {
        bail!("--set only={only}: expected router, full or all");
    }
    let kiln = kiln_bin::locate(params)?;
    let mut report = Report::new("deploy");
    report
        .context
        .insert("kiln".into(), kiln.display().to_string());
    report.context.insert(
        "reps".into(),
        format!("{} of each kind (medians reported)", knobs.reps),
    );
    if only != "full" {
        router::measure(&mut report, &kiln, &knobs)?;
    }
    if only != "router" {
        full::measure(&mut report, &kiln, params, &knobs)?;
    }
    Ok(report)
}
