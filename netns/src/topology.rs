//! A project's declared topology: services, and the relationships (edges) between them.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::names;

/// Services and the relationships they declare; the only links that will exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Service names (one network namespace each).
    pub services: Vec<String>,
    /// Declared relationships.
    #[serde(default)]
    pub edges: Vec<Edge>,
}

/// One declared relationship: `from` reaches `to` under the name `name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// The declaring service.
    pub from: String,
    /// The relationship name (a hosts entry and a `KILN_RELATIONSHIPS` key in `from`).
    pub name: String,
    /// The service it leads to.
    pub to: String,
    /// The endpoint of `to` it uses (e.g. "mysql"), if the service has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The port `to` listens on.
    pub port: u16,
    /// The URL scheme of the endpoint (e.g. "mysql", "http").
    #[serde(default = "default_scheme")]
    pub scheme: String,
}

/// The scheme of an edge that names none.
fn default_scheme() -> String {
    "tcp".to_string()
}

impl Topology {
    /// A topology of `services` and `edges`.
    pub fn new(services: &[&str], edges: Vec<Edge>) -> Self {
        Self {
            services: services.iter().map(|s| s.to_string()).collect(),
            edges,
        }
    }

    /// Loads a topology file: TOML when its name ends in `.toml`, JSON otherwise.
    pub fn load(path: &Path) -> Result<Self, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|message| PlanError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Checks names, duplicates, unknown services and self-edges, naming the culprit.
    pub fn validate(&self) -> Result<(), PlanError> {
        let mut services = BTreeSet::new();
        for s in &self.services {
            names::validate("service", s)?;
            if !services.insert(s.as_str()) {
                return Err(PlanError::DuplicateService(s.clone()));
            }
        }
        let mut declared = BTreeSet::new();
        for e in &self.edges {
            names::validate("relationship", &e.name)?;
            for end in [&e.from, &e.to] {
                if !services.contains(end.as_str()) {
                    return Err(PlanError::UnknownService {
                        from: e.from.clone(),
                        name: e.name.clone(),
                        unknown: end.clone(),
                    });
                }
            }
            if e.from == e.to {
                return Err(PlanError::SelfEdge {
                    from: e.from.clone(),
                    name: e.name.clone(),
                });
            }
            if !declared.insert((e.from.as_str(), e.name.as_str())) {
                return Err(PlanError::DuplicateRelationship {
                    from: e.from.clone(),
                    name: e.name.clone(),
                });
            }
        }
        for e in &self.edges {
            let peer_named_like_it = self.edges.iter().any(|o| {
                (o.from == e.from && o.to == e.name) || (o.to == e.from && o.from == e.name)
            });
            if peer_named_like_it && e.name != e.to {
                return Err(PlanError::NameClash {
                    from: e.from.clone(),
                    name: e.name.clone(),
                    to: e.to.clone(),
                });
            }
        }
        Ok(())
    }
}

impl Edge {
    /// Relationship `name` of `from`, leading to `to` on `port` (no named endpoint).
    pub fn new(from: &str, name: &str, to: &str, port: u16, scheme: &str) -> Self {
        Self {
            from: from.into(),
            name: name.into(),
            to: to.into(),
            endpoint: None,
            port,
            scheme: scheme.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, name: &str, to: &str) -> Edge {
        Edge::new(from, name, to, 5432, "pgsql")
    }

    fn topo(services: &[&str], edges: Vec<Edge>) -> Topology {
        Topology::new(services, edges)
    }

    #[test]
    fn errors_name_the_culprit() {
        let cases = [
            (topo(&["a", "a"], vec![]), "service \"a\" is declared twice"),
            (
                topo(&["a", "b"], vec![edge("a", "db", "zz")]),
                "relationship a.db: unknown service \"zz\"",
            ),
            (
                topo(&["a", "b"], vec![edge("a", "db", "a")]),
                "relationship a.db points at \"a\" itself",
            ),
            (
                topo(
                    &["a", "b"],
                    vec![edge("a", "db", "b"), edge("a", "db", "b")],
                ),
                "service \"a\" declares relationship \"db\" twice",
            ),
            (
                topo(
                    &["a", "b", "c"],
                    vec![edge("a", "c", "b"), edge("a", "x", "c")],
                ),
                "relationship a.c leads to \"b\"",
            ),
            (topo(&["a/b"], vec![]), "invalid service name \"a/b\""),
        ];
        for (t, want) in cases {
            let err = t.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn loads_toml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("t.toml");
        std::fs::write(
            &toml_path,
            "services = [\"app\", \"db\"]\n[[edges]]\nfrom = \"app\"\nname = \"database\"\nto = \"db\"\nport = 5432\n",
        )
        .unwrap();
        let t = Topology::load(&toml_path).unwrap();
        assert_eq!(t.edges[0].scheme, "tcp");
        let json_path = dir.path().join("t.json");
        std::fs::write(&json_path, serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(Topology::load(&json_path).unwrap(), t);
        std::fs::write(&json_path, "{\"services\": [], \"bogus\": 1}").unwrap();
        let err = Topology::load(&json_path).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
