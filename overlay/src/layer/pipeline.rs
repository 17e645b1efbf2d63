//! Writing a layer into the store in two threads: this one walks the tree, writes the tar and
//! hashes it (the diff_id); a worker compresses the chunks and streams them into a blob.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;

use super::tar_writer::write_tar;
use super::{Compression, Layer, LayerOptions, LayerSource};
use crate::digest::HashingWriter;
use crate::error::{Error, IoContext, Result};
use crate::ingest::BlobWriter;
use crate::store::Store;

/// Size of the chunks handed from the tar thread to the compressor.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the two threads.
const IN_FLIGHT: usize = 4;

impl Store {
    /// Writes `source` as a deterministic layer blob into the store; returns digest, size and diff_id.
    /// Nothing is buffered whole: the tar is compressed and written as it is produced.
    pub fn write_layer(&self, source: LayerSource<'_>, opts: &LayerOptions) -> Result<Layer> {
        let blob = self.blob_writer()?;
        let tmp = self.tmp_dir();
        let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let compression = opts.compression;
        let level = opts.level.unwrap_or(compression.default_level());
        let worker = thread::Builder::new()
            .name("kiln-layer-compress".into())
            .spawn(move || compress(rx, blob, compression, level))
            .ctx("spawn compressor thread for", &tmp)?;

        let sink = HashingWriter::new(ChunkSender {
            tx,
            buf: Vec::with_capacity(CHUNK),
        });
        // The sender is dropped here (success or not), which lets the worker finish.
        let produced = write_tar(source, opts, sink).map(|sink| sink.finish().1);
        let compressed = worker.join().map_err(|_| Error::WorkerPanicked)?;
        let diff_id = produced?;
        let blob = compressed?.commit(None)?;
        Ok(Layer {
            digest: blob.digest,
            size: blob.size,
            diff_id,
            media_type: compression.media_type(),
        })
    }
}

/// Compresses every chunk received into `blob`; returns it ready to commit.
fn compress(
    rx: Receiver<Vec<u8>>,
    blob: BlobWriter,
    compression: Compression,
    level: i32,
) -> Result<BlobWriter> {
    let tmp = std::path::PathBuf::from("<layer blob>");
    let drain = |w: &mut dyn Write| -> io::Result<()> {
        for chunk in rx.iter() {
            w.write_all(&chunk)?;
        }
        Ok(())
    };
    match compression {
        Compression::Gzip => {
            let mut blob = blob;
            let threads = thread::available_parallelism().map_or(1, |n| n.get());
            super::pgzip::compress(rx, &mut blob, level.clamp(0, 9) as u32, threads)
                .ctx("compress (gzip)", &tmp)?;
            Ok(blob)
        }
        Compression::Zstd => {
            let mut enc = zstd::Encoder::new(blob, level).ctx("compress (zstd)", &tmp)?;
            drain(&mut enc).ctx("compress (zstd)", &tmp)?;
            enc.finish().ctx("compress (zstd)", &tmp)
        }
        Compression::None => {
            let mut blob = blob;
            drain(&mut blob).ctx("write", &tmp)?;
            Ok(blob)
        }
    }
}

/// A writer that cuts the stream into chunks and sends them to the compressor.
struct ChunkSender {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "layer compressor stopped"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerReader;
    use std::io::Read;

    fn tree(dir: &std::path::Path) {
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::fs::write(dir.join("usr/bin/tool"), vec![b'x'; 3 << 20]).unwrap();
        std::fs::hard_link(dir.join("usr/bin/tool"), dir.join("usr/bin/alias")).unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
    }

    #[test]
    fn same_tree_same_digests_and_the_blob_decodes_to_the_diff_id() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("s")).unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        tree(&a);
        tree(&b);
        // Different mtimes and modes of the roots must not matter.
        std::fs::write(b.join("empty"), b"").unwrap();
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let opts = LayerOptions {
                compression,
                ..LayerOptions::default()
            };
            let la = s.write_layer(LayerSource::Dir(&a), &opts).unwrap();
            let lb = s.write_layer(LayerSource::Dir(&b), &opts).unwrap();
            assert_eq!(la, lb);
            assert_eq!(la.media_type, compression.media_type());
            let mut r = LayerReader::new(s.open_blob(&la.digest).unwrap()).unwrap();
            let mut tar = Vec::new();
            r.read_to_end(&mut tar).unwrap();
            let d = r.finish().unwrap();
            assert_eq!(
                (d.digest, d.size, d.diff_id),
                (la.digest, la.size, la.diff_id)
            );
            let mut archive = tar::Archive::new(&tar[..]);
            let kinds: Vec<(String, tar::EntryType, u64)> = archive
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let h = e.header();
                    assert_eq!((h.uid().unwrap(), h.mtime().unwrap()), (0, 0));
                    (
                        e.path()
                            .unwrap()
                            .display()
                            .to_string()
                            .trim_end_matches('/')
                            .to_string(),
                        h.entry_type(),
                        h.size().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                kinds,
                vec![
                    ("bin".into(), tar::EntryType::Symlink, 0),
                    ("empty".into(), tar::EntryType::Regular, 0),
                    ("usr".into(), tar::EntryType::Directory, 0),
                    ("usr/bin".into(), tar::EntryType::Directory, 0),
                    ("usr/bin/alias".into(), tar::EntryType::Regular, 3 << 20),
                    ("usr/bin/tool".into(), tar::EntryType::Link, 0),
                ]
            );
        }
        assert!(std::fs::read_dir(s.tmp_dir()).unwrap().next().is_none());
    }

    #[test]
    fn a_missing_source_fails_and_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("s")).unwrap();
        let err = s
            .write_layer(
                LayerSource::Dir(&t.path().join("nope")),
                &LayerOptions::default(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(s.list_blobs().unwrap().is_empty());
        assert!(std::fs::read_dir(s.tmp_dir()).unwrap().next().is_none());
    }
}
