//! The build plan of a project at a revision: for each app, its cache key and the ordered steps
//! (with their keys and inputs) that the executor runs; for each image service, its image.

mod commands;
mod config_layer;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

pub use config_layer::SERVICE_JSON;

use crate::config::{App, Service, APP_ROOT};
use crate::key::{self, BuildInputs, CacheKey};
use crate::project::{BuildType, LockFile, Project, Revision};
use crate::source::ObjectId;

/// Where base images come from: name (e.g. `python`) → manifest digest (`sha256:…`).
pub trait BaseImages {
    /// The manifest digest of base image `name`, if it exists.
    fn manifest_digest(&self, name: &str) -> Option<String>;
}

impl BaseImages for BTreeMap<String, String> {
    fn manifest_digest(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl<S: BuildHasher> BaseImages for HashMap<String, String, S> {
    fn manifest_digest(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// What can stop a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An app's base image is not known.
    #[error("service `{service}`: unknown base image `{base}`")]
    UnknownBase {
        /// The app.
        service: String,
        /// Its `base`.
        base: String,
    },
    /// An app whose source was not loaded (a [`Project`] not made by `Project::load_*`).
    #[error("service `{service}`: its source tree was not loaded")]
    NoSource {
        /// The app.
        service: String,
    },
}

/// The whole build of one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// Project name.
    pub project: String,
    /// What is built.
    pub revision: Revision,
    /// Apps to build, in name order.
    pub apps: Vec<AppPlan>,
    /// Services that run an image as it is, in name order.
    pub images: Vec<ImageUse>,
}

/// A service that is not built: it runs `image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    /// Service name.
    pub service: String,
    /// Vendor image name or store reference.
    pub image: String,
}

/// The build of one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPlan {
    /// Service name.
    pub service: String,
    /// The whole build's key: a hit reuses the image and runs no step.
    pub key: CacheKey,
    /// The tag the image gets: `<project>/<service>:<commit>`.
    pub tag: String,
    /// Base image name.
    pub base: String,
    /// Base image manifest digest.
    pub base_digest: String,
    /// Source folder.
    pub source: String,
    /// Source folder's tree id.
    pub tree: ObjectId,
    /// Environment of every step that runs: kiln's `KILN_*` variables and the declared env
    /// (the executor lays it over the base image's env, e.g. its `PATH`).
    pub env: BTreeMap<String, String>,
    /// The layers above the base, bottom first; steps with nothing to do are left out.
    pub steps: Vec<Step>,
    /// The frozen image's config.
    pub image: ImageConfig,
}

/// Which layer a step makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepKind {
    /// Global tools (network allowed).
    Dependencies,
    /// The source tree at [`APP_ROOT`].
    Code,
    /// The flavor's install (network allowed), over the lock files only.
    Flavor,
    /// The build hook (no network).
    Hook,
    /// kiln's config files.
    Config,
}

impl StepKind {
    /// The step's name in progress output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Dependencies => "dependencies",
            StepKind::Code => "code",
            StepKind::Flavor => "flavor",
            StepKind::Hook => "hook",
            StepKind::Config => "config",
        }
    }
}

/// One layer of an app's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Which layer.
    pub kind: StepKind,
    /// Its key: a hit reuses the layer.
    pub key: CacheKey,
    /// How to make it.
    pub action: StepAction,
}

/// How a layer is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAction {
    /// Run commands in a container; the diff of its upper dir is the layer.
    Run(RunStep),
    /// Write the files of a git tree at `dest` (see `GitRepo::entries`).
    Tree {
        /// The tree.
        tree: ObjectId,
        /// Where in the image.
        dest: String,
    },
    /// Write these files.
    Files(Vec<PlannedFile>),
}

/// A step that runs commands as a container of kiln's runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// Commands run in order, each must exit 0.
    pub commands: Vec<Vec<String>>,
    /// Working directory.
    pub workdir: String,
    /// Whether the step reaches the network: its own namespace through slirp4netns (never the
    /// host's namespace or loopback); otherwise a namespace with only lo.
    pub network: bool,
    /// Time limit for the whole step, in seconds.
    pub timeout_secs: u64,
    /// The layers of earlier steps mounted under it (over the base image), bottom first.
    pub over: Vec<StepKind>,
    /// Files placed for the step only (their content is not part of the layer unless changed).
    pub inputs: Vec<PlannedFile>,
}

/// A file a step writes or reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Absolute path in the image.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// Content.
    pub data: Vec<u8>,
}

/// The OCI image config of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The start command (`/bin/sh -c <start>`) of the commit that built it; deploy runs the
    /// start command of the commit it deploys.
    pub cmd: Vec<String>,
    /// The service's declared env (not the build env, not `KILN_*`), laid over the base image's.
    pub env: BTreeMap<String, String>,
    /// Working directory: [`APP_ROOT`].
    pub workdir: String,
    /// The app's HTTP port.
    pub exposed_port: Option<u16>,
    /// Labels: project, service, commit, tree, branch, input key.
    pub labels: BTreeMap<String, String>,
}

/// Label keys of kiln's images.
pub mod labels {
    /// The project.
    pub const PROJECT: &str = "dev.kiln.project";
    /// The service.
    pub const SERVICE: &str = "dev.kiln.service";
    /// The commit that built the image.
    pub const COMMIT: &str = "dev.kiln.commit";
    /// The source tree id.
    pub const TREE: &str = "dev.kiln.tree";
    /// The branch that built it, when known.
    pub const BRANCH: &str = "dev.kiln.branch";
    /// The service's cache key.
    pub const KEY: &str = "dev.kiln.key";
}

/// Plans the build of `project`: keys and steps of every app, with base digests from `bases`.
pub fn plan(project: &Project, bases: &dyn BaseImages) -> Result<BuildPlan, PlanError> {
    let mut apps = Vec::new();
    let mut images = Vec::new();
    for service in project.config.services.values() {
        match (service.app(), service.image()) {
            (Some(app), _) => apps.push(plan_app(project, service, app, bases)?),
            (None, Some(image)) => images.push(ImageUse {
                service: service.name.clone(),
                image: image.to_string(),
            }),
            (None, None) => {}
        }
    }
    Ok(BuildPlan {
        project: project.config.project.clone(),
        revision: project.revision.clone(),
        apps,
        images,
    })
}

fn plan_app(
    project: &Project,
    service: &Service,
    app: &App,
    bases: &dyn BaseImages,
) -> Result<AppPlan, PlanError> {
    let base_digest = bases
        .manifest_digest(&app.base)
        .ok_or_else(|| PlanError::UnknownBase {
            service: service.name.clone(),
            base: app.base.clone(),
        })?;
    let source = project
        .sources
        .get(&service.name)
        .ok_or_else(|| PlanError::NoSource {
            service: service.name.clone(),
        })?;
    let (tree, lock_files) = (source.tree, source.lock_files.as_slice());
    let inputs = BuildInputs::of(&project.config.project, service, app);
    let key = key::service_key(&inputs, &base_digest, &tree);
    let keys = key::step_keys(&inputs, &base_digest, &tree, lock_files);
    let steps = app_steps(app, &inputs, &keys, &base_digest, &tree, lock_files, &key);
    let revision = &project.revision;
    let commit = revision.commit.to_string();
    let mut labels = BTreeMap::from([
        (labels::PROJECT.to_string(), project.config.project.clone()),
        (labels::SERVICE.to_string(), service.name.clone()),
        (labels::COMMIT.to_string(), commit.clone()),
        (labels::TREE.to_string(), tree.to_string()),
        (labels::KEY.to_string(), key.to_string()),
    ]);
    if let Some(branch) = &revision.branch {
        labels.insert(labels::BRANCH.to_string(), branch.clone());
    }
    Ok(AppPlan {
        service: service.name.clone(),
        key,
        tag: format!("{}/{}:{commit}", project.config.project, service.name),
        base: app.base.clone(),
        base_digest,
        source: app.source.clone(),
        tree,
        env: step_env(&project.config.project, revision, &inputs),
        steps,
        image: ImageConfig {
            cmd: commands::shell(&app.start),
            env: service.env.clone(),
            workdir: APP_ROOT.to_string(),
            exposed_port: app.port,
            labels,
        },
    })
}

fn app_steps(
    app: &App,
    inputs: &BuildInputs,
    keys: &key::StepKeys,
    base_digest: &str,
    tree: &ObjectId,
    lock_files: &[LockFile],
    service_key: &CacheKey,
) -> Vec<Step> {
    let timeout_secs = app.build.timeout_secs;
    let mut steps = Vec::new();
    let mut below = Vec::new();
    let dependencies = commands::dependency_commands(&app.build.dependencies);
    if !dependencies.is_empty() {
        steps.push(Step {
            kind: StepKind::Dependencies,
            key: keys.dependencies,
            action: StepAction::Run(RunStep {
                commands: dependencies,
                workdir: "/".to_string(),
                network: true,
                timeout_secs,
                over: Vec::new(),
                inputs: Vec::new(),
            }),
        });
        below.push(StepKind::Dependencies);
    }
    let deps_only = below.clone();
    steps.push(Step {
        kind: StepKind::Code,
        key: keys.code,
        action: StepAction::Tree {
            tree: *tree,
            dest: APP_ROOT.to_string(),
        },
    });
    below.push(StepKind::Code);
    if let Some(command) = commands::flavor_command(app.build.flavor, lock_files) {
        let inputs = lock_files
            .iter()
            .map(|lock| PlannedFile {
                path: format!("{APP_ROOT}/{}", lock.path),
                mode: 0o644,
                data: lock.data.clone(),
            })
            .collect();
        steps.push(Step {
            kind: StepKind::Flavor,
            key: keys.flavor,
            action: StepAction::Run(RunStep {
                commands: vec![command],
                workdir: APP_ROOT.to_string(),
                network: true,
                timeout_secs,
                // Keyed by the lock files, not the code: it runs without the code layer.
                over: deps_only,
                inputs,
            }),
        });
        below.push(StepKind::Flavor);
    }
    if let Some(hook) = &app.build.hook {
        steps.push(Step {
            kind: StepKind::Hook,
            key: keys.hook,
            action: StepAction::Run(RunStep {
                commands: vec![commands::shell(hook)],
                workdir: APP_ROOT.to_string(),
                network: false,
                timeout_secs,
                over: below.clone(),
                inputs: Vec::new(),
            }),
        });
    }
    steps.push(Step {
        kind: StepKind::Config,
        key: keys.config,
        action: StepAction::Files(config_layer::config_files(
            inputs,
            service_key,
            base_digest,
            tree,
        )),
    });
    steps
}

/// `KILN_*` variables of the revision plus the declared build env.
fn step_env(project: &str, revision: &Revision, inputs: &BuildInputs) -> BTreeMap<String, String> {
    let mut env = inputs.env.clone();
    env.insert("KILN_PROJECT".to_string(), project.to_string());
    env.insert("KILN_GIT_SHA".to_string(), revision.commit.to_string());
    env.insert(
        "KILN_GIT_BRANCH".to_string(),
        revision.branch.clone().unwrap_or_default(),
    );
    env.insert(
        "KILN_BUILD_TYPE".to_string(),
        revision.build_type.as_str().to_string(),
    );
    if let (BuildType::PullRequest, Some(pr)) = (revision.build_type, &revision.pull_request) {
        env.insert("KILN_PR_BASE_SHA".to_string(), pr.base.to_string());
        env.insert("KILN_PR_HEAD_SHA".to_string(), pr.head.to_string());
        env.insert(
            "KILN_PR_TITLE".to_string(),
            pr.title.clone().unwrap_or_default(),
        );
    }
    env
}
