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
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            println!(
                "{} {} ({} packages, {} downloaded)",
                report.name,
                report.manifest_digest,
                report.packages.len(),
                report.downloaded
            );
            for l in &report.layers {
                println!(
                    "  layer {} {:>10} bytes  {}",
                    l.digest,
                    l.size,
                    short(&l.created_by)
                );
            }
            for t in &report.tags {
                println!("tagged {t}");
            }
        }
        VendorCommand::Ls { recipes } => {
            let dir = recipes.unwrap_or_else(vendor::default_recipes_dir);
            for name in vendor::recipe::list(&dir)? {
                let r = vendor::recipe::LoadedRecipe::load(&dir, &name)
                    .with_context(|| format!("recipe {name}"))?;
                println!("{name}\t{}\t{}", r.digest, r.recipe.description);
            }
        }
    }
    Ok(())
}

fn short(s: &str) -> String {
    if s.chars().count() > 90 {
        format!("{}...", s.chars().take(87).collect::<String>())
    } else {
        s.to_string()
    }
}
