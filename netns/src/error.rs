//! Typed errors: what is wrong with a topology, and what failed while applying one.

use std::io;
use std::path::PathBuf;

/// A topology that cannot become an address plan, named by its culprit.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Reading a topology file failed.
    #[error("reading topology {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A topology file is not valid JSON/TOML for a topology.
    #[error("parsing topology {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the line/key).
        message: String,
    },
    /// A service, relationship or environment name that kiln cannot use.
    #[error("invalid {what} name {name:?}: {why}")]
    InvalidName {
        /// "service", "relationship" or "environment".
        what: &'static str,
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// The same service is declared twice.
    #[error("service {0:?} is declared twice")]
    DuplicateService(String),
    /// A service declares the same relationship name twice.
    #[error("service {from:?} declares relationship {name:?} twice")]
    DuplicateRelationship {
        /// The declaring service.
        from: String,
        /// The relationship name.
        name: String,
    },
    /// An edge names a service that is not in the topology.
    #[error("relationship {from}.{name}: unknown service {unknown:?}")]
    UnknownService {
        /// The declaring service.
        from: String,
        /// The relationship name.
        name: String,
        /// The service that does not exist.
        unknown: String,
    },
    /// An edge from a service to itself.
    #[error("relationship {from}.{name} points at {from:?} itself")]
    SelfEdge {
        /// The service.
        from: String,
        /// The relationship name.
        name: String,
    },
    /// A relationship name that is also the name of another service its declarer can reach.
    #[error(
        "relationship {from}.{name} leads to {to:?}, but {name:?} is also the service {from:?} links to: hosts entries would clash"
    )]
    NameClash {
        /// The declaring service.
        from: String,
        /// The relationship name.
        name: String,
        /// The service the relationship leads to.
        to: String,
    },
    /// An address pool that is not a valid IPv4 CIDR.
    #[error("invalid address pool {pool:?}: {why}")]
    InvalidPool {
        /// The pool as given.
        pool: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The pool has fewer /31 blocks than the topology has links.
    #[error(
        "address pool {pool} is exhausted: {needed} links need one /31 each, it holds {capacity}"
    )]
    PoolExhausted {
        /// The pool.
        pool: String,
        /// Links in the topology.
        needed: u64,
        /// /31 blocks in the pool.
        capacity: u64,
    },
    /// Two peers of one service would get the same interface name.
    #[error("peers {first:?} and {second:?} of service {service:?} both map to interface name {ifname:?}")]
    InterfaceClash {
        /// The service holding both interfaces.
        service: String,
        /// One peer.
        first: String,
        /// The other peer.
        second: String,
        /// The clashing interface name.
        ifname: String,
    },
    /// A service that the plan does not hold.
    #[error("service {0:?} is not in the plan")]
    NoSuchService(String),
}

/// Applying, inspecting or tearing down an environment failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The topology or plan is invalid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A filesystem operation failed (naming the step and the path), or the state record
    /// could not be written.
    #[error(transparent)]
    File(#[from] kiln_util::fs::FsError),
    /// A system call failed.
    #[error("{call} ({target}): {errno}")]
    Sys {
        /// The call, e.g. "unshare(CLONE_NEWNET)".
        call: &'static str,
        /// What it acted on (a path or service).
        target: String,
        /// The errno.
        errno: nix::Error,
    },
    /// A netlink request was refused or failed.
    #[error("netlink {op} in netns of {service:?}")]
    Netlink {
        /// The operation, e.g. "create veth db<->app".
        op: String,
        /// The service whose namespace it ran in.
        service: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The state record is unreadable.
    #[error("state record {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A worker thread panicked.
    #[error("netns worker thread panicked")]
    WorkerPanicked,
    /// Apply failed, and undoing its partial work failed too.
    #[error("{}; undoing the partial apply also failed: {leftovers}", kiln_util::error::chain(cause.as_ref()))]
    UndoFailed {
        /// The error that made apply stop (in the message: it is the first thing to read).
        cause: Box<NetError>,
        /// What could not be undone.
        leftovers: String,
    },
}

impl NetError {
    /// A filesystem error with its path.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::File(kiln_util::fs::FsError::io(what, path, source))
    }

    /// A netlink error with the operation and namespace.
    pub(crate) fn netlink(op: impl Into<String>, service: &str, source: io::Error) -> Self {
        Self::Netlink {
            op: op.into(),
            service: service.to_string(),
            source,
        }
    }

    /// A failed system call.
    pub(crate) fn sys(call: &'static str, target: impl Into<String>, errno: nix::Error) -> Self {
        Self::Sys {
            call,
            target: target.into(),
            errno,
        }
    }
}
