//! `kiln deploy`: the images of one commit become the live environment. Router held, only
//! changed services replaced (old stopped first), volumes attached, network applied
//! incrementally, new containers started, health, deploy hook and post tasks, router switched
//! and released; on failure the previous containers start again and the router releases to them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_builder::config::{Deploy, ProjectConfig, Service, ServiceKind, APP_ROOT};
use kiln_overlay::{Digest, Store};
use kiln_runtime::Runtime;
use serde::Serialize;

use super::changes::{changes, Changes, Desired};
use super::container::{self, spec, Saved};
use super::env_state::{EnvLock, EnvState, HealthCheck, ServiceState, VolumeMount};
use super::error::DeployError;
use super::router::client::RouterClient;
use super::router::{daemon, RouterConfig, DEFAULT_RETRY};
use super::volumes::{self, CgroupFreezer, NoFreezer};
use super::{health, network, Endpoint};

/// How long a stopping container gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest wait for in-flight requests when holding.
const DRAIN: Duration = Duration::from_secs(30);

/// What to deploy where.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// `$KILN_RUNTIME`.
    pub runtime_root: PathBuf,
    /// The kiln binary (the router runs as `kiln router`).
    pub kiln_bin: PathBuf,
    /// The environment.
    pub env: String,
    /// Clone volumes from this environment when `env` is new.
    pub parent: Option<String>,
    /// The project's config at the commit.
    pub config: ProjectConfig,
    /// The commit.
    pub commit: String,
    /// The branch.
    pub branch: Option<String>,
    /// Built app images: service → image reference.
    pub images: BTreeMap<String, String>,
    /// Where a new router listens (port 0: any).
    pub listen: SocketAddr,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// The environment.
    pub env: String,
    /// The commit deployed.
    pub commit: String,
    /// Services kept, replaced, started, stopped.
    pub changes: Changes,
    /// The router's address.
    pub router: SocketAddr,
    /// How long requests were held, in ms (0 when nothing changed).
    pub hold_ms: f64,
    /// Wall time of the deploy, in ms.
    pub total_ms: f64,
    /// The steps and how long each took.
    pub steps: Vec<StepTime>,
}

/// One service as it should run: its image and config.
struct Want<'a> {
    service: &'a Service,
    image: String,
    digest: Digest,
    config_key: String,
}

/// The images and config keys of every service.
fn wants<'a>(
    store: &Store,
    req: &'a DeployRequest,
) -> Result<BTreeMap<String, Want<'a>>, DeployError> {
    let mut out = BTreeMap::new();
    for (name, svc) in &req.config.services {
        let image = match &svc.kind {
            ServiceKind::App(_) => {
                req.images
                    .get(name)
                    .cloned()
                    .ok_or_else(|| DeployError::Config {
                        service: name.clone(),
                        message: "no image was built for this app".into(),
                    })?
            }
            ServiceKind::Image(i) => resolve_image(store, name, &i.image)?,
        };
        let img = store.image(&image).map_err(|source| DeployError::Store {
            what: format!("service {name}: image {image}"),
            source,
        })?;
        let text = serde_json::to_string(svc).map_err(|e| DeployError::Config {
            service: name.clone(),
            message: e.to_string(),
        })?;
        out.insert(
            name.clone(),
            Want {
                service: svc,
                image,
                digest: img.digest,
                config_key: Digest::of(text.as_bytes()).to_string(),
            },
        );
    }
    Ok(out)
}

/// `<name>:latest` or `<name>` for a plain vendor name, the reference itself otherwise.
fn resolve_image(store: &Store, service: &str, name: &str) -> Result<String, DeployError> {
    let candidates = if name.contains(':') || name.contains('@') {
        vec![name.to_string()]
    } else {
        vec![format!("{name}:latest"), name.to_string()]
    };
    candidates
        .iter()
        .find(|c| store.resolve(c).is_ok())
        .cloned()
        .ok_or_else(|| DeployError::Config {
            service: service.to_string(),
            message: format!(
                "image {name:?} is not in the store (tried {}; `kiln vendor build {name}` makes vendor images)",
                candidates.join(", ")
            ),
        })
}

/// The ports a service answers on (app port, endpoints).
fn ports(svc: &Service) -> Vec<u16> {
    let mut p: Vec<u16> = svc.app().and_then(|a| a.port).into_iter().collect();
    p.extend(svc.endpoints.values().map(|e| e.port));
    p.sort_unstable();
    p.dedup();
    p
}

/// The app the router sends requests to: the first app with a port.
fn routed(config: &ProjectConfig) -> Option<(String, u16)> {
    config
        .apps()
        .find_map(|(s, a)| a.port.map(|p| (s.name.clone(), p)))
}

/// What a deploy in progress has done, so a failure can undo it.
struct Progress {
    /// Services whose old container was stopped: name → its previous record.
    stopped: BTreeMap<String, ServiceState>,
    /// New containers created or started: (service, id).
    started: Vec<(String, String)>,
    /// Whether the router was told to hold.
    held: bool,
    /// The network plan with the links of both the old and the new topology, once applied.
    union: Option<kiln_netns::Plan>,
}

/// How long one step of a deploy took.
#[derive(Debug, Clone, Serialize)]
pub struct StepTime {
    /// The step.
    pub step: String,
    /// Whether requests were held during it.
    pub held: bool,
    /// Its duration in ms.
    pub ms: f64,
}

/// Times the steps of a deploy.
struct Clock {
    last: Instant,
    held: bool,
    steps: Vec<StepTime>,
}

impl Clock {
    fn new() -> Self {
        Self {
            last: Instant::now(),
            held: false,
            steps: Vec::new(),
        }
    }

    /// Ends the step `step` now.
    fn lap(&mut self, step: &str) {
        let now = Instant::now();
        self.steps.push(StepTime {
            step: step.to_string(),
            held: self.held,
            ms: ms(now - self.last),
        });
        self.last = now;
    }
}

/// Deploys `req`; returns what changed.
pub fn deploy(store: &Store, req: &DeployRequest) -> Result<DeployReport, DeployError> {
    let begin = Instant::now();
    let root = &req.runtime_root;
    let env = &req.env;
    let _lock = EnvLock::take(root, env)?;
    // Containers a killed deploy left behind: adopted if serving, else removed (they would hold
    // the new containers' ports).
    let current = EnvState::load(root, env)?;
    let mut record = current.clone().unwrap_or_else(|| EnvState::new(env));
    container::settle_orphans(&Runtime::new(root), root, &mut record)?;
    let current = current.map(|_| record);
    let wants = wants(store, req)?;
    let desired: BTreeMap<String, Desired> = wants
        .iter()
        .map(|(n, w)| {
            (
                n.clone(),
                Desired {
                    digest: w.digest.to_string(),
                    config_key: w.config_key.clone(),
                },
            )
        })
        .collect();
    let changes = changes(current.as_ref(), &desired);
    let router_config = RouterConfig {
        env: env.clone(),
        runtime_root: root.clone(),
        listen: req.listen,
        upstream: None,
        held: true,
        retry: DEFAULT_RETRY,
    };
    let (router, fresh) = daemon::ensure(&req.kiln_bin, &router_config)?;
    let mut state = current.clone().unwrap_or_else(|| EnvState::new(env));
    state.project = Some(req.config.project.clone());
    state.router = Some(router.clone());
    let mut report = DeployReport {
        env: env.clone(),
        commit: req.commit.clone(),
        changes: changes.clone(),
        router: router.listen,
        hold_ms: 0.0,
        total_ms: 0.0,
        steps: Vec::new(),
    };
    let mut ctl = RouterClient::connect(root, env)?;
    if fresh {
        // A new router starts held: if this process dies, it lets the requests through.
        ctl.lease()?;
    }
    if changes.is_noop() && !fresh {
        state.commit = Some(req.commit.clone());
        state.branch = req.branch.clone();
        state.save(root)?;
        report.total_ms = ms(begin.elapsed());
        return Ok(report);
    }
    // If this process dies, the router releases the requests it holds for it.
    if !fresh {
        ctl.lease()?;
    }
    let runtime = Runtime::new(root);
    let mut progress = Progress {
        stopped: BTreeMap::new(),
        started: Vec::new(),
        // A new router starts held.
        held: fresh,
        union: None,
    };
    let mut clock = Clock::new();
    clock.held = fresh;
    let mut held_at = fresh.then(Instant::now);
    let result = swap(
        store,
        req,
        &runtime,
        &wants,
        &changes,
        &mut state,
        &mut progress,
        &mut ctl,
        &mut clock,
        &mut held_at,
    );
    report.steps = std::mem::take(&mut clock.steps);
    match result {
        Ok(()) => {
            report.hold_ms = held_at.map_or(0.0, |t| ms(t.elapsed()));
            state.commit = Some(req.commit.clone());
            state.branch = req.branch.clone();
            if current.is_none() {
                state.parent = req.parent.clone();
            }
            state.save(root)?;
            for old in progress.stopped.values() {
                if let Some(id) = &old.container_id {
                    let _ = container::destroy(
                        &runtime,
                        &container::container_dir(root, env, id),
                        id,
                        STOP_GRACE,
                    );
                }
            }
            report.total_ms = ms(begin.elapsed());
            Ok(report)
        }
        Err(e) => {
            let problems = rollback(req, &runtime, &mut state, &progress, &mut ctl);
            let _ = state.save(root);
            if problems.is_empty() {
                Err(e)
            } else {
                Err(DeployError::RollbackIncomplete {
                    cause: Box::new(e),
                    problems,
                })
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A step failure of `service`, with the tail of its log since `from`.
fn step_err(
    req: &DeployRequest,
    service: &str,
    step: &str,
    message: String,
    from: u64,
) -> DeployError {
    let log = container::log_path(&req.runtime_root, &req.env, service);
    DeployError::Step {
        service: service.to_string(),
        step: step.to_string(),
        message,
        tail: container::tail_since(&log, from),
    }
}

/// The deploy settings of a service (an image service has the defaults).
fn deploy_settings(svc: &Service) -> Deploy {
    svc.app().map(|a| a.deploy.clone()).unwrap_or_default()
}

/// Steps 3 to 8. Everything that does not need the old containers gone happens before the
/// router holds: volumes cloned, links added, new containers created (their process not yet
/// run) and new services started. Held: the old containers stop, the new ones run, health,
/// hooks, switch and release.
#[allow(clippy::too_many_arguments)]
fn swap(
    store: &Store,
    req: &DeployRequest,
    runtime: &Runtime,
    wants: &BTreeMap<String, Want<'_>>,
    changes: &Changes,
    state: &mut EnvState,
    progress: &mut Progress,
    ctl: &mut RouterClient,
    clock: &mut Clock,
    held_at: &mut Option<Instant>,
) -> Result<(), DeployError> {
    let root = &req.runtime_root;
    let env = &req.env;
    // Volumes: a new environment with a parent clones the parent's first.
    if let (Some(parent), true) = (&req.parent, state.services.is_empty()) {
        clone_parent_volumes(store, req, wants, parent)?;
        clock.lap("clone volumes");
    }
    // 4. The network: links added now (old and new both linked), removed once the old stop.
    let (union, plan) = network::plans(&req.runtime_root, &req.env, &req.config)?;
    kiln_netns::apply(env, &union, root)?;
    progress.union = Some(union.clone());
    clock.lap("network");
    // 5. Create the new containers; start those of new services at once.
    let router_url = format!(
        "http://{}/",
        state.router.as_ref().map_or(req.listen, |r| r.listen)
    );
    let mut created = BTreeMap::new();
    let ids = super::env_state::id_range(root, state)?;
    for name in changes.replace.iter().chain(&changes.start) {
        let w = &wants[name];
        let log = container::ensure_log(root, env, name)?;
        let from = container::file_len(&log);
        let id_map = (!w.service.security.host_root).then_some(ids);
        let (saved, svc_state) = prepare(store, req, &plan, name, w, &router_url, id_map)?;
        let dir = container::container_dir(root, env, &saved.id);
        progress.started.push((name.clone(), saved.id.clone()));
        let c = container::create(runtime, &dir, &saved)
            .map_err(|e| step_err(req, name, "create", e.to_string(), from))?;
        created.insert(name.clone(), (c, svc_state, from));
    }
    clock.lap("create");
    run_new(req, wants, state, &mut created, &changes.start)?;
    clock.lap("start new services");
    // 3. Hold, then stop the old containers of changed and removed services.
    if !progress.held {
        // The window starts with the hold: requests arriving while in-flight ones drain wait.
        *held_at = Some(Instant::now());
        clock.held = true;
        progress.held = true;
        ctl.hold(DRAIN)?;
        clock.lap("hold (drain)");
    }
    let old: Vec<(String, ServiceState)> = changes
        .replace
        .iter()
        .chain(&changes.stop)
        .filter_map(|n| state.services.remove(n).map(|s| (n.clone(), s)))
        .collect();
    // Recorded first: a stop that fails half-way still leaves them for the rollback.
    progress.stopped.extend(old.iter().cloned());
    stop_all(req, runtime, wants, &old)?;
    if union != plan {
        kiln_netns::apply(env, &plan, root)?;
    }
    clock.lap("stop old");
    run_new(req, wants, state, &mut created, &changes.replace)?;
    clock.lap("start and health");
    // 7. Deploy hook, then post-deploy tasks, in each new app container.
    for name in changes.replace.iter().chain(&changes.start) {
        let Some(app) = wants[name].service.app() else {
            continue;
        };
        let id = state.services[name]
            .container_id
            .clone()
            .unwrap_or_default();
        let log = container::log_path(root, env, name);
        let steps = app
            .deploy
            .hook
            .iter()
            .map(|h| ("deploy hook", h))
            .chain(app.deploy.post.iter().map(|p| ("post-deploy task", p)));
        for (step, command) in steps {
            let from = container::file_len(&log);
            let limit = Duration::from_secs(app.deploy.timeout_secs);
            container::run_in(&req.kiln_bin, root, &id, command, limit)
                .map_err(|m| step_err(req, name, &format!("{step} `{command}`"), m, from))?;
        }
    }
    clock.lap("hooks");
    // 8. Switch and release.
    if let Some((app, port)) = routed(&req.config) {
        let ep = Endpoint::in_netns(
            ([127, 0, 0, 1], port).into(),
            &kiln_netns::netns_path(root, env, &app),
        );
        ctl.switch(&ep)?;
    }
    state.routed = routed(&req.config).map(|(app, _)| app);
    state.network = Some(plan);
    ctl.release()?;
    clock.lap("switch and release");
    Ok(())
}

/// Clones the parent environment's volumes this environment does not have yet, the parent's
/// running containers frozen for the copy.
fn clone_parent_volumes(
    store: &Store,
    req: &DeployRequest,
    wants: &BTreeMap<String, Want<'_>>,
    parent: &str,
) -> Result<(), DeployError> {
    let have = volumes::list(&store_root(store), &req.env)?;
    let missing: Vec<String> = wants
        .iter()
        .flat_map(|(name, w)| {
            w.service
                .mounts
                .keys()
                .map(|path| volumes::mount_volume_name(name, path))
        })
        .filter(|n| !have.contains(n))
        .collect();
    let parent_cgroups = parent_freezer_cgroups(&req.runtime_root, parent)?;
    if parent_cgroups.is_empty() {
        volumes::clone_from(
            &store_root(store),
            parent,
            &req.env,
            &missing,
            &mut NoFreezer,
        )?;
    } else {
        volumes::clone_from(
            &store_root(store),
            parent,
            &req.env,
            &missing,
            &mut CgroupFreezer::new(parent_cgroups),
        )?;
    }
    Ok(())
}

/// Stops the old containers, all at once; each gets its service's stop grace.
fn stop_all(
    req: &DeployRequest,
    runtime: &Runtime,
    wants: &BTreeMap<String, Want<'_>>,
    old: &[(String, ServiceState)],
) -> Result<(), DeployError> {
    let root = &req.runtime_root;
    std::thread::scope(|s| {
        let stops: Vec<_> = old
            .iter()
            .filter_map(|(name, st)| st.container_id.as_ref().map(|id| (name, id)))
            .map(|(name, id)| {
                let grace = wants.get(name).map_or(STOP_GRACE, |w| {
                    Duration::from_secs(deploy_settings(w.service).stop_grace_secs)
                });
                s.spawn(move || {
                    container::stop(
                        runtime,
                        &container::container_dir(root, &req.env, id),
                        id,
                        grace,
                    )
                })
            })
            .collect();
        stops
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DeployError::Config {
                        service: String::new(),
                        message: "a thread stopping an old container panicked".into(),
                    })
                })
            })
            .collect::<Result<Vec<()>, DeployError>>()
            .map(drop)
    })
}

/// Runs the created containers of `names` (image services first, healthy before the apps
/// start: apps may reach them at once) and waits for each to be healthy.
fn run_new(
    req: &DeployRequest,
    wants: &BTreeMap<String, Want<'_>>,
    state: &mut EnvState,
    created: &mut BTreeMap<String, (container::Created, ServiceState, u64)>,
    names: &[String],
) -> Result<(), DeployError> {
    let (images, apps): (Vec<&String>, Vec<&String>) = names
        .iter()
        .partition(|n| wants[*n].service.app().is_none());
    for group in [images, apps] {
        let mut logs_from = Vec::new();
        for name in &group {
            let Some((c, svc_state, from)) = created.remove(*name) else {
                continue;
            };
            logs_from.push((*name, from));
            let process = c
                .start()
                .map_err(|e| step_err(req, name, "start", e.to_string(), from))?;
            state.services.insert(
                (*name).clone(),
                ServiceState {
                    process: Some(process),
                    ..svc_state
                },
            );
        }
        for (name, from) in logs_from {
            healthy(req, name, state, from)?;
        }
    }
    Ok(())
}

/// Waits until service `name`'s new container (its log starting at byte `from`) is healthy.
fn healthy(
    req: &DeployRequest,
    name: &str,
    state: &EnvState,
    from: u64,
) -> Result<(), DeployError> {
    let svc = &state.services[name];
    health::wait(
        &req.kiln_bin,
        &req.runtime_root,
        svc.container_id.as_deref().unwrap_or_default(),
        &kiln_netns::netns_path(&req.runtime_root, &req.env, name),
        &svc.health_check(),
    )
    .map_err(|e| step_err(req, name, "health check", e.to_string(), from))
}

/// The store's root directory.
fn store_root(store: &Store) -> PathBuf {
    store.root().to_path_buf()
}

/// The freezer cgroups of the parent environment's running containers.
fn parent_freezer_cgroups(root: &Path, parent: &str) -> Result<Vec<PathBuf>, DeployError> {
    let Some(p) = EnvState::load(root, parent)? else {
        return Ok(Vec::new());
    };
    Ok(p.services
        .values()
        .filter(|s| s.process.is_some_and(|p| p.alive()))
        .filter_map(|s| s.container_id.as_deref())
        .map(|id| PathBuf::from("/sys/fs/cgroup/freezer").join(cgroup_of(id)))
        .filter(|p| p.exists())
        .collect())
}

/// The cgroup path of container `id`.
pub fn cgroup_of(id: &str) -> String {
    format!("kiln-{id}")
}

/// The container config of service `name`, and its record (without a process yet).
fn prepare(
    store: &Store,
    req: &DeployRequest,
    plan: &kiln_netns::Plan,
    name: &str,
    w: &Want<'_>,
    router_url: &str,
    id_map: Option<super::env_state::IdRange>,
) -> Result<(Saved, ServiceState), DeployError> {
    let root = &req.runtime_root;
    let env = &req.env;
    let store_err = |what: String| move |source| DeployError::Store { what, source };
    let img = store
        .image(&w.image)
        .map_err(store_err(format!("service {name}: image {}", w.image)))?;
    let lowers = store
        .prepare_snapshots(&img)
        .map_err(store_err(format!("service {name}: unpacking {}", w.image)))?;
    let cfg = img.config.config().clone().unwrap_or_default();
    let id = container::new_id(env, name);
    let dir = container::container_dir(root, env, &id);
    std::fs::create_dir_all(&dir).map_err(|e| DeployError::io("creating", &dir, e))?;
    let bad = |m: String| DeployError::Config {
        service: name.to_string(),
        message: m,
    };
    // The image's users, read from its layers (the root is not mounted yet).
    let user = cfg.user().clone().unwrap_or_default();
    let uid_gid = lowers
        .iter()
        .rev()
        .find(|l| l.join("etc/passwd").exists())
        .map_or(Ok((0, 0)), |l| spec::resolve_user(l, name, &user))?;
    let (args, cwd) = match &w.service.kind {
        ServiceKind::App(app) => (
            vec!["/bin/sh".to_string(), "-c".to_string(), app.start.clone()],
            APP_ROOT.to_string(),
        ),
        ServiceKind::Image(_) => {
            let mut a = cfg.entrypoint().clone().unwrap_or_default();
            a.extend(cfg.cmd().clone().unwrap_or_default());
            if a.is_empty() {
                return Err(bad(format!("image {} has no entrypoint or cmd", w.image)));
            }
            (
                a,
                cfg.working_dir()
                    .clone()
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "/".into()),
            )
        }
    };
    // Volumes: the declared mounts, and an image service's working dir (its data).
    let mut mounts: Vec<(String, String)> = w
        .service
        .mounts
        .keys()
        .map(|p| (p.clone(), volumes::mount_volume_name(name, p)))
        .collect();
    if w.service.image().is_some() && cwd != "/" {
        mounts.push((cwd.clone(), volumes::mount_volume_name(name, &cwd)));
    }
    let mut vols = Vec::new();
    let mut records = Vec::new();
    let mut staged = Vec::new();
    for (path, vol) in &mounts {
        // Owned by the container's ids on disk; shifted by an idmapped mount when mapped.
        let host = volumes::ensure(store.root(), env, vol)?;
        if uid_gid != (0, 0) {
            nix::unistd::chown(&host, Some(uid_gid.0.into()), Some(uid_gid.1.into()))
                .map_err(|e| DeployError::sys("chown", host.display(), e))?;
        }
        let source = match id_map {
            Some(_) => {
                let at = container::staged_volume(&dir, staged.len());
                staged.push((host.clone(), at.clone()));
                at
            }
            None => host.clone(),
        };
        vols.push((source, path.clone()));
        records.push(VolumeMount {
            mount: path.clone(),
            volume: vol.clone(),
            path: host,
        });
    }
    // Env: the image's, the service's, then kiln's.
    let rel_env = plan
        .relationships_env(name)
        .map_err(|e| bad(e.to_string()))?;
    let mut env_vars: Vec<String> = cfg.env().clone().unwrap_or_default();
    let mut set = |k: &str, v: &str| {
        env_vars.retain(|kv| kv.split('=').next() != Some(k));
        env_vars.push(format!("{k}={v}"));
    };
    for (k, v) in &w.service.env {
        set(k, v);
    }
    if let Some(port) = w.service.app().and_then(|a| a.port) {
        set("PORT", &port.to_string());
    }
    set("KILN_RELATIONSHIPS", &rel_env);
    set("KILN_ENVIRONMENT", env);
    set("KILN_PROJECT", &req.config.project);
    set("KILN_SERVICE", name);
    set("KILN_GIT_SHA", &req.commit);
    set("KILN_GIT_BRANCH", req.branch.as_deref().unwrap_or(""));
    set("KILN_ROUTES", &routes_env(router_url, name));
    let hosts = dir.join("hosts");
    let hosts_text = plan.hosts(name).map_err(|e| bad(e.to_string()))?;
    std::fs::write(&hosts, hosts_text).map_err(|e| DeployError::io("writing", &hosts, e))?;
    let netns = kiln_netns::netns_path(root, env, name);
    let c = spec::ContainerSpec {
        service: name.to_string(),
        args,
        env: env_vars,
        cwd,
        user: uid_gid,
        rootfs: container::rootfs(&dir),
        netns: netns.clone(),
        hosts,
        log: container::log_path(root, env, name),
        volumes: vols,
        cgroup: cgroup_of(&id),
        hostname: name.to_string(),
        id_map,
    };
    let points = spec::mount_points(&c);
    let saved = Saved {
        id: id.clone(),
        service: name.to_string(),
        spec: spec::build(&c)?,
        lowers,
        points,
        id_map,
        staged,
    };
    let links = plan.relationships(name).map_err(|e| bad(e.to_string()))?;
    let settings = deploy_settings(w.service);
    let record = ServiceState {
        image: w.image.clone(),
        digest: w.digest.to_string(),
        config_key: w.config_key.clone(),
        container_id: Some(id),
        process: None,
        netns: Some(netns),
        port: w.service.app().and_then(|a| a.port),
        links,
        volumes: records,
        health: HealthCheck {
            command: settings.health.clone(),
            ports: ports(w.service),
            timeout_secs: settings.health_timeout_secs,
        },
        id_map,
        host_root: w.service.security.host_root,
    };
    Ok((saved, record))
}

/// `KILN_ROUTES`: base64 of JSON `{url: {"type": "upstream", "upstream": service}}`.
fn routes_env(url: &str, service: &str) -> String {
    use base64::Engine;
    let json = serde_json::json!({ url: { "type": "upstream", "upstream": service } });
    base64::engine::general_purpose::STANDARD.encode(json.to_string())
}

/// Undoes a failed deploy: new containers go, the old links come back, the previous
/// containers start again with the same volumes, and the router is pointed at them and releases
/// the requests it held. Returns what could not be done.
fn rollback(
    req: &DeployRequest,
    runtime: &Runtime,
    state: &mut EnvState,
    progress: &Progress,
    ctl: &mut RouterClient,
) -> Vec<String> {
    let root = &req.runtime_root;
    let env = &req.env;
    let mut problems = Vec::new();
    for (name, id) in &progress.started {
        let dir = container::container_dir(root, env, id);
        if let Err(e) = container::destroy(runtime, &dir, id, Duration::from_secs(2)) {
            problems.push(format!("removing new container {id} of {name}: {e}"));
        }
        state.services.remove(name);
    }
    if let Some(union) = &progress.union {
        // The old containers' namespaces and links, should the new plan have dropped some.
        if let Err(e) = kiln_netns::apply(env, union, root) {
            problems.push(format!("restoring the network: {e}"));
        }
    }
    for (name, old) in &progress.stopped {
        let mut back = old.clone();
        if let Some(id) = &old.container_id {
            let dir = container::container_dir(root, env, id);
            match container::relaunch(runtime, &dir) {
                Ok(p) => back.process = Some(p),
                Err(e) => {
                    back.process = None;
                    problems.push(format!("starting {name} again: {e}"));
                }
            }
        }
        state.services.insert(name.clone(), back);
    }
    for (name, svc) in &state.services {
        if let (true, Some(id)) = (progress.stopped.contains_key(name), &svc.container_id) {
            let netns = kiln_netns::netns_path(root, env, name);
            if let Err(e) = health::wait(&req.kiln_bin, root, id, &netns, &svc.health_check()) {
                problems.push(format!("{name} did not come back healthy: {e}"));
            }
        }
    }
    if progress.held {
        // The upstream may be unset (a router started afresh) or hold dead connections.
        if let Some(up) = state.upstream() {
            if let Err(e) = ctl.switch(&up) {
                problems.push(format!("pointing the router back at {up}: {e}"));
            }
        }
        if let Err(e) = ctl.release() {
            problems.push(format!("releasing held requests: {e}"));
        }
    }
    problems
}
