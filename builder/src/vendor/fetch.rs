//! The .deb cache: files named by their sha256 from apt's index, verified on the way in and
//! before every use; missing ones are downloaded with `apt-get download`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::{Digest as _, Sha256};

use super::apt::{self, Package};
use super::error::{io_err, Result, VendorError};
use super::progress::Progress;

/// A directory of .deb files named `<sha256>.deb`.
#[derive(Debug, Clone)]
pub struct DebCache {
    dir: PathBuf,
}

impl DebCache {
    /// Opens (creating) the cache at `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err("mkdir", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the .deb of `pkg` lives (or will).
    pub fn path(&self, pkg: &Package) -> PathBuf {
        self.dir.join(format!("{}.deb", pkg.sha256))
    }

    /// Downloads every package not yet cached; returns how many were fetched.
    pub fn ensure(&self, pkgs: &[Package], progress: &Progress) -> Result<usize> {
        let missing: Vec<&Package> = pkgs.iter().filter(|p| !self.path(p).is_file()).collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let total: u64 = missing.iter().map(|p| p.size).sum();
        let bar = progress.bytes("downloading", total);
        let scratch = tempdir_in(&self.dir, "dl")?;
        // apt's private state lives below the scratch dir (its package cache too), the .debs land
        // in the scratch dir itself.
        let state = scratch.path().join("apt");
        let mut cmd = apt::apt(&["apt-get", "download"], &state);
        cmd.args(
            missing
                .iter()
                .map(|p| format!("{}:{}={}", p.name, p.arch, p.version)),
        );
        std::fs::create_dir_all(state.join("cache")).map_err(io_err("mkdir", &state))?;
        std::fs::write(state.join("status"), "").map_err(io_err("write", &state))?;
        cmd.current_dir(scratch.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| VendorError::AptSpawn {
            program: "apt-get".into(),
            source,
        })?;
        if let Some(out) = child.stdout.take() {
            // "Get:3 http://... bookworm/main amd64 libc6 amd64 2.36-9 [2757 kB]"
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if let Some(rest) = line.strip_prefix("Get:") {
                    let name = rest.split_whitespace().nth(4).unwrap_or("");
                    if let Some(p) = missing.iter().find(|p| p.name == name) {
                        bar.advance(p.size, &p.name);
                    }
                }
            }
        }
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let status = child.wait().map_err(|source| VendorError::AptSpawn {
            program: "apt-get".into(),
            source,
        })?;
        bar.finish();
        if !status.success() {
            return Err(VendorError::AptFailed {
                command: "apt-get download".into(),
                status: status.to_string(),
                stderr: stderr.trim().to_string(),
            });
        }
        // Match downloaded files to packages by content, never by name.
        let mut by_hash = std::collections::HashMap::new();
        for e in std::fs::read_dir(scratch.path()).map_err(io_err("read dir", scratch.path()))? {
            let p = e.map_err(io_err("read dir", scratch.path()))?.path();
            if p.extension().is_some_and(|x| x == "deb") {
                by_hash.insert(sha256_file(&p)?, p);
            }
        }
        for p in &missing {
            let Some(file) = by_hash.get(&p.sha256) else {
                let fname = format!("{}_", p.name);
                let actual = by_hash.iter().find(|(_, f)| {
                    f.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&fname))
                });
                return Err(match actual {
                    Some((h, f)) => VendorError::ChecksumMismatch {
                        package: p.name.clone(),
                        version: p.version.clone(),
                        path: f.clone(),
                        expected: p.sha256.clone(),
                        actual: h.clone(),
                    },
                    None => VendorError::NotDownloaded {
                        package: p.name.clone(),
                        version: p.version.clone(),
                        sha256: p.sha256.clone(),
                    },
                });
            };
            let dest = self.path(p);
            std::fs::rename(file, &dest).map_err(io_err("rename into cache", &dest))?;
        }

        Ok(missing.len())
    }

    /// Checks the cached .deb of `pkg` against apt's sha256; a bad file is removed so that the
    /// next build downloads it again.
    pub fn verify(&self, pkg: &Package) -> Result<PathBuf> {
        let path = self.path(pkg);
        let actual = sha256_file(&path)?;
        if actual != pkg.sha256 {
            let _ = std::fs::remove_file(&path);
            return Err(VendorError::ChecksumMismatch {
                package: pkg.name.clone(),
                version: pkg.version.clone(),
                path,
                expected: pkg.sha256.clone(),
                actual,
            });
        }
        Ok(path)
    }
}

/// sha256 (hex) of a file's content.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A scratch directory removed on drop.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a fresh scratch directory `<parent>/.<prefix>-<pid>-<n>`.
pub(crate) fn tempdir_in(parent: &Path, prefix: &str) -> Result<ScratchDir> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    std::fs::create_dir_all(parent).map_err(io_err("mkdir", parent))?;
    loop {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = parent.join(format!(".{prefix}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(ScratchDir(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("mkdir", p)(e)),
        }
    }
}
