//! kiln-builder: kiln.toml, git sources, build plans and cache keys, vendor base images.

pub mod cache;
pub mod config;
pub mod exec;
pub mod key;
pub mod plan;
pub mod project;
pub mod sandbox;
pub mod source;
pub mod vendor;
