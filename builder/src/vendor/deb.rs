//! Reading .deb files in Rust: the ar container and its data.tar.{xz,zst,gz}, without dpkg.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::error::{Result, VendorError};

/// The decompressed data.tar stream of a .deb.
pub type DataTar<'a> = tar::Archive<Box<dyn Read + 'a>>;

/// Opens the .deb at `path`, checks its format and calls `f` with its data.tar archive.
pub fn with_data_tar<T>(path: &Path, f: impl FnOnce(&mut DataTar<'_>) -> Result<T>) -> Result<T> {
    let broken = |reason: String| VendorError::BrokenDeb {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| broken(format!("open: {e}")))?;
    let mut ar = ar::Archive::new(file);
    let mut saw_version = false;
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.map_err(|e| broken(format!("not an ar archive: {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_string();
        if name == "debian-binary" {
            let mut v = String::new();
            entry
                .read_to_string(&mut v)
                .map_err(|e| broken(format!("debian-binary: {e}")))?;
            if !v.starts_with("2.") {
                return Err(broken(format!("unsupported format version {:?}", v.trim())));
            }
            saw_version = true;
            continue;
        }
        let Some(comp) = name.strip_prefix("data.tar") else {
            continue;
        };
        if !saw_version {
            return Err(broken("data.tar comes before debian-binary".into()));
        }
        let reader: Box<dyn Read + '_> = match comp {
            ".xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(entry)),
            ".zst" => Box::new(
                zstd::stream::read::Decoder::new(entry)
                    .map_err(|e| broken(format!("{name}: {e}")))?,
            ),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "" => Box::new(entry),
            other => return Err(broken(format!("unsupported data compression {other:?}"))),
        };
        let mut tar = tar::Archive::new(reader);
        return f(&mut tar);
    }
    Err(broken(if saw_version {
        "no data.tar member".into()
    } else {
        "not a Debian package (no debian-binary)".into()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar_with(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = ar::Builder::new(Vec::new());
        for (n, d) in members {
            b.append(&ar::Header::new(n.as_bytes().to_vec(), d.len() as u64), *d)
                .expect("append");
        }
        b.into_inner().expect("ar")
    }

    fn err_of(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.deb");
        std::fs::write(&p, bytes).expect("write");
        match with_data_tar(&p, |_| Ok(())) {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn garbage_is_named_broken() {
        let e = err_of(b"this is not a deb");
        assert!(e.contains("broken .deb") && e.contains("x.deb"), "{e}");
    }

    #[test]
    fn missing_data_member_is_an_error() {
        let e = err_of(&ar_with(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b""),
        ]));
        assert!(e.contains("no data.tar member"), "{e}");
    }

    #[test]
    fn unknown_compression_is_an_error() {
        let e = err_of(&ar_with(&[
            ("debian-binary", b"2.0\n"),
            ("data.tar.lz", b""),
        ]));
        assert!(e.contains("unsupported data compression"), "{e}");
    }

    #[test]
    fn truncated_xz_fails_on_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.deb");
        std::fs::write(
            &p,
            ar_with(&[
                ("debian-binary", b"2.0\n"),
                ("data.tar.xz", b"\xfd7zXZ\0garbage"),
            ]),
        )
        .expect("w");
        let r = with_data_tar(&p, |t| {
            for e in t.entries().map_err(|e| VendorError::BrokenDeb {
                path: p.clone(),
                reason: e.to_string(),
            })? {
                e.map_err(|e| VendorError::BrokenDeb {
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
            }
            Ok(())
        });
        assert!(r.is_err());
    }
}
