//! A config.json checked from bytes without touching the system: the parse `load_spec` does and
//! the checks `create` makes before it opens anything or clones (process, root, argv/env,
//! rlimits, capabilities, seccomp compilation, mount options). Namespace paths are not opened.

use std::path::PathBuf;

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};
use crate::process::Prepared;

/// Parses `bytes` as a config.json and checks what can be checked without the system.
pub fn check_config(bytes: &[u8]) -> Result<Spec> {
    let spec: Spec = serde_json::from_slice(bytes).map_err(|e| Error::Spec {
        path: PathBuf::from("config.json"),
        msg: e.to_string(),
    })?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("config has no process".into()))?;
    if spec.root().is_none() {
        return Err(Error::Config("config has no root.path".into()));
    }
    let linux = spec.linux().as_ref();
    Prepared::new(process, linux.and_then(|l| l.seccomp().as_ref()))?;
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        crate::rootfs::parse_options(m.options().as_deref().unwrap_or(&[]));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::check_config;

    #[test]
    fn a_minimal_config_passes_and_junk_is_an_error() {
        let ok = br#"{"ociVersion":"1.0.2","process":{"args":["/bin/sh"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}"#;
        assert!(check_config(ok).is_ok());
        for bad in [
            &b"{"[..],
            br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#,
            br#"{"ociVersion":"1.0.2","process":{"args":[],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"r"}}"#,
            br#"{"ociVersion":"1.0.2","process":{"args":["a\u0000b"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"r"}}"#,
        ] {
            assert!(check_config(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
