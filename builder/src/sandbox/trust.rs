//! The host's trust settings for network build steps: where the host reaches the package
//! registries through a TLS-intercepting proxy or a private CA, a step that sees only its image's
//! CA bundle fails (`CERTIFICATE_VERIFY_FAILED`). The host's trusted bundle is bound read-only at
//! [`BUNDLE_IN_CONTAINER`] — inside the container's own `/dev` tmpfs, so it never lands in the
//! step's upper dir or layer — and the step's env (never the image config) points every TLS
//! client at it; the host's `HTTP(S)_PROXY`/`NO_PROXY` are passed on too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;

/// Where the host's bundle appears inside a step (the container's `/dev` is a tmpfs of its own).
pub const BUNDLE_IN_CONTAINER: &str = "/dev/kiln-host-ca.crt";

/// Debian's (and most distributions') trusted bundle, used when `SSL_CERT_FILE` is not set.
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The variables that make TLS clients read a CA bundle file: OpenSSL (Python's `ssl`, curl,
/// PHP/composer), pip, requests, curl, git, npm (`cafile`), Node.js (added to its own roots).
const CA_VARS: [&str; 8] = [
    "SSL_CERT_FILE",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
    "npm_config_cafile",
    "COMPOSER_CAFILE",
];

/// The proxy variables passed on as the host has them (both spellings are in use).
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The variable that sets the scope for a process (`off`, `network`, `all`; default `network`).
pub const SCOPE_VAR: &str = "KILN_BUILD_HOST_TRUST";

/// Which `Run` steps of a build get the host's trust settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrustScope {
    /// None: steps see only their image's CA bundle.
    Off,
    /// The steps with network (dependencies, flavor). The default.
    #[default]
    NetworkSteps,
    /// Every `Run` step, the build hook included.
    AllSteps,
}

impl TrustScope {
    /// The scope [`SCOPE_VAR`] names.
    fn from_env() -> TrustScope {
        match std::env::var(SCOPE_VAR).as_deref() {
            Err(_) | Ok("network") => TrustScope::NetworkSteps,
            Ok("off") => TrustScope::Off,
            Ok("all") => TrustScope::AllSteps,
            Ok(other) => {
                tracing::warn!(
                    "{SCOPE_VAR}={other:?} is not one of off, network, all: using network"
                );
                TrustScope::NetworkSteps
            }
        }
    }
}

/// The host's CA bundle and proxy settings, and which steps get them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTrust {
    /// The host's bundle file, if it has one.
    pub bundle: Option<PathBuf>,
    /// Proxy variables set on the host.
    pub proxy: BTreeMap<String, String>,
    /// Which steps get them.
    pub scope: TrustScope,
}

impl Default for HostTrust {
    fn default() -> Self {
        HostTrust::detect()
    }
}

impl HostTrust {
    /// The host's settings: the bundle `SSL_CERT_FILE` names (if it is a file), else
    /// `/etc/ssl/certs/ca-certificates.crt` if present; the proxy variables it sets; the scope
    /// [`SCOPE_VAR`] names ([`TrustScope::NetworkSteps`] when unset or not one of its values,
    /// with a warning).
    pub fn detect() -> HostTrust {
        let named = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        let bundle = named
            .into_iter()
            .chain(std::iter::once(PathBuf::from(HOST_BUNDLE)))
            .find(|p| p.is_file());
        let proxy = PROXY_VARS
            .iter()
            .filter_map(|k| {
                let v = std::env::var(k).ok()?;
                (!v.is_empty()).then(|| (k.to_string(), v))
            })
            .collect();
        HostTrust {
            bundle,
            proxy,
            scope: TrustScope::from_env(),
        }
    }

    /// Nothing passed to any step.
    pub fn off() -> HostTrust {
        HostTrust {
            bundle: None,
            proxy: BTreeMap::new(),
            scope: TrustScope::Off,
        }
    }

    /// The same settings for the steps of `scope`.
    pub fn with_scope(mut self, scope: TrustScope) -> HostTrust {
        self.scope = scope;
        self
    }

    /// Whether a step (with or without network) gets the settings.
    pub fn applies(&self, network: bool) -> bool {
        match self.scope {
            TrustScope::Off => false,
            TrustScope::NetworkSteps => network,
            TrustScope::AllSteps => true,
        }
    }

    /// The step's extra env: the CA variables naming [`BUNDLE_IN_CONTAINER`] (when there is a
    /// bundle) and the proxy variables.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = self.proxy.clone();
        if self.bundle.is_some() {
            for k in CA_VARS {
                env.insert(k.to_string(), BUNDLE_IN_CONTAINER.to_string());
            }
        }
        env
    }

    /// The step's extra mount: the bundle, read-only, at [`BUNDLE_IN_CONTAINER`].
    pub fn mount(&self) -> Option<Mount> {
        let bundle: &Path = self.bundle.as_deref()?;
        Some(super::bind(bundle, BUNDLE_IN_CONTAINER, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_decides_which_steps_and_env_names_the_mounted_bundle() {
        let t = HostTrust {
            bundle: Some(PathBuf::from("/etc/hosts")),
            proxy: BTreeMap::from([("HTTPS_PROXY".to_string(), "http://p:3128".to_string())]),
            scope: TrustScope::NetworkSteps,
        };
        assert!(t.applies(true) && !t.applies(false));
        assert!(t.clone().with_scope(TrustScope::AllSteps).applies(false));
        assert!(!HostTrust::off().applies(true));
        let env = t.env();
        assert_eq!(env["SSL_CERT_FILE"], BUNDLE_IN_CONTAINER);
        assert_eq!(env["npm_config_cafile"], BUNDLE_IN_CONTAINER);
        assert_eq!(env["HTTPS_PROXY"], "http://p:3128");
        let m = t.mount().unwrap();
        assert_eq!(m.destination(), Path::new(BUNDLE_IN_CONTAINER));
        assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
        let none = HostTrust { bundle: None, ..t };
        assert!(none.mount().is_none() && !none.env().contains_key("SSL_CERT_FILE"));
    }
}
