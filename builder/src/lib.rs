//! kiln-builder: kiln.toml, git sources, build plans and cache keys, vendor base images.

pub mod vendor;
