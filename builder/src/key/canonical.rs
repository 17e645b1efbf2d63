//! The canonical encoding hashed into cache keys: typed, length-prefixed, field by field.
//!
//! Each field is `name`, a one-byte type tag and its value, every string prefixed with its
//! length (u64, little endian), maps in key order. No two different inputs encode alike, and
//! the encoding depends on no serializer's formatting.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use super::BUILDER_FORMAT_VERSION;

/// A sha256 over the canonical encoding of what a build (or build step) can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits (a file name in the store's `cache/`).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl serde::Serialize for CacheKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Builds a [`CacheKey`] field by field.
pub struct KeyHasher {
    hasher: Sha256,
}

impl KeyHasher {
    /// Starts a key of kind `kind` (`service`, `dependencies`, …) under the builder format version.
    pub fn new(kind: &str) -> Self {
        let mut key = KeyHasher {
            hasher: Sha256::new(),
        };
        key.bytes(b"kiln-build-key");
        key.hasher.update(BUILDER_FORMAT_VERSION.to_le_bytes());
        key.bytes(kind.as_bytes());
        key
    }

    fn bytes(&mut self, data: &[u8]) {
        self.hasher.update((data.len() as u64).to_le_bytes());
        self.hasher.update(data);
    }

    fn field(&mut self, name: &str, tag: u8) {
        self.bytes(name.as_bytes());
        self.hasher.update([tag]);
    }

    /// A string field.
    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.field(name, b's');
        self.bytes(value.as_bytes());
        self
    }

    /// An optional string field (absent is not the same as empty).
    pub fn opt(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        match value {
            None => self.field(name, b'-'),
            Some(value) => {
                self.field(name, b'?');
                self.bytes(value.as_bytes());
            }
        }
        self
    }

    /// A list of strings, in order.
    pub fn list(&mut self, name: &str, values: &[String]) -> &mut Self {
        self.field(name, b'l');
        self.hasher.update((values.len() as u64).to_le_bytes());
        for value in values {
            self.bytes(value.as_bytes());
        }
        self
    }

    /// A string map, in key order.
    pub fn map(&mut self, name: &str, values: &BTreeMap<String, String>) -> &mut Self {
        self.field(name, b'm');
        self.hasher.update((values.len() as u64).to_le_bytes());
        for (key, value) in values {
            self.bytes(key.as_bytes());
            self.bytes(value.as_bytes());
        }
        self
    }

    /// Another key this one is built on.
    pub fn key(&mut self, name: &str, key: &CacheKey) -> &mut Self {
        self.field(name, b'k');
        self.bytes(&key.0);
        self
    }

    /// The finished key.
    pub fn finish(&mut self) -> CacheKey {
        CacheKey(self.hasher.clone().finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let a = KeyHasher::new("t").str("a", "bc").str("d", "").finish();
        let b = KeyHasher::new("t").str("a", "b").str("d", "c").finish();
        assert_ne!(a, b);
        let none = KeyHasher::new("t").opt("x", None).finish();
        let empty = KeyHasher::new("t").opt("x", Some("")).finish();
        assert_ne!(none, empty);
    }

    #[test]
    fn keys_are_stable_across_runs() {
        let key = KeyHasher::new("t").str("a", "b").finish();
        assert_eq!(key, KeyHasher::new("t").str("a", "b").finish());
        assert_eq!(key.to_string().len(), "sha256:".len() + 64);
    }
}
