//! kiln-builder: kiln.toml, git sources, build plans and cache keys, vendor base images.

pub mod config;
pub mod key;
pub mod plan;
pub mod project;
pub mod source;
pub mod vendor;
