//! The `kiln` binary: a thin command line over kiln's crates.

mod cli;

use std::ffi::{OsStr, OsString};
use std::process::ExitCode;

/// Verbs that never clone a container process: they skip the sealed re-exec.
const NO_CLONE: &[&str] = &[
    "start", "state", "kill", "delete", "ps", "pause", "resume", "list", "spec", "features",
    "events", "image", "net", "logs", "help", "push", "pull", "export",
];

/// Global flags that take their value as the next argument.
const VALUE_FLAGS: &[&str] = &["--root", "--store", "--log", "--log-format"];

/// Whether the command line may clone a container init or an exec helper (unknown: yes).
/// Arguments are compared as bytes: one that is not UTF-8 is still counted (a flag's value
/// skipped, a verb seen), never dropped.
fn clones_containers(args: &[OsString]) -> bool {
    let is = |a: &OsStr, names: &[&str]| names.iter().any(|n| a == *n);
    let mut it = args.iter().skip(1).map(OsString::as_os_str);
    while let Some(a) = it.next() {
        if is(a, VALUE_FLAGS) {
            it.next();
        } else if !a.as_encoded_bytes().starts_with(b"-") {
            return !is(a, NO_CLONE);
        } else if is(a, &["-h", "--help", "-V", "--version"]) {
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
    let code = cli::main();
    // The child that closed the sealed copy's mounts after the re-exec is ours to reap.
    kiln_runtime::sealed_exe::reap_closer();
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn args(a: &[&[u8]]) -> Vec<OsString> {
        a.iter().map(|b| OsString::from_vec(b.to_vec())).collect()
    }

    #[test]
    fn a_non_utf8_argument_is_not_dropped() {
        // `--root <not UTF-8>` must skip its value, not the verb after it.
        assert!(clones_containers(&args(&[
            b"kiln",
            b"--root",
            b"/tmp/\xff",
            b"exec",
            b"-d",
            b"list",
            b"true"
        ])));
        assert!(clones_containers(&args(&[b"kiln", b"\xffrun"])));
        assert!(!clones_containers(&args(&[
            b"kiln",
            b"--root",
            b"/tmp/\xff",
            b"state",
            b"x"
        ])));
        assert!(clones_containers(&args(&[
            b"kiln", b"--log", b"l", b"run", b"x"
        ])));
        assert!(!clones_containers(&args(&[b"kiln", b"--version"])));
    }
}
