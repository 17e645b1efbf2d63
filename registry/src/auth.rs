//! Credentials from the docker and podman auth files, looked up by registry host.
//!
//! Files are read in podman's order: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, then docker's `$DOCKER_CONFIG/config.json` (default
//! `~/.docker/config.json`). The first file with an entry for the registry wins. Credential
//! helpers (`credsStore`, `credHelpers`) are not run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Credentials for one registry and where they came from.
#[derive(Clone)]
pub struct Credentials {
    /// What the client sends (anonymous, basic, or a bearer token).
    pub auth: RegistryAuth,
    /// The user name, if basic.
    pub user: Option<String>,
    /// The file they were read from (None: given directly, or anonymous).
    pub source: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// No credentials.
    pub fn anonymous() -> Self {
        Self {
            auth: RegistryAuth::Anonymous,
            user: None,
            source: None,
        }
    }

    /// Basic credentials given directly.
    pub fn basic(user: &str, password: &str) -> Self {
        Self {
            auth: RegistryAuth::Basic(user.to_string(), password.to_string()),
            user: Some(user.to_string()),
            source: None,
        }
    }

    /// Says whose credentials these are, for an error message.
    pub(crate) fn describe(&self) -> String {
        match (&self.auth, &self.user, &self.source) {
            (RegistryAuth::Anonymous, ..) => "anonymously (no credentials for it in \
                 REGISTRY_AUTH_FILE, containers/auth.json or ~/.docker/config.json)"
                .to_string(),
            (_, Some(u), Some(p)) => format!("as user {u:?} (credentials from {})", p.display()),
            (_, Some(u), None) => format!("as user {u:?}"),
            (_, None, Some(p)) => format!("with the token from {}", p.display()),
            (_, None, None) => "with the given token".to_string(),
        }
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    registrytoken: Option<String>,
}

/// The auth files searched, in order (only those whose location is known).
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut out = Vec::new();
    if let Some(p) = env("REGISTRY_AUTH_FILE") {
        out.push(p);
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        out.push(d.join("containers/auth.json"));
    }
    let home = env("HOME");
    if let Some(h) = &home {
        out.push(h.join(".config/containers/auth.json"));
    }
    match (env("DOCKER_CONFIG"), &home) {
        (Some(d), _) => out.push(d.join("config.json")),
        (None, Some(h)) => out.push(h.join(".docker/config.json")),
        (None, None) => {}
    }
    out
}

/// The credentials for `registry` (`host[:port]`) from the first auth file that has them, else
/// anonymous. A file that exists but cannot be parsed is an error.
pub fn lookup(registry: &str) -> Result<Credentials> {
    for path in auth_files() {
        if let Some(c) = lookup_in(&path, registry)? {
            return Ok(c);
        }
    }
    Ok(Credentials::anonymous())
}

/// The credentials for `registry` in one auth file (None: no file, or no entry for it).
pub fn lookup_in(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let bad = |reason: String| Error::AuthFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let file: AuthFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let Some(entry) = file
        .auths
        .iter()
        .find(|(k, _)| normalize(k) == registry)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let source = Some(path.to_path_buf());
    if let Some(token) = &entry.registrytoken {
        return Ok(Some(Credentials {
            auth: RegistryAuth::Bearer(token.clone()),
            user: None,
            source,
        }));
    }
    let (user, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(b64), ..) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| bad(format!("{registry}: \"auth\" is not base64: {e}")))?;
            let text = String::from_utf8(raw)
                .map_err(|_| bad(format!("{registry}: \"auth\" is not UTF-8")))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| bad(format!("{registry}: \"auth\" is not user:password")))?;
            (u.to_string(), p.to_string())
        }
        (None, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => return Ok(None),
    };
    Ok(Some(Credentials {
        auth: RegistryAuth::Basic(user.clone(), password),
        user: Some(user),
        source,
    }))
}

/// An auth file key as `host[:port]`: docker writes `https://host/v1/` for its own hub.
fn normalize(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_base64_and_split_entries_and_normalizes_keys() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("auth.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"https://reg.example:5000/v1/":{{"auth":"{b64}"}},
                "other:1":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        )
        .unwrap();
        let c = lookup_in(&f, "reg.example:5000").unwrap().unwrap();
        assert!(
            matches!(c.auth, RegistryAuth::Basic(ref u, ref p) if u == "alice" && p == "s3cret")
        );
        let c = lookup_in(&f, "other:1").unwrap().unwrap();
        assert_eq!(c.user.as_deref(), Some("bob"));
        assert!(lookup_in(&f, "missing:1").unwrap().is_none());
        assert!(lookup_in(&t.path().join("none.json"), "x")
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("auth.json");
        std::fs::write(&f, r#"{"auths":{"r:1":{"auth":"!!!"}}}"#).unwrap();
        let e = lookup_in(&f, "r:1").unwrap_err().to_string();
        assert!(e.contains("auth.json") && e.contains("base64"), "{e}");
        std::fs::write(&f, "not json").unwrap();
        assert!(lookup_in(&f, "r:1").is_err());
    }
}
