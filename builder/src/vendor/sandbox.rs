//! Build-time `run` steps of a recipe: a job of the build sandbox ([`crate::sandbox`], the same
//! container spec as every `kiln build` step) over an overlay of the image's layers, as the
//! step's user, without network, with `/tmp` and `/run` on tmpfs; its changes land in the upper
//! directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use kiln_overlay::Upper;
use kiln_runtime::Runtime;

use super::error::{Result, VendorError};
use super::recipe::RunStep;
use super::setup::Users;
use crate::sandbox::{self, Job, Outcome};

/// Where a run step's overlay lives.
#[derive(Debug)]
pub struct Overlay {
    /// Read-only layers, top first.
    pub lower: Vec<PathBuf>,
    /// Where changes go (becomes the layer).
    pub upper: PathBuf,
    /// overlayfs work dir (same filesystem as upper).
    pub work: PathBuf,
    /// Mount point.
    pub merged: PathBuf,
}

/// Runs `step` in the overlay; its stdout/stderr go to ours. `scratch` is a private folder of
/// the build: the step's container state and bundle live below it.
pub fn run(step: &RunStep, ov: &Overlay, scratch: &Path) -> Result<()> {
    static N: AtomicU32 = AtomicU32::new(0);
    let fail = |reason: String| VendorError::RunStep {
        args: step.args.clone(),
        reason,
    };
    let layers: Vec<&Path> = std::iter::once(ov.upper.as_path())
        .chain(ov.lower.iter().map(|p| p.as_path()))
        .collect();
    let (uid, gid, home) = Users::read(&layers)
        .lookup(&step.user)
        .ok_or_else(|| fail(format!("unknown user {:?}", step.user)))?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    let bundle = scratch.join(format!("run-{n}"));
    std::fs::create_dir_all(&bundle).map_err(super::error::io_err("mkdir", &bundle))?;
    let runtime = Runtime::new(scratch.join("runtime"));
    let job = Job {
        runtime: &runtime,
        id: format!("kiln-vendor-{}-{n}", std::process::id()),
        bundle: &bundle,
        lowers: ov.lower.iter().rev().cloned().collect(),
        upper: Upper {
            upper: ov.upper.clone(),
            work: ov.work.clone(),
        },
        merged: ov.merged.clone(),
        args: step.args.clone(),
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            format!("HOME={home}"),
            "LANG=C.UTF-8".to_string(),
        ],
        cwd: PathBuf::from("/"),
        user: (uid, gid),
        network: false,
        mounts: vec![
            sandbox::tmpfs("/tmp", "1777"),
            sandbox::tmpfs("/run", "755"),
        ],
        timeout: None,
    };
    match sandbox::run(&job, &mut || {}) {
        Ok(Outcome::Exited(0)) => Ok(()),
        Ok(Outcome::Exited(code)) => Err(fail(format!("exited with status {code}"))),
        Ok(Outcome::TimedOut) => Err(fail("timed out".to_string())),
        Err(source) => Err(VendorError::Sandbox {
            args: step.args.clone(),
            source,
        }),
    }
}
