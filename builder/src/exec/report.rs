//! What a build did: per service its image, digest, cache outcome and steps with their times.

use serde::Serialize;

/// Whether the cache had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// Reused from the cache: nothing ran.
    Hit,
    /// Made by this build.
    Miss,
}

/// One step of a service build.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// `dependencies`, `code`, `flavor`, `hook` or `config`.
    pub name: &'static str,
    /// The step's cache key.
    pub key: String,
    /// Whether its layer came from the cache.
    pub cache: CacheOutcome,
    /// The layer's digest.
    pub layer: String,
    /// Wall time of the step, in seconds.
    pub seconds: f64,
}

/// One service of a build.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    /// Service name.
    pub service: String,
    /// The tag: `<project>/<service>:<commit>`.
    pub image: String,
    /// The image's manifest digest.
    pub digest: String,
    /// The service's cache key.
    pub key: String,
    /// Whether the whole image came from the cache.
    pub cache: CacheOutcome,
    /// Steps, bottom first (empty on a hit).
    pub steps: Vec<StepReport>,
    /// Containers this service's build ran.
    pub containers: u32,
    /// Wall time, in seconds.
    pub seconds: f64,
}

/// A whole build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Project name.
    pub project: String,
    /// The commit built.
    pub commit: String,
    /// Every app, in name order.
    pub services: Vec<ServiceReport>,
    /// Containers the build ran, over all services.
    pub containers: u32,
}
