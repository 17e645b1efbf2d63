//! kiln-netns: declared topology to network namespaces linked by veth pairs, and nothing else.
//!
//! A [`Topology`] (services and the relationships they declare) becomes a [`Plan`]: one link per
//! related pair of services, each a /31 from a [`Pool`]. [`apply`] makes one network namespace
//! per service (bind-mounted at [`netns_path`], for the OCI runtime to join by path) with `lo`
//! up, and one veth pair per link, addressed and routed to the peer's /32 only: no bridge, no
//! default route, no NAT, nothing in the host namespace. [`teardown`] removes it all.
//!
//! Namespace work never happens on the caller's thread: it runs on short-lived worker threads
//! (the caller may be multi-threaded, or about to clone). Netlink is synchronous. Each veth pair
//! is created with both ends placed straight into their namespaces (`IFLA_NET_NS_FD` on each
//! end) under their final names, so no interface ever appears in the host namespace.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! let root = Path::new("/run/kiln");
//! let topology = kiln_netns::Topology::load(Path::new("topology.json"))?;
//! let plan = kiln_netns::plan_for("main", &topology, kiln_netns::Pool::DEFAULT, root)?;
//! kiln_netns::apply("main", &plan, root)?;
//! let env_var = plan.relationships_env("app")?; // KILN_RELATIONSHIPS for app
//! let hosts = plan.hosts("app")?; // its /etc/hosts
//! // A socket opened inside app's namespace, handed back to this thread:
//! let upstream = kiln_netns::with_netns(&kiln_netns::netns_path(root, "main", "app"), || {
//!     std::net::TcpStream::connect("127.0.0.1:8080")
//! })??;
//! # drop((env_var, hosts, upstream));
//! kiln_netns::teardown("main", root)?;
//! # Ok(())
//! # }
//! ```

mod apply;
mod error;
mod live;
mod mounts;
mod names;
mod namespace;
mod netlink;
mod outputs;
mod plan;
mod pool;
mod state;
mod topology;

pub use apply::{apply, teardown, Applied};
pub use error::{NetError, PlanError};
pub use live::{inspect_netns, status, LiveLink, ServiceStatus, Status};
pub use mounts::{mounted_in, mounts, Mount};
pub use namespace::with_netns;
pub use outputs::Relationship;
pub use plan::{End, Link, Plan};
pub use pool::Pool;
pub use state::{env_dir, load as load_record, netns_path, Record};
pub use topology::{Edge, Topology};

/// Plans `topology` for environment `env`, keeping the addresses its last applied plan gave
/// to links that still exist.
pub fn plan_for(
    env: &str,
    topology: &Topology,
    pool: Pool,
    runtime_root: &std::path::Path,
) -> Result<Plan, NetError> {
    state::validate_env(env)?;
    let previous = state::load(runtime_root, env)?.map(|r| r.plan);
    Ok(Plan::new(topology, pool, previous.as_ref())?)
}
