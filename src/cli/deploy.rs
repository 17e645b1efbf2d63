//! `kiln deploy`, `kiln logs`, `kiln shell`: deploy a commit into an environment and look
//! inside its containers.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_deploy::build::Revision;
use kiln_deploy::container;
use kiln_deploy::env_state::EnvState;
use kiln_deploy::{deploy_commit, CommitRequest};

use super::build::{open_store, Display};
use super::Global;

/// `kiln deploy REPO --env NAME`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The project's git repository.
    repo: PathBuf,
    /// The environment to deploy into.
    #[arg(long)]
    env: String,
    /// Revision to deploy (sha, branch, tag); default: --branch if given, else HEAD.
    #[arg(long)]
    commit: Option<String>,
    /// Branch the deploy is for.
    #[arg(long)]
    branch: Option<String>,
    /// A new environment clones this environment's volumes.
    #[arg(long)]
    parent: Option<String>,
    /// Where a new router listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `kiln logs ENV SERVICE`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Environment.
    env: String,
    /// Service.
    #[arg(required_unless_present = "router")]
    service: Option<String>,
    /// The ingress's access log of the environment (JSON lines) instead of a service's output.
    #[arg(long, conflicts_with = "service")]
    router: bool,
    /// Keep printing what is appended.
    #[arg(short, long)]
    follow: bool,
}

/// `kiln shell ENV SERVICE`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Environment.
    env: String,
    /// Service.
    service: String,
    /// Command to run instead of `sh`.
    #[arg(last = true)]
    command: Vec<String>,
}

/// Runs `kiln deploy`.
pub fn deploy(global: &Global, args: DeployArgs) -> ExitCode {
    super::finish("deploy", run_deploy(global, args))
}

fn run_deploy(global: &Global, args: DeployArgs) -> Result<()> {
    let req = CommitRequest {
        repo: args.repo.clone(),
        revision: Revision {
            commit: args.commit.clone(),
            branch: args.branch.clone(),
            ..Revision::default()
        },
        runtime_root: global.root.clone(),
        kiln_bin: kiln_runtime::sealed_exe::host_exe().context("locating the kiln binary")?,
        env: args.env.clone(),
        parent: args.parent.clone(),
        listen: args.listen,
    };
    let store = open_store(global)?;
    let mut progress = Display::new();
    let report = deploy_commit(&store, &req, &mut progress);
    progress.clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let c = &report.changes;
        println!(
            "env {}: commit {} at http://{}/ (kept {}, replaced {}, started {}, stopped {}; held {:.0} ms, total {:.0} ms)",
            report.env,
            report.commit,
            report.router,
            c.keep.len(),
            c.replace.len(),
            c.start.len(),
            c.stop.len(),
            report.hold_ms,
            report.total_ms
        );
    }
    Ok(())
}

/// Runs `kiln logs`.
pub fn logs(global: &Global, args: LogsArgs) -> ExitCode {
    super::finish("logs", run_logs(global, args))
}

fn run_logs(global: &Global, args: LogsArgs) -> Result<()> {
    let (path, what) = match &args.service {
        Some(service) => (
            container::log_path(&global.root, &args.env, service),
            format!("service {service}"),
        ),
        None => {
            kiln_deploy::layout::validate_env(&args.env)?;
            let path = kiln_deploy::layout::access_log(&global.root, &args.env);
            (path, "the router".to_string())
        }
    };
    let mut f =
        std::fs::File::open(&path).with_context(|| format!("no log for {what} of {}", args.env))?;
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        f.read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        out.write_all(&buf)?;
        out.flush()?;
        if !args.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
        let pos = f.stream_position()?;
        f.seek(SeekFrom::Start(pos))?;
    }
}

/// Runs `kiln shell`.
pub fn shell(global: &Global, args: ShellArgs) -> ExitCode {
    match run_shell(global, args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("kiln shell: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_shell(global: &Global, args: ShellArgs) -> Result<i32> {
    let state = EnvState::load(&global.root, &args.env)?
        .with_context(|| format!("environment {} was never deployed", args.env))?;
    let svc = state
        .services
        .get(&args.service)
        .with_context(|| format!("environment {} has no service {}", args.env, args.service))?;
    let Some(id) = svc.container_id.as_deref() else {
        bail!("service {} of {} has no container", args.service, args.env);
    };
    let mut cmd = std::process::Command::new(kiln_runtime::sealed_exe::host_exe()?);
    cmd.arg("--root").arg(&global.root).arg("exec");
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        cmd.arg("-t");
    }
    cmd.arg(id);
    if args.command.is_empty() {
        cmd.arg("/bin/sh");
    } else {
        cmd.args(&args.command);
    }
    let status = cmd.status().context("running kiln exec")?;
    Ok(status.code().unwrap_or(1))
}
