//! The `kiln` binary: a thin command line over kiln's crates.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
