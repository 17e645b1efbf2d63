//! A connection to one registry: the oci-client `Client` configured for TLS (host roots plus
//! `--ca`) or plain HTTP, the credentials for the registry, and retries of 502/503/504.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference, RegistryOperation};

use crate::auth::{self, Credentials};
use crate::error::{Error, Result};

/// Attempts of one request when the registry answers 502/503/504 or the connection drops.
pub(crate) const ATTEMPTS: u32 = 5;
/// The first pause between attempts (doubled each time).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Blobs moved at once.
const DEFAULT_JOBS: usize = 4;

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra CA certificates (PEM files) trusted besides the host's store.
    pub ca: Vec<PathBuf>,
    /// Speak plain HTTP (a local registry without TLS).
    pub plain_http: bool,
    /// Upload in chunks of this many bytes (PATCH each, at most 4 MiB); None: one streamed PUT.
    pub chunk_size: Option<usize>,
    /// Credentials to use instead of the auth files.
    pub credentials: Option<Credentials>,
    /// Blobs uploaded or downloaded at once (0: the default, 4).
    pub jobs: usize,
}

/// A client for one registry with its credentials.
pub(crate) struct Remote {
    pub(crate) client: Client,
    pub(crate) creds: Credentials,
    pub(crate) registry: String,
    pub(crate) chunk_size: Option<usize>,
    pub(crate) jobs: usize,
}

/// Parses `host[:port]/repo[:tag][@sha256:…]`; the registry host is required (kiln never guesses
/// docker.io).
pub fn parse_reference(input: &str) -> Result<Reference> {
    let bad = |reason: String| Error::BadReference {
        input: input.to_string(),
        reason,
    };
    let first = input.split('/').next().unwrap_or_default();
    if !input.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost")
    {
        return Err(bad(
            "expected host[:port]/repository[:tag][@sha256:…] (the registry host is required)"
                .to_string(),
        ));
    }
    input.parse::<Reference>().map_err(|e| bad(e.to_string()))
}

impl Remote {
    /// A client for the registry of `reference`, credentials from `opts` or the auth files.
    pub(crate) fn new(reference: &Reference, opts: &Options) -> Result<Self> {
        // reqwest was built without a crypto provider; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = reference.resolve_registry().to_string();
        let mut extra = Vec::new();
        for path in &opts.ca {
            let data = std::fs::read(path).map_err(|e| Error::Ca {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            if !data
                .windows(27)
                .any(|w| w == b"-----BEGIN CERTIFICATE-----")
            {
                return Err(Error::Ca {
                    path: path.clone(),
                    reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_string(),
                });
            }
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: if opts.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            use_monolithic_push: opts.chunk_size.is_none(),
            extra_root_certificates: extra,
            max_concurrent_upload: jobs(opts),
            max_concurrent_download: jobs(opts),
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(300)),
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let creds = match &opts.credentials {
            Some(c) => c.clone(),
            None => auth::lookup(&registry)?,
        };
        Ok(Self {
            client: Client::new(config),
            creds,
            registry,
            chunk_size: opts.chunk_size.map(|c| c.clamp(1, 4 << 20)),
            jobs: jobs(opts),
        })
    }

    /// Answers the registry's challenge (bearer token or basic) for `op` on `reference`.
    pub(crate) async fn login(&self, reference: &Reference, op: RegistryOperation) -> Result<()> {
        let target = reference.repository().to_string();
        self.retry("authenticate for", &target, reference, || {
            self.client.auth(reference, &self.creds.auth, op)
        })
        .await
        .map(drop)
    }

    /// Runs `f` until it succeeds, fails for good, or [`ATTEMPTS`] transient failures
    /// (502/503/504, a dropped connection, a timeout) have happened.
    pub(crate) async fn retry<T, F, Fut>(
        &self,
        op: &'static str,
        target: &str,
        reference: &Reference,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        let mut pause = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    tracing::warn!(%e, attempt, "{op} {target}: retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(self.error(op, target, reference, e)),
            }
        }
    }

    /// Turns a client error into this crate's error (401/403 as [`Error::Unauthorized`]).
    pub(crate) fn error(
        &self,
        op: &'static str,
        target: &str,
        reference: &Reference,
        e: OciDistributionError,
    ) -> Error {
        if let Some(detail) = unauthorized(&e) {
            return Error::Unauthorized {
                registry: self.registry.clone(),
                repository: reference.repository().to_string(),
                who: self.creds.describe(),
                detail,
            };
        }
        Error::Registry {
            op,
            target: target.to_string(),
            registry: self.registry.clone(),
            source: e,
        }
    }
}

fn jobs(opts: &Options) -> usize {
    if opts.jobs == 0 {
        DEFAULT_JOBS
    } else {
        opts.jobs
    }
}

/// Whether an error is worth another attempt.
pub(crate) fn transient(e: &OciDistributionError) -> bool {
    let gateway = |code: u16| matches!(code, 502..=504);
    match e {
        OciDistributionError::ServerError { code, .. } => gateway(*code),
        OciDistributionError::RequestError(r) => {
            r.status().is_some_and(|s| gateway(s.as_u16()))
                || r.is_timeout()
                || r.is_connect()
                || r.is_body()
        }
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// The registry's refusal, if the error is a 401/403.
fn unauthorized(e: &OciDistributionError) -> Option<String> {
    let denied = |code: u16| code == 401 || code == 403;
    match e {
        OciDistributionError::UnauthorizedError { url } => {
            Some(format!("401 Unauthorized ({url})"))
        }
        OciDistributionError::AuthenticationFailure(m) => Some(m.clone()),
        OciDistributionError::ServerError { code, message, .. } if denied(*code) => {
            Some(format!("{code} {}", message.trim()))
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::Unauthorized
                        | oci_client::errors::OciErrorCode::Denied
                )
            }) =>
        {
            Some(e.to_string())
        }
        OciDistributionError::RequestError(r) if r.status().is_some_and(|s| denied(s.as_u16())) => {
            Some(r.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_a_registry_host() {
        let r = parse_reference("127.0.0.1:5000/shop/web:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "shop/web");
        assert_eq!(r.tag(), Some("v1"));
        for bad in ["shop/web:v1", "web", "127.0.0.1:5000/Shop:v1", ""] {
            let e = parse_reference(bad).unwrap_err().to_string();
            assert!(e.contains("invalid registry reference"), "{bad}: {e}");
        }
    }
}
