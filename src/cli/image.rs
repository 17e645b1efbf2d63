//! `kiln image ...`: the store's command line (import, ls, inspect, export, rm, gc, fsck, mount).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_overlay::{
    default_config, Compression, Image, LayerOptions, LayerSource, NewImage, Store, Upper,
};
use serde_json::json;

use super::Global;

/// Image store commands.
#[derive(Debug, Args)]
pub struct ImageCmd {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Import a directory or a root-filesystem tarball (tar, tar.gz, tar.zst) as a one-layer image.
    Import(ImportArgs),
    /// List tagged images.
    Ls(JsonFlag),
    /// Print an image's manifest and config as JSON.
    Inspect {
        /// Image name (tag) or manifest digest.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Write an image as an oci-archive tar (readable by `skopeo copy oci-archive:...`).
    Export {
        /// Image name (tag) or manifest digest.
        name: String,
        /// Output file.
        out: PathBuf,
    },
    /// Remove tags (blobs stay until `kiln image gc`).
    Rm {
        /// Image names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove blobs and snapshots no tag reaches.
    Gc(JsonFlag),
    /// Re-hash every blob; exit 1 if anything is corrupt or missing.
    Fsck(JsonFlag),
    /// Mount an image (overlayfs of its snapshots) at DIR, read-only unless --upper/--work are given.
    Mount {
        /// Image name (tag) or manifest digest.
        name: String,
        /// Mount point (must exist).
        dir: PathBuf,
        /// overlayfs upper dir (makes the mount writable; needs --work).
        #[arg(long, requires = "work")]
        upper: Option<PathBuf>,
        /// overlayfs work dir (same filesystem as --upper).
        #[arg(long, requires = "upper")]
        work: Option<PathBuf>,
    },
    /// Unmount what `kiln image mount` mounted.
    Umount {
        /// Mount point.
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// Directory or tarball to import.
    source: PathBuf,
    /// Name to tag the image with.
    #[arg(long)]
    tag: String,
    /// Cmd (repeat for each argument; default /bin/sh).
    #[arg(long = "cmd", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// Entrypoint (repeat for each argument).
    #[arg(long = "entrypoint", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// Environment variable KEY=VALUE (repeatable; default PATH=...).
    #[arg(long = "env")]
    env: Vec<String>,
    /// Working directory (default /).
    #[arg(long)]
    workdir: Option<String>,
    /// User to run as.
    #[arg(long)]
    user: Option<String>,
    /// Layer compression: gzip or zstd.
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs an image command, printing any error.
pub fn main(global: &Global, cmd: ImageCmd) -> ExitCode {
    match run(global, cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln image: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn open(global: &Global) -> Result<Store> {
    Store::open(&global.store).with_context(|| format!("opening store {}", global.store.display()))
}

fn run(global: &Global, cmd: ImageCmd) -> Result<ExitCode> {
    let store = open(global)?;
    match cmd.action {
        Action::Import(args) => import(&store, args)?,
        Action::Ls(f) => ls(&store, f.json)?,
        Action::Inspect { name, json } => {
            let img = store.image(&name)?;
            let doc = json!({
                "name": name,
                "digest": img.digest.to_string(),
                "manifest": img.manifest,
                "config": img.config,
            });
            print_json(&doc, !json.json)?;
        }
        Action::Export { name, out } => {
            let img = store.image(&name)?;
            let file = std::fs::File::create(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            let tag = if name.starts_with("sha256:") {
                "latest"
            } else {
                &name
            };
            store
                .export_archive(&img, tag, std::io::BufWriter::new(file))
                .with_context(|| format!("exporting {name} to {}", out.display()))?;
            println!("{}", out.display());
        }
        Action::Rm { names } => {
            for n in names {
                let d = store.untag(&n)?;
                println!("untagged {n} ({})", d.digest());
            }
        }
        Action::Gc(f) => {
            let r = store.gc()?;
            if f.json {
                print_json(&serde_json::to_value(&r)?, false)?;
            } else {
                println!(
                    "removed {} blobs ({} bytes), {} snapshots, {} leftovers",
                    r.removed_blobs.len(),
                    r.freed_bytes,
                    r.removed_snapshots.len(),
                    r.removed_tmp.len()
                );
            }
        }
        Action::Fsck(f) => {
            let r = store.fsck()?;
            if f.json {
                print_json(&json!({"clean": r.is_clean(), "report": r}), false)?;
            } else {
                for c in &r.corrupt {
                    println!("corrupt {} (content hashes to {})", c.digest, c.actual);
                }
                for m in &r.missing {
                    println!("missing {} (referenced by {})", m.digest, m.referenced_by);
                }
                for s in &r.stray {
                    println!("stray {}", s.display());
                }
                println!(
                    "{}: {} blobs checked ({} bytes)",
                    if r.is_clean() { "clean" } else { "NOT clean" },
                    r.checked,
                    r.bytes
                );
            }
            if !r.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Action::Mount {
            name,
            dir,
            upper,
            work,
        } => {
            let img = store.image(&name)?;
            let upper = upper.zip(work).map(|(upper, work)| Upper { upper, work });
            let m = store
                .mount_image(&img, &dir, upper.as_ref())
                .with_context(|| format!("mounting {name} on {}", dir.display()))?;
            println!("{}", m.keep().display());
        }
        Action::Umount { dir } => kiln_overlay::unmount(&dir)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn import(store: &Store, args: ImportArgs) -> Result<()> {
    let compression = match args.compression.as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        other => bail!("--compression {other:?}: expected gzip or zstd"),
    };
    kiln_overlay::validate_ref(&args.tag)?; // before the (long) layer write
    let opts = LayerOptions {
        compression,
        ..LayerOptions::default()
    };
    let _lease = store.lease()?;
    let layer = layer_from(store, &args.source, &opts)
        .with_context(|| format!("importing {}", args.source.display()))?;
    let mut config = default_config();
    if !args.cmd.is_empty() {
        config.set_cmd(Some(args.cmd));
    }
    if !args.entrypoint.is_empty() {
        config.set_entrypoint(Some(args.entrypoint));
    }
    if !args.env.is_empty() {
        for e in &args.env {
            if !e.contains('=') {
                bail!("--env {e:?}: expected KEY=VALUE");
            }
        }
        config.set_env(Some(args.env));
    }
    if args.workdir.is_some() {
        config.set_working_dir(args.workdir);
    }
    if args.user.is_some() {
        config.set_user(args.user);
    }
    let mut img = NewImage::new(Vec::new(), config);
    // History names no host path: the same tree gives the same image wherever it lives.
    img.push_layer(layer, "kiln image import");
    let image = store.commit_image(&img, Some(&args.tag))?;
    if args.json {
        print_json(
            &json!({"name": args.tag, "digest": image.digest.to_string()}),
            false,
        )?;
    } else {
        println!("{} {}", args.tag, image.digest);
    }
    Ok(())
}

fn layer_from(store: &Store, source: &Path, opts: &LayerOptions) -> Result<kiln_overlay::Layer> {
    let meta = std::fs::metadata(source).with_context(|| format!("stat {}", source.display()))?;
    if meta.is_dir() {
        Ok(store.write_layer(LayerSource::Dir(source), opts)?)
    } else {
        let f =
            std::fs::File::open(source).with_context(|| format!("open {}", source.display()))?;
        Ok(store.import_tar(std::io::BufReader::new(f), opts)?)
    }
}

fn ls(store: &Store, json_out: bool) -> Result<()> {
    let mut rows = Vec::new();
    for (name, desc) in store.refs()? {
        let img: Option<Image> = store.image(&name).ok();
        let size: u64 = img
            .as_ref()
            .map(|i| i.manifest.layers().iter().map(|l| l.size()).sum())
            .unwrap_or(0);
        rows.push((name, desc.digest().to_string(), size));
    }
    if json_out {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, d, s)| json!({"name": n, "digest": d, "size": s}))
            .collect();
        print_json(&serde_json::Value::Array(v), false)?;
    } else {
        println!("{:<40} {:<71} {:>12}", "NAME", "DIGEST", "SIZE");
        for (n, d, s) in rows {
            println!("{n:<40} {d:<71} {s:>12}");
        }
    }
    Ok(())
}

fn print_json(v: &serde_json::Value, pretty: bool) -> Result<()> {
    let text = if pretty {
        serde_json::to_string_pretty(v)?
    } else {
        serde_json::to_string(v)?
    };
    println!("{text}");
    Ok(())
}
