//! Make the kernel match a plan: create what is missing, keep what matches, remove the rest.
//!
//! Namespaces are created (and links to the services before them made) in service order; if
//! anything fails, everything this apply created is removed again and the environment is
//! left as it was. Links and namespaces the plan no longer holds are removed last.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::NetError;
use crate::live::{self, LiveLink};
use crate::mounts;
use crate::namespace::{self, on_worker, Netns};
use crate::netlink::{KILN_GROUP, LOOPBACK_INDEX};
use crate::plan::{End, Link, Plan};
use crate::state::{self, Record};

/// What an apply changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Namespaces created.
    pub created_services: Vec<String>,
    /// Namespaces removed (no longer in the plan).
    pub removed_services: Vec<String>,
    /// Links created, as `a<->b`.
    pub created_links: Vec<String>,
    /// Links left untouched, as `a<->b`.
    pub kept_links: Vec<String>,
    /// Interfaces deleted, as `service:ifname`.
    pub removed_links: Vec<String>,
}

/// What to remove if the apply fails.
#[derive(Default)]
struct Undo {
    /// Namespace files created, in order.
    netns: Vec<PathBuf>,
    /// Veths created, as (service, interface name in it).
    links: Vec<(String, String)>,
}

/// One apply in progress, on its worker thread.
struct Work<'a> {
    env: &'a str,
    root: &'a Path,
    plan: &'a Plan,
    present: &'a BTreeSet<String>,
    handles: BTreeMap<String, Netns>,
    live: BTreeMap<String, Vec<LiveLink>>,
    undo: Undo,
    applied: Applied,
}

/// Applies `plan` to environment `env`: one namespace per service at
/// `<runtime_root>/netns/<env>/<service>`, one veth pair per link; only what changed is touched.
pub fn apply(env: &str, plan: &Plan, runtime_root: &Path) -> Result<Applied, NetError> {
    state::validate_env(env)?;
    let _lock = state::lock(runtime_root, env)?;
    let dir = state::env_dir(runtime_root, env);
    std::fs::create_dir_all(&dir).map_err(|e| NetError::io("creating", &dir, e))?;
    let had_record = state::load(runtime_root, env)?.is_some();
    let present = mounts::mounted_in(&dir)?;
    on_worker(|| {
        let mut work = Work {
            env,
            root: runtime_root,
            plan,
            present: &present,
            handles: BTreeMap::new(),
            live: BTreeMap::new(),
            undo: Undo::default(),
            applied: Applied::default(),
        };
        if let Err(e) = work.add() {
            let undone = work.undo(e);
            if !had_record {
                // Only empties go: a fresh env that failed leaves no dir behind.
                let _ = std::fs::remove_dir(&dir);
                state::remove_lock(runtime_root, env);
            }
            return Err(undone);
        }
        work.prune()?;
        state::save(
            runtime_root,
            &Record {
                env: env.to_string(),
                plan: plan.clone(),
            },
        )?;
        Ok(work.applied)
    })
}

impl Work<'_> {
    /// Creates missing namespaces and links, service by service.
    fn add(&mut self) -> Result<(), NetError> {
        for service in &self.plan.services {
            let path = state::netns_path(self.root, self.env, service);
            let ns = if self.present.contains(service) {
                let mut ns = Netns::enter(service, &path)?;
                self.live.insert(service.clone(), live::read(&mut ns)?);
                ns
            } else {
                let ns = Netns::create(service, &path)?;
                self.undo.netns.push(path);
                self.applied.created_services.push(service.clone());
                self.live.insert(service.clone(), Vec::new());
                ns
            };
            self.handles.insert(service.clone(), ns);
            for link in self.plan.links.iter().filter(|l| &l.b.service == service) {
                self.ensure(link)?;
            }
        }
        Ok(())
    }

    /// Keeps `link` if both ends are as planned, else (re)creates it.
    fn ensure(&mut self, link: &Link) -> Result<(), NetError> {
        let label = format!("{}<->{}", link.a.service, link.b.service);
        let as_planned = |end: &End, peer: &End| {
            self.live[&end.service]
                .iter()
                .any(|l| matches_end(l, end, peer))
        };
        if as_planned(&link.a, &link.b) && as_planned(&link.b, &link.a) {
            self.applied.kept_links.push(label);
            return Ok(());
        }
        for end in [&link.a, &link.b] {
            let stale = self.live[&end.service]
                .iter()
                .find(|l| l.ifname == end.ifname)
                .map(|l| l.ifindex);
            if let Some(index) = stale {
                self.delete(&end.service, &end.ifname, index)?;
            }
        }
        let (Some(mut a), Some(mut b)) = (
            self.handles.remove(&link.a.service),
            self.handles.remove(&link.b.service),
        ) else {
            return Err(crate::error::PlanError::NoSuchService(link.a.service.clone()).into());
        };
        let made = self.create(link, &label, &mut a, &mut b);
        self.handles.insert(link.a.service.clone(), a);
        self.handles.insert(link.b.service.clone(), b);
        made?;
        self.applied.created_links.push(label);
        Ok(())
    }

    /// Creates the veth pair of `link` from `a`'s namespace into `b`'s, then addresses both ends.
    fn create(
        &mut self,
        link: &Link,
        label: &str,
        a: &mut Netns,
        b: &mut Netns,
    ) -> Result<(), NetError> {
        a.nl.create_veth(&link.a.ifname, &link.b.ifname, b.file.as_fd())
            .map_err(|e| NetError::netlink(format!("create veth {label}"), &a.service, e))?;
        self.undo
            .links
            .push((link.a.service.clone(), link.a.ifname.clone()));
        configure(a, &link.a, &link.b)?;
        configure(b, &link.b, &link.a)
    }

    /// Deletes interface `index` of `service`, recording it; already gone is fine.
    fn delete(&mut self, service: &str, ifname: &str, index: u32) -> Result<(), NetError> {
        if let Some(ns) = self.handles.get_mut(service) {
            delete_link(ns, ifname, index)?;
            self.applied
                .removed_links
                .push(format!("{service}:{ifname}"));
        }
        Ok(())
    }

    /// Removes interfaces and namespaces the plan no longer holds.
    fn prune(&mut self) -> Result<(), NetError> {
        let services: Vec<String> = self.handles.keys().cloned().collect();
        for service in &services {
            let wanted: BTreeSet<&str> = self
                .plan
                .links_of(service)
                .map(|(end, _)| end.ifname.as_str())
                .collect();
            let Some(ns) = self.handles.get_mut(service) else {
                continue;
            };
            let extra: Vec<LiveLink> = live::read(ns)?
                .into_iter()
                .filter(|l| l.ifindex != LOOPBACK_INDEX && !wanted.contains(l.ifname.as_str()))
                .collect();
            for l in extra {
                self.delete(service, &l.ifname, l.ifindex)?;
            }
        }
        for service in self.present {
            if !self.plan.services.contains(service) {
                let path = state::netns_path(self.root, self.env, service);
                clear_and_remove(service, &path)?;
                self.applied.removed_services.push(service.clone());
            }
        }
        Ok(())
    }

    /// Removes what this apply created, newest first; returns the error to report.
    fn undo(&mut self, cause: NetError) -> NetError {
        let mut leftovers = Vec::new();
        for (service, ifname) in self.undo.links.iter().rev() {
            let Some(ns) = self.handles.get_mut(service) else {
                continue;
            };
            let gone = match ns.nl.link_index(ifname) {
                Ok(index) => delete_link(ns, ifname, index),
                Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(()),
                Err(e) => Err(NetError::netlink(format!("find {ifname}"), service, e)),
            };
            if let Err(e) = gone {
                leftovers.push(e.to_string());
            }
        }
        self.handles.clear();
        for path in self.undo.netns.iter().rev() {
            if let Err(e) = namespace::remove(path) {
                leftovers.push(e.to_string());
            }
        }
        if leftovers.is_empty() {
            cause
        } else {
            NetError::UndoFailed {
                cause: Box::new(cause),
                leftovers: leftovers.join("; "),
            }
        }
    }
}

/// Whether live interface `l` is `end` as planned: a veth, up, addressed, routed to `peer`.
fn matches_end(l: &LiveLink, end: &End, peer: &End) -> bool {
    l.ifname == end.ifname
        && l.kind == "veth"
        && l.up
        && l.addresses == [format!("{}/31", end.ip)]
        && l.routes == [format!("{}/32", peer.ip)]
}

/// Brings `end` up, addresses it (/31, no prefix route) and routes `peer`'s /32 through it.
fn configure(ns: &mut Netns, end: &End, peer: &End) -> Result<(), NetError> {
    let op = |what: &str| format!("{what} {}", end.ifname);
    let index = ns
        .nl
        .link_index(&end.ifname)
        .map_err(|e| NetError::netlink(op("find"), &ns.service, e))?;
    ns.nl
        .set_up(index)
        .map_err(|e| NetError::netlink(op("set up"), &ns.service, e))?;
    ns.nl
        .add_address(index, end.ip, 31)
        .map_err(|e| NetError::netlink(op("address"), &ns.service, e))?;
    ns.nl
        .add_host_route(peer.ip, index)
        .map_err(|e| NetError::netlink(op("route"), &ns.service, e))
}

/// Deletes interface `index`; already gone (its peer was deleted) is fine.
fn delete_link(ns: &mut Netns, ifname: &str, index: u32) -> Result<(), NetError> {
    match ns.nl.delete_link(index) {
        Err(e) if e.raw_os_error() != Some(nix::libc::ENODEV) => Err(NetError::netlink(
            format!("delete {ifname}"),
            &ns.service,
            e,
        )),
        _ => Ok(()),
    }
}

/// Deletes kiln's veths in the namespace at `path` in one batch, then unmounts and removes it.
/// Runs on a worker thread.
pub(crate) fn clear_and_remove(service: &str, path: &Path) -> Result<(), NetError> {
    let mut ns = Netns::enter(service, path)?;
    ns.nl
        .delete_group(KILN_GROUP)
        .map_err(|e| NetError::netlink("delete kiln veths", service, e))?;
    drop(ns);
    namespace::remove(path)
}

/// Deletes kiln's veths in each of `services`' namespaces, one thread and one batch request
/// per namespace (the kernel's per-request wait then overlaps), and unmounts them all.
fn clear_all(runtime_root: &Path, env: &str, services: &BTreeSet<String>) -> Result<(), NetError> {
    let cleared: Vec<Result<(), NetError>> = std::thread::scope(|s| {
        let workers: Vec<_> = services
            .iter()
            .map(|service| {
                let path = state::netns_path(runtime_root, env, service);
                s.spawn(move || {
                    let mut ns = Netns::enter(service, &path)?;
                    ns.nl
                        .delete_group(KILN_GROUP)
                        .map_err(|e| NetError::netlink("delete kiln veths", service, e))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(Err(NetError::WorkerPanicked)))
            .collect()
    });
    for service in services {
        namespace::remove(&state::netns_path(runtime_root, env, service))?;
    }
    cleared.into_iter().collect()
}

/// Removes every namespace and veth of environment `env` and its record. Idempotent; works
/// from what the kernel reports (mounts, links), also after a partial or crashed apply.
pub fn teardown(env: &str, runtime_root: &Path) -> Result<Vec<String>, NetError> {
    state::validate_env(env)?;
    let lock = state::lock(runtime_root, env)?;
    let dir = state::env_dir(runtime_root, env);
    let present = mounts::mounted_in(&dir)?;
    clear_all(runtime_root, env, &present)?;
    remove_stray_files(&dir)?;
    state::remove(runtime_root, env)?;
    state::remove_lock(runtime_root, env);
    drop(lock);
    Ok(present.into_iter().collect())
}

/// Removes unmounted namespace files (left by a crash between creating and mounting one).
fn remove_stray_files(dir: &Path) -> Result<(), NetError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(NetError::io("listing", dir, e)),
    };
    for entry in entries.flatten() {
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let name = entry.file_name();
        let service_like = name
            .to_str()
            .is_some_and(|n| crate::names::validate("service", n).is_ok());
        if is_file && service_like {
            namespace::remove(&entry.path())?;
        }
    }
    Ok(())
}
