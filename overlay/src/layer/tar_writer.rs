//! The deterministic tar writer: normalised ustar headers, PAX records only where needed.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::{EntryType, Header};

use super::source::{for_each_entry, Entry, Kind};
use super::xattr;
use super::{LayerOptions, LayerSource};
use crate::error::{Error, IoContext, Result};

/// Size of a tar block.
const BLOCK: usize = 512;
/// Read buffer for file contents.
const READ_BUFFER: usize = 256 << 10;
/// Name of PAX extended headers (fixed, so archives are reproducible).
const PAX_NAME: &[u8] = b"././@PaxHeader";

/// Writes `source` as a deterministic, uncompressed tar stream into `out`; returns `out`.
pub fn write_tar<W: Write>(source: LayerSource<'_>, opts: &LayerOptions, out: W) -> Result<W> {
    let mut w = TarWriter {
        out,
        buf: vec![0u8; READ_BUFFER],
        opts,
    };
    for_each_entry(source, &mut |e| w.entry(e))?;
    w.finish()
}

struct TarWriter<'o, W> {
    out: W,
    buf: Vec<u8>,
    opts: &'o LayerOptions,
}

impl<W: Write> TarWriter<'_, W> {
    fn entry(&mut self, e: &Entry) -> Result<()> {
        let mut h = Header::new_ustar();
        h.set_mode(e.mode);
        let (uid, gid) = if self.opts.keep_owners {
            (e.uid, e.gid)
        } else {
            (0, 0)
        };
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mtime(self.opts.mtime);
        h.set_size(0);
        let mut name = e.name.as_os_str().as_bytes().to_vec();
        let mut link: Option<&[u8]> = None;
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(EntryType::Directory);
                name.push(b'/');
            }
            Kind::File(size) => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(*size);
            }
            Kind::Marker => h.set_entry_type(EntryType::Regular),
            Kind::Symlink(t) => {
                h.set_entry_type(EntryType::Symlink);
                link = Some(t.as_os_str().as_bytes());
            }
            Kind::Hardlink(t) => {
                h.set_entry_type(EntryType::Link);
                link = Some(t.as_os_str().as_bytes());
            }
            Kind::Char(ma, mi) | Kind::Block(ma, mi) => {
                h.set_entry_type(if matches!(e.kind, Kind::Char(..)) {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                h.set_device_major(*ma).ctx("device major", &e.host)?;
                h.set_device_minor(*mi).ctx("device minor", &e.host)?;
            }
            Kind::Fifo => h.set_entry_type(EntryType::Fifo),
        }

        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if !set_name(&mut h, &name) {
            pax.push(("path".into(), name.clone()));
        }
        if let Some(link) = link {
            let field = &mut h.as_old_mut().linkname;
            if link.len() <= field.len() {
                field[..link.len()].copy_from_slice(link);
            } else {
                pax.push(("linkpath".into(), link.to_vec()));
            }
        }
        if self.opts.xattrs && !matches!(e.kind, Kind::Marker) {
            for n in xattr::list(&e.host)? {
                if n.starts_with("trusted.overlay.") {
                    continue;
                }
                if let Some(v) = xattr::get(&e.host, &n)? {
                    pax.push((format!("SCHILY.xattr.{n}"), v));
                }
            }
        }
        if !pax.is_empty() {
            self.pax_header(&pax, &e.host)?;
        }
        h.set_cksum();
        self.out
            .write_all(h.as_bytes())
            .ctx("write tar header for", &e.host)?;
        if let Kind::File(size) = e.kind {
            self.copy_file(&e.host, size)?;
        }
        Ok(())
    }

    /// Writes a PAX extended header holding `records` (sorted by key, as given order is not trusted).
    fn pax_header(&mut self, records: &[(String, Vec<u8>)], host: &Path) -> Result<()> {
        let mut sorted: Vec<&(String, Vec<u8>)> = records.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut data = Vec::new();
        for (k, v) in sorted {
            data.extend_from_slice(&pax_record(k, v));
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_mtime(self.opts.mtime);
        h.set_size(data.len() as u64);
        set_name(&mut h, PAX_NAME);
        h.set_cksum();
        self.out
            .write_all(h.as_bytes())
            .ctx("write tar header for", host)?;
        self.out
            .write_all(&data)
            .ctx("write tar header for", host)?;
        self.pad(data.len() as u64, host)
    }

    /// Copies exactly `size` bytes of `path` (the size its header announced).
    fn copy_file(&mut self, path: &Path, size: u64) -> Result<()> {
        let mut f = File::open(path).ctx("open", path)?;
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = f.read(&mut self.buf[..want]).ctx("read", path)?;
            if n == 0 {
                return Err(Error::BadSource {
                    path: path.to_path_buf(),
                    reason: format!(
                        "file shrank while being read ({left} of {size} bytes missing)"
                    ),
                });
            }
            self.out
                .write_all(&self.buf[..n])
                .ctx("write tar data for", path)?;
            left -= n as u64;
        }
        self.pad(size, path)
    }

    fn pad(&mut self, len: u64, path: &Path) -> Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out
                .write_all(&[0u8; BLOCK][..BLOCK - rem])
                .ctx("write tar padding for", path)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<W> {
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .ctx("write tar trailer", Path::new("<layer>"))?;
        self.out.flush().ctx("flush", Path::new("<layer>"))?;
        Ok(self.out)
    }
}

/// Puts `name` in the ustar name (+ prefix) fields; false when it does not fit.
fn set_name(h: &mut Header, name: &[u8]) -> bool {
    let Some(ustar) = h.as_ustar_mut() else {
        return false;
    };
    if name.len() <= ustar.name.len() {
        ustar.name[..name.len()].copy_from_slice(name);
        return true;
    }
    // Split at a '/' so that prefix <= 155 bytes and the rest <= 100 bytes (and not empty).
    let limit = ustar.prefix.len().min(name.len() - 1);
    let split = (0..=limit)
        .rev()
        .find(|&i| name[i] == b'/' && name.len() - i - 1 <= ustar.name.len() && i + 1 < name.len());
    match split {
        Some(i) => {
            ustar.prefix[..i].copy_from_slice(&name[..i]);
            ustar.name[..name.len() - i - 1].copy_from_slice(&name[i + 1..]);
            true
        }
        None => {
            let n = ustar.name.len();
            ustar.name.copy_from_slice(&name[..n]);
            false
        }
    }
}

/// One PAX record: `"<len> <key>=<value>\n"` where len counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for v in [&b"x"[..], &[b'a'; 95][..], &[b'a'; 994][..]] {
            let r = pax_record("path", v);
            let (len, _) = std::str::from_utf8(&r).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len());
        }
    }

    #[test]
    fn long_names_and_links_read_back() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a".repeat(120)).join("b".repeat(120));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f".repeat(200)), b"data").unwrap();
        std::os::unix::fs::symlink("t".repeat(300), deep.join("l")).unwrap();
        let tar = write_tar(
            LayerSource::Dir(t.path()),
            &LayerOptions::default(),
            Vec::new(),
        )
        .unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<(String, Option<String>)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path()
                        .unwrap()
                        .display()
                        .to_string()
                        .trim_end_matches('/')
                        .to_string(),
                    e.link_name().unwrap().map(|l| l.display().to_string()),
                )
            })
            .collect();
        let a1 = "a".repeat(120);
        let b1 = format!("{a1}/{}", "b".repeat(120));
        assert_eq!(names[0].0, a1);
        assert_eq!(names[1].0, b1);
        assert_eq!(names[2].0, format!("{b1}/{}", "f".repeat(200)));
        assert_eq!(names[3], (format!("{b1}/l"), Some("t".repeat(300))));
    }
}
