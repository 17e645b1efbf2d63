//! Images: committing layers + a runtime config as config and manifest blobs and a tag, and
//! reading them back.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{
    Arch, Config, Descriptor, DescriptorBuilder, History, ImageConfiguration, ImageManifest,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::json;
use crate::layer::{source_date_epoch, Layer};
use crate::store::Store;

/// The PATH an image gets when its config does not say.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An image to commit: its layers (bottom first) and its runtime config.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// Layers, bottom first; their blobs must already be in the store.
    pub layers: Vec<Layer>,
    /// The runtime config (Cmd, Env, WorkingDir, Entrypoint, User, Labels, ...).
    pub config: Config,
    /// History entries (one per layer is customary; may be empty).
    pub history: Vec<History>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// The `created` time as seconds since the epoch (defaults to `$SOURCE_DATE_EPOCH`, else 0).
    pub created: u64,
    /// CPU architecture (defaults to the host's).
    pub architecture: Arch,
    /// Operating system (linux).
    pub os: Os,
}

impl NewImage {
    /// An image of `layers` with `config`, other fields at their reproducible defaults.
    pub fn new(layers: Vec<Layer>, config: Config) -> Self {
        Self {
            layers,
            config,
            history: Vec::new(),
            annotations: BTreeMap::new(),
            created: source_date_epoch(),
            architecture: Arch::default(),
            os: Os::Linux,
        }
    }

    /// An image that starts as a copy of `base` (its layers, config and history).
    pub fn on_top_of(base: &Image) -> Result<Self> {
        let mut img = Self::new(
            base.layers()?,
            base.config.config().clone().unwrap_or_default(),
        );
        img.history = base.config.history().clone().unwrap_or_default();
        img.architecture = base.config.architecture().clone();
        img.os = base.config.os().clone();
        Ok(img)
    }

    /// Appends a layer and a history entry saying what made it.
    pub fn push_layer(&mut self, layer: Layer, created_by: &str) {
        let mut h = History::default();
        h.set_created(Some(rfc3339(self.created)));
        h.set_created_by(Some(created_by.to_string()));
        self.history.push(h);
        self.layers.push(layer);
    }
}

/// The default runtime config for an imported tree: `Cmd ["/bin/sh"]`, a standard PATH, WorkingDir `/`.
pub fn default_config() -> Config {
    let mut c = Config::default();
    c.set_cmd(Some(vec!["/bin/sh".to_string()]));
    c.set_env(Some(vec![DEFAULT_PATH.to_string()]));
    c.set_working_dir(Some("/".to_string()));
    c
}

/// An image in the store: its manifest (and digest) and its config.
#[derive(Debug, Clone)]
pub struct Image {
    /// Digest of the manifest blob (the image's identity).
    pub digest: Digest,
    /// Size of the manifest blob.
    pub size: u64,
    /// The manifest.
    pub manifest: ImageManifest,
    /// Digest of the config blob.
    pub config_digest: Digest,
    /// The image configuration.
    pub config: ImageConfiguration,
}

impl Image {
    /// The manifest descriptor (what a tag points at).
    pub fn descriptor(&self) -> Descriptor {
        descriptor(MediaType::ImageManifest, &self.digest, self.size)
    }

    /// The layers, bottom first, with their diff_ids from the config.
    pub fn layers(&self) -> Result<Vec<Layer>> {
        let diff_ids = self.config.rootfs().diff_ids();
        let layers = self.manifest.layers();
        if diff_ids.len() != layers.len() {
            return Err(Error::BadDocument {
                what: format!("image {}", self.digest),
                reason: format!(
                    "{} layers in the manifest but {} diff_ids in the config",
                    layers.len(),
                    diff_ids.len()
                ),
            });
        }
        layers
            .iter()
            .zip(diff_ids)
            .map(|(l, d)| {
                Ok(Layer {
                    digest: Digest::from_oci(l.digest())?,
                    size: l.size(),
                    diff_id: Digest::parse(d)?,
                    media_type: l.media_type().clone(),
                })
            })
            .collect()
    }

    /// Chain ids of the layers, bottom first (the keys of their snapshots).
    pub fn chain_ids(&self) -> Result<Vec<Digest>> {
        let diff_ids: Vec<Digest> = self.layers()?.iter().map(|l| l.diff_id).collect();
        Ok(chain_ids(&diff_ids))
    }
}

/// Chain ids for diff_ids (bottom first): `C0 = D0`, `Cn = sha256(Cn-1 + " " + Dn)`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => *d,
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

impl Store {
    /// Writes the config and manifest blobs of `img` (its layers must already be stored), then
    /// tags it `tag` if given. Nothing is tagged unless every blob it references exists.
    pub fn commit_image(&self, img: &NewImage, tag: Option<&str>) -> Result<Image> {
        if let Some(t) = tag {
            crate::refs::validate_ref(t)?;
        }
        let _lease = self.lease()?;
        for l in &img.layers {
            if !self.has_blob(&l.digest) {
                return Err(Error::BlobNotFound(l.digest));
            }
        }
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(
                img.layers
                    .iter()
                    .map(|l| l.diff_id.to_string())
                    .collect::<Vec<_>>(),
            )
            .build()
            .map_err(|e| oci_err("image config", e))?;
        let mut config = ImageConfiguration::default();
        config.set_created(Some(rfc3339(img.created)));
        config.set_architecture(img.architecture.clone());
        config.set_os(img.os.clone());
        config.set_config(Some(img.config.clone()));
        config.set_rootfs(rootfs);
        config.set_history(if img.history.is_empty() {
            None
        } else {
            Some(img.history.clone())
        });
        let config_bytes = json::to_canonical_vec(&config, "image config")?;
        let config_blob = self.ingest_bytes(&config_bytes)?;

        let mut manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MediaType::ImageConfig,
                &config_blob.digest,
                config_blob.size,
            ))
            .layers(
                img.layers
                    .iter()
                    .map(|l| descriptor(l.media_type.clone(), &l.digest, l.size))
                    .collect::<Vec<_>>(),
            )
            .build()
            .map_err(|e| oci_err("image manifest", e))?;
        if !img.annotations.is_empty() {
            let ann: HashMap<String, String> = img.annotations.clone().into_iter().collect();
            manifest.set_annotations(Some(ann));
        }
        let manifest_bytes = json::to_canonical_vec(&manifest, "image manifest")?;
        let manifest_blob = self.ingest_bytes(&manifest_bytes)?;

        let image = Image {
            digest: manifest_blob.digest,
            size: manifest_blob.size,
            manifest,
            config_digest: config_blob.digest,
            config,
        };
        if let Some(t) = tag {
            self.tag(t, &image.descriptor())?;
        }
        Ok(image)
    }

    /// Reads an image by tag or by manifest digest (`sha256:...`).
    pub fn image(&self, reference: &str) -> Result<Image> {
        let (digest, size) = if reference.starts_with("sha256:") {
            let d = Digest::parse(reference)?;
            let size = std::fs::metadata(self.blob_path(&d))
                .map_err(|_| Error::BlobNotFound(d))?
                .len();
            (d, size)
        } else {
            let desc = self.resolve(reference)?;
            if *desc.media_type() != MediaType::ImageManifest {
                return Err(Error::BadDocument {
                    what: format!("ref {reference:?}"),
                    reason: format!("points at a {}, not an image manifest", desc.media_type()),
                });
            }
            (Digest::from_oci(desc.digest())?, desc.size())
        };
        let what = format!("manifest {digest}");
        let manifest: ImageManifest = json::from_slice(&self.read_blob(&digest)?, &what)?;
        let config_digest = Digest::from_oci(manifest.config().digest())?;
        let config: ImageConfiguration = json::from_slice(
            &self.read_blob(&config_digest)?,
            &format!("config {config_digest}"),
        )?;
        Ok(Image {
            digest,
            size,
            manifest,
            config_digest,
            config,
        })
    }
}

/// A descriptor of a blob.
pub(crate) fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest.to_oci())
        .size(size)
        .build()
        .unwrap_or_else(|_| unreachable!("media type, digest and size are all the builder needs"))
}

fn oci_err(what: &str, e: oci_spec::OciSpecError) -> Error {
    Error::BadDocument {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// Formats seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`); a time beyond
/// year 9999 is written as the last second of 9999.
pub(crate) fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(kiln_util::time::rfc3339_secs)
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{LayerOptions, LayerSource};

    #[test]
    fn chain_ids_follow_the_spec() {
        let d: Vec<Digest> = ["a", "b"]
            .iter()
            .map(|s| Digest::of(s.as_bytes()))
            .collect();
        let c = chain_ids(&d);
        assert_eq!(c[0], d[0]);
        assert_eq!(c[1], Digest::of(format!("{} {}", d[0], d[1]).as_bytes()));
    }

    #[test]
    fn commit_tags_only_complete_images_and_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("store")).unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        let layer = s
            .write_layer(LayerSource::Dir(&src), &LayerOptions::default())
            .unwrap();

        let mut missing = layer.clone();
        missing.digest = Digest::of(b"not stored");
        let bad = NewImage::new(vec![layer.clone(), missing], default_config());
        assert!(matches!(
            s.commit_image(&bad, Some("bad")),
            Err(Error::BlobNotFound(_))
        ));
        assert!(s.refs().unwrap().is_empty());

        let mut img = NewImage::new(vec![], default_config());
        img.push_layer(layer.clone(), "test");
        let made = s.commit_image(&img, Some("hello:v1")).unwrap();
        let read = s.image("hello:v1").unwrap();
        assert_eq!(read.digest, made.digest);
        assert_eq!(read.layers().unwrap(), vec![layer]);
        let by_digest = s.image(&made.digest.to_string()).unwrap();
        assert_eq!(by_digest.config_digest, made.config_digest);

        let on_top = NewImage::on_top_of(&read).unwrap();
        assert_eq!(on_top.layers.len(), 1);
        assert_eq!(s.commit_image(&on_top, None).unwrap().digest, made.digest);
    }
}
