//! Turning built layer directories into an image in kiln's OCI store: deterministic layers,
//! the runtime config from the recipe, the package list (a manifest annotation, its digest a
//! label), and the tags.

use std::collections::HashMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use kiln_overlay::oci_spec::image::Config;
use kiln_overlay::{Layer, LayerOptions, LayerSource, NewImage, Store, DEFAULT_PATH};

use super::apt::Package;
use super::error::{Result, VendorError};
use super::recipe::LoadedRecipe;

/// One layer directory to write, with its SOURCE_DATE_EPOCH and what made it.
#[derive(Debug)]
pub struct LayerPlan {
    /// The directory (the layer's `/`).
    pub dir: PathBuf,
    /// Whether `dir` is an overlayfs upper dir (whiteouts to convert).
    pub overlay_upper: bool,
    /// mtime of every entry.
    pub epoch: u64,
    /// History line.
    pub created_by: String,
}

fn store_err(e: kiln_overlay::Error) -> VendorError {
    VendorError::Store(e.to_string())
}

/// Writes each layer into the store (bottom first).
pub fn write_layers(store: &Store, plans: &[LayerPlan]) -> Result<Vec<Layer>> {
    plans
        .iter()
        .map(|p| {
            let opts = LayerOptions {
                mtime: p.epoch,
                keep_owners: true,
                ..LayerOptions::default()
            };
            let src = if p.overlay_upper {
                LayerSource::OverlayUpper(&p.dir)
            } else {
                LayerSource::Dir(&p.dir)
            };
            store.write_layer(src, &opts).map_err(store_err)
        })
        .collect()
}

/// Config label holding the sha256 of the package list (containerd refuses labels over 4096
/// bytes, so the list itself is the manifest annotation [`PACKAGES_ANNOTATION`]).
pub const PACKAGES_DIGEST_LABEL: &str = "dev.kiln.vendor.packages-digest";
/// Manifest annotation listing every package: `name version arch sha256:hex`, one a line.
pub const PACKAGES_ANNOTATION: &str = "dev.kiln.vendor.packages";

/// The package list, one `name version arch sha256:hex` a line, in build order.
pub fn package_list(packages: &[Package]) -> String {
    packages
        .iter()
        .map(|p| format!("{} {} {} sha256:{}", p.name, p.version, p.arch, p.sha256))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The OCI runtime config of a recipe (with its base's as defaults), labelled with the recipe
/// digest and the sha256 of its package list.
pub fn config(recipe: &LoadedRecipe, packages: &[Package], epoch: u64) -> Config {
    let own = &recipe.recipe.config;
    let base = recipe
        .base
        .as_ref()
        .map(|b| b.recipe.config.clone())
        .unwrap_or_default();
    let mut env = base.env.clone();
    env.extend(own.env.clone());
    let mut envs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !env.contains_key("PATH") {
        envs.insert(0, DEFAULT_PATH.to_string());
    }
    let mut labels: HashMap<String, String> = base.labels.clone().into_iter().collect();
    labels.extend(own.labels.clone());
    labels.insert("org.opencontainers.image.title".into(), recipe.name.clone());
    if !recipe.recipe.description.is_empty() {
        labels.insert(
            "org.opencontainers.image.description".into(),
            recipe.recipe.description.clone(),
        );
    }
    labels.insert("dev.kiln.vendor.recipe".into(), recipe.name.clone());
    labels.insert(
        "dev.kiln.vendor.recipe-digest".into(),
        recipe.digest.clone(),
    );
    labels.insert(
        "dev.kiln.vendor.source-date-epoch".into(),
        epoch.to_string(),
    );
    labels.insert(
        PACKAGES_DIGEST_LABEL.into(),
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(package_list(packages)))
        ),
    );
    let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
    let pick_vec =
        |a: &Vec<String>, b: &Vec<String>| if a.is_empty() { b.clone() } else { a.clone() };
    let mut c = Config::default();
    c.set_env(Some(envs));
    c.set_user(pick(&own.user, &base.user));
    c.set_working_dir(Some(
        pick(&own.workdir, &base.workdir).unwrap_or_else(|| "/".into()),
    ));
    let entrypoint = pick_vec(&own.entrypoint, &base.entrypoint);
    c.set_entrypoint((!entrypoint.is_empty()).then_some(entrypoint));
    let cmd = pick_vec(&own.cmd, &base.cmd);
    c.set_cmd(Some(if cmd.is_empty() {
        vec!["/bin/sh".into()]
    } else {
        cmd
    }));
    let ports = pick_vec(&own.ports, &base.ports);
    c.set_exposed_ports((!ports.is_empty()).then_some(ports));
    c.set_stop_signal(pick(&own.stop_signal, &base.stop_signal));
    c.set_labels(Some(labels));
    c
}

/// Commits the image (annotated with the package list) and tags it `<name>:<recipe digest>`
/// and `<name>:latest`; nothing is tagged unless the whole image is stored.
pub fn commit(
    store: &Store,
    recipe: &LoadedRecipe,
    layers: Vec<(Layer, String)>,
    config: Config,
    packages: &[Package],
    epoch: u64,
) -> Result<(kiln_overlay::Image, Vec<String>)> {
    let mut img = NewImage::new(Vec::new(), config);
    img.created = epoch;
    img.annotations
        .insert(PACKAGES_ANNOTATION.into(), package_list(packages));
    for (l, by) in layers {
        img.push_layer(l, &by);
    }
    let tags = vec![
        format!("{}:{}", recipe.name, recipe.digest),
        format!("{}:latest", recipe.name),
    ];
    let image = store
        .commit_image(&img, Some(&tags[0]))
        .map_err(store_err)?;
    store
        .tag(&tags[1], &image.descriptor())
        .map_err(store_err)?;
    Ok((image, tags))
}
