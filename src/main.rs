//! The `kiln` binary: a thin command line over kiln's crates.

mod cli;

use std::ffi::OsString;
use std::process::ExitCode;

/// Verbs that never clone a container process: they skip the sealed re-exec.
const NO_CLONE: &[&str] = &[
    "start", "state", "kill", "delete", "ps", "pause", "resume", "list", "spec", "features",
    "events", "image", "net", "logs", "help", "push", "pull", "export",
];

/// Global flags that take their value as the next argument.
const VALUE_FLAGS: &[&str] = &["--root", "--store", "--log", "--log-format"];

/// Whether the command line may clone a container init or an exec helper (unknown: yes).
fn clones_containers(args: &[OsString]) -> bool {
    let mut it = args.iter().skip(1).filter_map(|a| a.to_str());
    while let Some(a) = it.next() {
        if VALUE_FLAGS.contains(&a) {
            it.next();
        } else if !a.starts_with('-') {
            return !NO_CLONE.contains(&a);
        } else if matches!(a, "-h" | "--help" | "-V" | "--version") {
            return false;
        }
    }
    false
}

fn main() -> ExitCode {
    // Before anything can clone a container process (create, run, exec, build steps, deploys),
    // kiln runs from a read-only copy of itself, never from the writable host binary
    // (CVE-2019-5736). `ensure` returns only when already sealed, or with the error.
    let args: Vec<OsString> = std::env::args_os().collect();
    if clones_containers(&args) {
        if let Err(e) = kiln_runtime::sealed_exe::ensure() {
            eprintln!("kiln: {e}");
            return ExitCode::FAILURE;
        }
    }
    cli::main()
}
