//! Cache keys: what a build (and each build step) can see, hashed canonically.
//!
//! A service's key covers exactly the build's inputs: the builder format version, the base
//! image's manifest digest, the service's build-relevant configuration and its source tree id.
//! Start command, relationships, mounts, endpoints and deploy hooks are not in it: changing them
//! needs a redeploy, not a rebuild.

mod canonical;

use std::collections::BTreeMap;

pub use canonical::{CacheKey, KeyHasher};

use crate::config::{App, Service};
use crate::project::LockFile;
use crate::source::ObjectId;

/// Version of the build format: bump it when the same inputs would now build different layers.
pub const BUILDER_FORMAT_VERSION: u32 = 1;

/// The build-relevant configuration of one app, in the form its keys hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildInputs {
    /// Project name (`KILN_PROJECT`).
    pub project: String,
    /// Service name.
    pub service: String,
    /// Base image name.
    pub base: String,
    /// Source folder.
    pub source: String,
    /// Build flavor.
    pub flavor: String,
    /// Global dependencies: manager → packages, in declaration order.
    pub dependencies: BTreeMap<String, Vec<String>>,
    /// Build hook.
    pub hook: Option<String>,
    /// Environment every build step sees: the service's env, overlaid by the build env.
    pub env: BTreeMap<String, String>,
}

impl BuildInputs {
    /// The build-relevant part of app `service` of project `project`.
    pub fn of(project: &str, service: &Service, app: &App) -> BuildInputs {
        let mut env = service.env.clone();
        env.extend(app.build.env.clone());
        let dependencies = app
            .build
            .dependencies
            .iter()
            .map(|(manager, packages)| (manager.as_str().to_string(), packages.clone()))
            .collect();
        BuildInputs {
            project: project.to_string(),
            service: service.name.clone(),
            base: app.base.clone(),
            source: app.source.clone(),
            flavor: app.build.flavor.as_str().to_string(),
            dependencies,
            hook: app.build.hook.clone(),
            env,
        }
    }

    fn hash_dependencies(&self, key: &mut KeyHasher) {
        for (manager, packages) in &self.dependencies {
            key.list(&format!("dependencies.{manager}"), packages);
        }
    }
}

/// The key of a whole service build: a hit means the image can be reused as it is.
pub fn service_key(inputs: &BuildInputs, base_digest: &str, tree: &ObjectId) -> CacheKey {
    let mut key = KeyHasher::new("service");
    key.str("base_digest", base_digest)
        .str("project", &inputs.project)
        .str("service", &inputs.service)
        .str("base", &inputs.base)
        .str("source", &inputs.source)
        .str("flavor", &inputs.flavor);
    inputs.hash_dependencies(&mut key);
    key.opt("hook", inputs.hook.as_deref())
        .map("env", &inputs.env)
        .str("tree", &tree.to_string())
        .finish()
}

/// The keys of each layer a service build makes, each covering only what that layer depends on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepKeys {
    /// Dependencies: base digest, the declaration, the env the install sees.
    pub dependencies: CacheKey,
    /// Code: the source tree id alone.
    pub code: CacheKey,
    /// Flavor: the flavor, the files it reads, and the dependencies key below.
    pub flavor: CacheKey,
    /// Build hook: the hook and every key below.
    pub hook: CacheKey,
    /// Config layer: the service key (its content is a function of the build inputs).
    pub config: CacheKey,
}

/// The per-step keys of a service build.
pub fn step_keys(
    inputs: &BuildInputs,
    base_digest: &str,
    tree: &ObjectId,
    lock_files: &[LockFile],
) -> StepKeys {
    let mut deps = KeyHasher::new("dependencies");
    deps.str("base_digest", base_digest)
        .str("project", &inputs.project)
        .map("env", &inputs.env);
    inputs.hash_dependencies(&mut deps);
    let dependencies = deps.finish();

    let code = KeyHasher::new("code")
        .str("tree", &tree.to_string())
        .finish();

    let mut flavor_key = KeyHasher::new("flavor");
    flavor_key
        .key("dependencies", &dependencies)
        .str("flavor", &inputs.flavor);
    for lock in lock_files {
        flavor_key.str(&format!("file.{}", lock.path), &lock.blob.to_string());
    }
    let flavor = flavor_key.finish();

    let hook = KeyHasher::new("hook")
        .key("dependencies", &dependencies)
        .key("code", &code)
        .key("flavor", &flavor)
        .opt("hook", inputs.hook.as_deref())
        .finish();

    let config = service_key(inputs, base_digest, tree);
    StepKeys {
        dependencies,
        code,
        flavor,
        hook,
        config,
    }
}
