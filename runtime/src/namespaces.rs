//! Namespaces: which ones clone creates, which ones are joined by path (and by whom), and the
//! user-namespace id maps the parent writes.
//!
//! Joining by path is split so that a new user namespace can coexist with joined ones: the
//! parent joins net/ipc/uts/pid/cgroup paths just around the clone (the child inherits them, and
//! the parent switches back), the child joins user and mount paths itself.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType};

use crate::error::{Ctx, Error, Result};
use crate::sys;

/// A namespace to join: its open fd, clone flag and path (for messages).
pub struct Join {
    /// The open namespace file.
    pub fd: OwnedFd,
    /// Its CLONE_NEW* flag.
    pub flag: libc::c_int,
    /// Where it came from.
    pub path: PathBuf,
}

/// How the container's namespaces come to be.
#[derive(Default)]
pub struct Plan {
    /// Flags for clone (new namespaces, without the cgroup namespace).
    pub clone_flags: libc::c_int,
    /// Whether the child unshares a new cgroup namespace once in its cgroup.
    pub new_cgroupns: bool,
    /// Whether a new user namespace is created (the parent then writes the id maps).
    pub new_userns: bool,
    /// Whether the container has a mount namespace (new or joined).
    pub has_mntns: bool,
    /// Whether the container has a uts namespace of its own.
    pub has_utsns: bool,
    /// Namespaces the parent joins around the clone.
    pub parent_join: Vec<Join>,
    /// Namespaces the child joins (user first, then mount).
    pub child_join: Vec<Join>,
}

/// The CLONE_NEW* flag and `/proc/<pid>/ns` name of a namespace type.
pub fn flag_and_name(t: LinuxNamespaceType) -> Option<(libc::c_int, &'static str)> {
    Some(match t {
        LinuxNamespaceType::Mount => (libc::CLONE_NEWNS, "mnt"),
        LinuxNamespaceType::Cgroup => (libc::CLONE_NEWCGROUP, "cgroup"),
        LinuxNamespaceType::Uts => (libc::CLONE_NEWUTS, "uts"),
        LinuxNamespaceType::Ipc => (libc::CLONE_NEWIPC, "ipc"),
        LinuxNamespaceType::User => (libc::CLONE_NEWUSER, "user"),
        LinuxNamespaceType::Pid => (libc::CLONE_NEWPID, "pid"),
        LinuxNamespaceType::Network => (libc::CLONE_NEWNET, "net"),
        LinuxNamespaceType::Time => return None,
    })
}

/// Opens a namespace file.
fn open_ns(path: &Path) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .at("opening namespace", path)
}

impl Plan {
    /// Builds the plan from the config's namespace list (opening every path now).
    pub fn new(linux: Option<&Linux>) -> Result<Plan> {
        let mut plan = Plan::default();
        let list = linux.and_then(|l| l.namespaces().as_deref()).unwrap_or(&[]);
        let mut seen = 0;
        for ns in list {
            let (flag, _) = flag_and_name(ns.typ()).ok_or_else(|| {
                Error::Config(format!("namespace type {:?} is not supported", ns.typ()))
            })?;
            if seen & flag != 0 {
                return Err(Error::Config(format!(
                    "namespace {:?} is listed twice",
                    ns.typ()
                )));
            }
            seen |= flag;
            if flag == libc::CLONE_NEWNS {
                plan.has_mntns = true;
            }
            if flag == libc::CLONE_NEWUTS {
                plan.has_utsns = true;
            }
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => {
                    let j = Join {
                        fd: open_ns(p)?,
                        flag,
                        path: p.clone(),
                    };
                    if flag == libc::CLONE_NEWUSER || flag == libc::CLONE_NEWNS {
                        plan.child_join.push(j);
                    } else {
                        plan.parent_join.push(j);
                    }
                }
                _ if flag == libc::CLONE_NEWCGROUP => plan.new_cgroupns = true,
                _ => {
                    if flag == libc::CLONE_NEWUSER {
                        plan.new_userns = true;
                    }
                    plan.clone_flags |= flag;
                }
            }
        }
        // user before mount.
        plan.child_join
            .sort_by_key(|j| i32::from(j.flag != libc::CLONE_NEWUSER));
        Ok(plan)
    }
}

/// Namespaces the parent has joined temporarily; `restore` switches back (and so does drop,
/// so that an error between the join and the clone does not leave the caller inside).
pub struct Joined(Vec<(OwnedFd, libc::c_int, &'static str)>);

/// Joins the parent-side namespaces, remembering the current ones.
pub fn parent_enter(joins: &[Join]) -> Result<Joined> {
    let mut joined = Joined(Vec::new());
    for j in joins {
        let name = match j.flag {
            libc::CLONE_NEWNET => "net",
            libc::CLONE_NEWIPC => "ipc",
            libc::CLONE_NEWUTS => "uts",
            libc::CLONE_NEWPID => "pid_for_children",
            _ => "cgroup",
        };
        let own = PathBuf::from(format!("/proc/self/ns/{name}"));
        let fd = open_ns(&own)?;
        sys::setns(&j.fd, j.flag).at("joining namespace", &j.path)?;
        // Pushed only once joined: drop switches back exactly what was entered.
        joined.0.push((fd, j.flag, name));
    }
    Ok(joined)
}

impl Joined {
    /// Returns the parent to its own namespaces.
    pub fn restore(mut self) -> Result<()> {
        for (fd, flag, name) in std::mem::take(&mut self.0).into_iter().rev() {
            sys::setns(&fd, flag).at("returning to namespace", format!("/proc/self/ns/{name}"))?;
        }
        Ok(())
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        for (fd, flag, _) in std::mem::take(&mut self.0).into_iter().rev() {
            let _ = sys::setns(&fd, flag);
        }
    }
}

/// Joins the child-side namespaces (user first, then mount).
pub fn child_enter(joins: &[Join]) -> Result<()> {
    for j in joins {
        sys::setns(&j.fd, j.flag).at("joining namespace", &j.path)?;
    }
    Ok(())
}

fn map_text(m: &[LinuxIdMapping]) -> String {
    m.iter()
        .map(|e| format!("{} {} {}\n", e.container_id(), e.host_id(), e.size()))
        .collect()
}

/// Writes the uid/gid maps of the child's new user namespace.
pub fn write_id_maps(pid: libc::pid_t, linux: Option<&Linux>) -> Result<()> {
    let uid = linux
        .and_then(|l| l.uid_mappings().as_deref())
        .unwrap_or(&[]);
    let gid = linux
        .and_then(|l| l.gid_mappings().as_deref())
        .unwrap_or(&[]);
    if uid.is_empty() || gid.is_empty() {
        return Err(Error::Config(
            "a new user namespace needs linux.uidMappings and linux.gidMappings".into(),
        ));
    }
    let up = PathBuf::from(format!("/proc/{pid}/uid_map"));
    std::fs::write(&up, map_text(uid)).at("writing uid map", &up)?;
    let gp = PathBuf::from(format!("/proc/{pid}/gid_map"));
    std::fs::write(&gp, map_text(gid)).at("writing gid map", &gp)
}
