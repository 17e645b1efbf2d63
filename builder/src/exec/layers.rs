//! Layers that need no container: the code layer from git objects and kiln's files layer.

use std::path::Path;

use kiln_overlay::{Layer, LayerOptions, LayerSource, Store};

use super::error::{io_err, StepFailure};
use super::sandbox::{make_parents, set_mode};
use crate::plan::PlannedFile;
use crate::source::{GitRepo, ObjectId};

/// A temp dir under the store's `tmp/` (same filesystem as the blobs).
fn scratch(store: &Store) -> Result<tempfile::TempDir, StepFailure> {
    let tmp = store.tmp_dir();
    tempfile::Builder::new()
        .prefix("build-layer-")
        .tempdir_in(&tmp)
        .map_err(io_err("create temp dir in", &tmp))
}

/// The files of git tree `tree` at `dest` (e.g. `/app`), written from blobs, as a layer.
pub(crate) fn tree_layer(
    store: &Store,
    repo: &GitRepo,
    tree: ObjectId,
    dest: &str,
) -> Result<Layer, StepFailure> {
    let dir = scratch(store)?;
    let root = dir.path().join(dest.trim_start_matches('/'));
    make_parents(dir.path(), &root)?;
    repo.write_tree(tree, &root)?;
    Ok(store.write_layer(LayerSource::Dir(dir.path()), &LayerOptions::default())?)
}

/// These files (their folders 0755) as a layer.
pub(crate) fn files_layer(store: &Store, files: &[PlannedFile]) -> Result<Layer, StepFailure> {
    let dir = scratch(store)?;
    write_files(dir.path(), files)?;
    Ok(store.write_layer(LayerSource::Dir(dir.path()), &LayerOptions::default())?)
}

/// Writes `files` under `root` with their modes, making their folders (0755) as needed.
pub(crate) fn write_files(root: &Path, files: &[PlannedFile]) -> Result<(), StepFailure> {
    for f in files {
        let dest = root.join(f.path.trim_start_matches('/'));
        make_parents(root, &dest)?;
        std::fs::write(&dest, &f.data).map_err(io_err("write", &dest))?;
        set_mode(&dest, f.mode)?;
    }
    Ok(())
}
