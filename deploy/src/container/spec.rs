//! The OCI config of a service's container: its command behind a tiny signal-forwarding
//! shell, read-only root, /tmp as tmpfs, volumes, hosts file and log bound in, and the
//! service's network namespace joined by path; kiln's hardened defaults (seccomp profile,
//! service capabilities, no_new_privs, masked paths) and, unless the service opted out, a user
//! namespace mapping its ids to the environment's host range.
//!
//! A service in a user namespace gets no /sys: sysfs can only be mounted by the user namespace
//! owning the network namespace (the host's, where kiln made it), and a bind of the host's
//! /sys would show the host's devices and interfaces; no service needs it.

use std::path::{Path, PathBuf};

use kiln_util::oci;
use oci_spec::runtime::{
    LinuxIdMappingBuilder, LinuxNamespaceType, Mount, RootBuilder, Spec, UserBuilder,
};

use crate::env_state::IdRange;
use crate::error::DeployError;

/// Where the container's log file appears inside it.
pub const LOG_IN_CONTAINER: &str = "/dev/kiln.log";

/// What a service container is made of.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The service (for errors).
    pub service: String,
    /// The command, argv.
    pub args: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// uid and gid of the process.
    pub user: (u32, u32),
    /// The mounted root filesystem.
    pub rootfs: PathBuf,
    /// The network namespace to join.
    pub netns: PathBuf,
    /// The host's hosts file for the container.
    pub hosts: PathBuf,
    /// The host's log file for the container's output.
    pub log: PathBuf,
    /// Writable volumes: (host dir, path in the container).
    pub volumes: Vec<(PathBuf, String)>,
    /// The cgroup path.
    pub cgroup: String,
    /// The hostname.
    pub hostname: String,
    /// The user namespace's mapping; None: no user namespace (host root).
    pub id_map: Option<IdRange>,
}

/// The wrapper shell: output to the log, the command as its child, SIGTERM forwarded (a pid 1
/// ignores signals it has no handler for), the command's status as its own.
const WRAPPER: &str = "exec >>/dev/kiln.log 2>&1 </dev/null
\"$@\" &
child=$!
trap 'kill -TERM $child 2>/dev/null' TERM INT
wait $child
status=$?
wait $child 2>/dev/null
exit $status";

/// Wraps `args` in the logging, signal-forwarding shell.
pub fn wrapped(args: &[String]) -> Vec<String> {
    let mut out = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        WRAPPER.to_string(),
        "kiln-init".to_string(),
    ];
    out.extend(args.iter().cloned());
    out
}

/// The mount points (paths in the container) the spec needs beyond the image's own dirs.
pub fn mount_points(c: &ContainerSpec) -> Vec<String> {
    c.volumes.iter().map(|(_, dest)| dest.clone()).collect()
}

/// Builds the OCI config.
pub fn build(c: &ContainerSpec) -> Result<Spec, DeployError> {
    let invalid = |e: oci_spec::OciSpecError| DeployError::Config {
        service: c.service.clone(),
        message: e.to_string(),
    };
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(wrapped(&c.args)));
    process.set_env(Some(c.env.clone()));
    process.set_cwd(PathBuf::from(&c.cwd));
    process.set_terminal(Some(false));
    process.set_user(
        UserBuilder::default()
            .uid(c.user.0)
            .gid(c.user.1)
            .build()
            .map_err(invalid)?,
    );
    spec.set_process(Some(process));
    spec.set_hostname(Some(c.hostname.clone()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(&c.rootfs)
            .readonly(true)
            .build()
            .map_err(invalid)?,
    ));
    let mut mounts: Vec<Mount> = oci::standard_mounts()
        .into_iter()
        .filter(|m| c.id_map.is_none() || m.typ().as_deref() != Some("sysfs"))
        .collect();
    mounts.push(oci::tmpfs("/tmp", "1777"));
    mounts.push(oci::bind(&c.hosts, "/etc/hosts", true));
    mounts.push(oci::bind(&c.log, LOG_IN_CONTAINER, false));
    for (src, dest) in &c.volumes {
        mounts.push(oci::bind(src, dest, false));
    }
    spec.set_mounts(Some(mounts));
    let mut namespaces = oci::new_namespaces(&[
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]);
    namespaces.push(oci::join_namespace(LinuxNamespaceType::Network, &c.netns));
    let mut linux = spec.linux().clone().unwrap_or_default();
    if let Some(ids) = c.id_map {
        namespaces.extend(oci::new_namespaces(&[LinuxNamespaceType::User]));
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(ids.host)
            .size(ids.size)
            .build()
            .map_err(invalid)?;
        linux.set_uid_mappings(Some(vec![map]));
        linux.set_gid_mappings(Some(vec![map]));
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(None);
    linux.set_cgroups_path(Some(PathBuf::from(&c.cgroup)));
    spec.set_linux(Some(linux));
    kiln_runtime::hardening::harden(&mut spec).map_err(invalid)?;
    Ok(spec)
}

/// uid and gid of `user` (`name`, `uid`, `uid:gid` or `name:group`) from the root's
/// /etc/passwd and /etc/group; root when empty.
pub fn resolve_user(rootfs: &Path, service: &str, user: &str) -> Result<(u32, u32), DeployError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| {
                let id = f.get(2).and_then(|s| s.parse().ok())?;
                let gid = f.get(3).and_then(|s| s.parse().ok()).unwrap_or(id);
                Some((id, gid))
            })?
        })
    };
    let missing = |what: &str, name: &str| DeployError::Config {
        service: service.to_string(),
        message: format!("image user {what} {name:?} is not in the image"),
    };
    let (uid, mut gid) = match u.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => lookup("etc/passwd", u).ok_or_else(|| missing("user", u))?,
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup("etc/group", g).ok_or_else(|| missing("group", g))?.0,
        };
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id_map: Option<IdRange>) -> ContainerSpec {
        ContainerSpec {
            service: "web".into(),
            args: vec!["true".into()],
            env: Vec::new(),
            cwd: "/".into(),
            user: (0, 0),
            rootfs: "/r".into(),
            netns: "/run/n".into(),
            hosts: "/h".into(),
            log: "/l".into(),
            volumes: Vec::new(),
            cgroup: "kiln/x".into(),
            hostname: "web".into(),
            id_map,
        }
    }

    #[test]
    fn mapped_services_get_a_user_namespace_hardening_and_no_sys() {
        let ids = IdRange {
            host: 1_000_000,
            size: 65536,
        };
        let spec = build(&container(Some(ids))).expect("spec");
        let linux = spec.linux().as_ref().expect("linux");
        let types: Vec<_> = linux
            .namespaces()
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(types.contains(&LinuxNamespaceType::User), "{types:?}");
        let uid = &linux.uid_mappings().as_deref().expect("uid map")[0];
        assert_eq!(
            (uid.container_id(), uid.host_id(), uid.size()),
            (0, 1_000_000, 65536)
        );
        assert!(linux.seccomp().is_some());
        let has_sys = |s: &Spec| {
            s.mounts()
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .any(|m| m.destination() == Path::new("/sys"))
        };
        assert!(!has_sys(&spec));
        let proc = spec.process().as_ref().expect("process");
        assert_eq!(proc.no_new_privileges(), Some(true));
        // Opted out: no user namespace, a read-only sysfs, the same hardening.
        let host = build(&container(None)).expect("spec");
        let linux = host.linux().as_ref().expect("linux");
        assert!(linux.uid_mappings().is_none());
        assert!(linux.seccomp().is_some());
        assert!(has_sys(&host));
    }

    #[test]
    fn users_resolve_by_name_number_and_group() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(t.path().join("etc")).expect("etc");
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nredis:x:999:998::/var/lib/redis:/bin/false\n",
        )
        .expect("passwd");
        std::fs::write(t.path().join("etc/group"), "staff:x:50:\n").expect("group");
        assert_eq!(resolve_user(t.path(), "s", "").expect("root"), (0, 0));
        assert_eq!(
            resolve_user(t.path(), "s", "redis").expect("redis"),
            (999, 998)
        );
        assert_eq!(resolve_user(t.path(), "s", "7:staff").expect("7"), (7, 50));
        let err = resolve_user(t.path(), "cache", "nobody")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("cache") && err.contains("nobody"), "{err}");
    }
}
