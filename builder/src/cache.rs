//! The build cache: one small file per key in the store's `cache/`, holding a manifest digest.
//!
//! A service key's entry names the finished image; a step key's entry names a one-layer image
//! holding that step's layer. The store's gc treats every entry as a root, so what the cache
//! names stays alive. Entries are written atomically (temp file in the store's `tmp/`, fsync,
//! rename), and only once what they name is complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_overlay::{Digest, Store};

use crate::key::CacheKey;

/// What can go wrong reading or writing a cache entry.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file operation failed.
    #[error("build cache: {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A cache entry's name: a service key names a finished image, a step key a one-layer image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A whole service build (file `<hex>`).
    Service(CacheKey),
    /// One step's layer (file `step-<hex>`; a step key may equal a service key).
    Step(CacheKey),
}

impl Entry {
    /// The entry's file name in `cache/`.
    pub fn file_name(&self) -> String {
        match self {
            Entry::Service(k) => k.hex(),
            Entry::Step(k) => format!("step-{}", k.hex()),
        }
    }
}

/// The build cache of one store.
#[derive(Debug, Clone)]
pub struct BuildCache {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BuildCache {
    /// The cache of `store` (its `cache/` directory).
    pub fn of(store: &Store) -> BuildCache {
        BuildCache {
            dir: store.cache_dir(),
            tmp: store.tmp_dir(),
        }
    }

    /// The file of an entry.
    pub fn entry_path(&self, entry: Entry) -> PathBuf {
        self.dir.join(entry.file_name())
    }

    /// The manifest digest recorded for `entry`, if any (an unreadable or torn entry is a miss).
    pub fn get(&self, entry: Entry) -> Option<Digest> {
        let text = std::fs::read_to_string(self.entry_path(entry)).ok()?;
        Digest::parse(text.trim()).ok()
    }

    /// Records `digest` for `entry`, replacing any previous entry atomically.
    pub fn put(&self, entry: Entry, digest: &Digest) -> Result<(), CacheError> {
        let path = self.entry_path(entry);
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { op, path, source }
        };
        let mut tmp = tempfile::Builder::new()
            .prefix("cache-")
            .tempfile_in(&self.tmp)
            .map_err(io("create temp file in", &self.tmp))?;
        writeln!(tmp, "{digest}").map_err(io("write", tmp.path()))?;
        kiln_util::fs::commit(tmp.as_file(), tmp.path(), &path).map_err(|e| match e {
            kiln_util::fs::FsError::Io { what, path, source } => CacheError::Io {
                op: what,
                path,
                source,
            },
            other => CacheError::Io {
                op: "writing",
                path: path.clone(),
                source: std::io::Error::other(other),
            },
        })
    }

    /// Removes an entry (a missing entry is fine).
    pub fn remove(&self, entry: Entry) -> Result<(), CacheError> {
        let path = self.entry_path(entry);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CacheError::Io {
                op: "remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_torn_ones_miss() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let cache = BuildCache::of(&store);
        let key = Entry::Service(CacheKey([7; 32]));
        let step = Entry::Step(CacheKey([7; 32]));
        assert_eq!(cache.get(key), None);
        let d = Digest::of(b"manifest");
        cache.put(key, &d).unwrap();
        assert_eq!(cache.get(key), Some(d));
        assert_eq!(
            cache.get(step),
            None,
            "steps and services do not share entries"
        );
        std::fs::write(cache.entry_path(key), b"sha256:12").unwrap();
        assert_eq!(cache.get(key), None);
        cache.remove(key).unwrap();
        cache.remove(key).unwrap();
        assert!(!cache.entry_path(key).exists());
    }
}
