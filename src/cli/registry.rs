//! Options shared by `kiln push` and `kiln pull`: how to reach the registry.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use kiln_builder::config::{is_registry_reference, Registry};
use kiln_builder::exec::BuildReport;
use kiln_deploy::DeployError;
use kiln_overlay::Store;
use kiln_registry::{Credentials, Options, PushReport};

/// TLS, plain HTTP, credentials and upload shape.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// A PEM CA certificate to trust besides the host's store (repeatable).
    #[arg(long = "ca")]
    ca: Vec<PathBuf>,
    /// Speak plain HTTP to the registry (a local registry without TLS).
    #[arg(long)]
    plain_http: bool,
    /// USER:PASSWORD instead of the auth files (REGISTRY_AUTH_FILE, containers/auth.json,
    /// ~/.docker/config.json).
    #[arg(long, env = "KILN_REGISTRY_CREDS", hide_env_values = true)]
    creds: Option<String>,
    /// Upload in chunks of this many bytes (at most 4 MiB) instead of one streamed PUT.
    #[arg(long)]
    chunk_size: Option<usize>,
    /// Blobs moved at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
}

impl RemoteArgs {
    /// The library's options, with `[registry]` of kiln.toml (its CA, plain HTTP) under them.
    pub fn options_with(&self, config: Option<&Registry>) -> Result<Options> {
        let mut o = self.options()?;
        if let Some(r) = config {
            o.plain_http |= r.plain_http;
            o.ca.extend(r.ca.iter().map(PathBuf::from));
        }
        Ok(o)
    }

    /// The library's options.
    pub fn options(&self) -> Result<Options> {
        let credentials = match &self.creds {
            None => None,
            Some(c) => match c.split_once(':') {
                Some((u, p)) if !u.is_empty() => Some(Credentials::basic(u, p)),
                _ => bail!("--creds: expected USER:PASSWORD"),
            },
        };
        if self.chunk_size == Some(0) {
            bail!("--chunk-size: must be at least 1 byte");
        }
        Ok(Options {
            ca: self.ca.clone(),
            plain_http: self.plain_http,
            chunk_size: self.chunk_size,
            credentials,
            jobs: self.jobs.max(1),
        })
    }
}

/// Prints a push/pull report: JSON, or one summary line.
pub fn print_report(json: bool, value: &impl serde::Serialize, line: &str) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{line}");
    }
    Ok(())
}

/// The base of a failed build that is a registry reference missing from the store, if that is
/// why it failed (it is then pulled, tagged with the reference itself, and the build retried).
pub fn missing_registry_base(e: &DeployError) -> Option<String> {
    match e {
        DeployError::Build(b) => match &**b {
            kiln_builder::exec::BuildError::UnknownBase { base, .. }
                if is_registry_reference(base) =>
            {
                Some(base.clone())
            }
            _ => None,
        },
        _ => None,
    }
}

/// Pulls a registry `base` into the store under its own name (so the builder finds it, and
/// its manifest digest enters the cache key like any base's).
pub fn pull_base(store: &Store, base: &str, opts: &Options) -> Result<()> {
    let r = kiln_registry::pull(store, base, Some(base), opts)?;
    eprintln!("pulled base {base} ({})", r.digest);
    Ok(())
}

/// Pushes every service image of `report` to `registry/<project>/<service>:<commit>`, each
/// mounting the blobs it shares from the repositories pushed before it.
pub fn push_services(
    store: &Store,
    report: &BuildReport,
    registry: &str,
    opts: &Options,
) -> Result<Vec<(String, PushReport)>> {
    let registry = registry.trim_end_matches('/');
    let mut done: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let commit = &report.commit;
    for s in &report.services {
        let repo = format!("{}/{}", report.project, s.service);
        let target = format!("{registry}/{repo}:{commit}");
        let mounts: Vec<String> = done
            .iter()
            .map(|r| match registry.split_once('/') {
                Some((_, prefix)) => format!("{prefix}/{r}"),
                None => r.clone(),
            })
            .collect();
        let r = kiln_registry::push(store, &s.image, &target, &mounts, opts)?;
        done.push(repo);
        out.push((s.service.clone(), r));
    }
    Ok(out)
}
