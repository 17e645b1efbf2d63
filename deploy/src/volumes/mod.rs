//! Volumes: an environment's persistent mounts, one directory each under
//! `$KILN_STORE/volumes/<env>/<volume>/`, and cloning them from a parent environment.
//!
//! A clone copies each of the parent's volumes into the store's scratch directory and renames
//! it into place (so a crash leaves no half volume), with the parent frozen by a [`Freezer`]
//! for the copy so it is consistent. Files are reflinked (FICLONE) where the filesystem
//! shares extents and copied otherwise; either way, later writes on one side do not show on
//! the other.

mod copy;
mod freeze;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use copy::{copy_tree, CopyStats};
pub use freeze::{CgroupFreezer, Freezer, NoFreezer};

use super::error::DeployError;
use super::layout;

/// The volume name of a service's mount: `<service>.<path with '/' as %2F>` (reversible, so
/// two mounts never share a volume).
pub fn mount_volume_name(service: &str, mount_path: &str) -> String {
    let path = mount_path
        .trim_start_matches('/')
        .replace('%', "%25")
        .replace('/', "%2F");
    format!("{service}.{path}")
}

/// The directory of volume `name` of `env`, created (mode 0755) if missing.
pub fn ensure(store: &Path, env: &str, name: &str) -> Result<PathBuf, DeployError> {
    layout::validate_env(env)?;
    layout::validate_volume(name)?;
    let dir = layout::volume_dir(store, env, name);
    std::fs::create_dir_all(&dir).map_err(|e| DeployError::io("creating volume", &dir, e))?;
    Ok(dir)
}

/// The volumes `env` has, by name.
pub fn list(store: &Path, env: &str) -> Result<Vec<String>, DeployError> {
    layout::validate_env(env)?;
    let dir = layout::volumes_dir(store, env);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DeployError::io("listing", &dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DeployError::io("listing", &dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Removes every volume of `env`; true when there was something to remove.
pub fn remove_all(store: &Path, env: &str) -> Result<bool, DeployError> {
    layout::validate_env(env)?;
    let dir = layout::volumes_dir(store, env);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DeployError::io("removing volumes", &dir, e)),
    }
}

/// What a clone did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CloneReport {
    /// Volumes copied from the parent.
    pub cloned: Vec<String>,
    /// Volumes the parent did not have, created empty.
    pub created: Vec<String>,
    /// Totals over the copied trees.
    pub stats: CopyStats,
}

/// Gives `env` the volumes `names`, each a copy of the parent's volume of that name (empty
/// when the parent has none), with the parent frozen by `freezer` while copying. None of
/// them may exist yet; on error nothing of this clone is left behind.
pub fn clone_from(
    store: &Path,
    parent: &str,
    env: &str,
    names: &[String],
    freezer: &mut dyn Freezer,
) -> Result<CloneReport, DeployError> {
    layout::validate_env(parent)?;
    layout::validate_env(env)?;
    for name in names {
        layout::validate_volume(name)?;
        let dst = layout::volume_dir(store, env, name);
        if dst.exists() {
            return Err(DeployError::VolumeExists { path: dst });
        }
    }
    let tmp = layout::store_tmp(store).join(format!("clone-{env}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| DeployError::io("creating", &tmp, e))?;
    let result = stage(store, parent, names, &tmp, freezer).and_then(|report| {
        commit(store, env, names, &tmp)?;
        Ok(report)
    });
    // Best effort: the staging dir is empty after a commit, and scratch after a failure.
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Copies (or creates) every volume into `tmp`, the parent frozen for the copies.
fn stage(
    store: &Path,
    parent: &str,
    names: &[String],
    tmp: &Path,
    freezer: &mut dyn Freezer,
) -> Result<CloneReport, DeployError> {
    let freeze_err = |action, source| DeployError::Freeze {
        action,
        env: parent.to_string(),
        source: Box::new(source),
    };
    freezer.freeze().map_err(|e| freeze_err("freeze", e))?;
    let mut report = CloneReport::default();
    let copied = names
        .iter()
        .try_for_each(|name| -> Result<(), DeployError> {
            let src = layout::volume_dir(store, parent, name);
            let dst = tmp.join(name);
            if src.is_dir() {
                let stats = copy_tree(&src, &dst)?;
                add(&mut report.stats, &stats);
                report.cloned.push(name.clone());
            } else {
                std::fs::create_dir(&dst).map_err(|e| DeployError::io("creating", &dst, e))?;
                report.created.push(name.clone());
            }
            Ok(())
        });
    let thawed = freezer.thaw().map_err(|m| freeze_err("thaw", m));
    copied?;
    thawed?;
    Ok(report)
}

/// Renames the staged volumes into place; on error removes those already moved.
fn commit(store: &Path, env: &str, names: &[String], tmp: &Path) -> Result<(), DeployError> {
    let dir = layout::volumes_dir(store, env);
    std::fs::create_dir_all(&dir).map_err(|e| DeployError::io("creating", &dir, e))?;
    for (i, name) in names.iter().enumerate() {
        let dst = layout::volume_dir(store, env, name);
        if let Err(e) = std::fs::rename(tmp.join(name), &dst) {
            for done in &names[..i] {
                // Best effort: the rename error is the one to report.
                let _ = std::fs::remove_dir_all(layout::volume_dir(store, env, done));
            }
            return Err(DeployError::io("renaming volume into", &dst, e));
        }
    }
    Ok(())
}

/// Adds `b`'s counts to `a`.
fn add(a: &mut CopyStats, b: &CopyStats) {
    a.files += b.files;
    a.bytes += b.bytes;
    a.reflinked += b.reflinked;
    a.copied += b.copied;
    a.dirs += b.dirs;
    a.symlinks += b.symlinks;
    a.hardlinks += b.hardlinks;
    a.special += b.special;
    a.skipped_sockets += b.skipped_sockets;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FreezeError;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    #[test]
    fn mount_names_are_distinct_valid_volume_names() {
        let a = mount_volume_name("web", "/app/data");
        let b = mount_volume_name("web", "/app%2Fdata");
        assert_eq!(a, "web.app%2Fdata");
        assert_ne!(a, b);
        layout::validate_volume(&a).expect("valid");
    }

    #[test]
    fn a_clone_is_faithful_and_independent_of_its_parent() {
        let store = tempfile::tempdir().expect("tempdir");
        let store = store.path();
        let src = ensure(store, "main", "web.data").expect("volume");
        std::fs::create_dir(src.join("sub")).expect("mkdir");
        std::fs::write(src.join("sub/a.txt"), "v1").expect("write");
        std::fs::set_permissions(src.join("sub/a.txt"), PermissionsExt::from_mode(0o640))
            .expect("chmod");
        std::os::unix::fs::chown(src.join("sub/a.txt"), Some(1234), Some(5678)).expect("chown");
        std::os::unix::fs::symlink("sub/a.txt", src.join("link")).expect("symlink");
        std::fs::hard_link(src.join("sub/a.txt"), src.join("hard")).expect("hardlink");
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        let names = vec!["web.data".to_string(), "web.new".to_string()];
        let report = clone_from(store, "main", "pr-1", &names, &mut NoFreezer).expect("clone");
        assert_eq!(report.cloned, ["web.data"]);
        assert_eq!(report.created, ["web.new"]);
        assert_eq!((report.stats.files, report.stats.hardlinks), (1, 1));
        let dst = layout::volume_dir(store, "pr-1", "web.data");
        let meta = std::fs::metadata(dst.join("sub/a.txt")).expect("stat");
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o640, 1234, 5678)
        );
        assert_eq!(
            std::fs::read_link(dst.join("link")).expect("link"),
            Path::new("sub/a.txt")
        );
        assert_eq!(
            std::fs::metadata(dst.join("hard")).expect("stat").ino(),
            meta.ino(),
            "hard links stay one file"
        );
        assert!(std::fs::symlink_metadata(dst.join("fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo());
        std::fs::write(src.join("sub/a.txt"), "parent v2").expect("write parent");
        std::fs::write(dst.join("child.txt"), "child").expect("write child");
        assert_eq!(
            std::fs::read_to_string(dst.join("sub/a.txt")).expect("read"),
            "v1"
        );
        assert!(!src.join("child.txt").exists());
        assert!(layout::volume_dir(store, "pr-1", "web.new").is_dir());
        let err = clone_from(store, "main", "pr-1", &names, &mut NoFreezer).expect_err("exists");
        assert!(matches!(err, DeployError::VolumeExists { .. }), "{err}");
        assert_eq!(list(store, "pr-1").expect("list"), names);
        assert!(remove_all(store, "pr-1").expect("remove"));
        assert!(list(store, "pr-1").expect("list").is_empty());
    }

    /// A freezer that fails, to check a failed clone leaves nothing.
    struct Refuses;

    impl Freezer for Refuses {
        fn freeze(&mut self) -> Result<(), FreezeError> {
            Err(FreezeError::Timeout {
                cgroup: "kiln/gone".into(),
                state: "frozen",
                waited: std::time::Duration::ZERO,
            })
        }
        fn thaw(&mut self) -> Result<(), FreezeError> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_freeze_leaves_no_volume_and_names_the_parent() {
        let store = tempfile::tempdir().expect("tempdir");
        ensure(store.path(), "main", "v").expect("volume");
        let err = clone_from(store.path(), "main", "b", &["v".into()], &mut Refuses)
            .expect_err("refused");
        let err = kiln_util::error::chain(&err);
        assert!(
            err.contains("freeze") && err.contains("main") && err.contains("kiln/gone"),
            "{err}"
        );
        assert!(list(store.path(), "b").expect("list").is_empty());
        assert!(std::fs::read_dir(layout::store_tmp(store.path()))
            .expect("tmp")
            .next()
            .is_none());
    }
}
