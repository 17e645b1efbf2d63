//! Garbage collection: remove blobs, snapshots and scratch files that no ref reaches.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::store::Store;

/// What a gc removed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    /// Blobs removed.
    pub removed_blobs: Vec<Digest>,
    /// Bytes those blobs held.
    pub freed_bytes: u64,
    /// Snapshot directories removed (by chain id hex).
    pub removed_snapshots: Vec<String>,
    /// Leftovers removed from `tmp/` (interrupted ingests and unpacks).
    pub removed_tmp: Vec<PathBuf>,
}

impl Store {
    /// Removes every blob and snapshot that no ref (nor build-cache entry) reaches, and clears
    /// `tmp/`. Waits for every [`crate::Lease`] to end first; refs cannot change meanwhile.
    pub fn gc(&self) -> Result<GcReport> {
        let _gc = self.lock_gc()?;
        let _refs = self.lock_refs()?;
        let reach = self.reachable()?;
        let mut report = GcReport::default();
        for d in self.list_blobs()? {
            if reach.blobs.contains_key(&d) {
                continue;
            }
            let path = self.blob_path(&d);
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).ctx("remove blob", &path)?;
            report.freed_bytes += size;
            report.removed_blobs.push(d);
        }
        let snaps = self.snapshots_dir();
        for e in std::fs::read_dir(&snaps).ctx("read directory", &snaps)? {
            let e = e.ctx("read directory", &snaps)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let keep = Digest::from_hex(&name).is_ok_and(|d| reach.chain_ids.contains(&d));
            if !keep && !name.starts_with('.') {
                std::fs::remove_dir_all(e.path()).ctx("remove snapshot", &e.path())?;
                report.removed_snapshots.push(name);
            }
        }
        report.removed_snapshots.sort();
        let tmp = self.tmp_dir();
        for e in std::fs::read_dir(&tmp).ctx("read directory", &tmp)? {
            let p = e.ctx("read directory", &tmp)?.path();
            let removed = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            removed.ctx("remove leftover", &p)?;
            report.removed_tmp.push(p);
        }
        Ok(report)
    }
}
