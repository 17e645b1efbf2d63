//! `kiln push IMAGE REF`: an image from the store to a registry.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use kiln_overlay::Store;

use super::registry::{print_report, RemoteArgs};
use super::{finish, Global};

/// `kiln push IMAGE REF`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image in the store (tag or manifest digest).
    image: String,
    /// Destination: host[:port]/repository:tag.
    reference: String,
    /// A repository of the same registry to mount missing blobs from (repeatable).
    #[arg(long = "mount-from")]
    mount_from: Vec<String>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `kiln push`.
pub fn main(global: &Global, args: PushArgs) -> ExitCode {
    finish("push", run(global, args))
}

fn run(global: &Global, args: PushArgs) -> Result<()> {
    let store = Store::open(&global.store)
        .with_context(|| format!("opening store {}", global.store.display()))?;
    let opts = args.remote.options()?;
    let r = kiln_registry::push(
        &store,
        &args.image,
        &args.reference,
        &args.mount_from,
        &opts,
    )
    .with_context(|| format!("pushing {} to {}", args.image, args.reference))?;
    let line = format!(
        "{}@{}: {} blobs uploaded ({} bytes), {} already there",
        r.reference, r.digest, r.uploaded_blobs, r.uploaded_bytes, r.reused_blobs
    );
    print_report(args.json, &r, &line)
}
