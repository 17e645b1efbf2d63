//! A `Run` step of a build: the step's commands in `/bin/sh` as a job of the build sandbox
//! ([`crate::sandbox`]) over an overlay of the layers so far with a fresh upper dir, their
//! output appended to the build log, a time limit, and nothing left behind whatever happens.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_overlay::Upper;
use kiln_runtime::Runtime;

use super::error::{io_err, StepFailure};
use super::log::StepLog;
use crate::plan::RunStep;
use crate::sandbox::{self, Job, Outcome};

/// Where the step's output goes inside the container (a bind mount of the host log file).
const LOG_IN_CONTAINER: &str = "/dev/kiln-build.log";

/// How often the progress display is told that the step is still running.
const TICK: Duration = Duration::from_millis(100);

/// A step's scratch space under the store's `tmp/`: merged mount point, upper, work and input dirs.
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Makes the scratch dirs under `tmp`.
    pub(crate) fn new(tmp: &Path) -> Result<Scratch, StepFailure> {
        let dir = tempfile::Builder::new()
            .prefix("build-step-")
            .tempdir_in(tmp)
            .map_err(io_err("create temp dir in", tmp))?;
        let s = Scratch { dir };
        for d in [s.merged(), s.upper(), s.work(), s.inputs()] {
            std::fs::create_dir(&d).map_err(io_err("create directory", &d))?;
            set_mode(&d, 0o755)?;
        }
        Ok(s)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The overlay mount point (the container's root).
    fn merged(&self) -> PathBuf {
        self.path().join("merged")
    }

    /// The upper dir: after the run, the step's changes.
    pub(crate) fn upper(&self) -> PathBuf {
        self.path().join("upper")
    }

    fn work(&self) -> PathBuf {
        self.path().join("work")
    }

    /// Files placed for the step only, as the top lower dir.
    fn inputs(&self) -> PathBuf {
        self.path().join("inputs")
    }
}

/// What a run step needs from the executor.
pub(crate) struct RunContext<'a> {
    /// The runtime whose containers run the step.
    pub runtime: &'a Runtime,
    /// The container id (unique on the host).
    pub id: String,
    /// The env of every process (base image env with the plan's env over it), `K=V`.
    pub env: Vec<String>,
    /// Mounts beyond the build log (the host's CA bundle, when the step gets it).
    pub mounts: Vec<oci_spec::runtime::Mount>,
}

/// Runs `step` over `lowers` (bottom first); returns the scratch whose upper dir holds its changes.
pub(crate) fn run_step(
    ctx: &RunContext<'_>,
    tmp: &Path,
    lowers: &[PathBuf],
    step: &RunStep,
    log: &mut StepLog<'_>,
) -> Result<Scratch, StepFailure> {
    let scratch = Scratch::new(tmp)?;
    let mut lowers = lowers.to_vec();
    if !step.inputs.is_empty() {
        super::layers::write_files(&scratch.inputs(), &step.inputs)?;
        lowers.push(scratch.inputs());
    }
    let job = Job {
        runtime: ctx.runtime,
        id: ctx.id.clone(),
        bundle: scratch.path(),
        lowers,
        upper: Upper {
            upper: scratch.upper(),
            work: scratch.work(),
        },
        merged: scratch.merged(),
        args: vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            step_script(&step.commands),
        ],
        env: ctx.env.clone(),
        cwd: PathBuf::from(&step.workdir),
        user: (0, 0),
        network: step.network,
        mounts: std::iter::once(sandbox::bind(log.host_path(), LOG_IN_CONTAINER, false))
            .chain(ctx.mounts.iter().cloned())
            .collect(),
        timeout: Some(Duration::from_secs(step.timeout_secs)),
    };
    let mut ticked = Instant::now();
    let outcome = sandbox::run(&job, &mut || {
        log.pump();
        if ticked.elapsed() >= TICK {
            log.tick();
            ticked = Instant::now();
        }
    });
    log.pump();
    log.finish();
    match outcome? {
        Outcome::Exited(0) => Ok(scratch),
        Outcome::Exited(code) => Err(StepFailure::Failed {
            command: log.command().to_string(),
            code,
            tail: log.tail(),
        }),
        Outcome::TimedOut => Err(StepFailure::TimedOut {
            secs: step.timeout_secs,
            tail: log.tail(),
        }),
    }
}

/// Creates the folders between `root` and `path`, each 0755 whatever the umask.
pub(crate) fn make_parents(root: &Path, path: &Path) -> Result<(), StepFailure> {
    let mut missing = Vec::new();
    let mut p = path.parent();
    while let Some(dir) = p {
        if dir == root || dir.exists() {
            break;
        }
        missing.push(dir.to_path_buf());
        p = dir.parent();
    }
    for dir in missing.iter().rev() {
        std::fs::create_dir(dir).map_err(io_err("create directory", dir))?;
        set_mode(dir, 0o755)?;
    }
    Ok(())
}

/// chmod.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), StepFailure> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", path))
}

/// The shell script of a step: output to the log, stdin closed, each command in order, stop at
/// the first that fails.
fn step_script(commands: &[Vec<String>]) -> String {
    let mut s = format!("exec >>{LOG_IN_CONTAINER} 2>&1 </dev/null\nset -e\n");
    for argv in commands {
        s.push_str(&shell_words(argv));
        s.push('\n');
    }
    s
}

/// An argv as one shell command line (each word single-quoted).
pub(crate) fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_every_word() {
        let argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            "echo 'a b'".to_string(),
        ];
        assert_eq!(shell_words(&argv), r#"'/bin/sh' '-c' 'echo '\''a b'\'''"#);
    }
}
