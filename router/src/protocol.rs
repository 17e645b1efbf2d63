//! The control protocol: one text command a line in, one JSON reply a line out.
//!
//! ```text
//! hold [TIMEOUT_MS]   hold new requests; answer once those in flight finished (drained)
//! switch ENDPOINT     send requests admitted from now on to IP:PORT[@NETNS_PATH]
//! release             let held requests through
//! lease               the hold this connection makes (or finds) ends when it closes
//! status              counters
//! stop                end the router
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::gate::GateStatus;
use crate::endpoint::Endpoint;
use crate::error::RouterError;

/// How long `hold` waits for in-flight requests by default.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// A control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Hold requests; wait up to this long for in-flight ones to finish.
    Hold(Duration),
    /// Change the upstream.
    Switch(Endpoint),
    /// Let held requests through.
    Release,
    /// Tie the hold to this connection: released when the connection closes unreleased (a
    /// deploy that dies does not leave requests waiting forever).
    Lease,
    /// Report counters.
    Status,
    /// End the router.
    Stop,
}

/// A control line the router does not understand: what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl Command {
    /// Parses a command line.
    pub fn parse(line: &str) -> Result<Self, CommandError> {
        let bad = |why: String| Err(CommandError(why));
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        let arg = words.next();
        if words.next().is_some() {
            return bad(format!("too many arguments in {line:?}"));
        }
        match (verb, arg) {
            ("hold", None) => Ok(Self::Hold(DEFAULT_DRAIN)),
            ("hold", Some(ms)) => ms
                .parse()
                .map(|ms| Self::Hold(Duration::from_millis(ms)))
                .map_err(|_| CommandError(format!("hold: {ms:?} is not a number of milliseconds"))),
            ("switch", Some(e)) => e
                .parse()
                .map(Self::Switch)
                .map_err(|e: RouterError| CommandError(e.to_string())),
            ("switch", None) => bad("switch needs an upstream: IP:PORT[@NETNS_PATH]".into()),
            ("release", None) => Ok(Self::Release),
            ("lease", None) => Ok(Self::Lease),
            ("status", None) => Ok(Self::Status),
            ("stop", None) => Ok(Self::Stop),
            ("release" | "lease" | "status" | "stop", Some(_)) => bad(format!("{verb} takes no argument")),
            _ => bad(format!(
                "unknown command {verb:?} (hold [MS], switch UPSTREAM, release, lease, status, stop)"
            )),
        }
    }

    /// The command as a line (without newline).
    pub fn to_line(&self) -> String {
        match self {
            Self::Hold(d) => format!("hold {}", d.as_millis()),
            Self::Switch(e) => format!("switch {e}"),
            Self::Release => "release".into(),
            Self::Lease => "lease".into(),
            Self::Status => "status".into(),
            Self::Stop => "stop".into(),
        }
    }
}

/// What the router reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterStatus {
    /// Its environment.
    pub env: String,
    /// Its pid.
    pub pid: u32,
    /// The host address it listens on.
    pub listen: SocketAddr,
    /// Gate state and counters.
    #[serde(flatten)]
    pub gate: GateStatus,
}

/// A reply to one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The router's status after the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RouterStatus>,
}

impl Reply {
    /// A refusal.
    pub fn error(message: String) -> Self {
        Self {
            ok: false,
            error: Some(message),
            drained: None,
            released: None,
            status: None,
        }
    }

    /// Success with the status.
    pub fn ok(status: RouterStatus) -> Self {
        Self {
            ok: true,
            error: None,
            drained: None,
            released: None,
            status: Some(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_bad_ones_say_why() {
        for line in [
            "hold 250",
            "switch 127.0.0.1:80@/run/x",
            "release",
            "status",
            "stop",
        ] {
            assert_eq!(Command::parse(line).expect(line).to_line(), line);
        }
        assert_eq!(Command::parse("hold"), Ok(Command::Hold(DEFAULT_DRAIN)));
        for (line, says) in [
            ("jump", "unknown command"),
            ("switch", "needs an upstream"),
            ("switch nowhere", "invalid upstream"),
            ("hold soon", "milliseconds"),
            ("release now", "no argument"),
        ] {
            let err = Command::parse(line).expect_err(line);
            assert!(err.0.contains(says), "{line}: {err}");
        }
    }
}
