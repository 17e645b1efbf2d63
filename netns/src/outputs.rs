//! What a container of a service gets from the plan: its hosts file and `KILN_RELATIONSHIPS`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::plan::Plan;

/// One entry of a relationship as an app sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationship {
    /// The service the relationship leads to.
    pub service: String,
    /// The host name to use (the relationship name; the hosts file resolves it).
    pub host: String,
    /// The peer's address on the link.
    pub ip: Ipv4Addr,
    /// The peer's port.
    pub port: u16,
    /// The endpoint's URL scheme.
    pub scheme: String,
}

impl Plan {
    /// The relationships `service` declares: name → entries.
    pub fn relationships(
        &self,
        service: &str,
    ) -> Result<BTreeMap<String, Vec<Relationship>>, PlanError> {
        self.check_service(service)?;
        let mut out: BTreeMap<String, Vec<Relationship>> = BTreeMap::new();
        for e in self.edges.iter().filter(|e| e.from == service) {
            let Some(ip) = self.peer_ip(service, &e.to) else {
                continue;
            };
            out.entry(e.name.clone()).or_default().push(Relationship {
                service: e.to.clone(),
                host: e.name.clone(),
                ip,
                port: e.port,
                scheme: e.scheme.clone(),
            });
        }
        Ok(out)
    }

    /// The relationships of `service` as JSON.
    pub fn relationships_json(&self, service: &str) -> Result<String, PlanError> {
        let rels = self.relationships(service)?;
        // A map of plain strings and numbers always serializes.
        Ok(serde_json::to_string(&rels).unwrap_or_default())
    }

    /// The value of `KILN_RELATIONSHIPS` for `service`: its relationships JSON, base64.
    pub fn relationships_env(&self, service: &str) -> Result<String, PlanError> {
        let json = self.relationships_json(service)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(json))
    }

    /// The `/etc/hosts` of `service`: localhost, then each reachable peer under its
    /// relationship names and its service name.
    pub fn hosts(&self, service: &str) -> Result<String, PlanError> {
        self.check_service(service)?;
        let mut text =
            format!("127.0.0.1\tlocalhost {service}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for (_, peer) in self.links_of(service) {
            let mut names: Vec<&str> = self
                .edges
                .iter()
                .filter(|e| e.from == service && e.to == peer.service)
                .map(|e| e.name.as_str())
                .filter(|n| *n != peer.service)
                .collect();
            names.push(&peer.service);
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{}\t{}", peer.ip, names.join(" "));
        }
        Ok(text)
    }

    /// The address of `peer` on its link with `service`.
    fn peer_ip(&self, service: &str, peer: &str) -> Option<Ipv4Addr> {
        self.links_of(service)
            .find(|(_, p)| p.service == peer)
            .map(|(_, p)| p.ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Pool;
    use crate::topology::{Edge, Topology};

    fn plan() -> Plan {
        let t = Topology {
            services: vec!["app".into(), "db".into(), "cache".into()],
            edges: vec![
                Edge {
                    from: "app".into(),
                    name: "database".into(),
                    to: "db".into(),
                    endpoint: Some("mysql".into()),
                    port: 3306,
                    scheme: "mysql".into(),
                },
                Edge {
                    from: "app".into(),
                    name: "redis".into(),
                    to: "cache".into(),
                    endpoint: None,
                    port: 6379,
                    scheme: "redis".into(),
                },
            ],
        };
        Plan::new(&t, "10.5.0.0/30".parse::<Pool>().unwrap(), None).unwrap()
    }

    #[test]
    fn hosts_list_reachable_names_only() {
        let p = plan();
        let app = p.hosts("app").unwrap();
        let db_ip = p
            .links_of("app")
            .find(|(_, x)| x.service == "db")
            .unwrap()
            .1
            .ip;
        assert!(app.contains(&format!("{db_ip}\tdatabase db\n")), "{app}");
        assert!(app.contains("redis cache"), "{app}");
        let db = p.hosts("db").unwrap();
        assert!(db.contains("\tapp\n"), "{db}");
        assert!(!db.contains("cache"), "{db}");
        assert!(p
            .hosts("nope")
            .unwrap_err()
            .to_string()
            .contains("\"nope\""));
    }

    #[test]
    fn relationships_round_trip_through_base64() {
        let p = plan();
        let encoded = p.relationships_env("app").unwrap();
        let json = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let rels: BTreeMap<String, Vec<Relationship>> = serde_json::from_slice(&json).unwrap();
        let db = &rels["database"][0];
        assert_eq!(
            (
                db.service.as_str(),
                db.host.as_str(),
                db.port,
                db.scheme.as_str()
            ),
            ("db", "database", 3306, "mysql")
        );
        assert!(p.relationships("db").unwrap().is_empty());
    }
}
