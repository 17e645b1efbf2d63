//! Importing a root filesystem tarball: unpacked safely into `tmp/`, then re-written as a
//! deterministic layer (so the same tree gives the same digest whatever tar made the tarball).

use std::io::Read;

use crate::error::{IoContext, Result};
use crate::layer::{apply_layer, ApplyOptions, Layer, LayerOptions, LayerReader, LayerSource};
use crate::store::Store;

impl Store {
    /// Turns a (plain, gzip or zstd) tar of a root filesystem into a deterministic layer.
    /// Entries are refused exactly as [`apply_layer`] refuses them (device nodes included, as the
    /// snapshots a mount needs would refuse them too), under the store's [`Store::limits`] (the
    /// decompressed stream too); on any error the scratch tree is removed and nothing is written.
    pub fn import_tar(&self, tar: impl Read, opts: &LayerOptions) -> Result<Layer> {
        let _lease = self.lease()?;
        let tmp_dir = self.tmp_dir();
        let scratch = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&tmp_dir)
            .ctx("create temp dir in", &tmp_dir)?;
        let mut reader = LayerReader::new(tar)
            .ctx("read tarball", scratch.path())?
            .with_limits(self.limits());
        let apply = ApplyOptions {
            limits: *self.limits(),
            ..ApplyOptions::default()
        };
        apply_layer(&mut reader, scratch.path(), &apply)?;
        self.write_layer(LayerSource::Dir(scratch.path()), opts)
    }
}
