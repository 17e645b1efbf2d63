//! The network side of a deploy: the project's declared topology, and the two plans a deploy
//! applies — first one that keeps every link the running containers use while adding the new
//! ones, then, once the old containers are gone, the new topology's alone (same addresses).

use std::path::Path;

use kiln_builder::config::ProjectConfig;
use kiln_netns::{Edge, Plan, Pool, Topology};

use super::error::DeployError;

/// The declared topology of the project.
pub fn topology(config: &ProjectConfig) -> Topology {
    let mut t = Topology {
        services: config.services.keys().cloned().collect(),
        edges: Vec::new(),
    };
    for (name, svc) in &config.services {
        for (rel, r) in &svc.relationships {
            t.edges.push(Edge {
                from: name.clone(),
                name: rel.clone(),
                to: r.service.clone(),
                endpoint: Some(r.endpoint.clone()),
                port: r.port,
                scheme: r.scheme.clone(),
            });
        }
    }
    t
}

/// `new` plus every service and link of `previous` it lacks. An old link whose service pair
/// `new` does not link gets a relationship name of its own (the union is only applied, never
/// written into a container), so a retargeted or renamed relationship cannot clash.
pub fn union(previous: &Plan, new: &Topology) -> Topology {
    let mut both = new.clone();
    for s in &previous.services {
        if !both.services.contains(s) {
            both.services.push(s.clone());
        }
    }
    let linked = |t: &Topology, a: &str, b: &str| {
        t.edges
            .iter()
            .any(|e| (e.from == a && e.to == b) || (e.from == b && e.to == a))
    };
    for e in &previous.edges {
        if linked(&both, &e.from, &e.to) {
            continue;
        }
        let name = (0..)
            .map(|i| format!("kiln-prev{i}"))
            .find(|n| {
                !both.services.contains(n)
                    && !both.edges.iter().any(|o| o.from == e.from && o.name == *n)
            })
            .unwrap_or_default();
        both.edges.push(Edge { name, ..e.clone() });
    }
    both
}

/// The plans of a deploy of `config` into `env`: (old and new links together, new alone).
pub fn plans(
    runtime_root: &Path,
    env: &str,
    config: &ProjectConfig,
) -> Result<(Plan, Plan), DeployError> {
    let pool = Pool::DEFAULT;
    let new = topology(config);
    let previous = kiln_netns::load_record(runtime_root, env)?.map(|r| r.plan);
    let both = previous
        .as_ref()
        .map_or_else(|| new.clone(), |p| union(p, &new));
    let net = |e: kiln_netns::PlanError| DeployError::from(kiln_netns::NetError::from(e));
    let all = Plan::new(&both, pool, previous.as_ref()).map_err(net)?;
    let plan = Plan::new(&new, pool, Some(&all)).map_err(net)?;
    Ok((all, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &Plan) -> Vec<(String, String)> {
        let mut v: Vec<_> = p
            .links
            .iter()
            .map(|l| (l.a.service.clone(), l.b.service.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_retargeted_relationship_keeps_the_old_link_until_the_final_plan() {
        let old = Topology::new(
            &["a", "b", "web"],
            vec![Edge::new("web", "db", "a", 1, "tcp")],
        );
        let old = Plan::new(&old, Pool::DEFAULT, None).expect("old");
        let new = Topology::new(
            &["a", "b", "web"],
            vec![Edge::new("web", "db", "b", 1, "tcp")],
        );
        let both = union(&old, &new);
        let all = Plan::new(&both, Pool::DEFAULT, Some(&old)).expect("union validates");
        assert_eq!(
            pairs(&all),
            [("a".into(), "web".into()), ("b".into(), "web".into())]
        );
        let fin = Plan::new(&new, Pool::DEFAULT, Some(&all)).expect("final");
        assert_eq!(pairs(&fin), [("b".into(), "web".into())]);
        let addr = |p: &Plan, s: &str| {
            p.links
                .iter()
                .find(|l| l.a.service == s || l.b.service == s)
                .map(|l| (l.a.ip, l.b.ip))
        };
        assert_eq!(
            addr(&all, "b"),
            addr(&fin, "b"),
            "the new link keeps its address"
        );
        assert_eq!(
            addr(&all, "a"),
            addr(&old, "a"),
            "the old link keeps its address"
        );
    }

    #[test]
    fn a_relationship_renamed_to_a_new_services_name_does_not_clash() {
        let old = Topology::new(
            &["redis", "web"],
            vec![Edge::new("web", "cache", "redis", 1, "tcp")],
        );
        let old = Plan::new(&old, Pool::DEFAULT, None).expect("old");
        let new = Topology::new(
            &["cache", "redis", "web"],
            vec![Edge::new("web", "kv", "cache", 1, "tcp")],
        );
        let both = union(&old, &new);
        Plan::new(&both, Pool::DEFAULT, Some(&old)).expect("union validates");
        assert_eq!(both.edges.len(), 2);
    }
}
