//! The store: an OCI image layout plus kiln's own directories, all under one root.
//!
//! ```text
//! <root>/oci/{oci-layout,index.json,blobs/sha256/<hex>}   the image layout (skopeo/umoci read it)
//! <root>/snapshots/<chain-id hex>/                        one unpacked layer each
//! <root>/cache/  <root>/volumes/  <root>/tmp/  <root>/locks/
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layer::Limits;

/// `oci-layout` file contents (image-spec 1.x).
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// An empty `index.json`.
const EMPTY_INDEX: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

/// A handle on a kiln store rooted at one directory (`$KILN_STORE`).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Bounds on every layer unpacked or imported through this store.
    limits: Limits,
}

/// A shared hold on the store that keeps [`Store::gc`] from running (and from deleting blobs or
/// snapshots not yet tagged) while it lives. Take one across multi-step writes.
#[derive(Debug)]
pub struct Lease {
    _lock: Flock<File>,
}

/// An exclusive lock on one of the store's lock files, released on drop.
#[derive(Debug)]
pub(crate) struct LockGuard {
    _lock: Flock<File>,
}

impl Store {
    /// Opens the store at `root`, creating its directories, `oci-layout` and `index.json` if missing.
    /// Layers are bounded by [`Limits::from_env`] (the defaults unless `KILN_LAYER_MAX_*` is set);
    /// an invalid variable is an error.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let store = Self {
            root: root.as_ref().to_path_buf(),
            limits: Limits::from_env()?,
        };
        for dir in [
            store.blobs_dir(),
            store.snapshots_dir(),
            store.cache_dir(),
            store.volumes_dir(),
            store.tmp_dir(),
            store.locks_dir(),
        ] {
            fs::create_dir_all(&dir).ctx("create directory", &dir)?;
        }
        let layout = store.oci_dir().join("oci-layout");
        let index = store.index_path();
        if !layout.exists() || !index.exists() {
            let _guard = store.lock_refs()?;
            if !layout.exists() {
                store.write_atomic(&layout, OCI_LAYOUT)?;
            }
            if !index.exists() {
                store.write_atomic(&index, EMPTY_INDEX)?;
            }
        }
        Ok(store)
    }

    /// The same store with other bounds on the layers it unpacks and imports.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The bounds on the layers this store unpacks and imports.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI image layout directory (`<root>/oci`), readable by skopeo, umoci and podman.
    pub fn oci_dir(&self) -> PathBuf {
        self.root.join("oci")
    }

    /// `<root>/oci/index.json`.
    pub fn index_path(&self) -> PathBuf {
        self.oci_dir().join("index.json")
    }

    /// `<root>/oci/blobs/sha256`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.oci_dir().join("blobs").join(Digest::ALGORITHM)
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// `<root>/snapshots`: one unpacked layer per chain id.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// `<root>/cache`: build cache entries (files holding a manifest digest; they keep it alive in gc).
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// `<root>/volumes`: persistent volumes.
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// `<root>/tmp`: ingest and scratch space on the store's filesystem.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `<root>/locks`: lock files (outside the OCI layout so other tools never see them).
    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Takes a [`Lease`]: blocks while a gc runs, then keeps gc away until dropped.
    pub fn lease(&self) -> Result<Lease> {
        Ok(Lease {
            _lock: self.flock("gc.lock", FlockArg::LockShared)?,
        })
    }

    /// Takes the exclusive gc lock (waits for every [`Lease`] to end).
    pub(crate) fn lock_gc(&self) -> Result<LockGuard> {
        Ok(LockGuard {
            _lock: self.flock("gc.lock", FlockArg::LockExclusive)?,
        })
    }

    /// Takes the exclusive lock that serialises updates of `index.json`.
    pub(crate) fn lock_refs(&self) -> Result<LockGuard> {
        Ok(LockGuard {
            _lock: self.flock("refs.lock", FlockArg::LockExclusive)?,
        })
    }

    fn flock(&self, name: &str, arg: FlockArg) -> Result<Flock<File>> {
        let path = self.locks_dir().join(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx("open lock file", &path)?;
        Flock::lock(file, arg).map_err(|(_, errno)| Error::Sys {
            syscall: "flock",
            path,
            errno,
        })
    }

    /// Replaces `path` with `bytes` atomically: temp file in `tmp/`, fsync, rename, fsync the dir.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp_dir = self.tmp_dir();
        let mut tmp =
            tempfile::NamedTempFile::new_in(&tmp_dir).ctx("create temp file in", &tmp_dir)?;
        tmp.write_all(bytes).ctx("write", tmp.path())?;
        set_mode(tmp.as_file(), 0o644, tmp.path())?;
        Ok(kiln_util::fs::commit(tmp.as_file(), tmp.path(), path)?)
    }
}

/// Sets the permission bits of an open file.
pub(crate) fn set_mode(file: &File, mode: u32, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .ctx("chmod", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_a_layout_and_is_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        assert!(s.oci_dir().join("oci-layout").is_file());
        assert!(s.index_path().is_file());
        assert!(s.blobs_dir().is_dir());
        let again = Store::open(t.path()).unwrap();
        assert_eq!(fs::read(again.index_path()).unwrap(), EMPTY_INDEX.to_vec());
    }
}
