//! Where the kiln binary a scenario runs is: the `kiln` knob, or the one beside the bench.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::report::Params;

/// The `kiln` knob, or the `kiln` next to the running bench binary (both in `target/<profile>/`);
/// fails when it does not exist.
pub fn locate(params: &Params) -> Result<PathBuf> {
    let kiln = match params.str("kiln", "") {
        "" => std::env::current_exe()
            .context("locating the bench binary")?
            .with_file_name("kiln"),
        path => PathBuf::from(path),
    };
    if !kiln.exists() {
        bail!(
            "no kiln binary at {} (build it: cargo build --release --bin kiln, or --set kiln=PATH)",
            kiln.display()
        );
    }
    Ok(kiln)
}
