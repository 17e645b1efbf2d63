//! What the refs reach: every blob (manifests, configs, layers, nested indexes) and every snapshot
//! chain id, walked from `index.json` and the build cache. Shared by gc and fsck.

use std::collections::{BTreeMap, BTreeSet};

use oci_spec::image::ImageConfiguration;
use serde_json::Value;

use crate::digest::Digest;
use crate::error::Result;
use crate::image::chain_ids;
use crate::json;
use crate::store::Store;

/// Everything reachable from the store's roots.
#[derive(Debug, Default)]
pub(crate) struct Reachable {
    /// Reachable blobs, each with who refers to it (for reports).
    pub blobs: BTreeMap<Digest, String>,
    /// Chain ids of every reachable image's layers.
    pub chain_ids: BTreeSet<Digest>,
    /// Referenced blobs that are not in the store (digest, who refers to it).
    pub missing: Vec<(Digest, String)>,
}

impl Store {
    /// Roots: every descriptor in `index.json`, plus every digest held by a file in `cache/`.
    pub(crate) fn roots(&self) -> Result<Vec<(Digest, String)>> {
        let mut roots = Vec::new();
        for d in self.index_descriptors()? {
            let name = crate::refs::ref_name(&d).unwrap_or("<unnamed>").to_string();
            roots.push((
                Digest::from_oci(d.digest())?,
                format!("index.json ref {name:?}"),
            ));
        }
        let cache = self.cache_dir();
        if let Ok(entries) = std::fs::read_dir(&cache) {
            for e in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path()) {
                    if let Ok(d) = Digest::parse(text.trim()) {
                        roots.push((d, format!("cache entry {}", e.path().display())));
                    }
                }
            }
        }
        Ok(roots)
    }

    /// Walks from the roots through indexes and manifests.
    pub(crate) fn reachable(&self) -> Result<Reachable> {
        let mut r = Reachable::default();
        let mut todo = self.roots()?;
        while let Some((digest, by)) = todo.pop() {
            if r.blobs.contains_key(&digest) {
                continue;
            }
            r.blobs.insert(digest, by.clone());
            if !self.has_blob(&digest) {
                r.missing.push((digest, by));
                continue;
            }
            let Ok(bytes) = self.read_blob(&digest) else {
                continue; // corrupt: fsck reports it, gc keeps it
            };
            let Ok(doc) = json::from_slice::<Value>(&bytes, "document") else {
                continue;
            };
            let here = format!("{digest}");
            for m in doc["manifests"].as_array().into_iter().flatten() {
                if let Some(d) = m["digest"].as_str().and_then(|s| Digest::parse(s).ok()) {
                    todo.push((d, format!("index {here}")));
                }
            }
            if let Some(cfg) = doc["config"]["digest"]
                .as_str()
                .and_then(|s| Digest::parse(s).ok())
            {
                todo.push((cfg, format!("manifest {here} (config)")));
                for l in doc["layers"].as_array().into_iter().flatten() {
                    if let Some(d) = l["digest"].as_str().and_then(|s| Digest::parse(s).ok()) {
                        todo.push((d, format!("manifest {here} (layer)")));
                    }
                }
                if let Ok(cbytes) = self.read_blob(&cfg) {
                    if let Ok(config) = json::from_slice::<ImageConfiguration>(&cbytes, "config") {
                        let diff_ids: Vec<Digest> = config
                            .rootfs()
                            .diff_ids()
                            .iter()
                            .filter_map(|d| Digest::parse(d).ok())
                            .collect();
                        r.chain_ids.extend(chain_ids(&diff_ids));
                    }
                }
            }
        }
        Ok(r)
    }
}
