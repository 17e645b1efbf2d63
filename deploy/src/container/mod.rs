//! A service's container in an environment: its directory (saved config, root mount point,
//! mount-point layer), launching it detached from a read-only overlay of its image, stopping
//! it (SIGTERM, grace, SIGKILL) and running hooks in it.
//!
//! A container with a user namespace sees its image and volumes through idmapped mounts (see
//! `kiln_overlay::idmap`): on disk they keep the container's ids, the mounts shift them into
//! the environment's host range. They are attached only while the container is created (the
//! overlay and the container's binds keep their own references), so none stays on the host.

pub mod spec;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_overlay::idmap::{IdmappedMount, UserNs};
use kiln_runtime::{CreateOptions, Runtime, Spec};
use kiln_util::wait::{self, Deadline};
use serde::{Deserialize, Serialize};

use super::atomic;
use super::error::{DeployError, ExecError};
use super::layout;
use super::process::ProcessRef;

/// How many lines of output a failure shows.
const TAIL_LINES: usize = 20;

/// How often a wait for a container's process (or a `kiln exec`) looks again.
const POLL: Duration = Duration::from_millis(5);

/// What kiln keeps of a container so it can start it again (env start, rollback).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    /// The container id.
    pub id: String,
    /// The service.
    pub service: String,
    /// The OCI config.
    pub spec: Spec,
    /// The image's snapshots, bottom first.
    pub lowers: Vec<PathBuf>,
    /// Mount points to provide on top of the image (paths in the container).
    pub points: Vec<String>,
    /// The user namespace's mapping (None: host root).
    #[serde(default)]
    pub id_map: Option<super::env_state::IdRange>,
    /// Volumes seen through idmapped mounts: (host dir, where its idmapped mount is staged;
    /// the spec binds the staged path).
    #[serde(default)]
    pub staged: Vec<(PathBuf, PathBuf)>,
}

/// Where volume `index` of the container in `dir` is staged (idmapped) for its bind.
pub fn staged_volume(dir: &Path, index: usize) -> PathBuf {
    dir.join("idmapped").join(format!("v{index}"))
}

/// Where lower `index` of the container in `dir` is attached idmapped for its overlay.
fn mapped_lower(dir: &Path, index: usize) -> PathBuf {
    dir.join("idmapped").join(format!("l{index}"))
}

/// Attaches `source` idmapped at `target` (created).
fn idmapped(ns: &UserNs, source: &Path, target: &Path) -> Result<IdmappedMount, DeployError> {
    std::fs::create_dir_all(target).map_err(|e| DeployError::io("creating", target, e))?;
    ns.mount(source, target)
        .map_err(|source| DeployError::Store {
            what: format!("idmapping {}", target.display()),
            source,
        })
}

/// `$KILN_RUNTIME/envs/<env>/containers`.
pub fn containers_dir(runtime_root: &Path, env: &str) -> PathBuf {
    layout::env_dir(runtime_root, env).join("containers")
}

/// The directory of container `id` of `env`.
pub fn container_dir(runtime_root: &Path, env: &str, id: &str) -> PathBuf {
    containers_dir(runtime_root, env).join(id)
}

/// The log of `service` in `env` (every container of the service appends to it).
pub fn log_path(runtime_root: &Path, env: &str, service: &str) -> PathBuf {
    layout::env_dir(runtime_root, env)
        .join("logs")
        .join(format!("{service}.log"))
}

/// A fresh container id for `service` of `env`.
pub fn new_id(env: &str, service: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{env}.{service}.{:x}", nanos & 0xffff_ffff_ffff)
}

/// The root mount point of a container dir.
pub fn rootfs(dir: &Path) -> PathBuf {
    dir.join("rootfs")
}

fn saved_path(dir: &Path) -> PathBuf {
    dir.join("container.json")
}

/// Creates (mode 0666, so any container user may append) the log file of `service`.
pub fn ensure_log(runtime_root: &Path, env: &str, service: &str) -> Result<PathBuf, DeployError> {
    use std::os::unix::fs::PermissionsExt;
    let path = log_path(runtime_root, env, service);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DeployError::io("creating", dir, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| DeployError::io("creating log", &path, e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| DeployError::io("chmod", &path, e))?;
    Ok(path)
}

/// Mounts the container's root: the image's snapshots plus a layer of mount points, read-only;
/// through idmapped mounts of `ns` when given.
pub fn mount_root(dir: &Path, saved: &Saved, ns: Option<&UserNs>) -> Result<PathBuf, DeployError> {
    let points = dir.join("points");
    for p in &saved.points {
        let d = points.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(&d).map_err(|e| DeployError::io("creating", &d, e))?;
    }
    let etc = points.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| DeployError::io("creating", &etc, e))?;
    let hosts = etc.join("hosts");
    std::fs::write(&hosts, b"").map_err(|e| DeployError::io("writing", &hosts, e))?;
    let mut lowers = saved.lowers.clone();
    lowers.push(points);
    // Detached once the overlay holds its own clones of them.
    let mut mapped = Vec::new();
    if let Some(ns) = ns {
        for (i, lower) in lowers.iter_mut().enumerate() {
            mapped.push(idmapped(ns, lower, &mapped_lower(dir, i))?);
            *lower = mapped_lower(dir, i);
        }
    }
    let target = rootfs(dir);
    std::fs::create_dir_all(&target).map_err(|e| DeployError::io("creating", &target, e))?;
    let mount = kiln_overlay::mount_overlay(&lowers, None, &target).map_err(|source| {
        DeployError::Store {
            what: format!("mounting the root of {}", saved.id),
            source,
        }
    })?;
    Ok(mount.keep())
}

/// Unmounts a container's root if it is mounted (lazily when busy).
pub fn unmount_root(dir: &Path) {
    let target = rootfs(dir);
    if kiln_overlay::unmount(&target).is_err() {
        // Best effort: not mounted, or busy (then detached, gone once unused).
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A container created (namespaces, root and mounts set up, its process not yet run).
#[derive(Debug)]
pub struct Created {
    container: kiln_runtime::Container,
    dir: PathBuf,
    service: String,
}

impl Created {
    /// The container's id.
    pub fn id(&self) -> &str {
        self.container.id()
    }

    /// Runs the container's process; it runs detached (its output goes to its log file).
    /// Returns its init process. On failure the container is deleted and its root unmounted.
    pub fn start(mut self) -> Result<ProcessRef, DeployError> {
        let id = self.container.id().to_string();
        if let Err(source) = self.container.start() {
            let _ = self.container.delete(true);
            unmount_root(&self.dir);
            return Err(DeployError::Runtime {
                container: id,
                source,
            });
        }
        let pid = self.container.pid();
        u32::try_from(pid)
            .ok()
            .and_then(ProcessRef::of)
            .ok_or_else(|| DeployError::Config {
                service: self.service.clone(),
                message: format!("container {id} exited at once (pid {pid})"),
            })
    }
}

/// Saves the container's record in `dir`, mounts its root and creates it (see [`Created`]).
pub fn create(runtime: &Runtime, dir: &Path, saved: &Saved) -> Result<Created, DeployError> {
    std::fs::create_dir_all(dir).map_err(|e| DeployError::io("creating", dir, e))?;
    atomic::write_json(&saved_path(dir), saved)?;
    create_saved(runtime, dir)
}

/// Creates the container saved in `dir` again (its root mounted anew).
fn create_saved(runtime: &Runtime, dir: &Path) -> Result<Created, DeployError> {
    let saved = load(dir)?;
    // The bundle's config.json: exec reads the container's process from it.
    atomic::write_json(&dir.join("config.json"), &saved.spec)?;
    let ns = saved
        .id_map
        .map(UserNs::new)
        .transpose()
        .map_err(|source| DeployError::Store {
            what: format!("the user namespace of {}", saved.id),
            source,
        })?;
    mount_root(dir, &saved, ns.as_ref())?;
    // The volumes' idmapped mounts, bound by the runtime into the container's mount namespace;
    // detached from the host's when this returns.
    let mut staged = Vec::new();
    if let Some(ns) = &ns {
        for (host, at) in &saved.staged {
            match idmapped(ns, host, at) {
                Ok(m) => staged.push(m),
                Err(e) => {
                    unmount_root(dir);
                    return Err(e);
                }
            }
        }
    }
    match runtime.create_from_spec(
        &saved.id,
        dir,
        &saved.spec,
        &CreateOptions::default(),
        false,
    ) {
        Ok(created) => Ok(Created {
            container: created.container,
            dir: dir.to_path_buf(),
            service: saved.service,
        }),
        Err(source) => {
            unmount_root(dir);
            Err(DeployError::Runtime {
                container: saved.id,
                source,
            })
        }
    }
}

/// Starts the container saved in `dir` again (env start, rollback).
pub fn relaunch(runtime: &Runtime, dir: &Path) -> Result<ProcessRef, DeployError> {
    create_saved(runtime, dir)?.start()
}

/// The record saved in `dir`.
pub fn load(dir: &Path) -> Result<Saved, DeployError> {
    let path = saved_path(dir);
    atomic::read_json(&path)?.ok_or_else(|| DeployError::State {
        path,
        message: "no container record".into(),
    })
}

/// Stops container `id` (SIGTERM to its init, `grace` to exit, then SIGKILL to all its
/// processes), deletes it from the runtime and unmounts its root; keeps its directory.
pub fn stop(runtime: &Runtime, dir: &Path, id: &str, grace: Duration) -> Result<(), DeployError> {
    if let Ok(c) = runtime.load(id) {
        // A created container's init waits at the exec fifo and ignores SIGTERM: no grace.
        let running = c.status() != kiln_runtime::Status::Created;
        if let Some(p) = u32::try_from(c.pid())
            .ok()
            .and_then(ProcessRef::of)
            .filter(|_| running)
        {
            let _ = c.kill(libc::SIGTERM, false);
            // A child of ours (started by this process) must be reaped to look gone.
            reap(c.pid(), grace);
            p.wait_gone(Duration::from_millis(1));
        }
        let _ = c.kill(libc::SIGKILL, true);
        reap(c.pid(), Duration::from_secs(2));
        c.delete(true).map_err(|source| DeployError::Runtime {
            container: id.to_string(),
            source,
        })?;
    }
    unmount_root(dir);
    Ok(())
}

/// Waits up to `timeout` for `pid` to end, reaping it when it is our child.
fn reap(pid: i32, timeout: Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let p = nix::unistd::Pid::from_raw(pid);
    wait::until(Deadline::after(timeout), POLL, || {
        match waitpid(p, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(_) => true,
            // Not our child: watch /proc instead.
            Err(_) => u32::try_from(pid)
                .ok()
                .and_then(ProcessRef::of)
                .is_none_or(|r| !r.alive()),
        }
    });
}

/// Stops the container and removes its directory.
pub fn destroy(
    runtime: &Runtime,
    dir: &Path,
    id: &str,
    grace: Duration,
) -> Result<(), DeployError> {
    stop(runtime, dir, id, grace)?;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(DeployError::io("removing", dir, e))
        }
        _ => Ok(()),
    }
}

/// The ids of every container directory of `env`.
pub fn ids(runtime_root: &Path, env: &str) -> Vec<String> {
    match std::fs::read_dir(containers_dir(runtime_root, env)) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Settles the containers of the environment's directory that its record does not name
/// (those a killed deploy created or started): a running one of a service whose recorded
/// container is dead is adopted — it may be serving requests; its record's digest is cleared so
/// the next deploy replaces it in a hold — and every other one is destroyed.
pub fn settle_orphans(
    runtime: &Runtime,
    runtime_root: &Path,
    record: &mut super::env_state::EnvState,
) -> Result<(), DeployError> {
    let dir = containers_dir(runtime_root, &record.env);
    let known = |r: &super::env_state::EnvState, id: &str| {
        r.services
            .values()
            .any(|s| s.container_id.as_deref() == Some(id))
    };
    let mut orphans: Vec<String> = ids(runtime_root, &record.env);
    orphans.retain(|id| !known(record, id));
    // Newest first (ids end with a hex timestamp of the same width).
    orphans.sort_by(|a, b| b.rsplit('.').next().cmp(&a.rsplit('.').next()));
    let mut dead = Vec::new();
    for id in &orphans {
        let process = runtime
            .load(id)
            .ok()
            .filter(|c| c.status() == kiln_runtime::Status::Running)
            .and_then(|c| u32::try_from(c.pid()).ok())
            .and_then(ProcessRef::of);
        let service = load(&dir.join(id)).ok().map(|s| s.service);
        let svc = service.and_then(|s| record.services.get_mut(&s));
        match (process, svc) {
            (Some(p), Some(svc)) if !svc.process.is_some_and(|q| q.alive()) => {
                tracing::warn!(
                    "adopting container {id} of {}, left by a killed deploy",
                    record.env
                );
                dead.extend(svc.container_id.replace(id.clone()));
                svc.process = Some(p);
                svc.digest.clear();
            }
            _ => dead.push(id.clone()),
        }
    }
    for id in dead {
        tracing::warn!(
            "container {id} of {} is not in use: destroying it",
            record.env
        );
        destroy(runtime, &dir.join(&id), &id, Duration::from_secs(2))?;
    }
    Ok(())
}

/// The last lines of `log` written after byte `from`.
pub fn tail_since(log: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_string(&mut text);
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The current length of a file (0 when missing).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Runs `command` (through /bin/sh) in container `id`, its output appended to the container's
/// log; after `timeout` the command and every process it started are killed.
pub fn run_in(
    kiln_bin: &Path,
    runtime_root: &Path,
    id: &str,
    command: &str,
    timeout: Duration,
) -> Result<(), ExecError> {
    let dir = tempfile::tempdir().map_err(ExecError::TempDir)?;
    let pid_file = dir.path().join("pid");
    let script = format!(
        "exec >>{log} 2>&1 </dev/null; exec /bin/sh -c \"$0\"",
        log = spec::LOG_IN_CONTAINER
    );
    let mut child = std::process::Command::new(kiln_bin)
        .arg("--root")
        .arg(runtime_root)
        .arg("exec")
        .arg("--pid-file")
        .arg(&pid_file)
        .args([id, "/bin/sh", "-c", &script, command])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| ExecError::Spawn {
            bin: kiln_bin.to_path_buf(),
            source,
        })?;
    let exited = wait::poll(Deadline::after(timeout), POLL, || {
        child.try_wait().transpose()
    });
    let status = match exited {
        Some(status) => status.map_err(ExecError::Wait)?,
        None => {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            {
                crate::process::kill_tree(pid);
            }
            // No pid yet: the exec itself hangs; it goes with the kiln exec process.
            let _ = child.kill();
            let _ = child.wait();
            return Err(ExecError::TimedOut { after: timeout });
        }
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(ExecError::Exited {
            code,
            stderr: err.trim().to_string(),
        }),
        None => Err(ExecError::Signaled),
    }
}
