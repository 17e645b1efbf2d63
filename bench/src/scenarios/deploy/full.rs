//! A whole `kiln deploy` of examples/shop (deploy hook and post tasks removed) into a
//! throwaway environment: the first deploy, no-op redeploys of the same commit, code changes
//! (web/VERSION) without load with per-step times, and code changes under keep-alive load
//! through the environment's router; then what the user namespace costs: deploys alternating
//! between every service in its user namespace (the default) and every service opted out
//! (`security.host_root`), each replacing both services.
//!
//! `wall_ms` is the kiln process (build included), `total_ms` and `hold_ms` come from its JSON
//! report (`total_ms` starts after the build).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_router::Endpoint;

use super::load::{sum, under_load};
use super::sandbox::{Deployed, Sandbox};
use super::Knobs;
use crate::report::{median, ms, Params, Report};

/// The kiln checkout this bench was built from.
const CHECKOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Sets up the sandbox, measures, and tears it all down (on error too).
pub fn measure(report: &mut Report, kiln: &Path, params: &Params, k: &Knobs) -> Result<()> {
    let checkout = PathBuf::from(params.str("repo", CHECKOUT));
    let sb = Sandbox::create(kiln, params.str("store", ""))?;
    report.context.insert(
        "full setup".into(),
        format!(
            "{}/examples/shop without deploy hook or post tasks (web: python, cache: redis); \
             store {}",
            checkout.display(),
            sb.store().display()
        ),
    );
    let vendor = sb.vendor_images(&checkout.join("vendor-images"))?;
    report.context.insert("vendor images".into(), vendor);
    sb.make_repo(&checkout.join("examples/shop"))?;
    let first = sb.deploy()?;
    report.row(
        "kiln deploy: first (app built, 2 services started)",
        &[
            ("wall_ms", first.wall_ms),
            ("total_ms", first.total_ms),
            ("hold_ms", first.hold_ms),
        ],
    );
    noops(report, &sb, k)?;
    let mut version = 1;
    code_changes(report, &sb, k, &mut version)?;
    under_load_changes(report, &sb, k, &mut version)?;
    userns_cost(report, &sb, k, &mut version)
}

/// The deploys of one mode of [`userns_cost`].
#[derive(Default)]
struct Mode {
    wall: Vec<f64>,
    total: Vec<f64>,
    hold: Vec<f64>,
    create: Vec<f64>,
}

/// `reps` deploys of each mode, alternating: user namespaces (idmapped image and volumes) and
/// host root. Switching mode changes every service's config, so each deploy replaces both.
fn userns_cost(report: &mut Report, sb: &Sandbox, k: &Knobs, version: &mut usize) -> Result<()> {
    // [host root, user namespace]
    let mut modes = [Mode::default(), Mode::default()];
    // Starts in the default mode: the first deploy opts out, the last returns to the default.
    for i in 0..2 * k.reps {
        let host_root = i % 2 == 0;
        *version += 1;
        sb.set_host_root(host_root, *version)?;
        let d = sb.deploy()?;
        if d.changes.replace.len() != 2 {
            bail!(
                "switching host_root did not replace both services: {:?}",
                d.changes
            );
        }
        let m = &mut modes[usize::from(!host_root)];
        m.wall.push(d.wall_ms);
        m.total.push(d.total_ms);
        m.hold.push(d.hold_ms);
        m.create.push(
            d.steps
                .iter()
                .filter(|s| s.step == "create")
                .map(|s| s.ms)
                .sum(),
        );
    }
    let mut medians = Vec::new();
    for (label, mut m) in ["host root (opted out)", "user namespace (default)"]
        .into_iter()
        .zip(modes)
    {
        let (total, create) = (median(&mut m.total), median(&mut m.create));
        report.row(
            format!(
                "kiln deploy: both services replaced, {label} ({} reps)",
                k.reps
            ),
            &[
                ("wall_ms", median(&mut m.wall)),
                ("total_ms", total),
                ("hold_ms", median(&mut m.hold)),
                ("create_ms", create),
            ],
        );
        medians.push((total, create));
    }
    report.summary.insert(
        "user namespace cost: total ms, median (userns - host root)".into(),
        medians[1].0 - medians[0].0,
    );
    report.summary.insert(
        "user namespace cost: create step ms, median (userns - host root)".into(),
        medians[1].1 - medians[0].1,
    );
    Ok(())
}

/// `reps` redeploys of the same commit: nothing may change or be held.
fn noops(report: &mut Report, sb: &Sandbox, k: &Knobs) -> Result<()> {
    let (mut wall, mut total) = (Vec::new(), Vec::new());
    for _ in 0..k.reps {
        let d = sb.deploy()?;
        let c = &d.changes;
        if d.hold_ms != 0.0 || !c.replace.is_empty() || !c.start.is_empty() || !c.stop.is_empty() {
            bail!(
                "a no-op redeploy held {} ms and changed {:?}",
                d.hold_ms,
                d.changes
            );
        }
        wall.push(d.wall_ms);
        total.push(d.total_ms);
    }
    let wall_ms = median(&mut wall);
    report.row(
        format!("kiln deploy: no-op redeploy ({} reps)", k.reps),
        &[("wall_ms", wall_ms), ("total_ms", median(&mut total))],
    );
    report
        .summary
        .insert("no-op redeploy wall ms (goal < 100)".into(), wall_ms);
    Ok(())
}

/// Commits the next code change and deploys it; the app must have been replaced.
fn deploy_change(sb: &Sandbox, version: &mut usize) -> Result<Deployed> {
    *version += 1;
    sb.change_code(*version)?;
    let d = sb.deploy()?;
    if !d.changes.replace.iter().any(|s| s == "web") {
        bail!(
            "code change v{version} did not replace web: {:?}",
            d.changes
        );
    }
    Ok(d)
}

/// `reps` code changes without load: hold window, times, and each step's median.
fn code_changes(report: &mut Report, sb: &Sandbox, k: &Knobs, version: &mut usize) -> Result<()> {
    let (mut wall, mut total, mut hold) = (Vec::new(), Vec::new(), Vec::new());
    // (step, held in any rep, its times), in the order steps first ran.
    let mut steps: Vec<(String, bool, Vec<f64>)> = Vec::new();
    for _ in 0..k.reps {
        let d = deploy_change(sb, version)?;
        wall.push(d.wall_ms);
        total.push(d.total_ms);
        hold.push(d.hold_ms);
        for s in d.steps {
            match steps.iter_mut().find(|(name, ..)| *name == s.step) {
                Some((_, held, times)) => {
                    *held |= s.held;
                    times.push(s.ms);
                }
                None => steps.push((s.step, s.held, vec![s.ms])),
            }
        }
    }
    report.row(
        format!(
            "kiln deploy: code change, no load ({} reps, web/VERSION)",
            k.reps
        ),
        &[
            ("wall_ms", median(&mut wall)),
            ("total_ms", median(&mut total)),
            ("hold_ms", median(&mut hold)),
        ],
    );
    for (name, held, mut times) in steps {
        let mark = if held { " (held)" } else { "" };
        report.row(
            format!("  step {name}{mark}"),
            &[("ms", median(&mut times))],
        );
    }
    Ok(())
}

/// `reps` code changes, each deployed while `clients` keep-alive clients go through the router.
fn under_load_changes(
    report: &mut Report,
    sb: &Sandbox,
    k: &Knobs,
    version: &mut usize,
) -> Result<()> {
    let router = Endpoint::host(sb.router()?);
    let (mut wall, mut hold, mut wait) = (Vec::new(), Vec::new(), Vec::new());
    let (mut served, mut failed, mut errors) = (0, 0, Vec::new());
    for _ in 0..k.reps {
        let mut deployed = None;
        let (results, _) = under_load(&router, k.clients, k.warm, k.warm, || {
            deployed = Some(deploy_change(sb, version)?);
            Ok(())
        })?;
        let d = deployed.context("the deploy under load did not run")?;
        wall.push(d.wall_ms);
        hold.push(d.hold_ms);
        let all = sum(&results);
        served += all.ok;
        failed += all.failed;
        wait.push(ms(all.longest));
        errors.extend(all.errors);
    }
    let max_wait = wait.iter().copied().fold(0.0, f64::max);
    let hold_ms = median(&mut hold);
    report.row(
        format!(
            "kiln deploy: code change under {} clients ({} reps)",
            k.clients, k.reps
        ),
        &[
            ("wall_ms", median(&mut wall)),
            ("hold_ms", hold_ms),
            ("longest_wait_ms", median(&mut wait)),
            ("max_wait_ms", max_wait),
            ("served", served as f64),
            ("failed", failed as f64),
        ],
    );
    if !errors.is_empty() {
        errors.truncate(5);
        report
            .context
            .insert("first failed requests".into(), errors.join("; "));
    }
    report.summary.insert(
        "hold window ms for a code change with an empty deploy hook, under load (goal < 300)"
            .into(),
        hold_ms,
    );
    report.summary.insert(
        "requests failed during deploys under load (goal 0)".into(),
        failed as f64,
    );
    Ok(())
}
