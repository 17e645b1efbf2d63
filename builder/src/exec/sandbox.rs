//! A `Run` step as a container of kiln's runtime: an overlay of the layers so far with a fresh
//! upper dir, the step's commands in `/bin/sh` with their output appended to the build log, a
//! time limit, and nothing left behind (mount, container, cgroup) whatever happens.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_overlay::{mount_overlay, OverlayMount, Upper};
use kiln_runtime::{Container, CreateOptions, Runtime};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{
    get_default_mounts, Capability, LinuxCapabilities, LinuxNamespaceBuilder, LinuxNamespaceType,
    Mount, MountBuilder, RootBuilder, Spec,
};

use super::error::{io_err, StepFailure};
use super::log::StepLog;
use crate::plan::RunStep;

/// Where the step's output goes inside the container (a bind mount of the host log file).
const LOG_IN_CONTAINER: &str = "/dev/kiln-build.log";

/// How often the executor looks at the container and the log.
const POLL: Duration = Duration::from_millis(20);

/// Capabilities of a build step's processes (Docker's default set: enough for package managers).
const CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

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
    let upper = Upper {
        upper: scratch.upper(),
        work: scratch.work(),
    };
    let mount = mount_overlay(&lowers, Some(&upper), &scratch.merged())?;
    let mounts = step_mounts(step.network, log.host_path());
    let created = missing_mount_points(mount.target(), &mounts);
    let spec = step_spec(ctx, step, mount.target(), mounts)?;
    let outcome = run_container(ctx, scratch.path(), &spec, step.timeout_secs, log);
    finish_mount(mount)?;
    outcome?;
    prune_mount_points(&scratch.upper(), &created)?;
    Ok(scratch)
}

/// Unmounts the step's overlay (lazily if it is still busy).
fn finish_mount(mount: OverlayMount) -> Result<(), StepFailure> {
    let target = mount.target().to_path_buf();
    if mount.unmount().is_err() {
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
            StepFailure::Io {
                op: "unmount",
                path: target,
                source: e.into(),
            }
        })?;
    }
    Ok(())
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

/// The step's mounts: the standard ones (no cgroup fs), the log, and the host's resolver config
/// when the step has network.
fn step_mounts(network: bool, log: &Path) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = get_default_mounts()
        .into_iter()
        .filter(|m| m.typ().as_deref() != Some("cgroup"))
        .collect();
    let bind = |source: &Path, dest: &str, ro: bool| {
        let mut options = vec!["rbind".to_string()];
        if ro {
            options.push("ro".to_string());
        }
        MountBuilder::default()
            .destination(dest)
            .typ("bind")
            .source(source)
            .options(options)
            .build()
    };
    mounts.extend(bind(log, LOG_IN_CONTAINER, false).ok());
    let resolv = Path::new("/etc/resolv.conf");
    if network && resolv.exists() {
        mounts.extend(bind(resolv, "/etc/resolv.conf", true).ok());
    }
    mounts
}

/// Mount points outside `/dev` that do not exist in the merged root yet (the runtime creates them
/// in the upper dir), with any missing parents, deepest first.
fn missing_mount_points(root: &Path, mounts: &[Mount]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in mounts {
        let dest = m.destination();
        if dest.starts_with("/dev") {
            continue;
        }
        let rel = dest.strip_prefix("/").unwrap_or(dest);
        let mut p = Some(rel);
        while let Some(r) = p.filter(|r| !r.as_os_str().is_empty()) {
            if root.join(r).symlink_metadata().is_ok() {
                break;
            }
            if !out.contains(&r.to_path_buf()) {
                out.push(r.to_path_buf());
            }
            p = r.parent();
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Removes from the upper dir the mount points the runtime created, if the step left them empty.
fn prune_mount_points(upper: &Path, created: &[PathBuf]) -> Result<(), StepFailure> {
    for rel in created {
        let p = upper.join(rel);
        let Ok(meta) = p.symlink_metadata() else {
            continue;
        };
        let removed = if meta.is_dir() {
            std::fs::remove_dir(&p)
        } else if meta.is_file() && meta.len() == 0 {
            std::fs::remove_file(&p)
        } else {
            Ok(())
        };
        match removed {
            Err(e) if e.raw_os_error() != Some(libc::ENOTEMPTY) => {
                return Err(io_err("remove mount point", &p)(e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The container's config: the step's commands in `/bin/sh`, its env and working dir, its own
/// pid/ipc/uts/mount namespaces and, without network, its own net namespace too.
fn step_spec(
    ctx: &RunContext<'_>,
    step: &RunStep,
    root: &Path,
    mounts: Vec<Mount>,
) -> Result<Spec, StepFailure> {
    let oci = |e: oci_spec::OciSpecError| {
        StepFailure::Runtime(kiln_runtime::Error::Config(e.to_string()))
    };
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        step_script(&step.commands),
    ]));
    process.set_env(Some(ctx.env.clone()));
    process.set_cwd(PathBuf::from(&step.workdir));
    process.set_terminal(Some(false));
    let caps: oci_spec::runtime::Capabilities = CAPS.into_iter().collect();
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    process.set_capabilities(Some(capabilities));
    spec.set_process(Some(process));
    spec.set_hostname(Some("kiln-build".to_string()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(root)
            .readonly(false)
            .build()
            .map_err(oci)?,
    ));
    spec.set_mounts(Some(mounts));
    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if !step.network {
        kinds.push(LinuxNamespaceType::Network);
    }
    let namespaces = kinds
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(oci)?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(None);
    linux.set_cgroups_path(Some(PathBuf::from(format!("kiln-build/{}", ctx.id))));
    spec.set_linux(Some(linux));
    Ok(spec)
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

/// Deletes the container (killing what is left) when dropped.
struct ContainerGuard(Option<Container>);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.kill(libc::SIGKILL, true);
            let _ = c.delete(true);
        }
    }
}

/// Creates, starts and waits for the container, streaming its output into `log`; kills it at the
/// timeout. The container is deleted in every case.
fn run_container(
    ctx: &RunContext<'_>,
    bundle: &Path,
    spec: &Spec,
    timeout_secs: u64,
    log: &mut StepLog<'_>,
) -> Result<(), StepFailure> {
    let created =
        ctx.runtime
            .create_from_spec(&ctx.id, bundle, spec, &CreateOptions::default(), false)?;
    let mut guard = ContainerGuard(Some(created.container));
    let pid = match guard.0.as_mut() {
        Some(c) => {
            c.start()?;
            Pid::from_raw(c.pid())
        }
        None => unreachable!("the guard was just filled"),
    };
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let code = loop {
        log.pump();
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => break Some(128 + sig as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(StepFailure::Runtime(kiln_runtime::Error::Init(format!(
                    "waiting for the step's process {pid}: {e}"
                ))))
            }
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(POLL);
    };
    if let Some(c) = guard.0.as_ref() {
        if code.is_none() {
            let _ = c.kill(libc::SIGKILL, true);
            let _ = waitpid(pid, None);
        }
    }
    log.pump();
    log.finish();
    if let Some(c) = guard.0.take() {
        c.delete(true)?;
    }
    match code {
        None => Err(StepFailure::TimedOut {
            secs: timeout_secs,
            tail: log.tail(),
        }),
        Some(0) => Ok(()),
        Some(code) => Err(StepFailure::Failed {
            command: log.command().to_string(),
            code,
            tail: log.tail(),
        }),
    }
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

    #[test]
    fn missing_mount_points_list_missing_parents_deepest_first() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("proc")).unwrap();
        let mounts = step_mounts(true, Path::new("/dev/null"));
        let missing = missing_mount_points(t.path(), &mounts);
        assert!(!missing
            .iter()
            .any(|p| p.starts_with("proc") || p.starts_with("dev")));
        assert!(missing.contains(&PathBuf::from("sys")));
        if Path::new("/etc/resolv.conf").exists() {
            let file = missing
                .iter()
                .position(|p| p == Path::new("etc/resolv.conf"));
            let dir = missing.iter().position(|p| p == Path::new("etc"));
            assert!(file.is_some() && dir.is_some() && file < dir, "{missing:?}");
        }
    }

    #[test]
    fn prune_removes_only_empty_mount_points() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sys")).unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/resolv.conf"), b"").unwrap();
        std::fs::write(t.path().join("etc/kept"), b"x").unwrap();
        let created = vec![
            PathBuf::from("etc/resolv.conf"),
            PathBuf::from("sys"),
            PathBuf::from("etc"),
        ];
        prune_mount_points(t.path(), &created).unwrap();
        assert!(!t.path().join("sys").exists());
        assert!(!t.path().join("etc/resolv.conf").exists());
        assert!(t.path().join("etc/kept").exists());
    }
}
