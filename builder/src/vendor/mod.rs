//! Vendor base images: declarative recipes of Debian packages built into reproducible OCI
//! images, the way apko builds images from Alpine packages.
//!
//! ```text
//! recipe.rs   vendor-images/<name>.toml schema and digest
//! apt.rs      dependency closure via the host's apt (private, empty dpkg status)
//! fetch.rs    .deb cache keyed by sha256, apt-get download, verification
//! deb.rs      ar + data.tar.{xz,zst,gz} reading
//! unpack.rs   safe unpacking into a layer directory (merged /usr, path filters)
//! setup.rs    skeleton, users, dirs, symlinks, files (what maintainer scripts would do)
//! sandbox.rs  build-time run steps as containers of the build sandbox (crate::sandbox)
//! image.rs    layers, config, labels, tags in kiln's OCI store
//! memo.rs     warm rebuilds: recipe + apt index identity → resolved set, finished image
//! build.rs    the whole build
//! ```

pub mod apt;
mod build;
pub mod deb;
mod error;
pub mod fetch;
mod image;
mod memo;
pub mod progress;
pub mod recipe;
mod sandbox;
mod setup;
pub mod unpack;

pub use build::{build, default_recipes_dir, BuildOptions, BuildReport, LayerReport};
pub use error::{Result, VendorError};
pub use progress::Progress;
