//! The control protocol: one JSON command a line in, one JSON reply a line out, over the
//! ingress's unix socket (`$KILN_RUNTIME/ingress/ingress.sock`, mode 0600: root only).
//!
//! ```text
//! {"cmd":"register","env":E,"listen":ADDR?,"upstream":EP?,"held":B,"retry_ms":N}
//! {"cmd":"unregister","env":E}
//! {"cmd":"routes","env":E,"project":P,"routes":[RouteSpec…]}   expanded routes in the reply
//! {"cmd":"hold","env":E,"drain_ms":N}    hold new requests; answer once in-flight ones end
//!                                        or drain_ms passed, whichever is first (drained)
//! {"cmd":"switch","env":E,"upstream":EP,"app":S?}   requests admitted from now on go to EP
//! {"cmd":"release","env":E}              let held requests through
//! {"cmd":"lease","env":E}                the hold (made or found) ends when this connection does
//! {"cmd":"status","env":E?}              one environment's counters, or the whole ingress
//! {"cmd":"stop"}                         end the ingress (in-flight requests finish first)
//! ```
//!
//! `EP` is `{"addr":"IP:PORT","netns":PATH?}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::gate::GateStatus;
use crate::endpoint::Endpoint;
use crate::routes::{Route, RouteSpec};

/// How long `hold` waits for in-flight requests by default.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// A control command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Serve an environment (its own loopback port at `listen`, if given).
    Register {
        /// The environment.
        env: String,
        /// Its own port (every request on it goes to the environment, whatever the Host).
        #[serde(default)]
        listen: Option<SocketAddr>,
        /// Its first upstream, if there is one yet.
        #[serde(default)]
        upstream: Option<Endpoint>,
        /// Start holding (a first deploy releases once the app is healthy).
        #[serde(default)]
        held: bool,
        /// How long a refusing upstream is retried, in ms.
        retry_ms: u64,
    },
    /// Stop serving an environment.
    Unregister {
        /// The environment.
        env: String,
    },
    /// Set an environment's routes.
    Routes {
        /// The environment.
        env: String,
        /// Its project (for `{default}`).
        project: String,
        /// The routes as declared (none: `http://{default}/`).
        routes: Vec<RouteSpec>,
    },
    /// Hold requests; wait up to `drain_ms` for in-flight ones to finish.
    Hold {
        /// The environment.
        env: String,
        /// Longest wait, in ms.
        drain_ms: u64,
    },
    /// Change an upstream.
    Switch {
        /// The environment.
        env: String,
        /// Where requests go from now on.
        upstream: Endpoint,
        /// Which app (`None`: the main one).
        #[serde(default)]
        app: Option<String>,
    },
    /// Let held requests through.
    Release {
        /// The environment.
        env: String,
    },
    /// Tie the hold to this connection: released when the connection closes unreleased (a
    /// deploy that dies does not leave requests waiting forever).
    Lease {
        /// The environment.
        env: String,
    },
    /// Report counters.
    Status {
        /// The environment (`None`: the ingress).
        #[serde(default)]
        env: Option<String>,
    },
    /// End the ingress.
    Stop,
    /// Hand the listening sockets and environments to a new ingress process, then end once
    /// in-flight requests finish (no connection refused, none dropped).
    Restart,
}

impl Command {
    /// Parses a command line.
    pub fn parse(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| format!("bad command {line:?}: {e}"))
    }

    /// The command as a line (without newline).
    pub fn to_line(&self) -> String {
        // A command is plain data: serialising it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The environment the command is about.
    pub fn env(&self) -> Option<&str> {
        match self {
            Self::Register { env, .. }
            | Self::Unregister { env }
            | Self::Routes { env, .. }
            | Self::Hold { env, .. }
            | Self::Switch { env, .. }
            | Self::Release { env }
            | Self::Lease { env } => Some(env),
            Self::Status { env } => env.as_deref(),
            Self::Stop | Self::Restart => None,
        }
    }
}

/// What the ingress reports about one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterStatus {
    /// The environment.
    pub env: String,
    /// The ingress's pid.
    pub pid: u32,
    /// The environment's own port.
    pub listen: SocketAddr,
    /// The environment's URLs (primary first).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Gate state and counters.
    #[serde(flatten)]
    pub gate: GateStatus,
}

/// What the ingress reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngressStatus {
    /// Its pid.
    pub pid: u32,
    /// Where it listens for plain HTTP (host routing).
    pub listen: Vec<SocketAddr>,
    /// Where it listens for TLS (host routing).
    pub tls_listen: Vec<SocketAddr>,
    /// The domain of environment hosts.
    pub domain: String,
    /// Every host it routes, with the environments behind it.
    pub hosts: BTreeMap<String, Vec<String>>,
    /// Every environment it serves, with its own port.
    pub envs: BTreeMap<String, SocketAddr>,
    /// Client connections open now.
    pub connections: u64,
}

/// A reply to one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Reply {
    /// Whether the command was done.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `hold`: whether in-flight requests all finished within the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<bool>,
    /// `release`: how many requests were waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<u64>,
    /// `unregister`: whether the environment was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was_registered: Option<bool>,
    /// `unregister`: whether the ingress ends now (it was started for deploys and serves no
    /// environment any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<bool>,
    /// `routes`: the routes as expanded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    /// `restart`: the new ingress's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_pid: Option<u32>,
    /// The environment's status after the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RouterStatus>,
    /// `status` without an environment: the ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressStatus>,
}

impl Reply {
    /// A refusal.
    pub fn error(message: String) -> Self {
        Self {
            error: Some(message),
            ..Self::default()
        }
    }

    /// Success.
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_bad_ones_say_why() {
        let up: Endpoint = "127.0.0.1:80@/run/x".parse().expect("endpoint");
        for cmd in [
            Command::Hold {
                env: "main".into(),
                drain_ms: 250,
            },
            Command::Switch {
                env: "main".into(),
                upstream: up,
                app: Some("api".into()),
            },
            Command::Release { env: "m".into() },
            Command::Status { env: None },
            Command::Stop,
        ] {
            assert_eq!(Command::parse(&cmd.to_line()).expect("parse"), cmd);
        }
        for (line, says) in [
            (r#"{"cmd":"jump"}"#, "unknown variant"),
            (r#"{"cmd":"switch","env":"m"}"#, "missing field `upstream`"),
            (
                r#"{"cmd":"hold","env":"m","drain_ms":"soon"}"#,
                "invalid type",
            ),
            (r#"{"cmd":"release","env":"m","now":1}"#, "unknown field"),
            ("hold 30", "bad command"),
        ] {
            let err = Command::parse(line).expect_err(line);
            assert!(err.contains(says), "{line}: {err}");
        }
    }
}
