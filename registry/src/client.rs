//! A connection to one registry: the oci-client `Client` configured for TLS (host roots plus
//! `--ca`) or plain HTTP, the credentials for the registry, and retries of 502/503/504.

use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
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
    /// Without credentials, the operation to authenticate for once a request is refused.
    deferred_login: OnceLock<RegistryOperation>,
    /// That deferred authentication, done once for all concurrent requests.
    lazy_auth: tokio::sync::OnceCell<()>,
}

/// Parses `host[:port]/repo[:tag][@sha256:…]`; the registry host is required (kiln never guesses
/// docker.io). The grammar is the distribution spec's, checked here rather than by
/// `Reference`'s `FromStr`, whose Unicode regex takes ~60 ms to compile on every push and pull.
pub fn parse_reference(input: &str) -> Result<Reference> {
    let bad = |reason: &str| Error::BadReference {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let (host, rest) = input.split_once('/').unwrap_or((input, ""));
    if rest.is_empty() || !(host.contains('.') || host.contains(':') || host == "localhost") {
        return Err(bad(
            "expected host[:port]/repository[:tag][@sha256:…] (the registry host is required)",
        ));
    }
    if !valid_host(host) {
        return Err(bad("the registry host is not host[:port]"));
    }
    let (name, digest) = match rest.rsplit_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (rest, None),
    };
    let last = name.rsplit('/').next().unwrap_or_default();
    let (repository, tag) = match last.rsplit_once(':') {
        Some((_, t)) => (&name[..name.len() - t.len() - 1], Some(t)),
        None => (name, None),
    };
    if repository.len() > 255 {
        return Err(bad("the repository name is longer than 255 characters"));
    }
    if !repository.split('/').all(valid_component) {
        return Err(bad(
            "a repository is lowercase letters and digits, path components joined by '/' \
             and separated within by '.', '_', '__' or dashes",
        ));
    }
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(bad(
                "a tag is at most 128 of A-Z a-z 0-9 _ . - and starts with no '.' or '-'",
            ));
        }
    }
    if let Some(d) = digest {
        let hex = d
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("digests are sha256:<hex>"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("a sha256 digest is 64 lowercase hex digits"));
        }
    }
    let (host, repository) = (host.to_string(), repository.to_string());
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(host, repository, t.into(), d.into()),
        (None, Some(d)) => Reference::with_digest(host, repository, d.into()),
        (t, None) => Reference::with_tag(host, repository, t.unwrap_or("latest").into()),
    })
}

/// `host[:port]`: DNS labels or an IPv4 address, an optional decimal port.
fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.split('.').all(label)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// One path component of a repository: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Between alphanumeric runs: one '.', one or two '_', or any number of '-'.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    t.len() <= 128
        && t.bytes().next().is_some_and(ok)
        && t.bytes().all(|b| ok(b) || b == b'.' || b == b'-')
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
            deferred_login: OnceLock::new(),
            lazy_auth: tokio::sync::OnceCell::new(),
        })
    }

    /// Answers the registry's challenge (bearer token or basic) for `op` on `reference`.
    ///
    /// Without credentials this waits for the first 401 (see [`Remote::retry`]): oci-client
    /// caches no "this registry wants no token", so after an anonymous login it would probe
    /// `/v2/` again before every request of an open registry.
    pub(crate) async fn login(&self, reference: &Reference, op: RegistryOperation) -> Result<()> {
        if matches!(self.creds.auth, RegistryAuth::Anonymous) {
            let _ = self.deferred_login.set(op);
            return Ok(());
        }
        self.authenticate(reference, op).await
    }

    async fn authenticate(&self, reference: &Reference, op: RegistryOperation) -> Result<()> {
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
        let mut authed = false;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if !authed && unauthorized(&e).is_some() => {
                    // Anonymous, and the registry wants a token after all (or this request
                    // raced the one that got it): authenticate once, then try again.
                    let Some(&login_op) = self.deferred_login.get() else {
                        return Err(self.error(op, target, reference, e));
                    };
                    self.lazy_auth
                        .get_or_try_init(|| async {
                            self.client
                                .auth(reference, &self.creds.auth, login_op)
                                .await
                                .map(drop)
                                .map_err(|e| {
                                    let repo = reference.repository().to_string();
                                    self.error("authenticate for", &repo, reference, e)
                                })
                        })
                        .await?;
                    authed = true;
                }
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

    /// The hand-checked grammar agrees with oci-spec's regex on what both accept and how
    /// they split it.
    #[test]
    fn parse_agrees_with_the_spec_regex() {
        let d = format!("sha256:{}", "ab12".repeat(16));
        let cases = [
            "127.0.0.1:5000/shop/web:v1".to_string(),
            "localhost/a".to_string(),
            "reg.example:443/a/b-c__d.e---f/g_h:V1.2-x_y".to_string(),
            format!("reg.example/a/b@{d}"),
            format!("reg.example/a/b:t@{d}"),
            "reg.example/a:".to_string(),
            "reg.example/a/.b:t".to_string(),
            "reg.example/a/b_:t".to_string(),
            "reg.example/a___b".to_string(),
            "reg.example/a:-t".to_string(),
            "reg.example/a@sha256:abc".to_string(),
            format!("reg.example/a:{}", "t".repeat(129)),
            "reg.example:x/a".to_string(),
            "-reg.example/a".to_string(),
        ];
        for c in &cases {
            let ours = parse_reference(c).ok();
            let spec = c.parse::<Reference>().ok();
            assert_eq!(ours.is_some(), spec.is_some(), "{c}: {ours:?} vs {spec:?}");
            if let (Some(o), Some(s)) = (ours, spec) {
                assert_eq!(
                    (o.registry(), o.repository(), o.tag(), o.digest()),
                    (s.registry(), s.repository(), s.tag(), s.digest()),
                    "{c}"
                );
            }
        }
    }
}
