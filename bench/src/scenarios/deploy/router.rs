//! The router alone: two namespaces (v1, v2) each run a tiny HTTP app and a detached router
//! (`kiln router`) fronts them. Rows: router start; throughput of keep-alive clients through the
//! router next to the same clients straight into the app's namespace; and swaps under that load
//! (hold → `work_ms` of simulated deploy work → switch → release): hold command time (drain),
//! hold window, longest client wait, requests served and failed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kiln_netns::{Plan, Pool, Topology};
use kiln_router::client::RouterClient;
use kiln_router::Endpoint;
use kiln_router::{daemon, RouterConfig, DEFAULT_RETRY};
use kiln_testkit::loadgen::NameApp;

use super::load::{sum, under_load};
use super::Knobs;
use crate::report::{median, ms, Report};

/// The app port inside each namespace.
const APP_PORT: u16 = 8000;

/// Measures the router alone; leaves no router, namespace or folder behind.
pub fn measure(report: &mut Report, kiln: &Path, k: &Knobs) -> Result<()> {
    let root = std::env::temp_dir().join(format!("kiln-bench-deploy-{}", std::process::id()));
    let env = format!("bench{}", std::process::id());
    report.context.insert(
        "router setup".into(),
        format!(
            "{} keep-alive clients; name apps in 2 netns; router alone; \
             {} ms simulated deploy work while held",
            k.clients,
            k.work.as_millis()
        ),
    );
    let result = router_and_apps(report, kiln, &root, &env, k);
    // Best effort: a failed run must not leave its router, namespaces or folder behind.
    let _ = daemon::stop(&root, &env, Duration::from_secs(5));
    let _ = kiln_netns::teardown(&env, &root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// Sets up the apps and the router, then measures.
fn router_and_apps(
    report: &mut Report,
    kiln: &Path,
    root: &Path,
    env: &str,
    k: &Knobs,
) -> Result<()> {
    let topology = Topology {
        services: vec!["v1".into(), "v2".into()],
        edges: vec![],
    };
    let plan = Plan::new(&topology, Pool::DEFAULT, None)?;
    kiln_netns::apply(env, &plan, root)?;
    let app = |name: &str| {
        Endpoint::in_netns(
            ([127, 0, 0, 1], APP_PORT).into(),
            &kiln_netns::netns_path(root, env, name),
        )
    };
    let (v1, v2) = (app("v1"), app("v2"));
    let _apps = [start_app(&v1, "v1")?, start_app(&v2, "v2")?];
    let t = Instant::now();
    let info = daemon::start(
        kiln,
        &RouterConfig {
            env: env.to_string(),
            runtime_root: root.to_path_buf(),
            listen: ([127, 0, 0, 1], 0).into(),
            upstream: Some(v1.clone()),
            held: false,
            retry: DEFAULT_RETRY,
        },
    )?;
    report.row(
        "router start (kiln router --detach, until listening)",
        &[("ms", ms(t.elapsed()))],
    );
    let router = Endpoint::host(info.listen);
    for (name, target) in [
        ("through the router", &router),
        ("direct into the app netns", &v1),
    ] {
        let (results, took) = under_load(target, k.clients, Duration::ZERO, k.measure, || Ok(()))?;
        let total = sum(&results);
        report.row(
            format!("{} clients {name}", k.clients),
            &[
                ("req_per_s", total.ok as f64 / took.as_secs_f64()),
                ("mean_ms", ms(total.total) / total.ok.max(1) as f64),
                ("failed", total.failed as f64),
            ],
        );
    }
    swaps(report, root, env, &router, [&v1, &v2], k)
}

/// Starts the name app at `at` (inside its namespace).
fn start_app(at: &Endpoint, name: &str) -> Result<NameApp> {
    let netns = at.netns.as_deref().context("app endpoint without netns")?;
    Ok(NameApp::start_in(netns, at.addr, name)?)
}

/// `reps` swaps under load, alternating between the two apps.
fn swaps(
    report: &mut Report,
    root: &Path,
    env: &str,
    router: &Endpoint,
    apps: [&Endpoint; 2],
    k: &Knobs,
) -> Result<()> {
    let mut ctl = RouterClient::connect(root, env)?;
    let (mut hold_ms, mut window_ms, mut wait_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut served, mut failed, mut held) = (0, 0, 0);
    for rep in 0..k.reps {
        let next = apps[(rep + 1) % 2];
        let (results, _) = under_load(router, k.clients, k.warm, k.warm, || {
            let t = Instant::now();
            ctl.hold(Duration::from_secs(30))?;
            hold_ms.push(ms(t.elapsed()));
            std::thread::sleep(k.work);
            ctl.switch(next)?;
            held += ctl.release()?;
            let st = ctl.status()?;
            window_ms.push(st.gate.last_hold_ms.unwrap_or(0.0));
            Ok(())
        })?;
        let total = sum(&results);
        served += total.ok;
        failed += total.failed;
        wait_ms.push(ms(total.longest));
    }
    report.row(
        format!(
            "swap under load ({} reps, {} ms work)",
            k.reps,
            k.work.as_millis()
        ),
        &[
            ("hold_cmd_ms", median(&mut hold_ms)),
            ("hold_window_ms", median(&mut window_ms)),
            ("longest_wait_ms", median(&mut wait_ms)),
            ("served", served as f64),
            ("failed", failed as f64),
            ("held", held as f64),
        ],
    );
    report.summary.insert(
        "requests failed across swaps (goal 0)".into(),
        failed as f64,
    );
    report.summary.insert(
        "median hold window ms, router alone (goal < 300 incl. deploy)".into(),
        median(&mut window_ms),
    );
    Ok(())
}
