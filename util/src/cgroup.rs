//! The one naming scheme for the cgroups of kiln's containers.
//!
//! A container with id `<id>` lives in the cgroup `kiln/<id>` below each hierarchy's root:
//! `/sys/fs/cgroup/<controller>/kiln/<id>` on cgroup v1 (e.g. the freezer at
//! `/sys/fs/cgroup/freezer/kiln/<id>`). The runtime uses this path when a config names no
//! `cgroupsPath`; deploy writes it into the configs it makes. Container ids are unique per
//! runtime root, and kiln's ids carry their owner (`<env>.<service>.<time>` for deploys), so
//! one parent directory serves them all and `kiln/` holds everything kiln made.
//!
//! Before this scheme deploy used `kiln-<id>` and builds `kiln-build/<id>`: containers
//! created then keep their cgroup (the path is recorded in each container's config), so
//! nothing running has to move.

use std::path::{Path, PathBuf};

/// The directory below each hierarchy's root that holds kiln's container cgroups.
pub const PARENT: &str = "kiln";

/// Where cgroup v1 hierarchies are mounted.
pub const V1_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup path (relative to a hierarchy's root) of container `id`: `kiln/<id>`.
pub fn container_path(id: &str) -> PathBuf {
    Path::new(PARENT).join(id)
}

/// The directory of cgroup `path` (relative, or absolute as OCI configs may write it) in the
/// cgroup v1 hierarchy of `controller`.
pub fn v1_dir(controller: &str, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    Path::new(V1_ROOT).join(controller).join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_lives_under_kiln_in_every_hierarchy() {
        assert_eq!(container_path("main.web.1"), Path::new("kiln/main.web.1"));
        let p = container_path("main.web.1");
        assert_eq!(
            v1_dir("freezer", &p),
            Path::new("/sys/fs/cgroup/freezer/kiln/main.web.1")
        );
        assert_eq!(
            v1_dir("freezer", Path::new("/kiln-x")),
            Path::new("/sys/fs/cgroup/freezer/kiln-x")
        );
    }
}
