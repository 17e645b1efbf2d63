//! kiln-overlay: bytes on disk — digests, the OCI image-layout store, layers, snapshots, mounts.
//!
//! See `overlay/README.md` for the public API in a few lines.

mod digest;
mod error;
mod export;
mod fsck;
mod gc;
pub mod idmap;
mod image;
mod import;
mod ingest;
mod json;
pub mod layer;
mod mount;
mod reach;
mod refs;
mod snapshot;
mod store;

pub use digest::{Digest, Hasher, HashingReader, HashingWriter};
pub use error::{Error, Result};
pub use fsck::{CorruptBlob, FsckReport, MissingBlob};
pub use gc::GcReport;
pub use image::{chain_ids, default_config, Image, NewImage, DEFAULT_PATH};
pub use ingest::{Blob, BlobWriter};
pub use layer::{Compression, Layer, LayerOptions, LayerSource, Limit, LimitExceeded, Limits};
pub use mount::{mount_overlay, unmount, OverlayMount, Upper};
pub use refs::{validate_ref, REF_NAME};
pub use store::{Lease, Store};

/// The OCI spec types used in this crate's API (re-exported so callers use the same version).
pub use oci_spec;
