//! Warm rebuilds: a build is a function of the recipe (its digest covers the base and every file
//! it adds) and of apt's package index, so both are keyed and the result remembered under the
//! store's `cache/vendor/<key>.json`: first the resolved package set (a rebuild skips apt), then
//! the build's report (a rebuild whose image is still intact in the store only tags it again).
//!
//! The index's identity is what apt resolves against: the sources and pinning config under
//! `/etc/apt`, the content of every `Release`/`InRelease` file in apt's lists (which carry the
//! sha256 of each `Packages` file), and the name and size of every other list file.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::apt::Package;
use super::build::BuildReport;
use super::error::{io_err, Result, VendorError};

/// Bumped when what a memo holds, or what a build makes of it, changes.
const MEMO_VERSION: &[u8] = b"kiln-vendor-memo-v1\0";

/// apt's config folders whose files decide what is resolved.
const APT_CONFIG: [&str; 2] = ["/etc/apt/sources.list.d", "/etc/apt/preferences.d"];

/// apt's single config files that decide what is resolved.
const APT_FILES: [&str; 2] = ["/etc/apt/sources.list", "/etc/apt/preferences"];

/// apt's downloaded index.
const APT_LISTS: &str = "/var/lib/apt/lists";

/// What is remembered of one recipe against one index.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Memo {
    /// The base recipe's closure.
    pub base: Vec<Package>,
    /// The recipe's own closure (before the base's packages are taken out).
    pub own: Vec<Package>,
    /// The finished build, once there was one.
    pub report: Option<BuildReport>,
}

/// Where the memo of one recipe against the current index lives.
#[derive(Debug)]
pub(crate) struct MemoFile {
    path: PathBuf,
}

impl MemoFile {
    /// The memo file of `recipe_digest` against the host's current apt index, under `cache`.
    pub(crate) fn for_recipe(cache: &Path, recipe_digest: &str) -> Result<MemoFile> {
        let index = index_identity(
            Path::new(APT_LISTS),
            &APT_FILES.map(PathBuf::from),
            &APT_CONFIG.map(PathBuf::from),
        )?;
        let mut h = Sha256::new();
        h.update(MEMO_VERSION);
        h.update(recipe_digest.as_bytes());
        h.update([0]);
        h.update(index.as_bytes());
        Ok(MemoFile {
            path: cache
                .join("vendor")
                .join(format!("{}.json", hex::encode(h.finalize()))),
        })
    }

    /// The memo, if there is a readable one (an unreadable one counts as none).
    pub(crate) fn load(&self) -> Option<Memo> {
        kiln_util::fs::read_json(&self.path).ok().flatten()
    }

    /// Writes the memo atomically.
    pub(crate) fn save(&self, memo: &Memo) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err("mkdir", dir))?;
        }
        kiln_util::fs::write_json(&self.path, memo).map_err(|e| VendorError::Store(e.to_string()))
    }
}

/// sha256 (hex) over apt's config files and lists, in path order.
fn index_identity(lists: &Path, files: &[PathBuf], dirs: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    let mut config: Vec<PathBuf> = files.to_vec();
    for d in dirs {
        config.extend(entries(d)?);
    }
    config.sort();
    for p in &config {
        match std::fs::read(p) {
            Ok(data) => feed(&mut h, p, &data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read", p)(e)),
        }
    }
    let mut listed = entries(lists)?;
    listed.sort();
    for p in &listed {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if name.ends_with("Release") {
            let data = std::fs::read(p).map_err(io_err("read", p))?;
            feed(&mut h, p, &data);
        } else if name != "lock" {
            let meta = std::fs::metadata(p).map_err(io_err("stat", p))?;
            feed(&mut h, p, &meta.len().to_le_bytes());
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// A path and its bytes, length-prefixed.
fn feed(h: &mut Sha256, path: &Path, data: &[u8]) {
    let name = path.as_os_str().as_encoded_bytes();
    h.update((name.len() as u64).to_le_bytes());
    h.update(name);
    h.update((data.len() as u64).to_le_bytes());
    h.update(data);
}

/// The regular files directly in `dir` (none when it does not exist).
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read directory", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(io_err("read directory", dir))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_follows_release_content_and_sources_not_other_mtimes() {
        let t = tempfile::tempdir().unwrap();
        let lists = t.path().join("lists");
        let etc = t.path().join("sources.list.d");
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(lists.join("x_InRelease"), "SHA256: aa\n").unwrap();
        std::fs::write(lists.join("x_Packages.lz4"), "p").unwrap();
        std::fs::write(etc.join("d.sources"), "URIs: a\n").unwrap();
        let id = || index_identity(&lists, &[], std::slice::from_ref(&etc)).unwrap();
        let first = id();
        std::fs::write(lists.join("x_Packages.lz4"), "q").unwrap(); // same size, new mtime
        std::fs::write(lists.join("lock"), "").unwrap();
        assert_eq!(first, id());
        std::fs::write(lists.join("x_InRelease"), "SHA256: bb\n").unwrap();
        let second = id();
        assert_ne!(first, second);
        std::fs::write(etc.join("e.sources"), "URIs: b\n").unwrap();
        assert_ne!(second, id());
    }
}
