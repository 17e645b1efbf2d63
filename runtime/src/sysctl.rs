//! `linux.sysctl`: validated in the parent before the clone (as runc's validator does) and
//! written by the init through fds opened beneath `/proc/sys`.
//!
//! Only namespaced sysctls are accepted, and only when the container has that namespace of its
//! own: ipc (`kernel.msg*`, `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`), net (`net.*`) and uts
//! (`kernel.hostname`, `kernel.domainname`). Anything else would change the host's kernel.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Ctx, Error, Result};
use crate::sys;

/// ipc-namespaced sysctls (exact names); `fs.mqueue.*` is ipc-namespaced too.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The parts of a sysctl key: `a.b.c`, or `a/b/c` (then dots stay inside a part, as in
/// `net/ipv4/conf/eth0.100/forwarding`). Refuses what could name a path outside `/proc/sys`.
fn key_parts(key: &str) -> Result<Vec<&str>> {
    let bad = |why: &str| Err(Error::Config(format!("sysctl {key:?}: {why}")));
    if key.is_empty() {
        return bad("the key is empty");
    }
    if key.starts_with('/') {
        return bad(
            "the key is an absolute path; write it as dotted name like net.ipv4.ip_forward",
        );
    }
    if key.contains("..") {
        return bad("the key contains '..'");
    }
    if key.contains('\0') {
        return bad("the key contains a NUL byte");
    }
    let parts: Vec<&str> = if key.contains('/') {
        key.split('/').collect()
    } else {
        key.split('.').collect()
    };
    if parts.iter().any(|p| p.is_empty() || *p == ".") {
        return bad("the key has an empty component");
    }
    Ok(parts)
}

/// Which namespace a sysctl (dotted name) belongs to, if any.
fn namespace_of(name: &str) -> Option<LinuxNamespaceType> {
    if IPC_SYSCTLS.contains(&name) || name.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if name.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if name == "kernel.hostname" || name == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

/// The `/proc/self/ns` name of a namespace type.
fn ns_file(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Network => "net",
        _ => "uts",
    }
}

/// Why the container does not have a namespace of type `t` of its own, if it does not: not
/// listed, or listed with a path to the runtime's (the host's) own namespace.
fn missing_namespace(spec: &Spec, t: LinuxNamespaceType) -> Option<String> {
    let name = ns_file(t);
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or(&[]);
    let Some(ns) = list.iter().find(|n| n.typ() == t) else {
        return Some(format!("the container has no {name} namespace of its own"));
    };
    let path = ns.path().as_ref().filter(|p| !p.as_os_str().is_empty())?;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let host = id(&Path::new("/proc/self/ns").join(name));
    if host.is_some() && id(path) == host {
        return Some(format!(
            "the container joins the host's {name} namespace ({})",
            path.display()
        ));
    }
    None
}

/// Checks every `linux.sysctl` key of `spec`; the error names the first key refused.
pub fn validate(spec: &Spec) -> Result<()> {
    let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    let mut keys: Vec<&String> = sysctl.keys().collect();
    keys.sort();
    for key in keys {
        let name = key_parts(key)?.join(".");
        let Some(t) = namespace_of(&name) else {
            return Err(Error::Config(format!(
                "sysctl {key:?} is not namespaced: setting it would change the host's kernel"
            )));
        };
        if let Some(why) = missing_namespace(spec, t) {
            return Err(Error::Config(format!("sysctl {key:?} is refused: {why}")));
        }
        let value = &sysctl[key];
        let conflict = match name.as_str() {
            "kernel.hostname" => spec.hostname().as_deref(),
            "kernel.domainname" => spec.domainname().as_deref(),
            _ => None,
        }
        .filter(|h| !h.is_empty() && h != value);
        if let Some(h) = conflict {
            return Err(Error::Config(format!(
                "sysctl {key:?}={value:?} conflicts with the config's name {h:?}"
            )));
        }
    }
    Ok(())
}

/// Writes each sysctl (already validated) in the init's namespaces, through an fd opened with
/// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) relative to `/proc/sys`.
pub fn apply(sysctl: &HashMap<String, String>) -> Result<()> {
    if sysctl.is_empty() {
        return Ok(());
    }
    let base = Path::new("/proc/sys");
    let dir = sys::open(base, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)
        .at("opening", base)?;
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    for (k, v) in sysctl {
        let rel: PathBuf = key_parts(k)?.iter().collect();
        let shown = base.join(&rel);
        let fd = openat2(&dir, &rel, how)
            .map_err(std::io::Error::from)
            .at(format!("opening sysctl {k} at"), &shown)?;
        std::fs::File::from(fd)
            .write_all(v.as_bytes())
            .at(format!("setting sysctl {k}={v} via"), &shown)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_syntax() {
        assert_eq!(
            key_parts("net.ipv4.ip_forward").unwrap(),
            ["net", "ipv4", "ip_forward"]
        );
        assert_eq!(
            key_parts("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            ["net", "ipv4", "conf", "eth0.100", "forwarding"]
        );
        for bad in [
            "",
            "/proc/sys/kernel/core_pattern",
            "net/../kernel",
            "net..ipv4",
            "net.",
            "a//b",
        ] {
            assert!(key_parts(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn namespaces() {
        assert_eq!(namespace_of("kernel.shmmax"), Some(LinuxNamespaceType::Ipc));
        assert_eq!(
            namespace_of("fs.mqueue.msg_max"),
            Some(LinuxNamespaceType::Ipc)
        );
        assert_eq!(
            namespace_of("net.core.somaxconn"),
            Some(LinuxNamespaceType::Network)
        );
        assert_eq!(
            namespace_of("kernel.hostname"),
            Some(LinuxNamespaceType::Uts)
        );
        assert_eq!(namespace_of("kernel.core_pattern"), None);
        assert_eq!(namespace_of("kernel.shm_next_id"), None);
        assert_eq!(namespace_of("vm.overcommit_memory"), None);
    }
}
