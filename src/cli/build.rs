//! `kiln build`: a git commit of a project → one frozen image per app; `kiln build log`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_builder::exec::{log, BuildReport, CacheOutcome, Progress, ServiceReport, StepReport};
use kiln_builder::plan;
use kiln_deploy::build::{build_revision, Revision};
use kiln_overlay::Store;

use super::Global;

/// `kiln build REPO [options]` or `kiln build log PROJECT SERVICE`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BuildCmd {
    #[command(subcommand)]
    action: Option<BuildAction>,
    #[command(flatten)]
    build: BuildArgs,
}

#[derive(Debug, Subcommand)]
enum BuildAction {
    /// Print the stored build log of a service (the output of its build steps).
    Log {
        /// Project name.
        project: String,
        /// Service name.
        service: String,
        /// The commit whose build to show (default: the latest build of the service).
        #[arg(long)]
        commit: Option<String>,
    },
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The project's git repository (work tree or bare).
    #[arg(required = true)]
    repo: Option<PathBuf>,
    /// Revision to build (sha, branch, tag); default: --branch if given, else HEAD.
    #[arg(long)]
    commit: Option<String>,
    /// Branch name the build is for (KILN_GIT_BRANCH, image label).
    #[arg(long)]
    branch: Option<String>,
    /// Pull-request build: the commit merged onto.
    #[arg(long, requires = "pr_head")]
    pr_base: Option<String>,
    /// Pull-request build: the pull request's head commit.
    #[arg(long, requires = "pr_base", conflicts_with = "commit")]
    pr_head: Option<String>,
    /// Pull-request title (KILN_PR_TITLE).
    #[arg(long, requires = "pr_head")]
    pr_title: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// After the build, push each service's image to REGISTRY/<project>/<service>:<commit>
    /// (host[:port][/prefix]; default: `[registry] url` in kiln.toml, if set).
    #[arg(long, value_name = "REGISTRY")]
    push: Option<String>,
    /// How to reach registries (`--push`, and `base` images pulled from a registry).
    #[command(flatten)]
    remote: super::registry::RemoteArgs,
}

/// Runs `kiln build`.
pub fn main(global: &Global, cmd: BuildCmd) -> ExitCode {
    let result = match cmd.action {
        Some(BuildAction::Log {
            project,
            service,
            commit,
        }) => show_log(global, &project, &service, commit.as_deref()),
        None => build(global, cmd.build),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln build: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build(global: &Global, args: BuildArgs) -> Result<()> {
    let Some(repo_path) = args.repo else {
        bail!("a repository is required");
    };
    let rev = Revision {
        commit: args.commit,
        branch: args.branch,
        pr: args.pr_base.zip(args.pr_head),
        pr_title: args.pr_title,
    };
    let store = open_store(global)?;
    let (project, report) = build_project(global, &store, &repo_path, &rev, &args.remote)?;
    let config = project.config.registry.as_ref();
    let pushed = match args.push.as_deref().or(config.map(|r| r.url.as_str())) {
        Some(registry) => {
            let opts = args.remote.options_with(config)?;
            super::registry::push_services(&store, &report, registry, &opts)
                .with_context(|| format!("pushing the built images to {registry}"))?
        }
        None => Vec::new(),
    };
    if args.json {
        let mut doc = serde_json::to_value(&report)?;
        for (service, r) in &pushed {
            if let Some(s) = doc["services"]
                .as_array_mut()
                .and_then(|v| v.iter_mut().find(|s| s["service"] == service.as_str()))
            {
                s["pushed"] = serde_json::to_value(r)?;
            }
        }
        print_json(&doc)?;
    } else {
        print_summary(&report);
        for (service, r) in &pushed {
            println!(
                "{service}\tpushed {}@{} ({} blobs, {} bytes uploaded)",
                r.reference, r.digest, r.uploaded_blobs, r.uploaded_bytes
            );
        }
    }
    Ok(())
}

/// Opens the store `--store` names.
pub(super) fn open_store(global: &Global) -> Result<Store> {
    Store::open(&global.store).with_context(|| format!("opening store {}", global.store.display()))
}

/// Loads the project at `rev` from the repository and builds every app (cache hits cost
/// nothing), showing progress on a terminal. A `base` that is a registry reference missing
/// from the store is pulled (tagged with the reference) and the build retried.
fn build_project(
    global: &Global,
    store: &Store,
    repo_path: &std::path::Path,
    rev: &Revision,
    remote: &super::registry::RemoteArgs,
) -> Result<(kiln_builder::project::Project, BuildReport)> {
    let mut pulled: Vec<String> = Vec::new();
    loop {
        let mut progress = Display::new();
        let built = build_revision(store, &global.root, repo_path, rev, &mut progress);
        progress.clear();
        match built {
            Ok(done) => return Ok(done),
            Err(e) => match super::registry::missing_registry_base(&e) {
                Some(base) if !pulled.contains(&base) => {
                    super::registry::pull_base(store, &base, &remote.options()?)
                        .with_context(|| format!("pulling base image {base}"))?;
                    pulled.push(base);
                }
                _ => return Err(e.into()),
            },
        }
    }
}

fn print_json(report: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, report)?;
    writeln!(out)?;
    Ok(())
}

fn print_summary(report: &BuildReport) {
    for s in &report.services {
        println!(
            "{}\t{}\t{}\t{:.2}s",
            s.image,
            s.digest,
            cache_word(s.cache),
            s.seconds
        );
    }
}

fn cache_word(c: CacheOutcome) -> &'static str {
    match c {
        CacheOutcome::Hit => "cached",
        CacheOutcome::Miss => "built",
    }
}

/// Progress on stderr: a spinner per running step on a terminal, plain lines otherwise.
pub(super) struct Display {
    bars: Option<MultiProgress>,
    current: Option<ProgressBar>,
}

impl Display {
    pub(super) fn new() -> Display {
        Display {
            bars: std::io::stderr().is_terminal().then(MultiProgress::new),
            current: None,
        }
    }

    fn line(&self, text: &str) {
        match &self.bars {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    pub(super) fn clear(&mut self) {
        if let Some(pb) = self.current.take() {
            pb.finish_and_clear();
        }
    }
}

impl Progress for Display {
    fn service_started(&mut self, service: &str, hit: bool) {
        if hit {
            self.line(&format!("{service}: cached"));
        } else {
            self.line(&format!("{service}: building"));
        }
    }

    fn step_started(&mut self, service: &str, step: &str) {
        if let Some(m) = &self.bars {
            let pb = m.add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_message(format!("{service}: {step}"));
            self.current = Some(pb);
        }
    }

    fn tick(&mut self) {
        // Redrawn from the build's own thread: no ticker thread (step containers are cloned
        // from this process, which must be single-threaded then).
        if let Some(pb) = &self.current {
            pb.tick();
        }
    }

    fn output(&mut self, service: &str, step: &str, line: &str) {
        self.line(&format!("  {service} {step} | {line}"));
    }

    fn step_finished(&mut self, service: &str, step: &StepReport) {
        self.clear();
        self.line(&format!(
            "{service}: {} {} ({:.2}s)",
            step.name,
            match step.cache {
                CacheOutcome::Hit => "cached",
                CacheOutcome::Miss => "done",
            },
            step.seconds
        ));
    }

    fn service_finished(&mut self, report: &ServiceReport) {
        self.line(&format!(
            "{}: {} {}",
            report.service, report.image, report.digest
        ));
    }
}

fn show_log(global: &Global, project: &str, service: &str, commit: Option<&str>) -> Result<()> {
    let dir = log::logs_dir(&global.store).join(project).join(service);
    let path = match commit {
        Some(c) => {
            let direct = log::log_path(&global.store, project, service, c);
            if direct.exists() {
                direct
            } else {
                built_by(global, project, service, c)?
            }
        }
        None => newest_log(&dir)?,
    };
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    std::io::stdout().lock().write_all(&text)?;
    Ok(())
}

/// The log of the build that made the image tagged for `commit` (a cache hit reuses an image
/// built at another commit; its label says which).
fn built_by(global: &Global, project: &str, service: &str, commit: &str) -> Result<PathBuf> {
    let store = Store::open(&global.store)?;
    let tag = format!("{project}/{service}:{commit}");
    let image = store
        .image(&tag)
        .with_context(|| format!("no build log of {project}/{service} at {commit}"))?;
    let built = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .and_then(|l| l.get(plan::labels::COMMIT))
        .cloned()
        .with_context(|| format!("image {tag} has no {} label", plan::labels::COMMIT))?;
    let path = log::log_path(&global.store, project, service, &built);
    if !path.exists() {
        bail!("no build log of {project}/{service} at {commit} (built at {built})");
    }
    Ok(path)
}

fn newest_log(dir: &std::path::Path) -> Result<PathBuf> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("no build logs in {}", dir.display()))?;
    entries
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?.modified().ok()?;
            Some((m, e.path()))
        })
        .max()
        .map(|(_, p)| p)
        .with_context(|| format!("no build logs in {}", dir.display()))
}
