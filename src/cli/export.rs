//! `kiln export kubernetes REPO --env ENV [--commit REV] [--registry R]`: one environment as
//! Kubernetes objects (a YAML stream) on stdout or in `--out`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kiln_builder::config::ServiceKind;
use kiln_builder::project::Project;
use kiln_builder::source::GitRepo;
use kiln_overlay::{Digest, Store};

use super::{finish, Global};

/// `kiln export ...`.
#[derive(Debug, Subcommand)]
pub enum ExportCmd {
    /// The objects of one environment for a Kubernetes cluster (images by digest).
    Kubernetes(KubernetesArgs),
}

/// `kiln export kubernetes`.
#[derive(Debug, Args)]
pub struct KubernetesArgs {
    /// The project's git repository.
    repo: PathBuf,
    /// Environment name (the namespace is <project>-<env>).
    #[arg(long)]
    env: String,
    /// The built revision whose images to use (default HEAD).
    #[arg(long)]
    commit: Option<String>,
    /// Registry the images were pushed to (host[:port][/prefix]): images are
    /// REGISTRY/<project>/<service>@sha256:…
    #[arg(long)]
    registry: Option<String>,
    /// Ingress hosts are <service>.<env>.<project>.<DOMAIN>.
    #[arg(long, default_value = "kiln.local")]
    domain: String,
    /// Write here instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// Runs `kiln export`.
pub fn main(global: &Global, cmd: ExportCmd) -> ExitCode {
    match cmd {
        ExportCmd::Kubernetes(args) => finish("export", kubernetes(global, args)),
    }
}

fn kubernetes(global: &Global, args: KubernetesArgs) -> Result<()> {
    kiln_export::validate_env(&args.env)?;
    let store = Store::open(&global.store)
        .with_context(|| format!("opening store {}", global.store.display()))?;
    let repo = GitRepo::open(&args.repo)?;
    let rev = args.commit.as_deref().unwrap_or("HEAD");
    let project = Project::load_at(&repo, rev)?;
    let commit = project.revision.commit.to_string();
    let mut images = std::collections::BTreeMap::new();
    for s in project.config.services.values() {
        let candidates = match &s.kind {
            ServiceKind::App(_) => vec![format!("{}/{}:{commit}", project.config.project, s.name)],
            ServiceKind::Image(i) if i.image.contains(':') || i.image.contains('@') => {
                vec![i.image.clone()]
            }
            ServiceKind::Image(i) => vec![format!("{}:latest", i.image), i.image.clone()],
        };
        let digest = candidates
            .iter()
            .find_map(|c| store.resolve(c).ok())
            .map(|d| Digest::from_oci(d.digest()))
            .transpose()?
            .with_context(|| {
                format!(
                    "service `{}`: no image {} in the store (kiln build {} --commit {commit}, \
                     kiln vendor build)",
                    s.name,
                    candidates.join(" or "),
                    args.repo.display()
                )
            })?;
        let repo_name = format!("{}/{}", project.config.project, s.name);
        let reference = match &args.registry {
            Some(r) => format!("{}/{repo_name}@{digest}", r.trim_end_matches('/')),
            None => format!("{repo_name}@{digest}"),
        };
        images.insert(s.name.clone(), reference);
    }
    let ex = kiln_export::Export {
        env: args.env,
        commit,
        images,
        domain: args.domain,
    };
    let objects = kiln_export::kubernetes(&project.config, &ex)?;
    let text = kiln_export::to_yaml_stream(&objects);
    match &args.out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
