//! `build`: `kiln build` of a project (examples/shop by default) as a user runs it — a cold build
//! (base images present, empty build cache), a no-op rebuild at the same commit, and a code-only
//! rebuild (one file of the app changed) — next to `buildah bud --layers` of an equivalent
//! Containerfile when buildah runs here.
//!
//! Knobs: `project` (folder copied into a fresh git repo, default `examples/shop`), `bases`
//! (a kiln store holding the base images, default `$KILN_STORE` or /var/lib/kiln), `kiln` (the
//! binary, default the `kiln` beside this one), `reps` (default 3 cold, 20 no-op), `peer`
//! (`buildah` or `none`, default `buildah`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::kiln_bin;
use super::project::{commit, make_repo};
use crate::report::{median, Params, Report};

/// Runs the scenario.
pub fn run(params: &Params) -> Result<Report> {
    let reps: usize = params.num("reps", 3)?;
    let noop_reps: usize = params.num("noop_reps", 20)?;
    let project = PathBuf::from(params.str("project", "examples/shop"));
    let default_bases = std::env::var("KILN_STORE").unwrap_or_else(|_| "/var/lib/kiln".into());
    let bases = PathBuf::from(params.str("bases", &default_bases));
    let kiln = kiln_bin::locate(params)?;
    let work = std::env::temp_dir().join(format!("kiln-bench-build-{}", std::process::id()));
    let mut report = Report::new("build");
    report
        .context
        .insert("project".into(), project.display().to_string());
    report
        .context
        .insert("bases".into(), bases.display().to_string());
    report
        .context
        .insert("kiln".into(), kiln.display().to_string());
    let result = measure(
        &mut report,
        &Setup {
            kiln: &kiln,
            bases: &bases,
            project: &project,
            work: &work,
        },
        reps,
        noop_reps,
        params.str("peer", "buildah"),
    );
    let _ = std::fs::remove_dir_all(&work);
    result?;
    Ok(report)
}

struct Setup<'a> {
    kiln: &'a Path,
    bases: &'a Path,
    project: &'a Path,
    work: &'a Path,
}

fn measure(
    report: &mut Report,
    s: &Setup<'_>,
    reps: usize,
    noop_reps: usize,
    peer: &str,
) -> Result<()> {
    let repo = s.work.join("repo");
    make_repo(s.project, &repo)?;
    let mut cold = Vec::new();
    let mut store = PathBuf::new();
    for i in 0..reps.max(1) {
        store = s.work.join(format!("store-{i}"));
        seed_store(s.bases, &store)?;
        let (ms, _) = kiln_build(s, &store, &repo)?;
        cold.push(ms);
    }
    let mut noop = Vec::new();
    for _ in 0..noop_reps.max(1) {
        let (ms, json) = kiln_build(s, &store, &repo)?;
        if json["containers"].as_u64() != Some(0) {
            bail!("the no-op rebuild ran containers: {json}");
        }
        noop.push(ms);
    }
    let mut code_only = Vec::new();
    let mut overhead = Vec::new();
    for i in 0..reps.max(1) {
        change_code(&repo, i)?;
        let (ms, json) = kiln_build(s, &store, &repo)?;
        let hook_ms: f64 = json["services"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|svc| svc["steps"].as_array().into_iter().flatten())
            .filter(|st| st["name"] == "hook" && st["cache"] == "miss")
            .filter_map(|st| st["seconds"].as_f64())
            .sum::<f64>()
            * 1000.0;
        code_only.push(ms);
        overhead.push(ms - hook_ms);
    }
    let noop_ms = median(&mut noop);
    report.row(
        "kiln  cold build (bases present)",
        &[("ms", median(&mut cold))],
    );
    report.row("kiln  no-op rebuild", &[("ms", noop_ms)]);
    let overhead_ms = median(&mut overhead);
    report.row(
        "kiln  code-only rebuild",
        &[
            ("ms", median(&mut code_only)),
            ("minus_hook_ms", overhead_ms),
        ],
    );
    report.summary.insert("noop_ms".into(), noop_ms);
    report
        .summary
        .insert("noop_goal_met".into(), f64::from(u8::from(noop_ms < 50.0)));
    report
        .summary
        .insert("code_only_minus_hook_ms".into(), overhead_ms);
    if peer == "buildah" {
        match buildah_rows(report, s, &repo, reps) {
            Ok(()) => {}
            Err(e) => {
                report
                    .context
                    .insert("buildah".into(), format!("not measured: {e:#}"));
            }
        }
    }
    Ok(())
}

/// A code-only change: a new file in the app's folder (`web/` for examples/shop).
pub(super) fn change_code(repo: &Path, i: usize) -> Result<()> {
    let app = ["web", "app", "."]
        .iter()
        .map(|d| repo.join(d))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| repo.to_path_buf());
    std::fs::write(app.join("BENCH_CHANGE"), format!("{i}\n"))?;
    commit(repo, &format!("code change {i}"))
}

/// A fresh store holding the base images: a copy of the bases store's OCI layout (no
/// snapshots, no build cache).
pub(super) fn seed_store(bases: &Path, store: &Path) -> Result<()> {
    std::fs::create_dir_all(store)?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(bases.join("oci"))
        .arg(store.join("oci"))
        .status()?;
    if !status.success() {
        bail!("copying {}/oci failed", bases.display());
    }
    Ok(())
}

/// Times one `kiln build --json` (the whole process); returns ms and the report.
fn kiln_build(s: &Setup<'_>, store: &Path, repo: &Path) -> Result<(f64, Value)> {
    let start = Instant::now();
    let out = Command::new(s.kiln)
        .arg("build")
        .arg(repo)
        .arg("--json")
        .env("KILN_STORE", store)
        .env("KILN_RUNTIME", s.work.join("run"))
        .output()
        .context("running kiln build")?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "kiln build failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((ms, serde_json::from_slice(&out.stdout)?))
}

/// buildah building the same app: base image from the kiln store, code copied, the hook run.
fn buildah_rows(report: &mut Report, s: &Setup<'_>, repo: &Path, reps: usize) -> Result<()> {
    let version = Command::new("buildah").arg("--version").output()?;
    if !version.status.success() {
        bail!("buildah --version failed");
    }
    report.context.insert(
        "buildah".into(),
        String::from_utf8_lossy(&version.stdout).trim().to_string(),
    );
    let (base, hook) = shop_base_and_hook(repo)?;
    let archive = s.work.join("base.tar");
    let store = s.work.join("store-0");
    let out = Command::new(s.kiln)
        .args(["image", "export", &format!("{base}:latest")])
        .arg(&archive)
        .env("KILN_STORE", &store)
        .output()?;
    if !out.status.success() {
        bail!(
            "exporting the base: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let containerfile = s.work.join("Containerfile");
    std::fs::write(
        &containerfile,
        format!(
            "FROM oci-archive:{}\nCOPY web /app\nWORKDIR /app\nRUN {hook}\n",
            archive.display()
        ),
    )?;
    let bud = |root: &Path| -> Result<f64> {
        let start = Instant::now();
        let out = Command::new("buildah")
            .arg("--root")
            .arg(root)
            .arg("--runroot")
            .arg(root.join("run"))
            .args(["--storage-driver", "overlay", "bud", "--layers", "-q", "-f"])
            .arg(&containerfile)
            .arg(repo)
            .output()?;
        if !out.status.success() {
            bail!(
                "buildah bud: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    };
    let mut cold = Vec::new();
    let mut root = PathBuf::new();
    for i in 0..reps.max(1) {
        root = s.work.join(format!("buildah-{i}"));
        cold.push(bud(&root)?);
    }
    let mut noop = Vec::new();
    for _ in 0..reps.max(1) {
        noop.push(bud(&root)?);
    }
    report.row("buildah cold build", &[("ms", median(&mut cold))]);
    report.row("buildah no-op rebuild", &[("ms", median(&mut noop))]);
    for i in 0..reps.max(1) {
        let _ = Command::new("buildah")
            .arg("--root")
            .arg(s.work.join(format!("buildah-{i}")))
            .arg("--runroot")
            .arg(s.work.join(format!("buildah-{i}")).join("run"))
            .args(["rmi", "-a", "-f"])
            .output();
    }
    Ok(())
}

/// The base and build hook of the project's `web` service, read from its kiln.toml.
fn shop_base_and_hook(repo: &Path) -> Result<(String, String)> {
    let text = std::fs::read_to_string(repo.join("kiln.toml"))?;
    let doc: toml::Value = toml::from_str(&text)?;
    let web = &doc["services"]["web"];
    let base = web["base"]
        .as_str()
        .context("services.web.base")?
        .to_string();
    let hook = web
        .get("build")
        .and_then(|b| b.get("hook"))
        .and_then(|h| h.as_str())
        .unwrap_or("true")
        .to_string();
    Ok((base, hook))
}
