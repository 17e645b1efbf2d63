//! Topology → address plan: one link per pair of related services, each a /31 from the pool.
//!
//! A link's block is chosen by a hash of its two service names (probing past taken blocks), and
//! links already in the previous plan keep their block: adding or removing an edge never moves
//! the addresses of the other links.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::PlanError;
use crate::names;
use crate::pool::Pool;
use crate::topology::{Edge, Topology};

/// One end of a link: the service whose namespace holds it, its interface name and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// The service.
    pub service: String,
    /// The interface name inside the service's namespace (named after the peer).
    pub ifname: String,
    /// The address of this end (its /31 is the link's block).
    pub ip: Ipv4Addr,
}

/// A veth pair between two related services; `a` sorts before `b` and holds the even address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The end in the service that sorts first.
    pub a: End,
    /// The end in the other service.
    pub b: End,
}

impl Link {
    /// The end inside `service`, and the other end, if this link touches `service`.
    pub fn ends_for(&self, service: &str) -> Option<(&End, &End)> {
        if self.a.service == service {
            Some((&self.a, &self.b))
        } else if self.b.service == service {
            Some((&self.b, &self.a))
        } else {
            None
        }
    }
}

/// The address plan of a topology: what `apply` makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The pool the links are addressed from.
    pub pool: Pool,
    /// Service names, sorted.
    pub services: Vec<String>,
    /// Declared relationships, sorted.
    pub edges: Vec<Edge>,
    /// Links, sorted by their two service names.
    pub links: Vec<Link>,
}

impl Plan {
    /// Plans `topology` in `pool`; links also in `previous` keep their addresses.
    pub fn new(
        topology: &Topology,
        pool: Pool,
        previous: Option<&Plan>,
    ) -> Result<Self, PlanError> {
        topology.validate()?;
        let pairs: BTreeSet<(&str, &str)> = topology
            .edges
            .iter()
            .map(|e| sorted_pair(&e.from, &e.to))
            .collect();
        if pairs.len() as u64 > pool.capacity() {
            return Err(PlanError::PoolExhausted {
                pool: pool.to_string(),
                needed: pairs.len() as u64,
                capacity: pool.capacity(),
            });
        }
        check_ifnames(&pairs)?;
        let slots = allocate(&pairs, pool, previous);
        let links = pairs
            .iter()
            .map(|&(a, b)| {
                let (ip_a, ip_b) = pool.pair(slots[&(a, b)]);
                Link {
                    a: End {
                        service: a.to_string(),
                        ifname: names::ifname_for(b),
                        ip: ip_a,
                    },
                    b: End {
                        service: b.to_string(),
                        ifname: names::ifname_for(a),
                        ip: ip_b,
                    },
                }
            })
            .collect();
        let mut services = topology.services.clone();
        services.sort();
        let mut edges = topology.edges.clone();
        edges.sort();
        Ok(Self {
            pool,
            services,
            edges,
            links,
        })
    }

    /// The links touching `service`.
    pub fn links_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = (&'a End, &'a End)> {
        self.links.iter().filter_map(move |l| l.ends_for(service))
    }

    /// Fails unless `service` is in the plan.
    pub(crate) fn check_service(&self, service: &str) -> Result<(), PlanError> {
        if self.services.iter().any(|s| s == service) {
            Ok(())
        } else {
            Err(PlanError::NoSuchService(service.to_string()))
        }
    }
}

/// The two names of an edge, in order.
fn sorted_pair<'a>(x: &'a str, y: &'a str) -> (&'a str, &'a str) {
    if x <= y {
        (x, y)
    } else {
        (y, x)
    }
}

/// Refuses a service whose peers would share an interface name.
fn check_ifnames(pairs: &BTreeSet<(&str, &str)>) -> Result<(), PlanError> {
    let mut seen: BTreeMap<(&str, String), &str> = BTreeMap::new();
    for &(a, b) in pairs {
        for (service, peer) in [(a, b), (b, a)] {
            let ifname = names::ifname_for(peer);
            if let Some(first) = seen.insert((service, ifname.clone()), peer) {
                return Err(PlanError::InterfaceClash {
                    service: service.to_string(),
                    first: first.to_string(),
                    second: peer.to_string(),
                    ifname,
                });
            }
        }
    }
    Ok(())
}

/// Picks a /31 block for every pair: kept from `previous` when possible, else hashed.
fn allocate<'a>(
    pairs: &BTreeSet<(&'a str, &'a str)>,
    pool: Pool,
    previous: Option<&Plan>,
) -> BTreeMap<(&'a str, &'a str), u64> {
    let mut slots = BTreeMap::new();
    let mut taken = BTreeSet::new();
    if let Some(prev) = previous {
        for l in &prev.links {
            let (a, b) = (l.a.service.as_str(), l.b.service.as_str());
            let Some(key) = pairs.iter().copied().find(|&(x, y)| x == a && y == b) else {
                continue;
            };
            if let Some(slot) = pool.slot_of(l.a.ip) {
                if taken.insert(slot) {
                    slots.insert(key, slot);
                }
            }
        }
    }
    let capacity = pool.capacity();
    for &pair in pairs {
        if slots.contains_key(&pair) {
            continue;
        }
        // The caller checked capacity, so probing always finds a free block.
        let mut slot = preferred_slot(pair, capacity);
        while taken.contains(&slot) {
            slot = (slot + 1) % capacity;
        }
        taken.insert(slot);
        slots.insert(pair, slot);
    }
    slots
}

/// The block a pair gets when nothing else holds it: a hash of both names.
fn preferred_slot((a, b): (&str, &str), capacity: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(a.as_bytes());
    h.update([0]);
    h.update(b.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % capacity
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(services: &[&str], edges: &[(&str, &str, &str)]) -> Topology {
        Topology {
            services: services.iter().map(|s| s.to_string()).collect(),
            edges: edges
                .iter()
                .map(|(from, name, to)| Edge {
                    from: from.to_string(),
                    name: name.to_string(),
                    to: to.to_string(),
                    endpoint: None,
                    port: 80,
                    scheme: "http".into(),
                })
                .collect(),
        }
    }

    fn addresses(plan: &Plan) -> BTreeMap<(String, String), Ipv4Addr> {
        plan.links
            .iter()
            .map(|l| ((l.a.service.clone(), l.b.service.clone()), l.a.ip))
            .collect()
    }

    #[test]
    fn same_topology_same_addresses() {
        let t = topo(
            &["app", "db", "cache"],
            &[("app", "database", "db"), ("app", "redis", "cache")],
        );
        let p1 = Plan::new(&t, Pool::DEFAULT, None).unwrap();
        let mut shuffled = t.clone();
        shuffled.services.reverse();
        shuffled.edges.reverse();
        let p2 = Plan::new(&shuffled, Pool::DEFAULT, None).unwrap();
        assert_eq!(p1, p2);
        assert_eq!(p1.links.len(), 2);
        for l in &p1.links {
            assert_eq!(u32::from(l.a.ip) % 2, 0);
            assert_eq!(u32::from(l.b.ip), u32::from(l.a.ip) + 1);
        }
    }

    #[test]
    fn adding_an_edge_keeps_other_addresses() {
        // A tiny pool makes hash collisions certain; the previous plan still wins.
        let pool: Pool = "10.1.0.0/29".parse().unwrap();
        let before = topo(&["a", "b", "c", "d"], &[("a", "x", "b"), ("c", "y", "d")]);
        let p1 = Plan::new(&before, pool, None).unwrap();
        let mut after = before.clone();
        after
            .edges
            .push(topo(&[], &[("a", "z", "c")]).edges[0].clone());
        after
            .edges
            .push(topo(&[], &[("b", "w", "d")]).edges[0].clone());
        let p2 = Plan::new(&after, pool, Some(&p1)).unwrap();
        let (old, new) = (addresses(&p1), addresses(&p2));
        for (pair, ip) in &old {
            assert_eq!(new[pair], *ip, "{pair:?} moved");
        }
        assert_eq!(new.len(), 4);
        let distinct: BTreeSet<_> = new.values().collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn pool_exhaustion_is_named() {
        let pool: Pool = "10.1.0.0/31".parse().unwrap();
        let t = topo(&["a", "b", "c"], &[("a", "x", "b"), ("a", "y", "c")]);
        let err = Plan::new(&t, pool, None).unwrap_err().to_string();
        assert!(err.contains("10.1.0.0/31 is exhausted: 2 links"), "{err}");
    }

    #[test]
    fn two_relationships_share_one_link() {
        let t = topo(
            &["app", "db"],
            &[("app", "main", "db"), ("app", "replica", "db")],
        );
        let p = Plan::new(&t, Pool::DEFAULT, None).unwrap();
        assert_eq!(p.links.len(), 1);
        assert_eq!(p.links[0].a.ifname, "db");
        assert_eq!(p.links[0].b.ifname, "app");
    }
}
