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
    let report = build_project(global, &repo_path, &rev)?;
    if args.json {
        print_json(&report)?;
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// Opens the store `--store` names.
pub(super) fn open_store(global: &Global) -> Result<Store> {
    Store::open(&global.store).with_context(|| format!("opening store {}", global.store.display()))
}

/// Loads the project at `rev` from the repository and builds every app (cache hits cost
/// nothing), showing progress on a terminal.
fn build_project(
    global: &Global,
    repo_path: &std::path::Path,
    rev: &Revision,
) -> Result<BuildReport> {
    let store = open_store(global)?;
    let mut progress = Display::new();
    let built = build_revision(&store, &global.root, repo_path, rev, &mut progress);
    progress.clear();
    Ok(built?.1)
}

fn print_json(report: &BuildReport) -> Result<()> {
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
