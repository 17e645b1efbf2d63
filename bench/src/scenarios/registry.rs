//! `registry`: `kiln push` / `kiln pull` of examples/shop's web image next to `skopeo copy` of
//! the same image (oci: layout → docker://, and back) to and from the same local registry
//! (Debian's docker-registry, plain HTTP on 127.0.0.1), in the same run: a cold push into an
//! empty repository, a cold pull into an empty store/layout, then a code-only commit pushed
//! onto the repository that has the first (only its new layers move) and pulled into the
//! store/layout that has the first. skopeo runs with an empty blob-info cache each time (else it
//! mounts "cold" pushes from the previous repetition's repository).
//!
//! Knobs: `bases` (a kiln store holding the python base, default `$KILN_STORE` or
//! /var/lib/kiln), `kiln`, `reps` (default 5), `project` (default examples/shop).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::build::{change_code, seed_store};
use super::kiln_bin;
use super::project::make_repo;
use crate::report::{median, Params, Report};

/// A docker-registry on 127.0.0.1 (plain HTTP, no auth), killed on drop.
struct LocalRegistry {
    host: String,
    child: Child,
}

impl LocalRegistry {
    fn start(dir: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
                dir.join("registry-data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let reg = Self { host, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&reg.host).is_err() {
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on {}", reg.host);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(reg)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where skopeo (as root) keeps its blob-info cache.
const SKOPEO_CACHE: &str = "/var/lib/containers/cache";
/// `sh -c` script: skopeo with an empty blob-info cache (run under `unshare -m`).
const SKOPEO_EMPTY_CACHE: &str =
    "mount -t tmpfs kiln-bench /var/lib/containers/cache && exec skopeo \"$@\"";

/// Runs the scenario.
pub fn run(params: &Params) -> Result<Report> {
    let reps: usize = params.num("reps", 5)?;
    let project = PathBuf::from(params.str("project", "examples/shop"));
    let default_bases = std::env::var("KILN_STORE").unwrap_or_else(|_| "/var/lib/kiln".into());
    let bases = PathBuf::from(params.str("bases", &default_bases));
    let kiln = kiln_bin::locate(params)?;
    let work = std::env::temp_dir().join(format!("kiln-bench-registry-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut report = Report::new("registry");
    report
        .context
        .insert("kiln".into(), kiln.display().to_string());
    let result = measure(&mut report, &kiln, &bases, &project, &work, reps.max(1));
    let _ = std::fs::remove_dir_all(&work);
    result?;
    Ok(report)
}

fn timed(cmd: &mut Command, what: &str) -> Result<(f64, Vec<u8>)> {
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok((ms, out.stdout))
}

fn measure(
    report: &mut Report,
    kiln: &Path,
    bases: &Path,
    project: &Path,
    work: &Path,
    reps: usize,
) -> Result<()> {
    let reg = LocalRegistry::start(work)?;
    let store = work.join("store");
    seed_store(bases, &store)?;
    let repo = work.join("repo");
    make_repo(project, &repo)?;
    let kiln_cmd = |store: &Path| {
        let mut c = Command::new(kiln);
        c.env("KILN_STORE", store)
            .env("KILN_RUNTIME", work.join("run"));
        c
    };
    let build = |store: &Path| -> Result<String> {
        let (_, out) = timed(
            kiln_cmd(store).arg("build").arg(&repo).arg("--json"),
            "kiln build",
        )?;
        let v: Value = serde_json::from_slice(&out)?;
        v["services"][0]["image"]
            .as_str()
            .map(str::to_string)
            .context("no image in the build report")
    };
    let v1 = build(&store)?;
    change_code(&repo, 0)?;
    let v2 = build(&store)?;
    let oci = store.join("oci");
    // skopeo remembers in its blob-info cache (/var/lib/containers/cache) which repositories
    // hold a blob, and mounts from them: every "cold" push after the first would be a
    // cross-repository mount, not an upload. Each skopeo runs with an empty cache (a tmpfs over
    // it in a private mount namespace), as kiln runs with no such memory.
    std::fs::create_dir_all(SKOPEO_CACHE)?;
    let skopeo = |src: String, dst: String| {
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", SKOPEO_EMPTY_CACHE, "sh"]);
        c.args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(src)
        .arg(dst);
        c
    };
    let (mut k_push, mut s_push, mut k_pull, mut s_pull) = (vec![], vec![], vec![], vec![]);
    let (mut k_push2, mut s_push2, mut k_pull2, mut s_pull2) = (vec![], vec![], vec![], vec![]);
    let mut code_only_bytes = 0.0;
    for i in 0..reps {
        let (kr, sr) = (
            format!("{}/kiln/web-{i}", reg.host),
            format!("{}/skopeo/web-{i}", reg.host),
        );
        let push = |image: &str, to: String| -> Result<(f64, Value)> {
            let (ms, out) = timed(
                kiln_cmd(&store).args(["push", image, &to, "--plain-http", "--json"]),
                "kiln push",
            )?;
            Ok((ms, serde_json::from_slice(&out)?))
        };
        k_push.push(push(&v1, format!("{kr}:v1"))?.0);
        s_push.push(
            timed(
                &mut skopeo(
                    format!("oci:{}:{v1}", oci.display()),
                    format!("docker://{sr}:v1"),
                ),
                "skopeo copy (push)",
            )?
            .0,
        );
        let (kstore, slayout) = (
            work.join(format!("pull-{i}")),
            work.join(format!("layout-{i}")),
        );
        let pull = |r: String| {
            timed(
                kiln_cmd(&kstore).args(["pull", &r, "--plain-http"]),
                "kiln pull",
            )
            .map(|x| x.0)
        };
        k_pull.push(pull(format!("{kr}:v1"))?);
        s_pull.push(
            timed(
                &mut skopeo(
                    format!("docker://{sr}:v1"),
                    format!("oci:{}:v1", slayout.display()),
                ),
                "skopeo copy (pull)",
            )?
            .0,
        );
        let (ms, r) = push(&v2, format!("{kr}:v2"))?;
        k_push2.push(ms);
        code_only_bytes = r["uploaded_bytes"].as_f64().unwrap_or(f64::NAN);
        s_push2.push(
            timed(
                &mut skopeo(
                    format!("oci:{}:{v2}", oci.display()),
                    format!("docker://{sr}:v2"),
                ),
                "skopeo copy (code-only push)",
            )?
            .0,
        );
        k_pull2.push(pull(format!("{kr}:v2"))?);
        s_pull2.push(
            timed(
                &mut skopeo(
                    format!("docker://{sr}:v2"),
                    format!("oci:{}:v2", slayout.display()),
                ),
                "skopeo copy (code-only pull)",
            )?
            .0,
        );
    }
    let mut pair = |name: &str, k: &mut Vec<f64>, s: &mut Vec<f64>| {
        let (km, sm) = (median(k), median(s));
        report.row(format!("kiln   {name}"), &[("ms", km)]);
        report.row(format!("skopeo {name}"), &[("ms", sm)]);
        report
            .summary
            .insert(format!("{name} kiln/skopeo"), km / sm);
    };
    pair("cold push", &mut k_push, &mut s_push);
    pair("cold pull", &mut k_pull, &mut s_pull);
    pair("code-only push", &mut k_push2, &mut s_push2);
    pair("code-only pull", &mut k_pull2, &mut s_pull2);
    report
        .summary
        .insert("code-only push uploaded bytes".into(), code_only_bytes);
    Ok(())
}
