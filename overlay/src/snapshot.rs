//! Snapshots: each layer unpacked once into `snapshots/<chain-id hex>/` (with overlayfs whiteouts),
//! atomically (unpack in `tmp/`, then rename), shared by every image that contains it.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result, SysContext};
use crate::image::Image;
use crate::layer::{apply_layer, ApplyOptions, Layer, LayerReader, WhiteoutMode};
use crate::store::Store;

/// Name of the empty directory used as a bottom layer where overlayfs needs two lower dirs.
const EMPTY: &str = ".empty";

impl Store {
    /// Where the snapshot of a chain id lives (whether or not it exists).
    pub fn snapshot_path(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(chain_id.hex())
    }

    /// An empty read-only directory under `snapshots/` (never collected).
    pub(crate) fn empty_snapshot(&self) -> Result<PathBuf> {
        let p = self.snapshots_dir().join(EMPTY);
        match std::fs::create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::Io {
                    op: "create directory",
                    path: p,
                    error: e,
                })
            }
        }
        Ok(p)
    }

    /// Unpacks every layer of `image` not yet unpacked; returns the snapshot dirs, bottom first.
    pub fn prepare_snapshots(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let _lease = self.lease()?;
        let layers = image.layers()?;
        let chain = image.chain_ids()?;
        let mut out = Vec::with_capacity(layers.len());
        for (layer, chain_id) in layers.iter().zip(chain) {
            let dest = self.snapshot_path(&chain_id);
            if !dest.is_dir() {
                self.unpack_snapshot(layer, &dest)?;
            }
            out.push(dest);
        }
        Ok(out)
    }

    /// Unpacks `layer` (verifying its digest and diff_id) into a temp dir, then renames it to `dest`.
    fn unpack_snapshot(&self, layer: &Layer, dest: &PathBuf) -> Result<()> {
        let tmp_dir = self.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(&tmp_dir)
            .ctx("create temp dir in", &tmp_dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
                .ctx("chmod", tmp.path())?;
        }
        let mut reader = LayerReader::new(self.open_blob(&layer.digest)?)
            .ctx("read layer", &self.blob_path(&layer.digest))?
            .with_limits(self.limits());
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Overlay,
            limits: *self.limits(),
            ..ApplyOptions::default()
        };
        apply_layer(&mut reader, tmp.path(), &opts)?;
        let got = reader
            .finish()
            .ctx("read layer", &self.blob_path(&layer.digest))?;
        if got.digest != layer.digest {
            return Err(Error::DigestMismatch {
                expected: layer.digest,
                actual: got.digest,
            });
        }
        if got.diff_id != layer.diff_id {
            return Err(Error::DigestMismatch {
                expected: layer.diff_id,
                actual: got.diff_id,
            });
        }
        let dir = std::fs::File::open(tmp.path()).ctx("open", tmp.path())?;
        nix::unistd::syncfs(&dir).sys("syncfs", tmp.path())?;
        let unpacked = tmp.keep();
        match std::fs::rename(&unpacked, dest) {
            Ok(()) => Ok(kiln_util::fs::sync_parent(dest)?),
            // Someone else unpacked the same chain meanwhile: theirs is as good as ours.
            Err(_) if dest.is_dir() => std::fs::remove_dir_all(&unpacked).ctx("remove", &unpacked),
            Err(e) => Err(Error::Io {
                op: "rename snapshot into place",
                path: dest.clone(),
                error: e,
            }),
        }
    }
}
