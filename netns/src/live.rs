//! Live state as the kernel reports it: interfaces, addresses, routes, per namespace.

use std::path::{Path, PathBuf};

use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use serde::Serialize;

use crate::error::NetError;
use crate::mounts;
use crate::namespace::{on_worker, Netns};
use crate::plan::Plan;
use crate::state;

/// One interface inside a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveLink {
    /// Interface name.
    pub ifname: String,
    /// Interface index (stable while the link lives).
    pub ifindex: u32,
    /// Link kind ("veth", or empty for loopback).
    pub kind: String,
    /// Administratively up.
    pub up: bool,
    /// Carrier present (both ends up).
    pub lower_up: bool,
    /// IPv4 addresses as `ip/prefix`.
    pub addresses: Vec<String>,
    /// Main-table IPv4 routes through it, as `dst/len`.
    pub routes: Vec<String>,
}

/// One service's namespace: planned, present, and what is in it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// The service.
    pub service: String,
    /// Its namespace path.
    pub path: PathBuf,
    /// Whether a namespace is mounted there.
    pub present: bool,
    /// Its interfaces (empty when absent).
    pub links: Vec<LiveLink>,
}

/// An environment's recorded plan and live state.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The environment.
    pub env: String,
    /// The plan last applied, if any.
    pub plan: Option<Plan>,
    /// Every service planned or present.
    pub services: Vec<ServiceStatus>,
}

/// Reads the interfaces, addresses and routes of the namespace `ns` belongs to.
pub(crate) fn read(ns: &mut Netns) -> Result<Vec<LiveLink>, NetError> {
    let op = |what: &str| format!("dump {what}");
    let links = ns
        .nl
        .links()
        .map_err(|e| NetError::netlink(op("links"), &ns.service, e))?;
    let addrs = ns
        .nl
        .addresses()
        .map_err(|e| NetError::netlink(op("addresses"), &ns.service, e))?;
    let routes = ns
        .nl
        .routes()
        .map_err(|e| NetError::netlink(op("routes"), &ns.service, e))?;
    let mut out: Vec<LiveLink> = links
        .iter()
        .map(|l| {
            let index = l.header.index;
            LiveLink {
                ifname: l
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })
                    .unwrap_or_default(),
                ifindex: index,
                kind: link_kind(&l.attributes),
                up: l.header.flags.contains(LinkFlags::Up),
                lower_up: l.header.flags.contains(LinkFlags::LowerUp),
                addresses: addrs
                    .iter()
                    .filter(|a| a.header.index == index)
                    .filter_map(|a| {
                        a.attributes.iter().find_map(|x| match x {
                            AddressAttribute::Local(ip) => {
                                Some(format!("{ip}/{}", a.header.prefix_len))
                            }
                            _ => None,
                        })
                    })
                    .collect(),
                routes: routes
                    .iter()
                    .filter(|r| r.attributes.contains(&RouteAttribute::Oif(index)))
                    .map(|r| {
                        let dst = r
                            .attributes
                            .iter()
                            .find_map(|x| match x {
                                RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                                    Some(ip.to_string())
                                }
                                _ => None,
                            })
                            .unwrap_or_else(|| "0.0.0.0".to_string());
                        format!("{dst}/{}", r.header.destination_prefix_length)
                    })
                    .collect(),
            }
        })
        .collect();
    out.sort_by_key(|l| l.ifindex);
    Ok(out)
}

/// The kind of a link from its link-info attribute.
fn link_kind(attrs: &[LinkAttribute]) -> String {
    attrs
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(InfoKind::Veth) => Some("veth".to_string()),
                LinkInfo::Kind(k) => Some(k.to_string()),
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or_default()
}

/// The interfaces of the network namespace at `path` (any nsfs path, e.g. `/proc/1/ns/net`).
pub fn inspect_netns(path: &Path) -> Result<Vec<LiveLink>, NetError> {
    on_worker(|| read(&mut Netns::enter("-", path)?))
}

/// An environment's recorded plan and what the kernel has for it.
pub fn status(env: &str, runtime_root: &Path) -> Result<Status, NetError> {
    state::validate_env(env)?;
    let plan = state::load(runtime_root, env)?.map(|r| r.plan);
    let present = mounts::mounted_in(&state::env_dir(runtime_root, env))?;
    let mut names: Vec<String> = plan
        .iter()
        .flat_map(|p| p.services.iter().cloned())
        .chain(present.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    let services = on_worker(|| {
        names
            .iter()
            .map(|service| {
                let path = state::netns_path(runtime_root, env, service);
                let here = present.contains(service);
                let links = if here {
                    read(&mut Netns::enter(service, &path)?)?
                } else {
                    Vec::new()
                };
                Ok(ServiceStatus {
                    service: service.clone(),
                    path,
                    present: here,
                    links,
                })
            })
            .collect::<Result<Vec<_>, NetError>>()
    })?;
    Ok(Status {
        env: env.to_string(),
        plan,
        services,
    })
}
