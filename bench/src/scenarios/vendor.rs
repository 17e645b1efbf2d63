//! `vendor`: `kiln vendor build` of each recipe — cold (a fresh store; .debs from the shared
//! cache, so apt resolution, unpacking and layer writing are measured, not the download) and
//! warm (the same recipe again in that store: no resolution, the image reused) — with the
//! image's compressed size next to the Debian-based official image of the same version.
//!
//! Knobs: `recipes` (comma-separated, default every catalogue image), `dir` (the recipes folder,
//! default `vendor-images`), `deb_cache` (default `$KILN_DEB_CACHE` or /var/cache/kiln/debs),
//! `kiln` (the binary), `warm_reps` (default 5), `official_<recipe>` (MB, overrides the
//! reference figure below).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::kiln_bin;
use crate::report::{median, Params, Report};

/// The recipes measured by default.
const RECIPES: &str = "busybox,python,redis,nginx,nodejs,php,postgresql,mariadb,memcached";

/// Compressed linux/amd64 sizes (MB) of the official images of the same versions, as Docker Hub
/// lists them for these tags. Recalled, not fetched: Docker Hub is not reachable from the hosts
/// this ran on, so they are approximate; give `official_<recipe>=MB` to use measured figures.
const OFFICIAL: [(&str, &str, f64); 8] = [
    ("python", "python:3.11-slim-bookworm", 45.0),
    ("redis", "redis:7.0-bookworm", 40.0),
    ("nginx", "nginx:1.22 (mainline-bookworm)", 68.0),
    ("nodejs", "node:18-bookworm-slim", 67.0),
    (
        "php",
        "php:8.2-fpm-bookworm (no nginx, fewer extensions)",
        165.0,
    ),
    ("postgresql", "postgres:15-bookworm", 150.0),
    ("mariadb", "mariadb:10.11 (Ubuntu jammy based)", 115.0),
    ("memcached", "memcached:1.6-bookworm", 30.0),
];

/// Runs the scenario.
pub fn run(params: &Params) -> Result<Report> {
    let kiln = kiln_bin::locate(params)?;
    let dir = PathBuf::from(params.str("dir", "vendor-images"));
    let default_cache =
        std::env::var("KILN_DEB_CACHE").unwrap_or_else(|_| "/var/cache/kiln/debs".into());
    let cache = PathBuf::from(params.str("deb_cache", &default_cache));
    let warm_reps: usize = params.num("warm_reps", 5)?;
    let work = std::env::temp_dir().join(format!("kiln-bench-vendor-{}", std::process::id()));
    let mut report = Report::new("vendor");
    report
        .context
        .insert("kiln".into(), kiln.display().to_string());
    report
        .context
        .insert("deb_cache".into(), cache.display().to_string());
    report.context.insert(
        "official_sizes".into(),
        "approximate compressed sizes of the official Docker Hub images (linux/amd64), recalled, \
         not measured here (Docker Hub is unreachable); override with official_<recipe>=MB"
            .into(),
    );
    let result = (|| {
        for name in params.str("recipes", RECIPES).split(',').map(str::trim) {
            let store = work.join(name);
            let env = Env {
                kiln: &kiln,
                dir: &dir,
                cache: &cache,
                store: &store,
            };
            let (cold_ms, built) = env.build(name)?;
            let mut warm = Vec::new();
            for _ in 0..warm_reps.max(1) {
                let (ms, again) = env.build(name)?;
                if again["manifest_digest"] != built["manifest_digest"] {
                    bail!("{name}: the warm build made another image");
                }
                warm.push(ms);
            }
            let size: u64 = built["layers"]
                .as_array()
                .map(|l| l.iter().filter_map(|x| x["size"].as_u64()).sum())
                .unwrap_or(0);
            let mb = size as f64 / 1e6;
            let mut figures = vec![
                ("cold_ms", cold_ms),
                ("warm_median_ms", median(&mut warm)),
                ("compressed_mb", mb),
            ];
            let official = OFFICIAL.iter().find(|(r, _, _)| *r == name);
            let knob = format!("official_{name}");
            let reference: Option<f64> = match params.str(&knob, "") {
                "" => official.map(|(_, _, mb)| *mb),
                v => Some(v.parse().with_context(|| format!("--set {knob}={v}"))?),
            };
            if let Some(r) = reference {
                figures.push(("official_mb", r));
            }
            if let Some((_, tag, _)) = official {
                report
                    .context
                    .insert(format!("official_{name}"), tag.to_string());
            }
            report.row(format!("kiln vendor build {name}"), &figures);
            let _ = std::fs::remove_dir_all(&store);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result?;
    Ok(report)
}

struct Env<'a> {
    kiln: &'a Path,
    dir: &'a Path,
    cache: &'a Path,
    store: &'a Path,
}

impl Env<'_> {
    /// Times one `kiln vendor build NAME --json` (the whole process); returns ms and the report.
    fn build(&self, name: &str) -> Result<(f64, Value)> {
        let started = Instant::now();
        let out = Command::new(self.kiln)
            .env("KILN_STORE", self.store)
            .env("KILN_DEB_CACHE", self.cache)
            .args(["vendor", "build", name, "--json", "--quiet", "--recipes"])
            .arg(self.dir)
            .output()
            .with_context(|| format!("running {}", self.kiln.display()))?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() {
            bail!(
                "kiln vendor build {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let report = serde_json::from_slice(&out.stdout).context("kiln's JSON report")?;
        Ok((ms, report))
    }
}
