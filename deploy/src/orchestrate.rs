//! `kiln deploy`: the images of one commit become the live environment.
//!
//! A [`Deploy`] goes through the steps ARCHITECTURE.md lists, one method each, in that order:
//!
//! 1. [`Deploy::lock`]: take the environment's lock; settle what a killed deploy left.
//! 2. [`Deploy::plan`]: resolve each service's image; which services to keep, replace, start
//!    and stop.
//! 3. [`Deploy::router`]: register with the host ingress (started if none runs; held on a
//!    first deploy); set the environment's routes; lease the hold to this deploy.
//! 4. [`Deploy::clone_volumes`]: a new environment clones its parent's volumes.
//! 5. [`Deploy::add_links`]: the network with the links of both the old and the new topology.
//! 6. [`Deploy::create`]: create the new containers (their process waits to be run).
//! 7. [`Deploy::start_new_services`]: run the containers of new services; health.
//! 8. [`Deploy::hold`]: the router holds requests; in-flight ones drain.
//! 9. [`Deploy::stop_old`]: stop the old containers; links only the old topology had go.
//! 10. [`Deploy::start_replaced`]: run the new containers of changed services; health.
//! 11. [`Deploy::run_hooks`]: deploy hook, then post-deploy tasks, in each new app container.
//! 12. [`Deploy::switch_and_release`]: point the router at the new app and release.
//! 13. [`Deploy::record`]: save the environment's record; remove the old containers.
//!
//! A failure in steps 4 to 12 is undone by [`Deploy::roll_back`]: the new containers go, the
//! old ones start again and the router releases to them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_builder::config::{self, ProjectConfig, Service, ServiceKind, APP_ROOT};
use kiln_overlay::{Digest, Store};
use kiln_runtime::Runtime;
use kiln_util::error::chain;
use serde::Serialize;

use super::build::{build_revision, Revision};
use super::changes::{changes, Changes, Desired};
use super::container::{self, spec, Created, Saved};
use super::env_state::{EnvLock, EnvState, HealthCheck, IdRange, ServiceState, VolumeMount};
use super::error::DeployError;
use super::router::client::RouterClient;
use super::router::routes::{self as ingress_routes, Route};
use super::router::{daemon, RouterConfig, RouterInfo, DEFAULT_RETRY};
use super::volumes::{self, CgroupFreezer, NoFreezer};
use super::{health, network, Endpoint};

/// How long a stopping container gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest wait for in-flight requests when holding.
const DRAIN: Duration = Duration::from_secs(30);

/// What to deploy where: built images, ready to run.
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

/// A commit of a repository to build and deploy into an environment.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// The project's git repository.
    pub repo: PathBuf,
    /// Which revision (default: the branch if given, else HEAD).
    pub revision: Revision,
    /// `$KILN_RUNTIME`.
    pub runtime_root: PathBuf,
    /// The kiln binary (the router runs as `kiln router`, hooks as `kiln exec`).
    pub kiln_bin: PathBuf,
    /// The environment.
    pub env: String,
    /// Clone volumes from this environment when `env` is new.
    pub parent: Option<String>,
    /// Where a new router listens (port 0: any).
    pub listen: SocketAddr,
}

/// Builds the commit `req` names (cache hits cost nothing) and deploys its images into the
/// environment; `progress` sees the build.
pub fn deploy_commit(
    store: &Store,
    req: &CommitRequest,
    progress: &mut dyn kiln_builder::exec::Progress,
) -> Result<DeployReport, DeployError> {
    let (project, build) =
        build_revision(store, &req.runtime_root, &req.repo, &req.revision, progress)?;
    let built = DeployRequest {
        runtime_root: req.runtime_root.clone(),
        kiln_bin: req.kiln_bin.clone(),
        env: req.env.clone(),
        parent: req.parent.clone(),
        config: project.config,
        commit: build.commit.clone(),
        branch: project.revision.branch.clone(),
        images: build
            .services
            .iter()
            .map(|s| (s.service.clone(), s.image.clone()))
            .collect(),
        listen: req.listen,
    };
    deploy(store, &built).map_err(|e| DeployError::Deploying {
        commit: built.commit.clone(),
        env: built.env.clone(),
        source: Box::new(e),
    })
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

/// Deploys `req`: steps 1 to 13; returns what changed.
pub fn deploy(store: &Store, req: &DeployRequest) -> Result<DeployReport, DeployError> {
    let mut d = Deploy::lock(store, req)?;
    d.plan()?;
    d.router()?;
    if d.changes.is_noop() && !d.fresh {
        return d.record_noop();
    }
    match d.swap() {
        Ok(()) => d.record(),
        Err(e) => Err(d.roll_back(e)),
    }
}

/// One service as it should run: its image and config.
struct Want<'a> {
    service: &'a Service,
    image: String,
    digest: Digest,
    config_key: String,
}

/// A deploy in progress: what it has found, made and changed so far (so a failure can undo
/// it). Each method is one step of the list in the module docs.
pub struct Deploy<'a> {
    store: &'a Store,
    req: &'a DeployRequest,
    runtime: Runtime,
    begin: Instant,
    _lock: EnvLock,
    /// Whether the environment had a record before this deploy.
    existed: bool,
    /// The record, as it becomes.
    state: EnvState,
    wants: BTreeMap<String, Want<'a>>,
    changes: Changes,
    router: Option<(RouterInfo, RouterClient)>,
    /// The environment's routes as the ingress expanded them (for `KILN_ROUTES`).
    routes: Vec<Route>,
    /// Whether the router was started by this deploy (it starts held).
    fresh: bool,
    /// The network plan of the new topology, and the union with the old one once applied.
    plan: Option<kiln_netns::Plan>,
    union: Option<kiln_netns::Plan>,
    /// Created containers not yet run: service → (container, record, log offset).
    created: BTreeMap<String, (Created, ServiceState, u64)>,
    /// New containers created or started: (service, id).
    started: Vec<(String, String)>,
    /// Services whose old container was stopped: name → its previous record.
    stopped: BTreeMap<String, ServiceState>,
    /// When the router began holding (for this deploy).
    held_at: Option<Instant>,
    clock: Clock,
}

impl<'a> Deploy<'a> {
    /// 1. Takes the environment's lock and settles the containers a killed deploy left behind:
    ///    adopted if serving, else removed (they would hold the new containers' ports).
    pub fn lock(store: &'a Store, req: &'a DeployRequest) -> Result<Self, DeployError> {
        let begin = Instant::now();
        let root = &req.runtime_root;
        let lock = EnvLock::take(root, &req.env)?;
        let current = EnvState::load(root, &req.env)?;
        let existed = current.is_some();
        let mut state = current.unwrap_or_else(|| EnvState::new(&req.env));
        let runtime = Runtime::new(root);
        container::settle_orphans(&runtime, root, &mut state)?;
        Ok(Self {
            store,
            req,
            runtime,
            begin,
            _lock: lock,
            existed,
            state,
            wants: BTreeMap::new(),
            changes: Changes::default(),
            router: None,
            routes: Vec::new(),
            fresh: false,
            plan: None,
            union: None,
            created: BTreeMap::new(),
            started: Vec::new(),
            stopped: BTreeMap::new(),
            held_at: None,
            clock: Clock::new(),
        })
    }

    /// 2. Resolves every service's image and config key, and compares them with the record.
    pub fn plan(&mut self) -> Result<&Changes, DeployError> {
        self.wants = wants(self.store, self.req)?;
        let desired: BTreeMap<String, Desired> = self
            .wants
            .iter()
            .map(|(n, w)| {
                let d = Desired {
                    digest: w.digest.to_string(),
                    config_key: w.config_key.clone(),
                };
                (n.clone(), d)
            })
            .collect();
        self.changes = changes(self.existed.then_some(&self.state), &desired);
        Ok(&self.changes)
    }

    /// 3. Finds the environment's router or starts one (started held: a first deploy releases
    ///    it once the app is healthy), and leases the hold to this deploy: if this process
    ///    dies, the router lets the requests it holds through.
    pub fn router(&mut self) -> Result<(), DeployError> {
        let (root, env) = (&self.req.runtime_root, &self.req.env);
        let config = RouterConfig {
            env: env.clone(),
            runtime_root: root.clone(),
            listen: self.req.listen,
            upstream: None,
            held: true,
            retry: DEFAULT_RETRY,
        };
        let (info, fresh) = daemon::ensure(&self.req.kiln_bin, &config)?;
        self.state.project = Some(self.req.config.project.clone());
        self.state.router = Some(info.clone());
        let mut ctl = RouterClient::connect(root, env)?;
        if fresh || !self.changes.is_noop() {
            ctl.lease()?;
        }
        self.routes = ctl.routes(&self.req.config.project, &route_specs(&self.req.config))?;
        self.fresh = fresh;
        if fresh {
            self.held_at = Some(Instant::now());
            self.clock.held = true;
        }
        self.router = Some((info, ctl));
        Ok(())
    }

    /// Steps 4 to 12, in order; the first failure stops them (and is rolled back by the caller).
    fn swap(&mut self) -> Result<(), DeployError> {
        // Steps are timed from here: lock, plan and router are the deploy's fixed cost.
        self.clock = Clock {
            held: self.clock.held,
            ..Clock::new()
        };
        self.clone_volumes()?;
        self.add_links()?;
        self.create()?;
        self.start_new_services()?;
        self.hold()?;
        self.stop_old()?;
        self.start_replaced()?;
        self.run_hooks()?;
        self.switch_and_release()
    }

    /// 4. A new environment with a parent clones the parent's volumes it does not have yet,
    ///    the parent's running containers frozen for the copy.
    pub fn clone_volumes(&mut self) -> Result<(), DeployError> {
        let Some(parent) = self.req.parent.as_deref() else {
            return Ok(());
        };
        if !self.state.services.is_empty() {
            return Ok(());
        }
        let store = self.store.root();
        let have = volumes::list(store, &self.req.env)?;
        let missing: Vec<String> = self
            .wants
            .iter()
            .flat_map(|(name, w)| {
                w.service
                    .mounts
                    .keys()
                    .map(|path| volumes::mount_volume_name(name, path))
            })
            .filter(|n| !have.contains(n))
            .collect();
        let cgroups = parent_freezer_cgroups(&self.runtime, parent)?;
        if cgroups.is_empty() {
            volumes::clone_from(store, parent, &self.req.env, &missing, &mut NoFreezer)?;
        } else {
            let mut freezer = CgroupFreezer::new(cgroups);
            volumes::clone_from(store, parent, &self.req.env, &missing, &mut freezer)?;
        }
        self.clock.lap("clone volumes");
        Ok(())
    }

    /// 5. Applies the network with the links of both topologies (old and new containers are
    ///    linked alike); those only the old one had go in step 9.
    pub fn add_links(&mut self) -> Result<(), DeployError> {
        let (root, env) = (&self.req.runtime_root, &self.req.env);
        let (union, plan) = network::plans(root, env, &self.req.config)?;
        kiln_netns::apply(env, &union, root)?;
        self.union = Some(union);
        self.plan = Some(plan);
        self.clock.lap("network");
        Ok(())
    }

    /// 6. Creates the containers of replaced and new services; their process waits at the
    ///    runtime's exec fifo until it is run.
    pub fn create(&mut self) -> Result<(), DeployError> {
        let (root, env) = (&self.req.runtime_root, &self.req.env);
        let plan = self.plan.as_ref().ok_or(DeployError::OutOfOrder {
            step: "create",
            needs: "add_links",
        })?;
        let ids = crate::env_state::id_range(root, &mut self.state)?;
        for name in self.changes.replace.iter().chain(&self.changes.start) {
            let w = &self.wants[name];
            if !w.service.security.host_root {
                reachable_by_mapped_root(name, ids, &[root, self.store.root()])?;
            }
            let log = container::ensure_log(root, env, name)?;
            let from = container::file_len(&log);
            let ctx = SpecContext {
                store: self.store,
                req: self.req,
                plan,
                name,
                want: w,
                routes: &self.routes,
                id_map: (!w.service.security.host_root).then_some(ids),
            };
            let (saved, record) = ctx.prepare()?;
            let dir = container::container_dir(root, env, &saved.id);
            self.started.push((name.clone(), saved.id.clone()));
            let c = container::create(&self.runtime, &dir, &saved)
                .map_err(|e| step_err(self.req, name, "create", chain(&e), from))?;
            self.created.insert(name.clone(), (c, record, from));
        }
        self.clock.lap("create");
        Ok(())
    }

    /// 7. Runs the created containers of new services (nothing old to wait for) and waits
    ///    until they are healthy.
    pub fn start_new_services(&mut self) -> Result<(), DeployError> {
        let names = self.changes.start.clone();
        self.run_created(&names)?;
        self.clock.lap("start new services");
        Ok(())
    }

    /// 8. The router holds: requests arriving from now on wait, in-flight ones drain. A router
    ///    this deploy started is held already.
    pub fn hold(&mut self) -> Result<(), DeployError> {
        if self.held_at.is_some() {
            return Ok(());
        }
        // The window starts with the hold: requests arriving while in-flight ones drain wait.
        self.held_at = Some(Instant::now());
        self.clock.held = true;
        self.ctl()?.hold(DRAIN)?;
        self.clock.lap("hold (drain)");
        Ok(())
    }

    /// 9. Stops the old containers of changed and removed services, all at once, each with its
    ///    service's stop grace; then removes the links only the old topology had.
    pub fn stop_old(&mut self) -> Result<(), DeployError> {
        let old: Vec<(String, ServiceState)> = self
            .changes
            .replace
            .iter()
            .chain(&self.changes.stop)
            .filter_map(|n| self.state.services.remove(n).map(|s| (n.clone(), s)))
            .collect();
        // Recorded first: a stop that fails half-way still leaves them for the rollback.
        self.stopped.extend(old.iter().cloned());
        self.stop_all(&old)?;
        if let (Some(union), Some(plan)) = (&self.union, &self.plan) {
            if union != plan {
                kiln_netns::apply(&self.req.env, plan, &self.req.runtime_root)?;
            }
        }
        self.clock.lap("stop old");
        Ok(())
    }

    /// 10. Runs the new containers of changed services and waits until they are healthy.
    pub fn start_replaced(&mut self) -> Result<(), DeployError> {
        let names = self.changes.replace.clone();
        self.run_created(&names)?;
        self.clock.lap("start and health");
        Ok(())
    }

    /// 11. The deploy hook, then the post-deploy tasks, in each new app container (each run
    ///     killed with what it started after the service's `timeout`).
    pub fn run_hooks(&mut self) -> Result<(), DeployError> {
        let (root, env) = (&self.req.runtime_root, &self.req.env);
        for name in self.changes.replace.iter().chain(&self.changes.start) {
            let Some(app) = self.wants[name].service.app() else {
                continue;
            };
            let id = self.state.services[name]
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
                container::run_in(&self.req.kiln_bin, root, &id, command, limit).map_err(|e| {
                    step_err(
                        self.req,
                        name,
                        &format!("{step} `{command}`"),
                        chain(&e),
                        from,
                    )
                })?;
            }
        }
        self.clock.lap("hooks");
        Ok(())
    }

    /// 12. Points the router at the new app and releases the requests it held.
    pub fn switch_and_release(&mut self) -> Result<(), DeployError> {
        let (root, env) = (&self.req.runtime_root, &self.req.env);
        let routed = routed(&self.req.config);
        for (app, port) in apps_with_ports(&self.req.config) {
            let ep = Endpoint::in_netns(
                ([127, 0, 0, 1], port).into(),
                &kiln_netns::netns_path(root, env, &app),
            );
            if routed.as_ref().is_some_and(|(main, _)| *main == app) {
                self.ctl()?.switch(&ep)?;
            }
            self.ctl()?.switch_app(&ep, Some(&app))?;
        }
        self.state.routed = routed.map(|(app, _)| app);
        self.state.network = self.plan.clone();
        self.ctl()?.release()?;
        self.clock.lap("switch and release");
        Ok(())
    }

    /// 13. Saves the environment's record (commit, branch, parent) and removes the old
    ///     containers; returns the report.
    pub fn record(mut self) -> Result<DeployReport, DeployError> {
        let root = &self.req.runtime_root;
        let hold_ms = self.held_at.map_or(0.0, |t| ms(t.elapsed()));
        self.state.commit = Some(self.req.commit.clone());
        self.state.branch = self.req.branch.clone();
        if !self.existed {
            self.state.parent = self.req.parent.clone();
        }
        self.state.save(root)?;
        for old in self.stopped.values() {
            if let Some(id) = &old.container_id {
                let dir = container::container_dir(root, &self.req.env, id);
                // Best effort: the deploy is done; a leftover is settled by the next one.
                let _ = container::destroy(&self.runtime, &dir, id, STOP_GRACE);
            }
        }
        Ok(self.report(hold_ms))
    }

    /// Step 13 when nothing changed: the record names the commit, nothing else is touched.
    fn record_noop(mut self) -> Result<DeployReport, DeployError> {
        self.state.commit = Some(self.req.commit.clone());
        self.state.branch = self.req.branch.clone();
        self.state.save(&self.req.runtime_root)?;
        Ok(self.report(0.0))
    }

    /// Undoes a failed deploy (`cause`): new containers go, the old links come back, the
    /// previous containers start again with the same volumes, and the router is pointed at
    /// them and releases the requests it held. Returns the error to report.
    pub fn roll_back(mut self, cause: DeployError) -> DeployError {
        let problems = self.undo();
        // Best effort: the record is saved again by the next deploy.
        let _ = self.state.save(&self.req.runtime_root);
        if problems.is_empty() {
            cause
        } else {
            DeployError::RollbackIncomplete {
                cause: Box::new(cause),
                problems,
            }
        }
    }

    /// The rollback's work; returns what could not be done.
    fn undo(&mut self) -> Vec<String> {
        let (root, env) = (&self.req.runtime_root, &self.req.env);
        let mut problems = Vec::new();
        for (name, id) in &self.started {
            let dir = container::container_dir(root, env, id);
            if let Err(e) = container::destroy(&self.runtime, &dir, id, Duration::from_secs(2)) {
                problems.push(format!(
                    "removing new container {id} of {name}: {}",
                    chain(&e)
                ));
            }
            self.state.services.remove(name);
        }
        if let Some(union) = &self.union {
            // The old containers' namespaces and links, should the new plan have dropped some.
            if let Err(e) = kiln_netns::apply(env, union, root) {
                problems.push(format!("restoring the network: {}", chain(&e)));
            }
        }
        for (name, old) in &self.stopped {
            let mut back = old.clone();
            if let Some(id) = &old.container_id {
                let dir = container::container_dir(root, env, id);
                match container::relaunch(&self.runtime, &dir) {
                    Ok(p) => back.process = Some(p),
                    Err(e) => {
                        back.process = None;
                        problems.push(format!("starting {name} again: {}", chain(&e)));
                    }
                }
            }
            self.state.services.insert(name.clone(), back);
        }
        for (name, svc) in &self.state.services {
            if let (true, Some(id)) = (self.stopped.contains_key(name), &svc.container_id) {
                let netns = kiln_netns::netns_path(root, env, name);
                let check = svc.health_check();
                if let Err(e) = health::wait(&self.req.kiln_bin, root, id, &netns, &check) {
                    problems.push(format!("{name} did not come back healthy: {}", chain(&e)));
                }
            }
        }
        if self.held_at.is_some() {
            let upstream = self.state.upstream();
            if let Some((_, ctl)) = self.router.as_mut() {
                // The upstream may be unset (a router started afresh) or hold dead connections.
                if let Some(up) = upstream {
                    if let Err(e) = ctl.switch(&up) {
                        problems.push(format!("pointing the router back at {up}: {}", chain(&e)));
                    }
                }
                if let Err(e) = ctl.release() {
                    problems.push(format!("releasing held requests: {}", chain(&e)));
                }
            }
        }
        problems
    }

    /// The control connection to the router (step 3 made it).
    fn ctl(&mut self) -> Result<&mut RouterClient, DeployError> {
        self.router
            .as_mut()
            .map(|(_, ctl)| ctl)
            .ok_or(DeployError::OutOfOrder {
                step: "router control",
                needs: "router",
            })
    }

    /// The report of a deploy that went through.
    fn report(&mut self, hold_ms: f64) -> DeployReport {
        DeployReport {
            env: self.req.env.clone(),
            commit: self.req.commit.clone(),
            changes: self.changes.clone(),
            router: self
                .router
                .as_ref()
                .map_or(self.req.listen, |(info, _)| info.listen),
            hold_ms,
            total_ms: ms(self.begin.elapsed()),
            steps: std::mem::take(&mut self.clock.steps),
        }
    }

    /// Stops the old containers `old`, all at once; each gets its service's stop grace.
    fn stop_all(&self, old: &[(String, ServiceState)]) -> Result<(), DeployError> {
        let (root, env, runtime) = (&self.req.runtime_root, &self.req.env, &self.runtime);
        std::thread::scope(|s| {
            let stops: Vec<_> = old
                .iter()
                .filter_map(|(name, st)| st.container_id.as_ref().map(|id| (name, id)))
                .map(|(name, id)| {
                    let grace = self.wants.get(name).map_or(STOP_GRACE, |w| {
                        Duration::from_secs(deploy_settings(w.service).stop_grace_secs)
                    });
                    let dir = container::container_dir(root, env, id);
                    s.spawn(move || container::stop(runtime, &dir, id, grace))
                })
                .collect();
            stops
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or(Err(DeployError::Panicked {
                        doing: "stopping an old container",
                    }))
                })
                .collect::<Result<Vec<()>, DeployError>>()
                .map(drop)
        })
    }

    /// Runs the created containers of `names` (image services first, healthy before the apps
    /// start: apps may reach them at once) and waits for each to be healthy.
    fn run_created(&mut self, names: &[String]) -> Result<(), DeployError> {
        let (images, apps): (Vec<&String>, Vec<&String>) = names
            .iter()
            .partition(|n| self.wants[*n].service.app().is_none());
        for group in [images, apps] {
            let mut logs_from = Vec::new();
            for name in group {
                let Some((c, record, from)) = self.created.remove(name) else {
                    continue;
                };
                logs_from.push((name, from));
                let process = c
                    .start()
                    .map_err(|e| step_err(self.req, name, "start", chain(&e), from))?;
                let record = ServiceState {
                    process: Some(process),
                    ..record
                };
                self.state.services.insert(name.clone(), record);
            }
            for (name, from) in logs_from {
                self.healthy(name, from)?;
            }
        }
        Ok(())
    }

    /// Waits until service `name`'s new container (its log starting at byte `from`) is healthy.
    fn healthy(&self, name: &str, from: u64) -> Result<(), DeployError> {
        let (root, env) = (&self.req.runtime_root, &self.req.env);
        let svc = &self.state.services[name];
        health::wait(
            &self.req.kiln_bin,
            root,
            svc.container_id.as_deref().unwrap_or_default(),
            &kiln_netns::netns_path(root, env, name),
            &svc.health_check(),
        )
        .map_err(|e| step_err(self.req, name, "health check", chain(&e), from))
    }
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
    apps_with_ports(config).next()
}

/// Every app with a port (routes may name any of them).
fn apps_with_ports(config: &ProjectConfig) -> impl Iterator<Item = (String, u16)> + '_ {
    config
        .apps()
        .filter_map(|(s, a)| a.port.map(|p| (s.name.clone(), p)))
}

/// The project's `[routes]` as the ingress takes them (none: `http://{default}/` → the main
/// app).
fn route_specs(config: &ProjectConfig) -> Vec<ingress_routes::RouteSpec> {
    config
        .routes
        .iter()
        .map(|(pattern, r)| ingress_routes::RouteSpec {
            pattern: pattern.clone(),
            target: match &r.redirect {
                Some(to) => ingress_routes::Target::Redirect {
                    to: to.clone(),
                    code: r.code.unwrap_or(301),
                },
                None => ingress_routes::Target::Upstream {
                    upstream: r.upstream.clone(),
                },
            },
            primary: r.primary,
        })
        .collect()
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
fn deploy_settings(svc: &Service) -> config::Deploy {
    svc.app().map(|a| a.deploy.clone()).unwrap_or_default()
}

/// The cgroups of the parent environment's running containers, as the runtime records them
/// (containers made before and after the naming scheme alike, nested or not).
fn parent_freezer_cgroups(runtime: &Runtime, parent: &str) -> Result<Vec<String>, DeployError> {
    let Some(p) = EnvState::load(runtime.root(), parent)? else {
        return Ok(Vec::new());
    };
    Ok(p.services
        .values()
        .filter(|s| s.process.is_some_and(|p| p.alive()))
        .filter_map(|s| s.container_id.as_deref())
        .filter_map(|id| runtime.load(id).ok())
        .filter_map(|c| c.persisted().cgroup.clone())
        .collect())
}

/// Checks that a container whose root is the unprivileged host uid of `ids` can walk down to
/// `dirs` (its rootfs, volumes, hosts file and log live below them): the kernel checks search
/// permission on every ancestor with the container's credentials, which have no rights over
/// host-owned directories, so a closed ancestor (a `mktemp -d` dir is 0700) would only show up
/// later as a bare EACCES from inside the container's init.
fn reachable_by_mapped_root(
    service: &str,
    ids: IdRange,
    dirs: &[&Path],
) -> Result<(), DeployError> {
    use std::os::unix::fs::MetadataExt;
    for dir in dirs {
        for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
            let meta = std::fs::metadata(d).map_err(|e| DeployError::io("reading", d, e))?;
            if meta.mode() & 0o001 == 0 {
                return Err(DeployError::Unreachable {
                    service: service.to_string(),
                    host_uid: ids.host,
                    dir: d.to_path_buf(),
                    mode: meta.mode() & 0o7777,
                });
            }
        }
    }
    Ok(())
}

/// Volumes to bind into a container: (host directory, container path).
type Binds = Vec<(PathBuf, String)>;

/// Idmapped volume mounts to stage: (volume directory, staged path).
type Staged = Vec<(PathBuf, PathBuf)>;

/// What the container of one service is made from.
struct SpecContext<'c> {
    store: &'c Store,
    req: &'c DeployRequest,
    plan: &'c kiln_netns::Plan,
    name: &'c str,
    want: &'c Want<'c>,
    routes: &'c [Route],
    /// The environment's id range, unless the service opted out to host root.
    id_map: Option<IdRange>,
}

/// The image's config and unpacked layers.
struct ImageParts {
    config: oci_spec::image::Config,
    lowers: Vec<PathBuf>,
}

impl SpecContext<'_> {
    /// The container config of the service, and its record (without a process yet).
    fn prepare(&self) -> Result<(Saved, ServiceState), DeployError> {
        let (root, env, name) = (&self.req.runtime_root, &self.req.env, self.name);
        let image = self.image()?;
        let id = container::new_id(env, name);
        let dir = container::container_dir(root, env, &id);
        std::fs::create_dir_all(&dir).map_err(|e| DeployError::io("creating", &dir, e))?;
        let user = self.user(&image)?;
        let (args, cwd) = self.process(&image.config)?;
        let (volumes, records, staged) = self.volumes(&dir, &cwd, user)?;
        let hosts = dir.join("hosts");
        let hosts_text = self.plan.hosts(name).map_err(|e| self.bad(e))?;
        std::fs::write(&hosts, hosts_text).map_err(|e| DeployError::io("writing", &hosts, e))?;
        let netns = kiln_netns::netns_path(root, env, name);
        let c = spec::ContainerSpec {
            service: name.to_string(),
            args,
            env: self.environment(&image.config)?,
            cwd,
            user,
            rootfs: container::rootfs(&dir),
            netns: netns.clone(),
            hosts,
            log: container::log_path(root, env, name),
            volumes,
            cgroup: kiln_util::cgroup::container_path(&id)
                .to_string_lossy()
                .into_owned(),
            hostname: name.to_string(),
            id_map: self.id_map,
        };
        let points = spec::mount_points(&c);
        let saved = Saved {
            id: id.clone(),
            service: name.to_string(),
            spec: spec::build(&c)?,
            lowers: image.lowers,
            points,
            id_map: self.id_map,
            staged,
        };
        Ok((saved, self.record(id, netns, records)?))
    }

    /// A config error of this service.
    fn bad(&self, e: impl std::fmt::Display) -> DeployError {
        DeployError::Config {
            service: self.name.to_string(),
            message: e.to_string(),
        }
    }

    /// The image's config and its layers, unpacked.
    fn image(&self) -> Result<ImageParts, DeployError> {
        let (name, image) = (self.name, &self.want.image);
        let store_err = |what: String| move |source| DeployError::Store { what, source };
        let img = self
            .store
            .image(image)
            .map_err(store_err(format!("service {name}: image {image}")))?;
        let lowers = self
            .store
            .prepare_snapshots(&img)
            .map_err(store_err(format!("service {name}: unpacking {image}")))?;
        let config = img.config.config().clone().unwrap_or_default();
        Ok(ImageParts { config, lowers })
    }

    /// The uid and gid of the image's user, read from its layers (the root is not mounted yet).
    fn user(&self, image: &ImageParts) -> Result<(u32, u32), DeployError> {
        let user = image.config.user().clone().unwrap_or_default();
        image
            .lowers
            .iter()
            .rev()
            .find(|l| l.join("etc/passwd").exists())
            .map_or(Ok((0, 0)), |l| spec::resolve_user(l, self.name, &user))
    }

    /// The process and its working directory: an app's start command in the app root, an
    /// image's entrypoint and cmd in its working dir.
    fn process(
        &self,
        config: &oci_spec::image::Config,
    ) -> Result<(Vec<String>, String), DeployError> {
        match &self.want.service.kind {
            ServiceKind::App(app) => Ok((
                vec!["/bin/sh".to_string(), "-c".to_string(), app.start.clone()],
                APP_ROOT.to_string(),
            )),
            ServiceKind::Image(_) => {
                let mut a = config.entrypoint().clone().unwrap_or_default();
                a.extend(config.cmd().clone().unwrap_or_default());
                if a.is_empty() {
                    let image = &self.want.image;
                    return Err(self.bad(format!("image {image} has no entrypoint or cmd")));
                }
                let cwd = config
                    .working_dir()
                    .clone()
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "/".into());
                Ok((a, cwd))
            }
        }
    }

    /// The volumes to mount (source, container path), their records and, when the service
    /// has a user namespace, the idmapped mounts to stage (volume dir, staged path): the
    /// declared mounts, and an image service's working dir (its data), owned by the image's
    /// user.
    fn volumes(
        &self,
        dir: &Path,
        cwd: &str,
        (uid, gid): (u32, u32),
    ) -> Result<(Binds, Vec<VolumeMount>, Staged), DeployError> {
        let (service, name) = (self.want.service, self.name);
        let mut mounts: Vec<(String, String)> = service
            .mounts
            .keys()
            .map(|p| (p.clone(), volumes::mount_volume_name(name, p)))
            .collect();
        if service.image().is_some() && cwd != "/" {
            mounts.push((cwd.to_string(), volumes::mount_volume_name(name, cwd)));
        }
        let mut vols = Vec::new();
        let mut records = Vec::new();
        let mut staged = Vec::new();
        for (path, vol) in mounts {
            // Owned by the container's ids on disk; shifted by an idmapped mount when mapped.
            let host = volumes::ensure(self.store.root(), &self.req.env, &vol)?;
            if (uid, gid) != (0, 0) {
                nix::unistd::chown(&host, Some(uid.into()), Some(gid.into()))
                    .map_err(|e| DeployError::sys("chown", host.display(), e))?;
            }
            let source = match self.id_map {
                Some(_) => {
                    let at = container::staged_volume(dir, staged.len());
                    staged.push((host.clone(), at.clone()));
                    at
                }
                None => host.clone(),
            };
            vols.push((source, path.clone()));
            records.push(VolumeMount {
                mount: path,
                volume: vol,
                path: host,
            });
        }
        Ok((vols, records, staged))
    }

    /// The process environment: the image's, the service's, then kiln's.
    fn environment(&self, config: &oci_spec::image::Config) -> Result<Vec<String>, DeployError> {
        let (req, name, service) = (self.req, self.name, self.want.service);
        let rel_env = self.plan.relationships_env(name).map_err(|e| self.bad(e))?;
        let mut vars: Vec<String> = config.env().clone().unwrap_or_default();
        let mut set = |k: &str, v: &str| {
            vars.retain(|kv| kv.split('=').next() != Some(k));
            vars.push(format!("{k}={v}"));
        };
        for (k, v) in &service.env {
            set(k, v);
        }
        if let Some(port) = service.app().and_then(|a| a.port) {
            set("PORT", &port.to_string());
        }
        set("KILN_RELATIONSHIPS", &rel_env);
        set("KILN_ENVIRONMENT", &req.env);
        set("KILN_PROJECT", &req.config.project);
        set("KILN_SERVICE", name);
        set("KILN_GIT_SHA", &req.commit);
        set("KILN_GIT_BRANCH", req.branch.as_deref().unwrap_or(""));
        set("KILN_ROUTES", &ingress_routes::routes_env(self.routes));
        if let Some(primary) = self.routes.iter().find(|r| r.primary) {
            set("KILN_ROUTE", &primary.url);
        }
        Ok(vars)
    }

    /// The service's record for the new container.
    fn record(
        &self,
        id: String,
        netns: PathBuf,
        volumes: Vec<VolumeMount>,
    ) -> Result<ServiceState, DeployError> {
        let (w, name) = (self.want, self.name);
        let links = self.plan.relationships(name).map_err(|e| self.bad(e))?;
        let settings = deploy_settings(w.service);
        Ok(ServiceState {
            image: w.image.clone(),
            digest: w.digest.to_string(),
            config_key: w.config_key.clone(),
            container_id: Some(id),
            process: None,
            netns: Some(netns),
            port: w.service.app().and_then(|a| a.port),
            links,
            volumes,
            health: HealthCheck {
                command: settings.health.clone(),
                ports: ports(w.service),
                timeout_secs: settings.health_timeout_secs,
            },
            id_map: self.id_map,
            host_root: w.service.security.host_root,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_closed_ancestor_is_named_before_any_container_exists() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let closed = tmp.path().join("closed");
        let runtime = closed.join("run");
        std::fs::create_dir_all(&runtime).expect("dirs");
        let ids = IdRange {
            host: 1_000_000,
            size: 65536,
        };
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let err = reachable_by_mapped_root("web", ids, &[&runtime]).expect_err("0700 ancestor");
        let msg = err.to_string();
        assert!(msg.contains(&closed.display().to_string()), "{msg}");
        assert!(
            msg.contains("mode 700") && msg.contains("host uid 1000000"),
            "{msg}"
        );
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        reachable_by_mapped_root("web", ids, &[&runtime]).expect("traversable");
    }
}
