//! The pieces of an OCI runtime config that both a build step's and a service's container are
//! made of: the standard mounts, bind and tmpfs mounts, the namespaces to create or join.

use std::path::Path;

use oci_spec::runtime::{get_default_mounts, LinuxNamespace, LinuxNamespaceType, Mount};

/// The standard mounts of `runc spec` (proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys)
/// without the cgroup filesystem: kiln's containers do not see their cgroup.
pub fn standard_mounts() -> Vec<Mount> {
    get_default_mounts()
        .into_iter()
        .filter(|m| m.typ().as_deref() != Some("cgroup"))
        .collect()
}

/// A recursive bind mount of the host's `source` at `dest`, read-only or read-write.
pub fn bind(source: &Path, dest: &str, read_only: bool) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some("bind".to_string()));
    m.set_source(Some(source.to_path_buf()));
    let access = if read_only { "ro" } else { "rw" };
    m.set_options(Some(vec!["rbind".to_string(), access.to_string()]));
    m
}

/// A tmpfs at `dest` with permission bits `mode` (octal text, e.g. `1777`), nosuid and nodev.
pub fn tmpfs(dest: &str, mode: &str) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some("tmpfs".to_string()));
    m.set_source(Some("tmpfs".into()));
    m.set_options(Some(vec![
        "nosuid".to_string(),
        "nodev".to_string(),
        format!("mode={mode}"),
    ]));
    m
}

/// A new namespace of each of `types`.
pub fn new_namespaces(types: &[LinuxNamespaceType]) -> Vec<LinuxNamespace> {
    types
        .iter()
        .map(|&typ| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(typ);
            ns
        })
        .collect()
}

/// The existing namespace of type `typ` bound at `path`, to join.
pub fn join_namespace(typ: LinuxNamespaceType, path: &Path) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(Some(path.to_path_buf()));
    ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_and_tmpfs_carry_their_options_and_no_cgroup_fs_is_standard() {
        let ro = bind(Path::new("/h"), "/etc/hosts", true);
        assert_eq!(ro.destination(), Path::new("/etc/hosts"));
        assert_eq!(ro.source().as_deref(), Some(Path::new("/h")));
        assert_eq!(
            ro.options().as_deref(),
            Some(&["rbind".to_string(), "ro".to_string()][..])
        );
        let rw = bind(Path::new("/v"), "/data", false);
        assert!(rw
            .options()
            .as_ref()
            .is_some_and(|o| o.contains(&"rw".into())));
        let tmp = tmpfs("/tmp", "1777");
        assert_eq!(tmp.typ().as_deref(), Some("tmpfs"));
        assert!(tmp
            .options()
            .as_ref()
            .is_some_and(|o| o.contains(&"mode=1777".into()) && o.contains(&"nodev".into())));
        let std = standard_mounts();
        assert!(std.iter().any(|m| m.destination() == Path::new("/proc")));
        assert!(!std.iter().any(|m| m.typ().as_deref() == Some("cgroup")));
        let ns = new_namespaces(&[LinuxNamespaceType::Pid, LinuxNamespaceType::Mount]);
        assert_eq!(ns.len(), 2);
        assert!(ns.iter().all(|n| n.path().is_none()));
        let net = join_namespace(LinuxNamespaceType::Network, Path::new("/run/n"));
        assert_eq!(net.path().as_deref(), Some(Path::new("/run/n")));
    }
}
