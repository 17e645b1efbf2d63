//! kiln's config layer: the service's resolved build configuration as files the app can read.

use serde_json::json;

use crate::config::APP_ROOT;
use crate::key::{BuildInputs, CacheKey, BUILDER_FORMAT_VERSION};
use crate::source::ObjectId;

use super::PlannedFile;

/// Where the config layer puts the service's build configuration.
pub const SERVICE_JSON: &str = "/etc/kiln/service.json";

/// The config layer's files. They hold only build inputs (never the commit, start command or
/// relationships), so equal keys give equal layers; deploy-time settings reach the app as env.
pub(crate) fn config_files(
    inputs: &BuildInputs,
    key: &CacheKey,
    base_digest: &str,
    tree: &ObjectId,
) -> Vec<PlannedFile> {
    let document = json!({
        "format": BUILDER_FORMAT_VERSION,
        "project": inputs.project,
        "service": inputs.service,
        "key": key.to_string(),
        "base": { "name": inputs.base, "digest": base_digest },
        "source": { "folder": inputs.source, "tree": tree.to_string(), "path": APP_ROOT },
        "build": {
            "flavor": inputs.flavor,
            "dependencies": inputs.dependencies,
            "hook": inputs.hook,
            "env": inputs.env,
        },
    });
    let mut data = format!("{document:#}").into_bytes();
    data.push(b'\n');
    vec![PlannedFile {
        path: SERVICE_JSON.to_string(),
        mode: 0o644,
        data,
    }]
}
