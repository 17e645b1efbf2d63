//! TLS termination (rustls): a wildcard/default certificate and per-host certificates, chosen
//! by SNI; ALPN offers HTTP/2 and HTTP/1.1.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::RouterError;

/// A certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The host it is for (`None`: the default, e.g. a wildcard for `*.domain`).
    pub host: Option<String>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Picks the certificate for a client's SNI name.
struct Resolver {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("hosts", &self.by_host.keys().collect::<Vec<_>>())
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|n| self.by_host.get(&n.to_ascii_lowercase()).cloned())
            .or_else(|| self.default.clone())
    }
}

/// Loads one certificate and key.
fn load(files: &CertFiles) -> Result<Arc<CertifiedKey>, RouterError> {
    let bad = |what, path: &Path, why: String| RouterError::Tls {
        what,
        path: path.to_path_buf(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad("certificate", &files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("certificate", &files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(
            "certificate",
            &files.cert,
            "no PEM certificate in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| bad("key", &files.key, e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad("key", &files.key, e.to_string()))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| {
        bad(
            "key",
            &files.key,
            format!("does not match {}: {e}", files.cert.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

/// The server config for `certs` (at least one).
pub fn server_config(certs: &[CertFiles]) -> Result<Arc<rustls::ServerConfig>, RouterError> {
    let mut resolver = Resolver {
        by_host: HashMap::new(),
        default: None,
    };
    for c in certs {
        let key = load(c)?;
        match &c.host {
            Some(h) => {
                resolver.by_host.insert(h.to_ascii_lowercase(), key);
            }
            None => resolver.default = Some(key),
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RouterError::Tls {
            what: "configuration",
            path: PathBuf::new(),
            why: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
