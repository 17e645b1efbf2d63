//! Unpacking a .deb's data.tar into a layer directory: safe paths, merged /usr, path filters,
//! owners and modes as the package says, no maintainer scripts.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::deb;
use super::error::{Result, VendorError};

/// Top-level directories that live under /usr in a merged-/usr system (Debian since bookworm).
pub const MERGED_USR: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Which paths of a package go into the image.
#[derive(Debug, Clone)]
pub struct PathFilter {
    exclude: Vec<Vec<String>>,
    keep: Vec<Vec<String>>,
}

impl PathFilter {
    /// A filter from `exclude` and `keep` patterns (`*` matches one component).
    pub fn new(exclude: &[String], keep: &[String]) -> Self {
        let split = |v: &[String]| v.iter().map(|p| components(p)).collect();
        Self {
            exclude: split(exclude),
            keep: split(keep),
        }
    }

    /// Whether `rel` (normalised, relative) is left out.
    pub fn excludes(&self, rel: &str) -> bool {
        let c = components(rel);
        let covers = |pat: &Vec<String>| {
            pat.len() <= c.len() && pat.iter().zip(&c).all(|(p, x)| p == "*" || p == x)
        };
        let is_kept_or_ancestor = |pat: &Vec<String>| {
            pat.iter().zip(&c).all(|(p, x)| p == "*" || p == x)
                && (c.len() < pat.len() || covers(pat))
        };
        self.exclude.iter().any(covers) && !self.keep.iter().any(is_kept_or_ancestor)
    }
}

fn components(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(String::from)
        .collect()
}

/// Normalises a tar path: relative, no `..`, merged /usr. `None` for the root itself.
pub fn normalize(raw: &str) -> Result<Option<String>, String> {
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("path contains ..".into()),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    if MERGED_USR.contains(&parts[0]) {
        parts.insert(0, "usr");
    }
    Ok(Some(parts.join("/")))
}

/// What unpacking one package gave.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unpacked {
    /// Newest mtime of the package's entries (its SOURCE_DATE_EPOCH contribution).
    pub max_mtime: u64,
    /// Bytes of regular files written.
    pub bytes: u64,
}

/// Writes entries into one layer directory.
#[derive(Debug)]
pub struct LayerDir {
    root: PathBuf,
    dirs: HashSet<String>,
}

impl LayerDir {
    /// A writer into the (existing) directory `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            dirs: HashSet::new(),
        }
    }

    /// The directory written to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Unpacks the data of the .deb at `deb_path` through `filter`.
    pub fn unpack_deb(&mut self, deb_path: &Path, filter: &PathFilter) -> Result<Unpacked> {
        deb::with_data_tar(deb_path, |tar| {
            let broken = |e: std::io::Error| VendorError::BrokenDeb {
                path: deb_path.to_path_buf(),
                reason: e.to_string(),
            };
            let mut done = Unpacked::default();
            for entry in tar.entries().map_err(broken)? {
                let mut entry = entry.map_err(broken)?;
                let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let bad = |reason: String| VendorError::DebEntry {
                    deb: deb_path.to_path_buf(),
                    entry: raw.clone(),
                    reason,
                };
                let rel = match normalize(&raw).map_err(&bad)? {
                    Some(r) if !filter.excludes(&r) => r,
                    _ => continue,
                };
                let h = entry.header();
                let mtime = h.mtime().map_err(|e| bad(e.to_string()))?;
                done.max_mtime = done.max_mtime.max(mtime);
                let mode = h.mode().map_err(|e| bad(e.to_string()))? & 0o7777;
                let uid = h.uid().map_err(|e| bad(e.to_string()))? as u32;
                let gid = h.gid().map_err(|e| bad(e.to_string()))? as u32;
                let kind = h.entry_type();
                let link = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned());
                let meta = Meta {
                    mode,
                    uid,
                    gid,
                    mtime,
                };
                match kind {
                    tar::EntryType::Directory => {
                        self.dir(&rel, meta).map_err(|e| bad(e.to_string()))?
                    }
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        done.bytes += self
                            .file(&rel, &mut entry, meta)
                            .map_err(|e| bad(e.to_string()))?;
                    }
                    tar::EntryType::Symlink => {
                        let target = link.ok_or_else(|| bad("symlink without target".into()))?;
                        self.symlink(&rel, &target, meta)
                            .map_err(|e| bad(e.to_string()))?;
                    }
                    tar::EntryType::Link => {
                        let target = link.ok_or_else(|| bad("hardlink without target".into()))?;
                        let target = normalize(&target)
                            .map_err(&bad)?
                            .ok_or_else(|| bad("hardlink to /".into()))?;
                        self.hardlink(&rel, &target)
                            .map_err(|e| bad(e.to_string()))?;
                    }
                    other => return Err(bad(format!("unsupported entry type {other:?}"))),
                }
            }
            Ok(done)
        })
    }

    /// Creates (or updates) a directory.
    pub fn dir(&mut self, rel: &str, m: Meta) -> std::io::Result<()> {
        let p = self.prepare(rel)?;
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&p)?;
                std::fs::create_dir(&p)?;
            }
            Err(_) => std::fs::create_dir(&p)?,
        }
        self.dirs.insert(rel.to_string());
        m.apply(&p, false)
    }

    /// Writes a regular file from `data`; returns its size.
    pub fn file(&mut self, rel: &str, data: &mut dyn Read, m: Meta) -> std::io::Result<u64> {
        let p = self.prepare(rel)?;
        remove_non_dir(&p)?;
        let mut f = std::fs::File::create(&p)?;
        let n = std::io::copy(data, &mut f)?;
        drop(f);
        m.apply(&p, false)?;
        Ok(n)
    }

    /// Creates a symlink.
    pub fn symlink(&mut self, rel: &str, target: &str, m: Meta) -> std::io::Result<()> {
        let p = self.prepare(rel)?;
        remove_non_dir(&p)?;
        symlink(target, &p)?;
        m.apply(&p, true)
    }

    fn hardlink(&mut self, rel: &str, target: &str) -> std::io::Result<()> {
        let p = self.prepare(rel)?;
        let t = self.prepare(target)?;
        remove_non_dir(&p)?;
        std::fs::hard_link(t, p)
    }

    /// Creates the parents of `rel` (0755 root) and refuses to go through a symlink.
    fn prepare(&mut self, rel: &str) -> std::io::Result<PathBuf> {
        let mut cur = self.root.clone();
        let comps: Vec<&str> = rel.split('/').collect();
        let mut sofar = String::new();
        for c in &comps[..comps.len().saturating_sub(1)] {
            cur.push(c);
            if !sofar.is_empty() {
                sofar.push('/');
            }
            sofar.push_str(c);
            if self.dirs.contains(&sofar) {
                continue;
            }
            match std::fs::symlink_metadata(&cur) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    return Err(std::io::Error::other(format!(
                        "parent {sofar} is not a directory (a symlink?)"
                    )))
                }
                Err(_) => {
                    std::fs::create_dir(&cur)?;
                    std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o755))?;
                }
            }
            self.dirs.insert(sofar.clone());
        }
        Ok(self.root.join(rel))
    }
}

fn remove_non_dir(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => Err(std::io::Error::other("a directory is in the way")),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => Ok(()),
    }
}

/// Owner, mode and mtime of an entry.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time (seconds).
    pub mtime: u64,
}

impl Meta {
    /// root:root with `mode`, mtime 0 (the layer writer clamps times anyway).
    pub fn root(mode: u32) -> Self {
        Self {
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    fn apply(&self, p: &Path, is_link: bool) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(self.uid), Some(self.gid))?;
        if !is_link {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(self.mode))?;
        }
        let t = TimeSpec::new(self.mtime as i64, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_merges_usr_and_refuses_dotdot() {
        assert_eq!(normalize("./bin/sh").unwrap(), Some("usr/bin/sh".into()));
        assert_eq!(
            normalize("./lib64/ld.so").unwrap(),
            Some("usr/lib64/ld.so".into())
        );
        assert_eq!(normalize("./etc/x").unwrap(), Some("etc/x".into()));
        assert_eq!(normalize("./").unwrap(), None);
        assert!(normalize("./etc/../../x").is_err());
    }

    #[test]
    fn filter_keeps_copyright_only() {
        let f = PathFilter::new(
            &["usr/share/doc".into(), "usr/share/man".into()],
            &["usr/share/doc/*/copyright".into()],
        );
        assert!(f.excludes("usr/share/doc/libc6/changelog.gz"));
        assert!(!f.excludes("usr/share/doc/libc6/copyright"));
        assert!(!f.excludes("usr/share/doc/libc6"));
        assert!(!f.excludes("usr/share/doc"));
        assert!(f.excludes("usr/share/man/man1/ls.1.gz"));
        assert!(!f.excludes("usr/bin/ls"));
    }

    /// A .deb whose data.tar.gz holds `entries` (raw path, type, content or link target).
    fn deb(dir: &Path, entries: &[(&str, tar::EntryType, &str)]) -> PathBuf {
        let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name(data).unwrap();
                h.set_size(0);
                h.set_cksum();
                t.append(&h, &[][..]).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                t.append(&h, data.as_bytes()).unwrap();
            }
        }
        let data = t.into_inner().unwrap().finish().unwrap();
        let mut a = ar::Builder::new(Vec::new());
        a.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        a.append(
            &ar::Header::new(b"data.tar.gz".to_vec(), data.len() as u64),
            &data[..],
        )
        .unwrap();
        let p = dir.join("t.deb");
        std::fs::write(&p, a.into_inner().unwrap()).unwrap();
        p
    }

    #[test]
    fn a_deb_unpacks_onto_merged_usr() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let p = deb(
            d.path(),
            &[
                ("./bin/", tar::EntryType::Directory, ""),
                ("./bin/tool", tar::EntryType::Regular, "#!/bin/sh\n"),
                ("./usr/share/doc/t/changelog", tar::EntryType::Regular, "x"),
                ("./etc/alt", tar::EntryType::Symlink, "/bin/tool"),
            ],
        );
        let filter = PathFilter::new(&["usr/share/doc".into()], &[]);
        let got = LayerDir::new(&root).unpack_deb(&p, &filter).unwrap();
        assert_eq!(got.max_mtime, 1_700_000_000);
        assert_eq!(
            std::fs::read_to_string(root.join("usr/bin/tool")).unwrap(),
            "#!/bin/sh\n"
        );
        assert_eq!(
            std::fs::read_link(root.join("etc/alt")).unwrap(),
            Path::new("/bin/tool")
        );
        assert!(!root.join("bin").exists() && !root.join("usr/share/doc").exists());
    }

    #[test]
    fn a_deb_entry_with_dotdot_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let p = deb(d.path(), &[("./../escape", tar::EntryType::Regular, "x")]);
        let e = LayerDir::new(&root)
            .unpack_deb(&p, &PathFilter::new(&[], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("./../escape") && e.contains(".."), "{e}");
        assert!(!d.path().join("escape").exists());
    }

    #[test]
    fn parents_through_symlinks_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut l = LayerDir::new(d.path());
        l.symlink("a", "/etc", Meta::root(0o777)).unwrap();
        let e = l
            .file("a/passwd", &mut &b"x"[..], Meta::root(0o644))
            .unwrap_err();
        assert!(e.to_string().contains("parent a"), "{e}");
        assert!(!Path::new("/etc/passwd-kiln-test").exists());
    }
}
