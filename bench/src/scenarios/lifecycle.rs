//! `lifecycle`: the OCI runtime's container lifecycle, kiln next to runc (and crun where it runs
//! here), interleaved round by round in one run: `run` of a busybox bundle doing /bin/true, then
//! create, start and delete timed separately. Reports medians and the kiln/runc ratios.
//!
//! Knobs: `rounds=N` (default 30), `warmup=N` (3), `kiln=PATH` (default: the kiln binary next to
//! this benchmark), `crun=PATH` (default /tmp/kiln-judges/bin/crun-legacy, from
//! `judges.sh crun-wrapper`; skipped when absent).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::report::{median, Params, Report};

/// One runtime under test.
struct Rt {
    name: String,
    bin: PathBuf,
    root: PathBuf,
}

/// The four timed steps, in the order they run each round.
const STEPS: &[&str] = &["run", "create", "start", "delete"];

impl Rt {
    /// Runs one CLI call, returning its wall time in milliseconds. stderr goes to a file: the
    /// container init inherits create's stdio, so a pipe would stay open until it exits.
    fn timed(&self, args: &[&str]) -> Result<f64> {
        let log = self.root.with_extension("stderr");
        let err =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let t = Instant::now();
        let status = Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .status()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if !status.success() {
            bail!(
                "{} {:?} failed: {}",
                self.name,
                args,
                std::fs::read_to_string(&log).unwrap_or_default().trim()
            );
        }
        Ok(ms)
    }

    /// One round: run; create; start; (let /bin/true exit) delete. Returns ms per step.
    fn round(&self, bundle: &str, i: usize) -> Result<[f64; 4]> {
        let id = format!("bench-{}-{}-{i}", std::process::id(), self.name);
        let run = self.timed(&["run", "--bundle", bundle, &format!("{id}-r")])?;
        let create = self.timed(&["create", "--bundle", bundle, &id])?;
        let start = self.timed(&["start", &id])?;
        std::thread::sleep(std::time::Duration::from_millis(20));
        let delete = self.timed(&["delete", "--force", &id])?;
        Ok([run, create, start, delete])
    }
}

/// A busybox bundle running /bin/true, configured by `kiln spec` (runc's default config).
fn make_bundle(dir: &Path, kiln: &Path) -> Result<()> {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("copying /bin/busybox (apt-get install busybox-static)")?;
    for applet in ["true", "sh"] {
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
    }
    let _ = std::fs::remove_file(dir.join("config.json"));
    let st = Command::new(kiln)
        .args(["spec", "--bundle"])
        .arg(dir)
        .status()
        .context("kiln spec")?;
    if !st.success() {
        bail!("kiln spec failed");
    }
    let path = dir.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    c["process"]["args"] = serde_json::json!(["/bin/true"]);
    c["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&path, serde_json::to_vec_pretty(&c)?)?;
    Ok(())
}

fn default_kiln() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("kiln")))
        .unwrap_or_else(|| PathBuf::from("kiln"))
}

/// Runs the scenario.
pub fn run(p: &Params) -> Result<Report> {
    let rounds: usize = p.num("rounds", 30)?;
    let warmup: usize = p.num("warmup", 3)?;
    let kiln = p
        .str("kiln", "")
        .parse::<PathBuf>()
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(default_kiln);
    let crun = PathBuf::from(p.str("crun", "/tmp/kiln-judges/bin/crun-legacy"));
    let work = tempfile_dir()?;
    let bundle = work.join("bundle");
    make_bundle(&bundle, &kiln)?;
    let bundle_s = bundle.to_string_lossy().into_owned();

    let mut rts = vec![
        Rt {
            name: "kiln".into(),
            bin: kiln.clone(),
            root: work.join("root-kiln"),
        },
        Rt {
            name: "runc".into(),
            bin: PathBuf::from("runc"),
            root: work.join("root-runc"),
        },
    ];
    if crun.exists() {
        rts.push(Rt {
            name: "crun".into(),
            bin: crun,
            root: work.join("root-crun"),
        });
    }
    let mut samples = vec![vec![Vec::new(); STEPS.len()]; rts.len()];
    for i in 0..warmup + rounds {
        for (r, rt) in rts.iter().enumerate() {
            let t = rt.round(&bundle_s, i)?;
            if i >= warmup {
                for (s, v) in t.iter().enumerate() {
                    samples[r][s].push(*v);
                }
            }
        }
    }

    let mut report = Report::new("lifecycle");
    report.context.insert(
        "bundle".into(),
        "busybox, /bin/true, kiln spec config".into(),
    );
    report.context.insert("rounds".into(), rounds.to_string());
    report
        .context
        .insert("kiln".into(), kiln.display().to_string());
    let mut medians = vec![[0.0; 4]; rts.len()];
    for (r, rt) in rts.iter().enumerate() {
        for (s, step) in STEPS.iter().enumerate() {
            let mut v = samples[r][s].clone();
            let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let med = median(&mut v);
            medians[r][s] = med;
            report.row(
                format!("{} {step}", rt.name),
                &[("median_ms", med), ("min_ms", min)],
            );
        }
    }
    for (r, rt) in rts.iter().enumerate().skip(1) {
        for (s, step) in STEPS.iter().enumerate() {
            report.summary.insert(
                format!("kiln/{} {step} median ratio", rt.name),
                medians[0][s] / medians[r][s],
            );
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(report)
}

/// A fresh scratch directory under /tmp.
fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("kiln-bench-lifecycle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
