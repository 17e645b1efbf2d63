//! The safe applier: unpacks a layer's tar into a directory, honouring OCI whiteouts, and never
//! writes outside it. Every path is resolved with `openat2(RESOLVE_BENEATH)` from the target's fd,
//! and the last component is created with `*at` calls that do not follow symlinks.
//!
//! Resources are bounded by [`Limits`], checked while the tar streams and before each entry is
//! written; the applier's own memory does not grow with the entries (a stack of open directories,
//! and in [`WhiteoutMode::Apply`] one 64-bit hash per path for opaque markers, bounded by
//! `max_entries`). GNU sparse entries are refused: no OCI layer writer produces them, and their
//! holes are the one way for a few bytes of tar to claim gigabytes.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstatat, futimens, mkdirat, mknodat, utimensat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tar::EntryType;

use super::limits::{Limit, Limits, Meter, Metered};
use super::xattr;
use super::{OPAQUE_WHITEOUT, WHITEOUT_PREFIX};
use crate::error::{Error, IoContext, Result, SysContext};

/// What to do with OCI whiteout entries (`.wh.<name>`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Delete what they name from the target (flattening layers into one tree).
    #[default]
    Apply,
    /// Turn them into overlayfs whiteouts (char 0/0, `trusted.overlay.opaque=y`), for snapshots
    /// used as overlay lower dirs.
    Overlay,
}

/// How a layer is applied.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// What whiteouts become.
    pub whiteouts: WhiteoutMode,
    /// Create character and block devices (refused otherwise).
    pub allow_devices: bool,
    /// chown entries to their uid/gid (default: when running as root).
    pub owners: bool,
    /// Restore `SCHILY.xattr.*` records (`trusted.overlay.*` is always refused).
    pub xattrs: bool,
    /// Resource bounds (a layer over one is refused with [`Error::Limit`]).
    pub limits: Limits,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            whiteouts: WhiteoutMode::Apply,
            allow_devices: false,
            owners: nix::unistd::geteuid().is_root(),
            xattrs: true,
            limits: Limits::default(),
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries applied (whiteouts included).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Apparent size of the files, as their headers declare it (checked before writing).
    pub declared: u64,
}

/// Unpacks the uncompressed tar stream `tar` into `target` (an existing directory).
/// A refused entry stops the apply with [`Error::UnsafeEntry`] naming it, a layer over
/// `opts.limits` with [`Error::Limit`]; either way what was written so far stays in `target`
/// (callers unpack into a temp dir and drop it).
pub fn apply_layer(tar: impl Read, target: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    let root: OwnedFd = openat(
        nix::fcntl::AT_FDCWD,
        target,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .sys("open target directory", target)?;
    let meter = Meter::new(&opts.limits);
    let mut a = Applier {
        root,
        target,
        opts,
        meter: &meter,
        written: HashSet::default(),
        dirs: Vec::new(),
        stats: ApplyStats::default(),
        buf: vec![0u8; 256 << 10],
    };
    let mut archive = tar::Archive::new(Metered {
        inner: tar,
        meter: &meter,
    });
    let mut entries = archive.entries().ctx("read layer tar into", target)?;
    loop {
        // PAX records and GNU long names are read by the parser here: bounded by the meter.
        meter.headers_begin();
        let next = entries.next();
        meter.headers_end();
        let Some(entry) = next else { break };
        let mut entry = entry.ctx("read layer tar into", target)?;
        a.entry(&mut entry)?;
        // Data no entry type uses (a directory with a size) is read here, under the byte budget.
        io::copy(&mut entry, &mut io::sink()).ctx("read layer tar into", target)?;
    }
    a.finish()
}

struct Applier<'a> {
    root: OwnedFd,
    target: &'a Path,
    opts: &'a ApplyOptions,
    meter: &'a Meter<'a>,
    /// Hashes of the paths this layer created (an opaque marker must not hide them); only kept in
    /// [`WhiteoutMode::Apply`]. A collision (2^-64, keys random per apply) only keeps a lower file.
    written: HashSet<u64, RandomState>,
    /// The directories being filled, each a prefix of the next: their mtime is set once entries
    /// leave them (their children change it meanwhile). O(depth), not O(entries).
    dirs: Vec<(Vec<OsString>, i64)>,
    stats: ApplyStats,
    buf: Vec<u8>,
}

/// A refusal naming the entry.
fn refuse(entry: &str, reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// Splits a tar name into components, refusing absolute names and `..`; `.` and empty parts vanish.
fn components(raw: &[u8], entry: &str) -> Result<Vec<OsString>> {
    if raw.first() == Some(&b'/') {
        return Err(refuse(entry, "absolute path"));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refuse(entry, "path traversal (..)")),
            c => out.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(out)
}

fn join(parts: &[OsString]) -> PathBuf {
    parts.iter().collect()
}

impl Applier<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        self.meter.set_entry(&name);
        self.stats.entries += 1;
        self.check(entry, &raw, &name)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let comps = components(&raw, &name)?;
        self.leave_dirs(&comps)?;
        let Some((base, parent)) = comps.split_last() else {
            return Ok(()); // the root itself ("./")
        };
        let base_bytes = base.as_bytes();
        if base_bytes == OPAQUE_WHITEOUT.as_bytes() {
            return self.opaque(parent, &name);
        }
        if let Some(victim) = base_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(parent, OsStr::from_bytes(victim), &name);
        }
        let h = entry.header();
        let mode =
            Mode::from_bits_truncate(h.mode().ctx("read mode of", Path::new(&name))? & 0o7777);
        // Empty numeric fields (some hand-made tars) read as 0.
        let uid = h.uid().unwrap_or(0) as u32;
        let gid = h.gid().unwrap_or(0) as u32;
        let mtime = h.mtime().unwrap_or(0) as i64;
        let dir = self.open_dir(parent, true, &name)?;
        let path = self.target.join(join(&comps));
        match kind {
            EntryType::Directory => {
                match fstatat(&dir, base.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st)
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                            == SFlag::S_IFDIR => {}
                    Ok(_) => {
                        remove_at(dir.as_fd(), base, &path)?;
                        mkdirat(&dir, base.as_os_str(), Mode::from_bits_truncate(0o700))
                            .sys("mkdirat", &path)?;
                    }
                    Err(Errno::ENOENT) => {
                        mkdirat(&dir, base.as_os_str(), Mode::from_bits_truncate(0o700))
                            .sys("mkdirat", &path)?
                    }
                    Err(e) => {
                        return Err(Error::Sys {
                            syscall: "fstatat",
                            path,
                            errno: e,
                        })
                    }
                }
                let fd = openat(
                    &dir,
                    base.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .sys("open directory", &path)?;
                self.xattrs(entry, fd.as_fd(), &path, &name)?;
                self.own_and_mode(fd.as_fd(), uid, gid, mode, &path)?;
                self.dirs.push((comps.clone(), mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_at(dir.as_fd(), base, &path)?;
                let fd = openat(
                    &dir,
                    base.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .sys("create", &path)?;
                let mut file = File::from(fd);
                loop {
                    let n = entry
                        .read(&mut self.buf)
                        .ctx("read layer data for", &path)?;
                    if n == 0 {
                        break;
                    }
                    io::Write::write_all(&mut file, &self.buf[..n]).ctx("write", &path)?;
                    self.stats.bytes += n as u64;
                }
                self.xattrs(entry, file.as_fd(), &path, &name)?;
                self.own_and_mode(file.as_fd(), uid, gid, mode, &path)?;
                let t = TimeSpec::new(mtime, 0);
                futimens(&file, &t, &t).sys("futimens", &path)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&name, "symlink without a target"))?
                    .into_owned();
                remove_at(dir.as_fd(), base, &path)?;
                symlinkat(OsStr::from_bytes(&link), &dir, base.as_os_str())
                    .sys("symlinkat", &path)?;
                self.finish_at(dir.as_fd(), base, uid, gid, mtime, &path)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&name, "hard link without a target"))?
                    .into_owned();
                let lcomps = components(&link, &name).map_err(|_| {
                    refuse(
                        &name,
                        format!(
                            "hard link to {:?} outside the layer",
                            String::from_utf8_lossy(&link)
                        ),
                    )
                })?;
                let Some((lbase, lparent)) = lcomps.split_last() else {
                    return Err(refuse(&name, "hard link to the root directory"));
                };
                let ldir = self.open_dir(lparent, false, &name)?;
                let st = fstatat(&ldir, lbase.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(
                    |e| {
                        refuse(
                            &name,
                            format!("hard link target {:?}: {e}", String::from_utf8_lossy(&link)),
                        )
                    },
                )?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                    return Err(refuse(&name, "hard link to a directory"));
                }
                if lcomps != comps {
                    remove_at(dir.as_fd(), base, &path)?;
                    linkat(
                        &ldir,
                        lbase.as_os_str(),
                        &dir,
                        base.as_os_str(),
                        AtFlags::empty(),
                    )
                    .sys("linkat", &path)?;
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (sflag, what) = match kind {
                    EntryType::Char => (SFlag::S_IFCHR, "character device"),
                    EntryType::Block => (SFlag::S_IFBLK, "block device"),
                    _ => (SFlag::S_IFIFO, "fifo"),
                };
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                if sflag != SFlag::S_IFIFO && !self.opts.allow_devices {
                    return Err(refuse(
                        &name,
                        format!("{what} {major}:{minor} (device nodes are not allowed)"),
                    ));
                }
                remove_at(dir.as_fd(), base, &path)?;
                mknodat(
                    &dir,
                    base.as_os_str(),
                    sflag,
                    mode,
                    libc::makedev(major, minor),
                )
                .sys("mknodat", &path)?;
                self.finish_at(dir.as_fd(), base, uid, gid, mtime, &path)?;
            }
            other => return Err(refuse(&name, format!("unsupported entry type {other:?}"))),
        }
        if self.opts.whiteouts == WhiteoutMode::Apply {
            self.written.insert(self.written.hasher().hash_one(&comps));
        }
        Ok(())
    }

    /// The limits that an entry's header alone can break, checked before anything is written.
    fn check<R: Read>(&mut self, entry: &tar::Entry<'_, R>, raw: &[u8], name: &str) -> Result<()> {
        let limits = &self.opts.limits;
        Limit::Entries.check(limits, name, self.stats.entries)?;
        Limit::PathBytes.check(limits, name, raw.len() as u64)?;
        if let Some(link) = entry.link_name_bytes() {
            Limit::PathBytes.check(limits, name, link.len() as u64)?;
        }
        match entry.header().entry_type() {
            EntryType::GNUSparse => Err(refuse(
                name,
                "GNU sparse file (refused: OCI layers never need one, and holes would let a few \
                 bytes of tar claim any size)",
            )),
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                Limit::FileBytes.check(limits, name, size)?;
                self.stats.declared = self.stats.declared.saturating_add(size);
                Limit::ExpandedBytes.check(limits, name, self.stats.declared)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Sets the mtime of the directories being filled that `comps` is not inside of.
    fn leave_dirs(&mut self, comps: &[OsString]) -> Result<()> {
        while let Some((parts, mtime)) = self.dirs.last() {
            if comps.len() > parts.len() && comps.starts_with(parts) {
                break;
            }
            self.set_dir_mtime(parts, *mtime)?;
            self.dirs.pop();
        }
        Ok(())
    }

    /// Sets a directory's mtime (if it is still a directory beneath the target).
    fn set_dir_mtime(&self, parts: &[OsString], mtime: i64) -> Result<()> {
        let path = self.target.join(join(parts));
        if let Ok(fd) = self.open_dir(parts, false, &path.display().to_string()) {
            let t = TimeSpec::new(mtime, 0);
            let d = openat(
                &fd,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .sys("open directory", &path)?;
            futimens(&d, &t, &t).sys("futimens", &path)?;
        }
        Ok(())
    }

    /// `.wh..wh..opq` in `parent`: hide everything lower layers put there.
    fn opaque(&mut self, parent: &[OsString], name: &str) -> Result<()> {
        let dir = self.open_dir(parent, true, name)?;
        let path = self.target.join(join(parent));
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => {
                let fd = openat(
                    &dir,
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .sys("open directory", &path)?;
                xattr::set_fd(fd.as_fd(), xattr::OVERLAY_OPAQUE, b"y", &path)
            }
            WhiteoutMode::Apply => {
                for child in list_dir(dir.as_fd(), &path)? {
                    let mut p = parent.to_vec();
                    p.push(child.clone());
                    if !self.written.contains(&self.written.hasher().hash_one(&p)) {
                        remove_at(dir.as_fd(), &child, &path.join(&child))?;
                    }
                }
                Ok(())
            }
        }
    }

    /// `.wh.<victim>` in `parent`: delete the victim (or mark it deleted for overlay).
    fn whiteout(&mut self, parent: &[OsString], victim: &OsStr, name: &str) -> Result<()> {
        if victim.is_empty() || victim == "." || victim == ".." {
            return Err(refuse(name, "whiteout of an invalid name"));
        }
        let path = self.target.join(join(parent)).join(victim);
        match self.opts.whiteouts {
            WhiteoutMode::Apply => match self.open_dir(parent, false, name) {
                Ok(dir) => remove_at(dir.as_fd(), victim, &path),
                Err(Error::Sys {
                    errno: Errno::ENOENT,
                    ..
                }) => Ok(()),
                Err(e) => Err(e),
            },
            WhiteoutMode::Overlay => {
                let dir = self.open_dir(parent, true, name)?;
                remove_at(dir.as_fd(), victim, &path)?;
                mknodat(
                    &dir,
                    victim,
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    libc::makedev(0, 0),
                )
                .sys("mknodat (whiteout)", &path)
            }
        }
    }

    /// Opens the directory `parts` beneath the target (creating missing ones when `create`);
    /// refuses resolutions that leave the target (a symlink pointing out).
    fn open_dir(&self, parts: &[OsString], create: bool, entry: &str) -> Result<OwnedFd> {
        let how = || {
            OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
        };
        let rel = join(parts);
        let rel_or_dot: &Path = if parts.is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        let explain = |errno: Errno, at: &Path| match errno {
            Errno::EXDEV | Errno::ELOOP => refuse(
                entry,
                format!(
                    "{} resolves outside the target (through a symlink)",
                    at.display()
                ),
            ),
            Errno::ENOTDIR => refuse(entry, format!("{} is not a directory", at.display())),
            errno => Error::Sys {
                syscall: "openat2",
                path: self.target.join(at),
                errno,
            },
        };
        match openat2(&self.root, rel_or_dot, how()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {}
            Err(e) => return Err(explain(e, rel_or_dot)),
        }
        // Create the missing directories one component at a time, each resolved beneath the root.
        let mut prefix = PathBuf::new();
        let mut fd = openat2(&self.root, ".", how()).map_err(|e| explain(e, Path::new(".")))?;
        for part in parts {
            prefix.push(part);
            fd = match openat2(&self.root, &prefix, how()) {
                Ok(next) => next,
                Err(Errno::ENOENT) => {
                    match mkdirat(&fd, part.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(Error::Sys {
                                syscall: "mkdirat",
                                path: self.target.join(&prefix),
                                errno: e,
                            })
                        }
                    }
                    openat2(&self.root, &prefix, how()).map_err(|e| explain(e, &prefix))?
                }
                Err(e) => return Err(explain(e, &prefix)),
            };
        }
        Ok(fd)
    }

    fn own_and_mode(
        &self,
        fd: BorrowedFd<'_>,
        uid: u32,
        gid: u32,
        mode: Mode,
        path: &Path,
    ) -> Result<()> {
        if self.opts.owners {
            fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).sys("fchown", path)?;
        }
        fchmod(fd, mode).sys("fchmod", path)
    }

    /// Owner and mtime of a non-regular entry, without following it.
    fn finish_at(
        &self,
        dir: BorrowedFd<'_>,
        base: &OsStr,
        uid: u32,
        gid: u32,
        mtime: i64,
        path: &Path,
    ) -> Result<()> {
        if self.opts.owners {
            fchownat(
                dir,
                base,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .sys("fchownat", path)?;
        }
        let t = TimeSpec::new(mtime, 0);
        utimensat(
            dir,
            base,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .sys("utimensat", path)
    }

    fn xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        fd: BorrowedFd<'_>,
        path: &Path,
        name: &str,
    ) -> Result<()> {
        if !self.opts.xattrs {
            return Ok(());
        }
        let Some(exts) = entry.pax_extensions().ctx("read PAX records of", path)? else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext.ctx("read PAX records of", path)?;
            let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            let key = String::from_utf8_lossy(key);
            if key.starts_with("trusted.overlay.") {
                return Err(refuse(
                    name,
                    format!("xattr {key} would change overlayfs semantics"),
                ));
            }
            xattr::set_fd(fd, &key, ext.value_bytes(), path)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<ApplyStats> {
        self.leave_dirs(&[])?;
        Ok(self.stats)
    }
}

/// Names in a directory (without `.` and `..`).
fn list_dir(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<OsString>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .sys("open directory", path)?;
    let mut d = nix::dir::Dir::from_fd(fd).sys("opendir", path)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.sys("readdir", path)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsString::from_vec(n.to_vec()));
        }
    }
    Ok(out)
}

/// Removes `name` in `dir` (a whole tree if it is a directory) without following symlinks;
/// a missing name is not an error.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<()> {
    let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => {
            return Err(Error::Sys {
                syscall: "fstatat",
                path: path.to_path_buf(),
                errno: e,
            })
        }
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        let sub = openat(
            dir,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .sys("open directory", path)?;
        for child in list_dir(sub.as_fd(), path)? {
            remove_at(sub.as_fd(), &child, &path.join(&child))?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir).sys("rmdir", path)
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).sys("unlink", path)
    }
}
