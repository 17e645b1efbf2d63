//! Reading a layer blob: detects gzip/zstd/plain by magic and hashes both the compressed bytes
//! (the blob digest) and the tar stream (the diff_id) while it is read.

use std::io::{self, BufRead, BufReader, Read};

use super::limits::{Limit, Limits};
use crate::digest::{Digest, Hasher, HashingReader};

/// Buffer for the compressed side.
const READ_BUFFER: usize = 256 << 10;

enum Decoder<R: Read> {
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<HashingReader<R>>>>),
    Zstd(zstd::Decoder<'static, BufReader<HashingReader<R>>>),
    Plain(BufReader<HashingReader<R>>),
}

/// An uncompressed tar stream read out of a (possibly compressed) layer.
pub struct LayerReader<R: Read> {
    dec: Decoder<R>,
    tar: Hasher,
    /// Uncompressed bytes read so far.
    read: u64,
    /// Bounds the uncompressed stream (gzip/zstd bombs), trailing bytes included.
    limits: Option<Limits>,
}

/// Digests of a layer read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDigests {
    /// Digest of the bytes as stored (compressed).
    pub digest: Digest,
    /// Their size.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
}

impl<R: Read> LayerReader<R> {
    /// Wraps a layer blob; compression is detected from its first bytes.
    pub fn new(inner: R) -> io::Result<Self> {
        let mut br = BufReader::with_capacity(READ_BUFFER, HashingReader::new(inner));
        let head = br.fill_buf()?;
        let dec = if head.starts_with(&[0x1f, 0x8b]) {
            Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(br)))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Decoder::Zstd(zstd::Decoder::with_buffer(br)?)
        } else {
            Decoder::Plain(br)
        };
        Ok(Self {
            dec,
            tar: Hasher::new(),
            read: 0,
            limits: None,
        })
    }

    /// Stops decompressing with a [`crate::LimitExceeded`] (inside the `io::Error`) once the
    /// uncompressed stream, trailing bytes included, goes over `limits.max_expanded_bytes`.
    pub fn with_limits(mut self, limits: &Limits) -> Self {
        self.limits = Some(*limits);
        self
    }

    /// Reads whatever is left (tar padding, trailing bytes) and returns both digests.
    pub fn finish(mut self) -> io::Result<LayerDigests> {
        io::copy(&mut self, &mut io::sink())?;
        let mut br = match self.dec {
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
            Decoder::Plain(b) => b,
        };
        io::copy(&mut br, &mut io::sink())?;
        let (_, digest, size) = br.into_inner().finish();
        let (diff_id, _) = self.tar.finish();
        Ok(LayerDigests {
            digest,
            size,
            diff_id,
        })
    }
}

impl<R: Read> Read for LayerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.dec {
            Decoder::Gzip(d) => d.read(buf)?,
            Decoder::Zstd(d) => d.read(buf)?,
            Decoder::Plain(b) => b.read(buf)?,
        };
        self.tar.update(&buf[..n]);
        self.read += n as u64;
        if let Some(limits) = &self.limits {
            Limit::ExpandedBytes.check(limits, "(uncompressed layer stream)", self.read)?;
        }
        Ok(n)
    }
}
