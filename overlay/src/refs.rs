//! Refs: names in `index.json` (`org.opencontainers.image.ref.name`), updated atomically under a lock.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageIndex};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::json;
use crate::store::Store;

/// The annotation that names a manifest in an image layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

impl Store {
    /// Points `name` at `target` (a manifest descriptor), replacing any previous target.
    pub fn tag(&self, name: &str, target: &Descriptor) -> Result<()> {
        validate_ref(name)?;
        Digest::from_oci(target.digest())?;
        let _guard = self.lock_refs()?;
        let mut index = self.read_index()?;
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) != Some(name))
            .cloned()
            .collect();
        let mut desc = target.clone();
        let mut ann: HashMap<String, String> = desc.annotations().clone().unwrap_or_default();
        ann.insert(REF_NAME.to_string(), name.to_string());
        desc.set_annotations(Some(ann));
        manifests.push(desc);
        manifests.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Removes `name`; returns the descriptor it pointed at (blobs stay until `gc`).
    pub fn untag(&self, name: &str) -> Result<Descriptor> {
        let _guard = self.lock_refs()?;
        let mut index = self.read_index()?;
        let (gone, kept): (Vec<Descriptor>, Vec<Descriptor>) = index
            .manifests()
            .iter()
            .cloned()
            .partition(|d| ref_name(d) == Some(name));
        let Some(first) = gone.into_iter().next() else {
            return Err(Error::RefNotFound(name.to_string()));
        };
        index.set_manifests(kept);
        self.write_index(&index)?;
        Ok(first)
    }

    /// The descriptor `name` points at.
    pub fn resolve(&self, name: &str) -> Result<Descriptor> {
        self.read_index()?
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name))
            .cloned()
            .ok_or_else(|| Error::RefNotFound(name.to_string()))
    }

    /// Every named ref, sorted by name.
    pub fn refs(&self) -> Result<Vec<(String, Descriptor)>> {
        let mut out: Vec<(String, Descriptor)> = self
            .read_index()?
            .manifests()
            .iter()
            .filter_map(|d| ref_name(d).map(|n| (n.to_string(), d.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every descriptor in `index.json`, named or not (the roots of gc).
    pub(crate) fn index_descriptors(&self) -> Result<Vec<Descriptor>> {
        Ok(self.read_index()?.manifests().clone())
    }

    fn read_index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let bytes = std::fs::read(&path).ctx("read", &path)?;
        json::from_slice(&bytes, &path.display().to_string())
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let bytes = json::to_canonical_vec(index, "index.json")?;
        self.write_atomic(&self.index_path(), &bytes)
    }
}

/// The ref name of an index entry, if it has one.
pub(crate) fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

/// Checks a name against the image-layout grammar:
/// `component ("/" component)*`, `component = alnum+ ((separator) alnum+)*`, separator `[-._:@+]` or `--`.
pub fn validate_ref(name: &str) -> Result<()> {
    let bad = |reason| Error::InvalidRef {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    for component in name.split('/') {
        let bytes = component.as_bytes();
        if !bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            || !bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        {
            return Err(bad(
                "each /-separated part must start and end with a letter or digit",
            ));
        }
        let mut run = 0usize;
        let mut prev_sep = 0u8;
        for &b in bytes {
            if b.is_ascii_alphanumeric() {
                run = 0;
            } else if b"-._:@+".contains(&b) {
                run += 1;
                if run > 1 && !(run == 2 && b == b'-' && prev_sep == b'-') {
                    return Err(bad("separators (-._:@+) cannot repeat, except --"));
                }
                prev_sep = b;
            } else {
                return Err(bad("only letters, digits, / and -._:@+ are allowed"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{DescriptorBuilder, MediaType};

    fn desc(s: &Store, content: &[u8]) -> Descriptor {
        let b = s.ingest_bytes(content).unwrap();
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(b.digest.to_oci())
            .size(b.size)
            .build()
            .unwrap()
    }

    #[test]
    fn tag_resolve_list_untag() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let a = desc(&s, b"a");
        let b = desc(&s, b"b");
        s.tag("app:v1", &a).unwrap();
        s.tag("base", &b).unwrap();
        s.tag("app:v1", &b).unwrap();
        assert_eq!(s.resolve("app:v1").unwrap().digest(), b.digest());
        let names: Vec<String> = s.refs().unwrap().into_iter().map(|r| r.0).collect();
        assert_eq!(names, ["app:v1", "base"]);
        s.untag("app:v1").unwrap();
        assert!(matches!(s.resolve("app:v1"), Err(Error::RefNotFound(_))));
        assert!(matches!(s.untag("nope"), Err(Error::RefNotFound(_))));
    }

    #[test]
    fn concurrent_tags_are_all_kept() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let d = desc(&s, b"x");
        std::thread::scope(|sc| {
            for i in 0..8 {
                let (s, d) = (&s, &d);
                sc.spawn(move || s.tag(&format!("img{i}"), d).unwrap());
            }
        });
        assert_eq!(s.refs().unwrap().len(), 8);
    }

    #[test]
    fn ref_grammar() {
        for ok in ["latest", "busybox:1.36", "a/b/c", "x--y", "v1.0+build@sha"] {
            validate_ref(ok).unwrap();
        }
        for bad in ["", "-x", "x-", "a//b", "a..b", "a b", "é", "a---b"] {
            assert!(validate_ref(bad).is_err(), "{bad:?} accepted");
        }
    }
}
