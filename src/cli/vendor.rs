//! `kiln vendor`: build base images from the Debian-package recipes in `vendor-images/`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use kiln_builder::vendor::{self, BuildOptions, Progress};

use super::Global;

/// `kiln vendor` subcommands.
#[derive(Debug, Subcommand)]
pub enum VendorCommand {
    /// Build recipe NAME into the store, tagged NAME:<recipe-digest> and NAME:latest.
    Build {
        /// The recipe (vendor-images/NAME.toml).
        name: String,
        /// The recipes directory.
        #[arg(long, env = "KILN_VENDOR_IMAGES")]
        recipes: Option<PathBuf>,
        /// Where downloaded .debs are cached (default: <store>/cache/debs).
        #[arg(long, env = "KILN_DEB_CACHE")]
        deb_cache: Option<PathBuf>,
        /// Print the build report as JSON.
        #[arg(long)]
        json: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the recipes and their digests.
    Ls {
        /// The recipes directory.
        #[arg(long, env = "KILN_VENDOR_IMAGES")]
        recipes: Option<PathBuf>,
    },
}

/// Runs a `kiln vendor` command.
pub fn run(global: &Global, cmd: VendorCommand) -> ExitCode {
    match exec(global, cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln vendor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn exec(global: &Global, cmd: VendorCommand) -> anyhow::Result<()> {
    match cmd {
        VendorCommand::Build {
            name,
            recipes,
            deb_cache,
            json,
            quiet,
        } => {
            let opts = BuildOptions {
                recipes: recipes.unwrap_or_else(vendor::default_recipes_dir),
                store: global.store.clone(),
                deb_cache,
                progress: if quiet {
                    Progress::quiet()
                } else {
                    Progress::auto()
                },
            };
            let report = vendor::build(&name, &opts)
                .with_context(|| format!("building vendor image {name}"))?;
            if json {
                return print(format!("{}\n", serde_json::to_string_pretty(&report)?));
            }
            let mut out = format!(
                "{} {} ({} packages, {} downloaded)\n",
                report.name,
                report.manifest_digest,
                report.packages.len(),
                report.downloaded
            );
            for l in &report.layers {
                out += &format!(
                    "  layer {} {:>10} bytes  {}\n",
                    l.digest,
                    l.size,
                    short(&l.created_by)
                );
            }
            for t in &report.tags {
                out += &format!("tagged {t}\n");
            }
            print(out)?;
        }
        VendorCommand::Ls { recipes } => {
            let dir = recipes.unwrap_or_else(vendor::default_recipes_dir);
            let mut out = String::new();
            for name in vendor::recipe::list(&dir)? {
                let r = vendor::recipe::LoadedRecipe::load(&dir, &name)
                    .with_context(|| format!("recipe {name}"))?;
                out += &format!("{name}\t{}\t{}\n", r.digest, r.recipe.description);
            }
            print(out)?;
        }
    }
    Ok(())
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
fn print(text: String) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 90 {
        format!("{}...", s.chars().take(87).collect::<String>())
    } else {
        s.to_string()
    }
}
