//! `kiln pull REF [--tag NAME]`: an image from a registry into the store.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use kiln_overlay::Store;

use super::registry::{print_report, RemoteArgs};
use super::{finish, Global};

/// `kiln pull REF [--tag NAME]`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Source: host[:port]/repository[:tag][@sha256:…].
    reference: String,
    /// Tag to give the image in the store (default: repository:tag or repository@digest).
    #[arg(long)]
    tag: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `kiln pull`.
pub fn main(global: &Global, args: PullArgs) -> ExitCode {
    finish("pull", run(global, args))
}

fn run(global: &Global, args: PullArgs) -> Result<()> {
    let store = Store::open(&global.store)
        .with_context(|| format!("opening store {}", global.store.display()))?;
    let opts = args.remote.options()?;
    let r = kiln_registry::pull(&store, &args.reference, args.tag.as_deref(), &opts)
        .with_context(|| format!("pulling {}", args.reference))?;
    let line = format!(
        "{} -> {} ({}): {} blobs downloaded ({} bytes)",
        r.reference, r.tag, r.digest, r.downloaded_blobs, r.downloaded_bytes
    );
    print_report(args.json, &r, &line)
}
