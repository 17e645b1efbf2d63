//! Layers: the deterministic writer (tree → tar → compressed blob) and the safe applier.

pub mod apply;
mod limits;
mod pgzip;
mod pipeline;
mod read;
mod source;
mod tar_writer;
pub(crate) mod xattr;

use std::path::{Path, PathBuf};

use oci_spec::image::MediaType;

use crate::digest::Digest;

pub use apply::{apply_layer, ApplyOptions, ApplyStats, WhiteoutMode};
pub use limits::{Limit, LimitExceeded, Limits};
pub use read::{LayerDigests, LayerReader};
pub use tar_writer::write_tar;

/// A layer blob in the store, with what an image needs to reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the (compressed) blob.
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// The blob's media type (gzip, zstd or plain tar).
    pub media_type: MediaType,
}

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip (the default and most widely read).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// A plain tar.
    None,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
            Compression::None => MediaType::ImageLayer,
        }
    }

    /// The level used when none is asked for: fast (gzip 1, zstd 3).
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 1,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }
}

/// What goes into a layer.
#[derive(Debug, Clone, Copy)]
pub enum LayerSource<'a> {
    /// Everything under a directory (the directory is the layer's `/`).
    Dir(&'a Path),
    /// An overlayfs upper dir: char 0/0 whiteouts and opaque dirs become OCI whiteouts.
    OverlayUpper(&'a Path),
    /// Explicit entries: (path inside the layer, path on the host). Directories are not recursed;
    /// entries are sorted by layer path.
    Files(&'a [(String, PathBuf)]),
}

/// How a layer is written. `Default` gives the deterministic defaults.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// Compression of the blob.
    pub compression: Compression,
    /// Compression level; `None` = [`Compression::default_level`].
    pub level: Option<i32>,
    /// mtime of every entry (defaults to `$SOURCE_DATE_EPOCH`, else 0).
    pub mtime: u64,
    /// Keep numeric uid/gid from the source instead of 0/0.
    pub keep_owners: bool,
    /// Record extended attributes (PAX `SCHILY.xattr.*`); off by default.
    pub xattrs: bool,
}

impl Default for LayerOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            level: None,
            mtime: source_date_epoch(),
            keep_owners: false,
            xattrs: false,
        }
    }
}

/// `$SOURCE_DATE_EPOCH` as seconds, or 0 when unset or not a number.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The OCI whiteout prefix.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker file name.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
