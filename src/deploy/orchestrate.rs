//! `kiln deploy`: the images of one commit become the live environment. Router held, only
//! changed services replaced (old stopped first), volumes attached, network applied
//! incrementally, new containers started, health, deploy hook and post tasks, router switched
//! and released; on failure the previous containers start again and the router releases to them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_builder::config::{ProjectConfig, Service, ServiceKind, APP_ROOT};
use kiln_overlay::{Digest, Store};
use kiln_runtime::Runtime;
use serde::Serialize;

use super::changes::{changes, Changes, Desired};
use super::container::{self, spec, Saved};
use super::env_state::{EnvLock, EnvState, ServiceState, VolumeMount};
use super::error::DeployError;
use super::router::client::RouterClient;
use super::router::{daemon, RouterConfig, DEFAULT_RETRY};
use super::volumes::{self, CgroupFreezer, NoFreezer};
use super::{health, Endpoint};

/// How long a stopping container gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a new container gets to answer on its port.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
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

/// The declared topology of the project.
fn topology(config: &ProjectConfig) -> kiln_netns::Topology {
    let mut t = kiln_netns::Topology {
        services: config.services.keys().cloned().collect(),
        edges: Vec::new(),
    };
    for (name, svc) in &config.services {
        for (rel, r) in &svc.relationships {
            t.edges.push(kiln_netns::Edge {
                from: name.clone(),
                name: rel.clone(),
                to: r.service.clone(),
                endpoint: Some(r.endpoint.clone()),
                port: r.port,
                scheme: r.scheme.clone(),
            });
        }
    }
    t
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
    /// New containers started: (service, id).
    started: Vec<(String, String)>,
}

/// Deploys `req`; returns what changed.
pub fn deploy(store: &Store, req: &DeployRequest) -> Result<DeployReport, DeployError> {
    let begin = Instant::now();
    let root = &req.runtime_root;
    let env = &req.env;
    let _lock = EnvLock::take(root, env)?;
    let current = EnvState::load(root, env)?;
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
    };
    let mut ctl = RouterClient::connect(root, env)?;
    if changes.is_noop() && !fresh {
        state.commit = Some(req.commit.clone());
        state.branch = req.branch.clone();
        state.save(root)?;
        report.total_ms = ms(begin.elapsed());
        return Ok(report);
    }
    let held_at = Instant::now();
    if !fresh {
        ctl.hold(DRAIN)?;
    }
    let runtime = Runtime::new(root);
    let mut progress = Progress {
        stopped: BTreeMap::new(),
        started: Vec::new(),
    };
    let result = swap(
        store,
        req,
        &runtime,
        &wants,
        &changes,
        &mut state,
        &mut progress,
        &mut ctl,
    );
    match result {
        Ok(()) => {
            report.hold_ms = ms(held_at.elapsed());
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
            rollback(req, &runtime, &mut state, &progress, &mut ctl);
            let _ = state.save(root);
            Err(e)
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

/// Steps 3 to 8: stop old, volumes, network, start, health, hooks, switch and release.
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
) -> Result<(), DeployError> {
    let root = &req.runtime_root;
    let env = &req.env;
    // 3. Stop the old containers of changed and removed services.
    for name in changes.replace.iter().chain(&changes.stop) {
        if let Some(old) = state.services.get(name).cloned() {
            if let Some(id) = &old.container_id {
                container::stop(
                    runtime,
                    &container::container_dir(root, env, id),
                    id,
                    STOP_GRACE,
                )?;
            }
            progress.stopped.insert(name.clone(), old);
        }
        state.services.remove(name);
    }
    // Volumes: a new environment with a parent clones the parent's first.
    let mut volume_names = Vec::new();
    for (name, w) in wants {
        for path in w.service.mounts.keys() {
            volume_names.push(volumes::mount_volume_name(name, path));
        }
    }
    if let (Some(parent), true) = (
        &req.parent,
        state.services.is_empty() && progress.stopped.is_empty(),
    ) {
        let have = volumes::list(&store_root(store), env)?;
        let missing: Vec<String> = volume_names
            .iter()
            .filter(|n| !have.contains(n))
            .cloned()
            .collect();
        let parent_cgroups = parent_freezer_cgroups(root, parent)?;
        if parent_cgroups.is_empty() {
            volumes::clone_from(&store_root(store), parent, env, &missing, &mut NoFreezer)?;
        } else {
            volumes::clone_from(
                &store_root(store),
                parent,
                env,
                &missing,
                &mut CgroupFreezer::new(parent_cgroups),
            )?;
        }
    }
    // 4. The network, incrementally.
    let plan = kiln_netns::plan_for(env, &topology(&req.config), kiln_netns::Pool::DEFAULT, root)?;
    kiln_netns::apply(env, &plan, root)?;
    // 5. Start the new containers: image services first (apps' hooks reach them).
    let mut order: Vec<&String> = changes.replace.iter().chain(&changes.start).collect();
    order.sort_by_key(|n| (wants[*n].service.app().is_some(), (*n).clone()));
    let router_url = format!(
        "http://{}/",
        state.router.as_ref().map_or(req.listen, |r| r.listen)
    );
    for name in &order {
        let w = &wants[*name];
        let log = container::ensure_log(root, env, name)?;
        let from = container::file_len(&log);
        let (saved, svc_state) = prepare(store, req, &plan, name, w, &router_url)?;
        let id = saved.id.clone();
        let dir = container::container_dir(root, env, &id);
        progress.started.push(((*name).clone(), id.clone()));
        let process = container::launch(runtime, &dir, &saved)
            .map_err(|e| step_err(req, name, "start", e.to_string(), from))?;
        state.services.insert(
            (*name).clone(),
            ServiceState {
                process: Some(process),
                ..svc_state
            },
        );
    }
    // 6. Health: every port of every new container answers inside its namespace.
    for name in &order {
        let netns = kiln_netns::netns_path(root, env, name);
        for port in ports(wants[*name].service) {
            let ep = Endpoint::in_netns(([127, 0, 0, 1], port).into(), &netns);
            health::wait_port(&ep, HEALTH_TIMEOUT)
                .map_err(|e| step_err(req, name, "health check", e.to_string(), 0))?;
        }
    }
    // 7. Deploy hook, then post-deploy tasks, in each new app container.
    for name in &order {
        let Some(app) = wants[*name].service.app() else {
            continue;
        };
        let id = state.services[*name]
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
            container::run_in(&req.kiln_bin, root, &id, command, app.deploy.timeout_secs)
                .map_err(|m| step_err(req, name, &format!("{step} `{command}`"), m, from))?;
        }
    }
    // 8. Switch and release.
    if let Some((app, port)) = routed(&req.config) {
        let ep = Endpoint::in_netns(
            ([127, 0, 0, 1], port).into(),
            &kiln_netns::netns_path(root, env, &app),
        );
        ctl.switch(&ep)?;
    }
    ctl.release()?;
    Ok(())
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
    for (path, vol) in &mounts {
        let host = volumes::ensure(store.root(), env, vol)?;
        if uid_gid != (0, 0) {
            nix::unistd::chown(&host, Some(uid_gid.0.into()), Some(uid_gid.1.into()))
                .map_err(|e| DeployError::sys("chown", host.display(), e))?;
        }
        vols.push((host.clone(), path.clone()));
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
    };
    let points = spec::mount_points(&c);
    let saved = Saved {
        id: id.clone(),
        service: name.to_string(),
        spec: spec::build(&c)?,
        lowers,
        points,
    };
    let links = plan.relationships(name).map_err(|e| bad(e.to_string()))?;
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
    };
    Ok((saved, record))
}

/// `KILN_ROUTES`: base64 of JSON `{url: {"type": "upstream", "upstream": service}}`.
fn routes_env(url: &str, service: &str) -> String {
    use base64::Engine;
    let json = serde_json::json!({ url: { "type": "upstream", "upstream": service } });
    base64::engine::general_purpose::STANDARD.encode(json.to_string())
}

/// Undoes a failed deploy: new containers go, the previous ones start again with the same
/// volumes, the router switches back and releases.
fn rollback(
    req: &DeployRequest,
    runtime: &Runtime,
    state: &mut EnvState,
    progress: &Progress,
    ctl: &mut RouterClient,
) {
    let root = &req.runtime_root;
    let env = &req.env;
    for (name, id) in &progress.started {
        let _ = container::destroy(
            runtime,
            &container::container_dir(root, env, id),
            id,
            Duration::from_secs(2),
        );
        state.services.remove(name);
    }
    for (name, old) in &progress.stopped {
        let mut back = old.clone();
        if let Some(id) = &old.container_id {
            back.process =
                container::relaunch(runtime, &container::container_dir(root, env, id)).ok();
        }
        state.services.insert(name.clone(), back);
    }
    for (name, svc) in &state.services {
        if !progress.stopped.contains_key(name) {
            continue;
        }
        if let Some(port) = svc.port {
            let ep = Endpoint::in_netns(
                ([127, 0, 0, 1], port).into(),
                &kiln_netns::netns_path(root, env, name),
            );
            let _ = health::wait_port(&ep, HEALTH_TIMEOUT);
        }
    }
    if let Some((app, port)) = state
        .services
        .iter()
        .find_map(|(n, s)| s.port.map(|p| (n.clone(), p)))
    {
        let ep = Endpoint::in_netns(
            ([127, 0, 0, 1], port).into(),
            &kiln_netns::netns_path(root, env, &app),
        );
        let _ = ctl.switch(&ep);
    }
    let _ = ctl.release();
}
