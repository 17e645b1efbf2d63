//! Sources of layer entries: a directory walk, an overlay upper dir, or an explicit file list,
//! each yielding entries in a deterministic order (directory children sorted by name).

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::xattr;
use super::{LayerSource, OPAQUE_WHITEOUT, WHITEOUT_PREFIX};
use crate::error::{Error, IoContext, Result};

/// What a layer entry is.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A directory.
    Dir,
    /// A regular file of this many bytes.
    File(u64),
    /// A symbolic link to this target.
    Symlink(PathBuf),
    /// A hard link to an earlier entry of the layer.
    Hardlink(PathBuf),
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
    /// An empty marker file: `.wh.<name>` or `.wh..wh..opq`.
    Marker,
}

/// One entry to write into a layer.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Path inside the layer, relative, no trailing slash.
    pub name: PathBuf,
    /// Where its content and metadata come from (unused for markers).
    pub host: PathBuf,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Walks `source`, calling `emit` for every entry in layer order.
pub(crate) fn for_each_entry(
    source: LayerSource<'_>,
    emit: &mut dyn FnMut(&Entry) -> Result<()>,
) -> Result<()> {
    let mut links = HashMap::new();
    match source {
        LayerSource::Dir(root) => walk(root, Path::new(""), false, &mut links, emit),
        LayerSource::OverlayUpper(root) => walk(root, Path::new(""), true, &mut links, emit),
        LayerSource::Files(list) => {
            let mut sorted: Vec<&(String, PathBuf)> = list.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, host) in sorted {
                let name = PathBuf::from(name.trim_start_matches('/').trim_end_matches('/'));
                let meta = fs::symlink_metadata(host).ctx("lstat", host)?;
                if let Some(e) = classify(&name, host, &meta, &mut links)? {
                    emit(&e)?;
                }
            }
            Ok(())
        }
    }
}

fn walk(
    dir: &Path,
    name: &Path,
    upper: bool,
    links: &mut HashMap<(u64, u64), PathBuf>,
    emit: &mut dyn FnMut(&Entry) -> Result<()>,
) -> Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .ctx("read directory", dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .ctx("read directory", dir)?;
    children.sort();
    if upper && !name.as_os_str().is_empty() && is_opaque(dir)? {
        emit(&marker(name.join(OPAQUE_WHITEOUT)))?;
    }
    for child in children {
        let host = dir.join(&child);
        let child_name = name.join(&child);
        let meta = fs::symlink_metadata(&host).ctx("lstat", &host)?;
        let ft = meta.file_type();
        if upper && ft.is_char_device() && meta.rdev() == 0 {
            let mut wh = std::ffi::OsString::from(WHITEOUT_PREFIX);
            wh.push(&child);
            emit(&marker(name.join(wh)))?;
            continue;
        }
        if let Some(e) = classify(&child_name, &host, &meta, links)? {
            emit(&e)?;
        }
        if ft.is_dir() {
            walk(&host, &child_name, upper, links, emit)?;
        }
    }
    Ok(())
}

fn is_opaque(dir: &Path) -> Result<bool> {
    Ok(xattr::get(dir, xattr::OVERLAY_OPAQUE)?.as_deref() == Some(b"y"))
}

fn marker(name: PathBuf) -> Entry {
    Entry {
        name,
        host: PathBuf::new(),
        kind: Kind::Marker,
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

/// Turns one host file into an entry (`None` for sockets, which a tar cannot hold).
fn classify(
    name: &Path,
    host: &Path,
    meta: &Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<Option<Entry>> {
    let ft = meta.file_type();
    let dev = || {
        let rdev = meta.rdev();
        (libc::major(rdev), libc::minor(rdev))
    };
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        if meta.nlink() > 1 {
            match links.get(&(meta.dev(), meta.ino())) {
                Some(first) => Kind::Hardlink(first.clone()),
                None => {
                    links.insert((meta.dev(), meta.ino()), name.to_path_buf());
                    Kind::File(meta.len())
                }
            }
        } else {
            Kind::File(meta.len())
        }
    } else if ft.is_symlink() {
        Kind::Symlink(fs::read_link(host).ctx("readlink", host)?)
    } else if ft.is_char_device() {
        let (ma, mi) = dev();
        Kind::Char(ma, mi)
    } else if ft.is_block_device() {
        let (ma, mi) = dev();
        Kind::Block(ma, mi)
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        return Ok(None);
    };
    if name.as_os_str().is_empty() {
        return Err(Error::BadSource {
            path: host.to_path_buf(),
            reason: "entry has an empty name inside the layer".into(),
        });
    }
    Ok(Some(Entry {
        name: name.to_path_buf(),
        host: host.to_path_buf(),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}
