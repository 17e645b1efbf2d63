//! kiln.toml after validation: the typed project configuration the builder and deploy consume.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where an app's code is placed in its image (and its working directory).
pub const APP_ROOT: &str = "/app";

/// Default build hook / deploy hook time limit, in seconds.
pub const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 600;
/// Default time a new container gets to become healthy, in seconds.
pub const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 30;
/// Default time a stopping container gets between SIGTERM and SIGKILL, in seconds.
pub const DEFAULT_STOP_GRACE_SECS: u64 = 10;

/// A whole validated kiln.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectConfig {
    /// The project name (a DNS label).
    pub project: String,
    /// Every service, apps and image services, by name.
    pub services: BTreeMap<String, Service>,
    /// `[registry]`: where `kiln build` pushes each service's image (None: nowhere).
    pub registry: Option<Registry>,
    /// `[routes]`: URL pattern (`{default}` is the environment's host) → what answers it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, Route>,
}

/// `[registry]`: `url = "host[:port][/prefix]"`; each image goes to `url/<project>/<service>:<commit>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registry {
    /// `host[:port][/path prefix]`.
    pub url: String,
    /// A PEM CA file to trust for it (relative to the working directory of `kiln build`).
    pub ca: Option<String>,
    /// Speak plain HTTP to it.
    pub plain_http: bool,
}

/// Whether a `base` names an image in a registry (`host[:port]/repo[:tag][@sha256:…]`, the host
/// having a `.` or `:` or being `localhost`) rather than one in the store.
pub fn is_registry_reference(base: &str) -> bool {
    base.split_once('/')
        .is_some_and(|(host, _)| host.contains('.') || host.contains(':') || host == "localhost")
}

/// One route of `[routes]`: an app, or a redirect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The app that answers (`None` with no redirect: the first app with a port).
    pub upstream: Option<String>,
    /// Where it redirects to (`{default}` expanded).
    pub redirect: Option<String>,
    /// The redirect's status (default 301).
    pub code: Option<u16>,
    /// The environment's primary URL (`KILN_ROUTE`); at most one route.
    pub primary: bool,
}

/// One entry of `[services]`: what both kinds share, plus the kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// The service name (a DNS label), also its host name for relationships.
    pub name: String,
    /// An app built from source, or an image run as it is.
    pub kind: ServiceKind,
    /// Environment variables of the running service (and, for apps, of the build).
    pub env: BTreeMap<String, String>,
    /// Declared links to other services: relationship name → resolved target.
    pub relationships: BTreeMap<String, Relationship>,
    /// Persistent mounts: absolute path in the container → mount.
    pub mounts: BTreeMap<String, Mount>,
    /// What others may connect to: endpoint name → port and scheme.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// How its container is confined.
    pub security: Security,
}

/// `[services.<name>.security]`, with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Security {
    /// Run as host root: no user namespace (container root is host root). The hardened
    /// seccomp profile, capability set and no_new_privs still apply. Default false.
    pub host_root: bool,
}

/// The two kinds of service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
// One per service, built once per deploy: boxing the app would only add indirection.
#[allow(clippy::large_enum_variant)]
pub enum ServiceKind {
    /// Built from the project's source on a base image.
    App(App),
    /// An image run as it is (a database, a cache).
    Image(ImageService),
}

/// An application: base image + source folder, built by kiln.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct App {
    /// Vendor image name or image reference in the store.
    pub base: String,
    /// Folder of the repository that is the app's code (`.` for the root).
    pub source: String,
    /// Command that runs the app (through `/bin/sh -c`), in [`APP_ROOT`].
    pub start: String,
    /// Port the router sends HTTP to, if the app serves HTTP.
    pub port: Option<u16>,
    /// How the app is built.
    pub build: Build,
    /// What runs after the app starts.
    pub deploy: Deploy,
}

/// A service that runs an image as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageService {
    /// Vendor image name or image reference in the store.
    pub image: String,
}

/// `[services.<name>.build]`, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Build {
    /// The language's standard install step.
    pub flavor: Flavor,
    /// Tools installed globally before the code is added (the only step with network).
    pub dependencies: BTreeMap<PackageManager, Vec<String>>,
    /// Shell command run over the code (no network).
    pub hook: Option<String>,
    /// Variables seen only by the build, on top of the service's env.
    pub env: BTreeMap<String, String>,
    /// Time limit of each build step that runs commands, in seconds.
    pub timeout_secs: u64,
}

/// `[services.<name>.deploy]`, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deploy {
    /// Shell command run in the new container after start (code read-only, services reachable).
    pub hook: Option<String>,
    /// Post-deploy tasks, in order.
    pub post: Vec<String>,
    /// Time limit of the hook and of each task, in seconds.
    pub timeout_secs: u64,
    /// Health command run in the new container until it exits 0 (default: the port answers).
    pub health: Option<String>,
    /// Time a new container gets to become healthy, in seconds.
    pub health_timeout_secs: u64,
    /// Time the old container gets between SIGTERM and SIGKILL, in seconds.
    pub stop_grace_secs: u64,
}

impl Default for Deploy {
    fn default() -> Self {
        Self {
            hook: None,
            post: Vec::new(),
            timeout_secs: DEFAULT_HOOK_TIMEOUT_SECS,
            health: None,
            health_timeout_secs: DEFAULT_HEALTH_TIMEOUT_SECS,
            stop_grace_secs: DEFAULT_STOP_GRACE_SECS,
        }
    }
}

/// A build flavor: the standard install commands of a language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// `pip install -r requirements.txt`.
    Pip,
    /// `npm ci`.
    Npm,
    /// `composer install --no-dev` from composer.lock.
    Composer,
    /// Nothing.
    #[default]
    None,
}

/// A package manager for global build dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    /// Python packages, `pip install`.
    Pip,
    /// Node packages, `npm install --global`.
    Npm,
}

/// A resolved relationship: the target service and which of its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Relationship {
    /// Target service name.
    pub service: String,
    /// Target endpoint name.
    pub endpoint: String,
    /// Target port.
    pub port: u16,
    /// Target scheme (`redis`, `http`, …).
    pub scheme: String,
}

/// A port and scheme others can connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Port inside the service's network namespace.
    pub port: u16,
    /// Protocol spoken there.
    pub scheme: String,
}

/// A persistent mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Size limit in bytes.
    pub size_bytes: u64,
}

impl Flavor {
    /// The value of `flavor` in kiln.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Pip => "pip",
            Flavor::Npm => "npm",
            Flavor::Composer => "composer",
            Flavor::None => "none",
        }
    }
}

impl PackageManager {
    /// The key of `dependencies` in kiln.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageManager::Pip => "pip",
            PackageManager::Npm => "npm",
        }
    }
}

impl ProjectConfig {
    /// The apps (services built from source), by name.
    pub fn apps(&self) -> impl Iterator<Item = (&Service, &App)> {
        self.services
            .values()
            .filter_map(|s| s.app().map(|a| (s, a)))
    }
}

impl Service {
    /// The app part, if this service is built from source.
    pub fn app(&self) -> Option<&App> {
        match &self.kind {
            ServiceKind::App(app) => Some(app),
            ServiceKind::Image(_) => None,
        }
    }

    /// The image this service runs as it is, if it is not an app.
    pub fn image(&self) -> Option<&str> {
        match &self.kind {
            ServiceKind::App(_) => None,
            ServiceKind::Image(svc) => Some(&svc.image),
        }
    }
}
