//! `net`: apply and tear down declared-only topologies of 2, 10 and 50 services (edges ≈ 2×
//! services), with kiln-netns (netlink) next to the same work done with iproute2's `ip`.
//!
//! Knobs: `reps` (default 7), `sizes` (default "2,10,50"), `peer` ("ip" or "none"),
//! `settle_ms` (pause before each apply, letting the kernel finish destroying the last round's
//! namespaces, default 0).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kiln_netns::{Edge, Plan, Pool, Topology};

use crate::report::{median, Params, Report};

/// Runs the scenario.
pub fn run(params: &Params) -> Result<Report> {
    let reps: usize = params.num("reps", 7)?;
    let sizes: Vec<usize> = params
        .str("sizes", "2,10,50")
        .split(',')
        .map(|s| s.trim().parse().context("sizes: comma-separated numbers"))
        .collect::<Result<_>>()?;
    let peer = params.str("peer", "ip");
    let settle = Duration::from_millis(params.num("settle_ms", 0)?);
    let root = std::env::temp_dir().join(format!("kiln-bench-net-{}", std::process::id()));
    let mut report = Report::new("net");
    report
        .context
        .insert("reps".into(), format!("{reps} (medians reported)"));
    report.context.insert(
        "topology".into(),
        "ring with chords: service i declares i→i+1 and i→i+3 (mod n)".into(),
    );
    report
        .context
        .insert("runtime_root".into(), root.display().to_string());
    report.context.insert(
        "settle_ms".into(),
        format!("{} (pause before each apply)", settle.as_millis()),
    );
    let result = measure_all(&mut report, &root, &sizes, reps, peer, settle);
    // Best effort: a failed run must not leave its root directory behind.
    let _ = std::fs::remove_dir_all(&root);
    result?;
    Ok(report)
}

/// Measures every size with kiln, then with the peer.
fn measure_all(
    report: &mut Report,
    root: &Path,
    sizes: &[usize],
    reps: usize,
    peer: &str,
    settle: Duration,
) -> Result<()> {
    let mut per_size = Vec::new();
    for &n in sizes {
        let topology = ring(n);
        let plan = Plan::new(&topology, Pool::DEFAULT, None)?;
        let (apply_ms, teardown_ms) = kiln_once_each(root, &plan, reps, settle)?;
        let total = apply_ms + teardown_ms;
        report.row(
            format!("kiln  {n:>2} services, {:>3} links", plan.links.len()),
            &[
                ("apply_ms", apply_ms),
                ("teardown_ms", teardown_ms),
                ("total_ms", total),
                ("ms_per_service", total / n as f64),
            ],
        );
        per_size.push((n, total));
        if peer == "ip" {
            let (apply_ms, teardown_ms) = ip_once_each(&plan, reps.min(3))?;
            report.row(
                format!("ip    {n:>2} services, {:>3} links", plan.links.len()),
                &[
                    ("apply_ms", apply_ms),
                    ("teardown_ms", teardown_ms),
                    ("total_ms", apply_ms + teardown_ms),
                    ("ms_per_service", (apply_ms + teardown_ms) / n as f64),
                ],
            );
            report.summary.insert(
                format!("ip/kiln total ratio at {n} services"),
                (apply_ms + teardown_ms) / total,
            );
        }
    }
    if let (Some(first), Some(last)) = (per_size.first(), per_size.last()) {
        if last.0 > first.0 {
            report.summary.insert(
                format!(
                    "growth: time ratio {}→{} services (size ratio {})",
                    first.0,
                    last.0,
                    last.0 / first.0
                ),
                last.1 / first.1,
            );
        }
    }
    if let Some((_, t)) = per_size.iter().find(|(n, _)| *n == 10) {
        report
            .summary
            .insert("kiln 10 services apply+teardown ms (goal < 100)".into(), *t);
    }
    Ok(())
}

/// A ring of `n` services with chords: i declares i→i+1 and i→i+3 (mod n).
fn ring(n: usize) -> Topology {
    let name = |i: usize| format!("s{}", i % n);
    let edge = |from: usize, rel: &str, to: usize| Edge {
        from: name(from),
        name: rel.to_string(),
        to: name(to),
        endpoint: None,
        port: 8000,
        scheme: "http".to_string(),
    };
    let mut edges = Vec::new();
    for i in 0..n {
        for (rel, step) in [("next", 1), ("skip", 3)] {
            if (i + step) % n != i {
                edges.push(edge(i, rel, i + step));
            }
        }
    }
    Topology {
        services: (0..n).map(name).collect(),
        edges,
    }
}

/// Median apply and teardown times (ms) of `plan` with kiln-netns.
fn kiln_once_each(root: &Path, plan: &Plan, reps: usize, settle: Duration) -> Result<(f64, f64)> {
    let mut applies = Vec::new();
    let mut teardowns = Vec::new();
    for rep in 0..reps + 1 {
        let env = format!("bench{}", plan.services.len());
        std::thread::sleep(settle);
        let t0 = Instant::now();
        let applied = kiln_netns::apply(&env, plan, root);
        let t1 = Instant::now();
        let torn = kiln_netns::teardown(&env, root);
        let t2 = Instant::now();
        applied.with_context(|| format!("apply {env}"))?;
        torn.with_context(|| format!("teardown {env}"))?;
        // The first round warms caches; it is not counted.
        if rep > 0 {
            applies.push((t1 - t0).as_secs_f64() * 1e3);
            teardowns.push((t2 - t1).as_secs_f64() * 1e3);
        }
    }
    Ok((median(&mut applies), median(&mut teardowns)))
}

/// Median apply and teardown times (ms) of the same plan made with `ip` commands.
fn ip_once_each(plan: &Plan, reps: usize) -> Result<(f64, f64)> {
    let mut applies = Vec::new();
    let mut teardowns = Vec::new();
    let ns = |s: &str| format!("kb{}-{s}", std::process::id());
    for _ in 0..reps {
        let t0 = Instant::now();
        let applied = ip_apply(plan, &ns);
        let t1 = Instant::now();
        let mut torn = Ok(());
        for s in &plan.services {
            // Delete all even after a failure; report the first error.
            let r = ip(&["netns", "del", &ns(s)]);
            if torn.is_ok() {
                torn = r;
            }
        }
        let t2 = Instant::now();
        applied?;
        torn?;
        applies.push((t1 - t0).as_secs_f64() * 1e3);
        teardowns.push((t2 - t1).as_secs_f64() * 1e3);
    }
    Ok((median(&mut applies), median(&mut teardowns)))
}

/// The plan as a shell script with `ip` would make it.
fn ip_apply(plan: &Plan, ns: &dyn Fn(&str) -> String) -> Result<()> {
    for s in &plan.services {
        ip(&["netns", "add", &ns(s)])?;
        ip(&["-n", &ns(s), "link", "set", "lo", "up"])?;
    }
    for l in &plan.links {
        let (na, nb) = (ns(&l.a.service), ns(&l.b.service));
        ip(&[
            "link",
            "add",
            "name",
            &l.a.ifname,
            "netns",
            &na,
            "type",
            "veth",
            "peer",
            "name",
            &l.b.ifname,
            "netns",
            &nb,
        ])?;
        for (n, end, peer) in [(&na, &l.a, &l.b), (&nb, &l.b, &l.a)] {
            ip(&["-n", n, "link", "set", &end.ifname, "up"])?;
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/31", end.ip),
                "dev",
                &end.ifname,
                "noprefixroute",
            ])?;
            ip(&[
                "-n",
                n,
                "route",
                "add",
                &format!("{}/32", peer.ip),
                "dev",
                &end.ifname,
            ])?;
        }
    }
    Ok(())
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
