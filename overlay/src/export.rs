//! Exporting an image as an `oci-archive`: a tar of a one-image OCI layout (skopeo's format).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use oci_spec::image::{ImageIndexBuilder, MediaType};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::json;
use crate::refs::REF_NAME;
use crate::store::Store;

impl Store {
    /// Writes `image` as an oci-archive tar to `out`, its index naming it `name`.
    pub fn export_archive(&self, image: &Image, name: &str, out: impl Write) -> Result<()> {
        crate::refs::validate_ref(name)?;
        let _lease = self.lease()?;
        let mut desc = image.descriptor();
        desc.set_annotations(Some([(REF_NAME.to_string(), name.to_string())].into()));
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![desc])
            .build()
            .map_err(|e| Error::BadDocument {
                what: "index.json".into(),
                reason: e.to_string(),
            })?;
        let index = json::to_canonical_vec(&index, "index.json")?;
        let mut blobs: BTreeSet<Digest> = BTreeSet::from([image.digest, image.config_digest]);
        blobs.extend(image.layers()?.iter().map(|l| l.digest));

        let archive = Path::new("<oci-archive>");
        let mut tar = tar::Builder::new(out);
        let dir = |tar: &mut tar::Builder<_>, path: &str| -> Result<()> {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, path, std::io::empty())
                .ctx("write", archive)
        };
        dir(&mut tar, "blobs/")?;
        dir(&mut tar, "blobs/sha256/")?;
        for d in &blobs {
            let f = self.open_blob(d)?;
            let len = f.metadata().ctx("stat", &self.blob_path(d))?.len();
            let mut h = header(tar::EntryType::Regular, 0o644, len);
            tar.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), f)
                .ctx("write", archive)?;
        }
        for (path, bytes) in [
            ("index.json", &index[..]),
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ] {
            let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
            tar.append_data(&mut h, path, bytes).ctx("write", archive)?;
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .ctx("write", archive)
    }
}

/// A normalised header (root-owned, mtime 0).
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}
