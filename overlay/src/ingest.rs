//! Atomic, verified blob ingest: stream into `tmp/`, hash while writing, fsync, rename into place.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::store::{set_mode, Lease, Store};

/// Buffer between a blob writer and its temp file.
const WRITE_BUFFER: usize = 1 << 20;

/// A blob in the store: its digest and size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    /// Content digest (also its file name).
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// A blob being written: bytes go to a temp file in `tmp/`; [`BlobWriter::commit`] verifies and
/// renames it into `blobs/sha256/`. Dropped without commit, it leaves nothing behind.
pub struct BlobWriter {
    out: HashingWriter<BufWriter<File>>,
    tmp: tempfile::TempPath,
    store: Store,
    _lease: Lease,
}

impl Store {
    /// Starts writing a new blob.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let lease = self.lease()?;
        let dir = self.tmp_dir();
        let (file, tmp) = tempfile::Builder::new()
            .prefix("ingest-")
            .tempfile_in(&dir)
            .ctx("create temp file in", &dir)?
            .into_parts();
        Ok(BlobWriter {
            out: HashingWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file)),
            tmp,
            store: self.clone(),
            _lease: lease,
        })
    }

    /// Ingests everything `reader` yields; if `expected` is given, the content must hash to it.
    pub fn ingest(&self, mut reader: impl Read, expected: Option<&Digest>) -> Result<Blob> {
        let mut w = self.blob_writer()?;
        let tmp = w.tmp.to_path_buf();
        io::copy(&mut reader, &mut w).ctx("ingest into", &tmp)?;
        w.commit(expected)
    }

    /// Ingests a byte slice.
    pub fn ingest_bytes(&self, bytes: &[u8]) -> Result<Blob> {
        self.ingest(bytes, None)
    }

    /// True if the blob is present (not re-hashed; `fsck` does that).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound(*digest),
            _ => Error::Io {
                op: "open blob",
                path,
                error: e,
            },
        })
    }

    /// Reads a (small) blob whole, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut buf)
            .ctx("read blob", &self.blob_path(digest))?;
        let actual = Digest::of(&buf);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(buf)
    }

    /// Every blob file in the store whose name is a digest.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let entry = entry.ctx("read directory", &dir)?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.out.len()
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Verifies against `expected` (if given), fsyncs and renames the blob into place.
    /// A blob that already exists is kept as it is and the temp file removed.
    pub fn commit(self, expected: Option<&Digest>) -> Result<Blob> {
        let BlobWriter {
            out, tmp, store, ..
        } = self;
        let (buf, digest, size) = out.finish();
        let file = buf.into_inner().map_err(|e| Error::Io {
            op: "write",
            path: tmp.to_path_buf(),
            error: e.into_error(),
        })?;
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(Error::DigestMismatch {
                    expected: *expected,
                    actual: digest,
                });
            }
        }
        let dest = store.blob_path(&digest);
        if dest.is_file() {
            return Ok(Blob { digest, size });
        }
        set_mode(&file, 0o644, &tmp)?;
        kiln_util::fs::commit(&file, &tmp, &dest)?;
        Ok(Blob { digest, size })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_is_empty(s: &Store) -> bool {
        std::fs::read_dir(s.tmp_dir()).unwrap().next().is_none()
    }

    #[test]
    fn ingest_verifies_and_leaves_nothing_on_mismatch() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let b = s.ingest_bytes(b"hello").unwrap();
        assert_eq!(b.digest, Digest::of(b"hello"));
        assert_eq!(s.read_blob(&b.digest).unwrap(), b"hello");
        let wrong = Digest::of(b"other");
        let err = s.ingest(&b"hello!"[..], Some(&wrong)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!s.has_blob(&wrong) && !s.has_blob(&Digest::of(b"hello!")));
        assert!(tmp_is_empty(&s));
        assert_eq!(s.list_blobs().unwrap(), vec![b.digest]);
    }

    #[test]
    fn concurrent_writers_of_one_blob_are_safe() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let data = vec![42u8; 3 << 20];
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| s.ingest(&data[..], Some(&Digest::of(&data))).unwrap());
            }
        });
        assert_eq!(s.read_blob(&Digest::of(&data)).unwrap(), data);
        assert!(tmp_is_empty(&s));
    }
}
