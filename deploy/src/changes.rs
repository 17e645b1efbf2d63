//! Which services a deploy must touch: only those whose image digest or run-time config
//! changed (or whose container died); the others keep running untouched, links kept.

use std::collections::BTreeMap;

use serde::Serialize;

use super::env_state::EnvState;

/// What a service should run after the deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The image's manifest digest.
    pub digest: String,
    /// A key of its run-time config (see [`super::env_state::ServiceState::config_key`]).
    pub config_key: String,
}

/// The services a deploy keeps, replaces, starts and stops, each sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Running with the same image and config: left alone.
    pub keep: Vec<String>,
    /// Running (or dead) with another image or config: the old container stops, a new starts.
    pub replace: Vec<String>,
    /// New services.
    pub start: Vec<String>,
    /// Services no longer declared.
    pub stop: Vec<String>,
}

impl Changes {
    /// Whether the deploy changes nothing (a redeploy of the same commit and config).
    pub fn is_noop(&self) -> bool {
        self.replace.is_empty() && self.start.is_empty() && self.stop.is_empty()
    }
}

/// Compares the environment's record (none for a new environment) with what should run.
pub fn changes(current: Option<&EnvState>, desired: &BTreeMap<String, Desired>) -> Changes {
    let mut out = Changes::default();
    let running = current.map(|c| &c.services);
    for (name, want) in desired {
        match running.and_then(|r| r.get(name)) {
            None => out.start.push(name.clone()),
            Some(have)
                if have.digest == want.digest
                    && have.config_key == want.config_key
                    && have.process.is_some_and(|p| p.alive()) =>
            {
                out.keep.push(name.clone())
            }
            Some(_) => out.replace.push(name.clone()),
        }
    }
    if let Some(r) = running {
        out.stop = r
            .keys()
            .filter(|n| !desired.contains_key(*n))
            .cloned()
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env_state::ServiceState;
    use crate::process::ProcessRef;

    fn desired(digest: &str, key: &str) -> Desired {
        Desired {
            digest: digest.into(),
            config_key: key.into(),
        }
    }

    fn running(digest: &str, key: &str, process: Option<ProcessRef>) -> ServiceState {
        ServiceState {
            image: "p/s:c".into(),
            digest: digest.into(),
            config_key: key.into(),
            process,
            ..ServiceState::default()
        }
    }

    #[test]
    fn only_changed_or_dead_services_are_replaced() {
        let me = ProcessRef::current().expect("own process");
        let dead = ProcessRef {
            start_time: me.start_time + 1,
            ..me
        };
        let mut env = EnvState::new("main");
        for (name, svc) in [
            ("same", running("d1", "k1", Some(me))),
            ("new-image", running("d1", "k1", Some(me))),
            ("new-config", running("d1", "k1", Some(me))),
            ("died", running("d1", "k1", Some(dead))),
            ("gone", running("d1", "k1", Some(me))),
        ] {
            env.services.insert(name.into(), svc);
        }
        let want: BTreeMap<String, Desired> = [
            ("same", desired("d1", "k1")),
            ("new-image", desired("d2", "k1")),
            ("new-config", desired("d1", "k2")),
            ("died", desired("d1", "k1")),
            ("added", desired("d9", "k9")),
        ]
        .into_iter()
        .map(|(n, d)| (n.to_string(), d))
        .collect();
        let c = changes(Some(&env), &want);
        assert_eq!(c.keep, ["same"]);
        assert_eq!(c.replace, ["died", "new-config", "new-image"]);
        assert_eq!(c.start, ["added"]);
        assert_eq!(c.stop, ["gone"]);
        assert!(!c.is_noop());
        let same: BTreeMap<String, Desired> = [("same".to_string(), desired("d1", "k1"))]
            .into_iter()
            .collect();
        let mut only = EnvState::new("main");
        only.services
            .insert("same".into(), running("d1", "k1", Some(me)));
        assert!(
            changes(Some(&only), &same).is_noop(),
            "a redeploy of the same commit"
        );
        assert_eq!(
            changes(None, &same).start,
            ["same"],
            "a new environment starts all"
        );
    }
}
