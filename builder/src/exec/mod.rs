//! The build executor: a [`BuildPlan`] becomes one frozen, tagged image per app.
//!
//! Per app: the service key is looked up in the build cache; a hit only tags the cached image
//! for this commit (no container, no layer work). A miss runs the steps, each reusing its layer
//! when its step key is cached: the code layer from git objects, `Run` steps as containers of
//! kiln's runtime over an overlay of the layers so far (the upper dir's diff is the layer), the
//! config layer; then the image is committed and tagged, and the cache entries are written last.
//! A failure leaves nothing tagged and the cache as it was.
//!
//! ```no_run
//! use kiln_builder::{exec::{Builder, Quiet}, plan, project::Project, source::GitRepo};
//! let builder = Builder::new(kiln_overlay::Store::open("/var/lib/kiln")?, "/run/kiln");
//! let repo = GitRepo::open("/srv/shop".as_ref())?;
//! let project = Project::load_at(&repo, "main")?;
//! let plan = plan::plan(&project, &builder.base_digests(&project)?)?;
//! let report = builder.build(&repo, &plan, &mut Quiet)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod layers;
pub mod log;
mod progress;
mod report;
mod sandbox;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use kiln_overlay::{default_config, Digest, Image, Layer, NewImage, Store};
use kiln_runtime::Runtime;
use nix::fcntl::{Flock, FlockArg};

pub use error::{BuildError, StepFailure};
pub use progress::{Progress, Quiet};
pub use report::{BuildReport, CacheOutcome, ServiceReport, StepReport};

use crate::cache::{BuildCache, Entry};
use crate::config::App;
use crate::key::CacheKey;
use crate::plan::{AppPlan, BuildPlan, Step, StepAction, StepKind};
use crate::project::Project;
use crate::sandbox::HostTrust;
use crate::source::GitRepo;
use error::io_err;
use log::{log_path, BuildLog, StepLog};
use sandbox::{run_step, shell_words, RunContext};

/// Runs builds into one store, with one runtime state root for the step containers.
#[derive(Debug, Clone)]
pub struct Builder {
    store: Store,
    runtime: Runtime,
    cache: BuildCache,
    trust: HostTrust,
}

/// An exclusive lock on one service key: concurrent builds of it wait, then find it cached.
struct KeyLock {
    _lock: Flock<File>,
}

impl Builder {
    /// A builder over `store`, running step containers with state under `runtime_root`.
    pub fn new(store: Store, runtime_root: impl Into<PathBuf>) -> Builder {
        Builder {
            cache: BuildCache::of(&store),
            store,
            runtime: Runtime::new(runtime_root),
            trust: HostTrust::detect(),
        }
    }

    /// The same builder passing `trust` (the host's CA bundle and proxy settings) to the steps of
    /// its scope instead of what [`HostTrust::detect`] found for the network steps.
    pub fn with_host_trust(mut self, trust: HostTrust) -> Builder {
        self.trust = trust;
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The manifest digest of every app's base image: `<base>:latest` or `<base>` for a plain
    /// name (vendor images are tagged `<name>:latest`), the reference itself otherwise.
    pub fn base_digests(&self, project: &Project) -> Result<BTreeMap<String, String>, BuildError> {
        let mut out = BTreeMap::new();
        for (service, app) in project.config.apps() {
            if out.contains_key(&app.base) {
                continue;
            }
            let digest = self.base_digest(&service.name, app)?;
            out.insert(app.base.clone(), digest.to_string());
        }
        Ok(out)
    }

    fn base_digest(&self, service: &str, app: &App) -> Result<Digest, BuildError> {
        let base = &app.base;
        let candidates = if base.contains(':') || base.contains('@') {
            vec![base.clone()]
        } else {
            vec![format!("{base}:latest"), base.clone()]
        };
        for c in &candidates {
            if let Ok(desc) = self.store.resolve(c) {
                if let Ok(d) = Digest::from_oci(desc.digest()) {
                    return Ok(d);
                }
            }
        }
        Err(BuildError::UnknownBase {
            service: service.to_string(),
            base: base.clone(),
            tried: candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Builds every app of `plan` (sources read from `repo`), in name order; stops at the first
    /// failure, which names the service and step.
    pub fn build(
        &self,
        repo: &GitRepo,
        plan: &BuildPlan,
        progress: &mut dyn Progress,
    ) -> Result<BuildReport, BuildError> {
        let mut services = Vec::new();
        for app in &plan.apps {
            let started = Instant::now();
            let hit = self.tag_cached(app)?;
            progress.service_started(&app.service, hit.is_some());
            let mut report = match hit {
                Some(report) => report,
                None => self.build_app(repo, plan, app, progress)?,
            };
            report.seconds = started.elapsed().as_secs_f64();
            progress.service_finished(&report);
            services.push(report);
        }
        Ok(BuildReport {
            project: plan.project.clone(),
            commit: plan.revision.commit.to_string(),
            containers: services.iter().map(|s| s.containers).sum(),
            services,
        })
    }

    /// On a cache hit, tags the cached image for this commit and reports it; `None` on a miss.
    fn tag_cached(&self, app: &AppPlan) -> Result<Option<ServiceReport>, BuildError> {
        let Some(digest) = self.cache.get(Entry::Service(app.key)) else {
            return Ok(None);
        };
        let Ok(image) = self.store.image(&digest.to_string()) else {
            return Ok(None);
        };
        let current = self
            .store
            .resolve(&app.tag)
            .ok()
            .and_then(|d| Digest::from_oci(d.digest()).ok());
        if current != Some(image.digest) {
            self.store
                .tag(&app.tag, &image.descriptor())
                .map_err(|e| service_err(app, "tag the cached image", e.into()))?;
        }
        Ok(Some(ServiceReport {
            service: app.service.clone(),
            image: app.tag.clone(),
            digest: image.digest.to_string(),
            key: app.key.to_string(),
            cache: CacheOutcome::Hit,
            steps: Vec::new(),
            containers: 0,
            seconds: 0.0,
        }))
    }

    /// Takes the lock of a service key (waiting for a concurrent build of it).
    fn lock_key(&self, key: &CacheKey) -> Result<KeyLock, StepFailure> {
        let dir = self.store.root().join("build").join("locks");
        std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let path = dir.join(format!("{}.lock", key.hex()));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_err("flock", &path)(errno.into()))?;
        Ok(KeyLock { _lock: lock })
    }

    /// A cache miss: runs (or reuses) every step, commits and tags the image, records the cache.
    fn build_app(
        &self,
        repo: &GitRepo,
        plan: &BuildPlan,
        app: &AppPlan,
        progress: &mut dyn Progress,
    ) -> Result<ServiceReport, BuildError> {
        let _lock = self
            .lock_key(&app.key)
            .map_err(|e| service_err(app, "lock the build", e))?;
        if let Some(report) = self.tag_cached(app)? {
            return Ok(report); // a concurrent build finished it meanwhile
        }
        let _lease = self
            .store
            .lease()
            .map_err(|e| service_err(app, "lease the store", e.into()))?;
        let base = self
            .store
            .image(&app.base_digest)
            .map_err(|e| service_err(app, "read the base image", e.into()))?;
        let commit = plan.revision.commit.to_string();
        let path = log_path(self.store.root(), &plan.project, &app.service, &commit);
        let mut log = BuildLog::create(path).map_err(|e| service_err(app, "open the log", e))?;
        let mut env = EnvList::of(&base);
        env.overlay(&app.env);
        let mut made: Vec<(StepKind, Layer)> = Vec::new();
        let mut pending: Vec<(Entry, Digest)> = Vec::new();
        let mut steps = Vec::new();
        let mut containers = 0;
        for step in &app.steps {
            progress.step_started(&app.service, step.kind.as_str());
            let started = Instant::now();
            let (layer, cache) = match self.cached_layer(&step.key) {
                Some(layer) => (layer, CacheOutcome::Hit),
                None => {
                    let input = StepInput {
                        repo,
                        app,
                        base: &base,
                        below: &made,
                        env: &env,
                    };
                    let layer = self
                        .make_layer(&input, step, &mut log, progress, &mut containers)
                        .map_err(|cause| BuildError::Step {
                            service: app.service.clone(),
                            step: step.kind.as_str(),
                            cause,
                        })?;
                    let holder = self
                        .store
                        .commit_image(&NewImage::new(vec![layer.clone()], default_config()), None)
                        .map_err(|e| step_err(app, step, e.into()))?;
                    pending.push((Entry::Step(step.key), holder.digest));
                    (layer, CacheOutcome::Miss)
                }
            };
            let report = StepReport {
                name: step.kind.as_str(),
                key: step.key.to_string(),
                cache,
                layer: layer.digest.to_string(),
                seconds: started.elapsed().as_secs_f64(),
            };
            progress.step_finished(&app.service, &report);
            steps.push(report);
            made.push((step.kind, layer));
        }
        let image = self
            .freeze(app, &base, &made)
            .map_err(|e| service_err(app, "commit the image", e.into()))?;
        pending.push((Entry::Service(app.key), image.digest));
        for (entry, digest) in &pending {
            self.cache
                .put(*entry, digest)
                .map_err(|e| service_err(app, "record the cache entry", e.into()))?;
        }
        Ok(ServiceReport {
            service: app.service.clone(),
            image: app.tag.clone(),
            digest: image.digest.to_string(),
            key: app.key.to_string(),
            cache: CacheOutcome::Miss,
            steps,
            containers,
            seconds: 0.0,
        })
    }

    /// The layer cached under a step key, if its holder image is intact.
    fn cached_layer(&self, key: &CacheKey) -> Option<Layer> {
        let digest = self.cache.get(Entry::Step(*key))?;
        let image = self.store.image(&digest.to_string()).ok()?;
        let layer = image.layers().ok()?.pop()?;
        self.store.has_blob(&layer.digest).then_some(layer)
    }

    /// Makes one step's layer.
    fn make_layer(
        &self,
        input: &StepInput<'_>,
        step: &Step,
        log: &mut BuildLog,
        progress: &mut dyn Progress,
        containers: &mut u32,
    ) -> Result<Layer, StepFailure> {
        match &step.action {
            StepAction::Tree { tree, dest } => {
                layers::tree_layer(&self.store, input.repo, *tree, dest)
            }
            StepAction::Files(files) => layers::files_layer(&self.store, files),
            StepAction::Run(run) => {
                let mut under = NewImage::on_top_of(input.base)?;
                for kind in &run.over {
                    if let Some((_, l)) = input.below.iter().find(|(k, _)| k == kind) {
                        under.push_layer(l.clone(), kind.as_str());
                    }
                }
                let under = self.store.commit_image(&under, None)?;
                let lowers = self.store.prepare_snapshots(&under)?;
                let command = run
                    .commands
                    .iter()
                    .map(|c| shell_words(c))
                    .collect::<Vec<_>>()
                    .join(" && ");
                let mut step_log = StepLog::start(
                    log,
                    progress,
                    &input.app.service,
                    step.kind.as_str(),
                    command,
                )?;
                let mut env = input.env.clone();
                let mut mounts = Vec::new();
                if self.trust.applies(run.network) {
                    env.overlay(&self.trust.env());
                    mounts.extend(self.trust.mount());
                }
                let ctx = RunContext {
                    runtime: &self.runtime,
                    id: container_id(&input.app.service, step.kind),
                    env: env.to_list(),
                    mounts,
                };
                *containers += 1;
                let scratch = run_step(&ctx, &self.store.tmp_dir(), &lowers, run, &mut step_log)?;
                Ok(self.store.write_layer(
                    kiln_overlay::LayerSource::OverlayUpper(&scratch.upper()),
                    &kiln_overlay::LayerOptions::default(),
                )?)
            }
        }
    }

    /// Commits the image (base layers, then the steps' in order) with the app's config and tag.
    fn freeze(
        &self,
        app: &AppPlan,
        base: &Image,
        made: &[(StepKind, Layer)],
    ) -> kiln_overlay::Result<Image> {
        let mut img = NewImage::on_top_of(base)?;
        for (kind, layer) in made {
            img.push_layer(layer.clone(), &format!("kiln build: {}", kind.as_str()));
        }
        let cfg = &mut img.config;
        let mut env = EnvList(cfg.env().clone().unwrap_or_default());
        env.overlay(&app.image.env);
        cfg.set_env(Some(env.to_list()));
        cfg.set_entrypoint(None);
        cfg.set_cmd(Some(app.image.cmd.clone()));
        cfg.set_working_dir(Some(app.image.workdir.clone()));
        cfg.set_exposed_ports(app.image.exposed_port.map(|p| vec![format!("{p}/tcp")]));
        let mut labels = cfg.labels().clone().unwrap_or_default();
        labels.extend(app.image.labels.clone());
        cfg.set_labels(Some(labels));
        self.store.commit_image(&img, Some(&app.tag))
    }
}

/// What a step that is not cached is made from.
struct StepInput<'a> {
    repo: &'a GitRepo,
    app: &'a AppPlan,
    base: &'a Image,
    below: &'a [(StepKind, Layer)],
    env: &'a EnvList,
}

/// An environment as `K=V` entries in order, a later value replacing an earlier one.
#[derive(Clone)]
struct EnvList(Vec<String>);

impl EnvList {
    /// The base image's env (or a standard PATH).
    fn of(base: &Image) -> EnvList {
        let env = base
            .config
            .config()
            .as_ref()
            .and_then(|c| c.env().clone())
            .unwrap_or_else(|| vec![kiln_overlay::DEFAULT_PATH.to_string()]);
        EnvList(env)
    }

    /// Sets every variable of `vars`, replacing existing ones in place.
    fn overlay(&mut self, vars: &BTreeMap<String, String>) {
        for (k, v) in vars {
            let entry = format!("{k}={v}");
            let prefix = format!("{k}=");
            match self.0.iter_mut().find(|e| e.starts_with(&prefix)) {
                Some(e) => *e = entry,
                None => self.0.push(entry),
            }
        }
    }

    fn to_list(&self) -> Vec<String> {
        self.0.clone()
    }
}

/// A container id unique on the host: process id, a counter, the service and the step.
fn container_id(service: &str, kind: StepKind) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "kiln-build-{}-{}-{service}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        kind.as_str()
    )
}

fn service_err(app: &AppPlan, what: &'static str, cause: StepFailure) -> BuildError {
    BuildError::Service {
        service: app.service.clone(),
        what,
        cause,
    }
}

fn step_err(app: &AppPlan, step: &Step, cause: StepFailure) -> BuildError {
    BuildError::Step {
        service: app.service.clone(),
        step: step.kind.as_str(),
        cause,
    }
}
