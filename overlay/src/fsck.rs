//! fsck: re-hash every blob and check that everything the refs reach is present.

use std::io;
use std::path::PathBuf;

use crate::digest::{Digest, HashingReader};
use crate::error::{IoContext, Result};
use crate::store::Store;

/// A blob whose content no longer matches its name.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CorruptBlob {
    /// Its name.
    pub digest: Digest,
    /// What its content hashes to now.
    pub actual: Digest,
}

/// A referenced blob that is not in the store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MissingBlob {
    /// The missing digest.
    pub digest: Digest,
    /// Who refers to it.
    pub referenced_by: String,
}

/// What fsck found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FsckReport {
    /// Blobs re-hashed.
    pub checked: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Blobs whose content does not match their name.
    pub corrupt: Vec<CorruptBlob>,
    /// Referenced blobs that are absent.
    pub missing: Vec<MissingBlob>,
    /// Files in `blobs/sha256` whose name is not a digest.
    pub stray: Vec<PathBuf>,
}

impl FsckReport {
    /// True when nothing is corrupt, missing or stray.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.stray.is_empty()
    }
}

impl Store {
    /// Re-hashes every blob and reports corrupt, missing (referenced but absent) and stray files.
    pub fn fsck(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let dir = self.blobs_dir();
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .ctx("read directory", &dir)?
            .collect::<io::Result<_>>()
            .ctx("read directory", &dir)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let Some(digest) = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                report.stray.push(path);
                continue;
            };
            let mut r = HashingReader::new(std::fs::File::open(&path).ctx("open blob", &path)?);
            io::copy(&mut r, &mut io::sink()).ctx("read blob", &path)?;
            let (_, actual, n) = r.finish();
            report.checked += 1;
            report.bytes += n;
            if actual != digest {
                report.corrupt.push(CorruptBlob { digest, actual });
            }
        }
        for (digest, referenced_by) in self.reachable()?.missing {
            report.missing.push(MissingBlob {
                digest,
                referenced_by,
            });
        }
        Ok(report)
    }
}
