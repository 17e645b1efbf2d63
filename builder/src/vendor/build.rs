//! `kiln vendor build`: recipe → apt closure → cached, verified .debs → layer directories →
//! image in the store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kiln_overlay::Store;

use super::apt::{self, Package};
use super::error::{io_err, Result, VendorError};
use super::fetch::{tempdir_in, DebCache};
use super::image::{self, LayerPlan};
use super::memo::{Memo, MemoFile};
use super::progress::Progress;
use super::recipe::LoadedRecipe;
use super::sandbox::{self, Overlay};
use super::setup;
use super::unpack::{LayerDir, PathFilter};

/// Where a build reads recipes and .debs and writes its image.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The recipes directory (`vendor-images/`).
    pub recipes: PathBuf,
    /// The kiln store.
    pub store: PathBuf,
    /// The .deb cache (defaults to `<store>/cache/debs`).
    pub deb_cache: Option<PathBuf>,
    /// Progress reporting.
    pub progress: Progress,
}

/// One layer of a built image.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerReport {
    /// What is in it.
    pub created_by: String,
    /// Blob digest.
    pub digest: String,
    /// Compressed size in bytes.
    pub size: u64,
}

/// What a build made.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BuildReport {
    /// Recipe name.
    pub name: String,
    /// Recipe digest (part of the tag).
    pub recipe_digest: String,
    /// Manifest digest of the image.
    pub manifest_digest: String,
    /// Tags pointing at it.
    pub tags: Vec<String>,
    /// Layers, bottom first.
    pub layers: Vec<LayerReport>,
    /// Every package in the image.
    pub packages: Vec<Package>,
    /// How many .debs were downloaded (0 when all were cached).
    pub downloaded: usize,
    /// The image's SOURCE_DATE_EPOCH.
    pub source_date_epoch: u64,
}

/// Builds recipe `name` into the store.
pub fn build(name: &str, opts: &BuildOptions) -> Result<BuildReport> {
    let recipe = LoadedRecipe::load(&opts.recipes, name)?;
    let store = Store::open(&opts.store).map_err(|e| VendorError::Store(e.to_string()))?;
    // Keeps gc from clearing tmp/ or collecting fresh layer blobs (or the image a warm build
    // tags again) while we build.
    let _lease = store
        .lease()
        .map_err(|e| VendorError::Store(e.to_string()))?;
    let progress = &opts.progress;
    let memo_file = MemoFile::for_recipe(&store.cache_dir(), &recipe.digest)?;
    let memo = memo_file.load();
    if let Some(report) = memo.as_ref().and_then(|m| m.report.as_ref()) {
        if let Some(report) = tag_again(&store, report)? {
            progress.line(&format!(
                "{name}: recipe and apt index unchanged, image {} reused",
                report.manifest_digest
            ));
            return Ok(report);
        }
    }
    let cache = DebCache::open(
        &opts
            .deb_cache
            .clone()
            .unwrap_or_else(|| store.cache_dir().join("debs")),
    )?;
    let scratch = tempdir_in(&store.tmp_dir(), "vendor")?;

    // Resolve: the base's closure on its own (so its layer is the same in every image), then ours.
    let base = recipe.base.as_deref();
    let (base_pkgs, own) = match memo {
        Some(m) => (m.base, m.own),
        None => {
            progress.line(&format!("resolving {name} with apt"));
            let resolved = resolve(&recipe, scratch.path())?;
            memo_file.save(&Memo {
                base: resolved.0.clone(),
                own: resolved.1.clone(),
                report: None,
            })?;
            resolved
        }
    };
    let memo_own = own.clone();
    let in_base: BTreeSet<&str> = base_pkgs.iter().map(|p| p.name.as_str()).collect();
    let top_pkgs: Vec<Package> = own
        .into_iter()
        .filter(|p| !in_base.contains(p.name.as_str()))
        .collect();

    let mut all: Vec<Package> = base_pkgs.iter().chain(&top_pkgs).cloned().collect();
    all.sort();
    let downloaded = cache.ensure(&all, progress)?;
    if downloaded > 0 {
        progress.line(&format!("downloaded {downloaded} .debs"));
    }

    // Package layers: the base's (with the skeleton), then this image's own packages.
    let mut plans: Vec<LayerPlan> = Vec::new();
    let unpack_bar = progress.items("unpacking", all.len() as u64);
    let mut groups: Vec<(&LoadedRecipe, &[Package])> = Vec::new();
    if let Some(b) = base {
        groups.push((b, &base_pkgs));
    }
    groups.push((&recipe, &top_pkgs));
    for (i, (owner, pkgs)) in groups.iter().enumerate() {
        if i > 0 && pkgs.is_empty() {
            continue;
        }
        let dir = scratch.path().join(format!("layer{i}"));
        std::fs::create_dir(&dir).map_err(io_err("mkdir", &dir))?;
        let mut layer = LayerDir::new(&dir);
        if i == 0 {
            setup::skeleton(&mut layer)?;
        }
        let filter = PathFilter::new(&owner.recipe.all_excludes(), &owner.recipe.all_keeps());
        let mut epoch = 0;
        for p in pkgs.iter() {
            let deb = cache.verify(p)?;
            epoch = epoch.max(layer.unpack_deb(&deb, &filter)?.max_mtime);
            unpack_bar.advance(1, &p.name);
        }
        if base.is_some() && i == 0 {
            setup::apply(owner, &mut layer, &[])?;
        }
        let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
        plans.push(LayerPlan {
            dir,
            overlay_upper: false,
            epoch,
            created_by: format!("kiln vendor: {}: {}", owner.name, names.join(" ")),
        });
    }
    unpack_bar.finish();
    let epoch = plans.iter().map(|p| p.epoch).max().unwrap_or(0);

    // Setup layer: this recipe's users, dirs, symlinks, files, bundles, then its run steps.
    let r = &recipe.recipe;
    if r.has_setup() {
        let upper = scratch.path().join("setup");
        std::fs::create_dir(&upper).map_err(io_err("mkdir", &upper))?;
        let lower: Vec<PathBuf> = plans.iter().rev().map(|p| p.dir.clone()).collect();
        setup::apply(&recipe, &mut LayerDir::new(&upper), &lower)?;
        for step in &r.run {
            progress.line(&format!("running {}", step.args.join(" ")));
            let ov = Overlay {
                lower: lower.clone(),
                upper: upper.clone(),
                work: scratch.path().join("work"),
                merged: scratch.path().join("merged"),
            };
            sandbox::run(step, &ov, scratch.path())?;
        }
        plans.push(LayerPlan {
            dir: upper,
            overlay_upper: true,
            epoch,
            created_by: format!("kiln vendor: {} setup", recipe.name),
        });
    }

    progress.line(&format!("writing {} layers", plans.len()));
    let layers = image::write_layers(&store, &plans)?;
    let config = image::config(&recipe, &all, epoch);
    let reports = layers
        .iter()
        .zip(&plans)
        .map(|(l, p)| LayerReport {
            created_by: p.created_by.clone(),
            digest: l.digest.to_string(),
            size: l.size,
        })
        .collect();
    let with_history = layers
        .into_iter()
        .zip(plans.iter().map(|p| p.created_by.clone()))
        .collect();
    let (img, tags) = image::commit(&store, &recipe, with_history, config, &all, epoch)?;
    let report = BuildReport {
        name: recipe.name.clone(),
        recipe_digest: recipe.digest.clone(),
        manifest_digest: img.digest.to_string(),
        tags,
        layers: reports,
        packages: all,
        downloaded,
        source_date_epoch: epoch,
    };
    memo_file.save(&Memo {
        base: base_pkgs,
        own: memo_own,
        report: Some(report.clone()),
    })?;
    Ok(report)
}

/// The apt closures of the recipe's base (empty without one) and of the recipe itself (the
/// base's omit list counted as installed too), with apt's scratch space under `scratch`.
fn resolve(recipe: &LoadedRecipe, scratch: &Path) -> Result<(Vec<Package>, Vec<Package>)> {
    let base = recipe.base.as_deref();
    let base_pkgs = match base {
        Some(b) => apt::resolve(
            &b.name,
            &b.recipe.packages,
            &b.recipe.omit,
            &scratch.join("apt-base"),
        )?,
        None => Vec::new(),
    };
    let mut omit = recipe.recipe.omit.clone();
    if let Some(b) = base {
        omit.extend(b.recipe.omit.iter().cloned());
    }
    let own = if recipe.recipe.packages.is_empty() {
        Vec::new()
    } else {
        apt::resolve(
            &recipe.name,
            &recipe.recipe.packages,
            &omit,
            &scratch.join("apt"),
        )?
    };
    Ok((base_pkgs, own))
}

/// A warm build: when the image of an earlier build of the same recipe against the same index
/// is still whole in the store, tags it again and returns that build's report (nothing
/// downloaded); `None` when it is not.
fn tag_again(store: &Store, report: &BuildReport) -> Result<Option<BuildReport>> {
    let Ok(image) = store.image(&report.manifest_digest) else {
        return Ok(None);
    };
    let whole = image
        .layers()
        .is_ok_and(|layers| layers.iter().all(|l| store.has_blob(&l.digest)));
    if !whole {
        return Ok(None);
    }
    for t in &report.tags {
        store
            .tag(t, &image.descriptor())
            .map_err(|e| VendorError::Store(e.to_string()))?;
    }
    Ok(Some(BuildReport {
        downloaded: 0,
        ..report.clone()
    }))
}

/// The default recipes directory: `$KILN_VENDOR_IMAGES`, else `./vendor-images`.
pub fn default_recipes_dir() -> PathBuf {
    std::env::var_os("KILN_VENDOR_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("vendor-images").to_path_buf())
}
