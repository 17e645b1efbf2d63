//! kiln-bench: runs one benchmark scenario, measuring kiln next to its peers in the same run.
//!
//! `cargo run -p kiln-bench --release -- <scenario> [--out FILE]` prints a table and writes JSON.

mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Command line of the benchmark harness.
#[derive(Debug, Parser)]
#[command(
    name = "kiln-bench",
    about = "kiln benchmarks, side by side with its peers"
)]
struct Args {
    /// Scenario to run (see --help for the list).
    scenario: String,
    /// Where to write the JSON report (default: `bench-results/<scenario>.json`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scenario-specific knobs as key=value (for example size_mb=50).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(scenario) = scenarios::find(&args.scenario) else {
        eprintln!(
            "kiln-bench: unknown scenario {:?}; known: {}",
            args.scenario,
            scenarios::names().join(", ")
        );
        return ExitCode::from(2);
    };
    let params = match report::Params::parse(&args.set) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    match (scenario.run)(&params) {
        Ok(report) => {
            report.print_table();
            let out = args
                .out
                .unwrap_or_else(|| PathBuf::from(format!("bench-results/{}.json", scenario.name)));
            if let Err(e) = report.write_json(&out) {
                eprintln!("kiln-bench: writing {}: {e:#}", out.display());
                return ExitCode::FAILURE;
            }
            eprintln!("kiln-bench: wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiln-bench: scenario {} failed: {e:#}", scenario.name);
            ExitCode::FAILURE
        }
    }
}
