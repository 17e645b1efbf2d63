//! Command-line parsing and dispatch: each area of kiln has its own module here.
// The doc comments of the clap types are the commands' --help text, written for a terminal
// (`<store>`, `UID[:GID]`), not rustdoc markup.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

mod build;
mod container;
mod deploy;
mod env;
mod export;
mod image;
mod ingress;
mod net;
mod pull;
mod push;
mod registry;
mod router;
mod vendor;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Options every kiln command accepts (runc's global flags among them).
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Root directory for container state (runc's --root).
    #[arg(long, global = true, env = "KILN_RUNTIME", default_value = "/run/kiln")]
    pub root: PathBuf,
    /// The store: OCI layout, snapshots, build cache, volumes.
    #[arg(
        long,
        global = true,
        env = "KILN_STORE",
        default_value = "/var/lib/kiln"
    )]
    pub store: PathBuf,
    /// Write logs to this file instead of stderr.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: String,
    /// Verbose logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility; kiln manages cgroupfs directly.
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
}

/// kiln: build git commits into frozen OCI images and run them as containers.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Every kiln command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Base images from Debian packages (vendor-images/ recipes).
    #[command(subcommand)]
    Vendor(vendor::VendorCommand),
    /// Build a git commit of a project into one frozen image per app (`kiln build log`: its log).
    Build(build::BuildCmd),
    /// Declared-only networking: namespaces and veth links between declared services.
    #[command(subcommand)]
    Net(net::NetCommand),
    /// The image store: import, ls, inspect, export, rm, gc, fsck, mount.
    Image(image::ImageCmd),
    /// The OCI runtime (runc's command line).
    #[command(flatten)]
    Runtime(container::RuntimeCommand),
    /// Environments: list, status, destroy, and drive their router.
    #[command(subcommand)]
    Env(env::EnvCommand),
    /// Build a commit and make it the live environment (zero-downtime swap, rollback on failure).
    Deploy(deploy::DeployArgs),
    /// Print (or follow) a service's output in an environment.
    Logs(deploy::LogsArgs),
    /// A shell (or a command) in a service's running container.
    Shell(deploy::ShellArgs),
    /// Push an image from the store to an OCI registry (host[:port]/repository:tag).
    Push(push::PushArgs),
    /// Pull an image from an OCI registry into the store.
    Pull(pull::PullArgs),
    /// An environment as objects for another engine (`kiln export kubernetes`).
    #[command(subcommand)]
    Export(export::ExportCmd),
    /// The host's ingress: one HTTP(S) front door routing by host to every environment.
    #[command(subcommand)]
    Ingress(ingress::IngressCommand),
}

/// Reports a command's error (with its causes) under `kiln AREA:` and turns the result into
/// an exit code.
pub(crate) fn finish(area: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln {area}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the tracing subscriber: warnings (a killed deploy's containers adopted or
/// destroyed, a router's lease ending) on stderr, debug lines too with `--debug`, JSON lines
/// with `--log-format json`; `RUST_LOG` overrides the level. (`--log` stays the runtime's
/// runc-style log, written by the runtime commands themselves.)
fn install_subscriber(global: &Global) {
    use tracing_subscriber::EnvFilter;
    let level = if global.debug { "debug" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second install (never in the binary) is harmless: the first subscriber stays.
    let _ = if global.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Parses the command line, runs the command and turns its result into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    install_subscriber(&cli.global);
    match cli.command {
        Command::Vendor(c) => vendor::run(&cli.global, c),
        Command::Build(cmd) => build::main(&cli.global, cmd),
        Command::Net(cmd) => net::run(&cli.global, cmd),
        Command::Image(cmd) => image::main(&cli.global, cmd),
        Command::Runtime(c) => container::main(&cli.global, c),
        Command::Env(cmd) => env::run(&cli.global, cmd),
        Command::Deploy(args) => deploy::deploy(&cli.global, args),
        Command::Logs(args) => deploy::logs(&cli.global, args),
        Command::Shell(args) => deploy::shell(&cli.global, args),
        Command::Push(args) => push::main(&cli.global, args),
        Command::Pull(args) => pull::main(&cli.global, args),
        Command::Export(cmd) => export::main(&cli.global, cmd),
        Command::Ingress(cmd) => ingress::run(&cli.global, cmd),
    }
}
