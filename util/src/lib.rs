//! kiln-util: the small pieces every kiln crate needs once, with one set of guarantees.
//!
//! It depends on nothing of kiln's, so overlay, runtime, netns, builder, router and deploy can
//! all use it without knowing about each other.
//!
//! - [`fs`]: atomic file writes (temp file in the same directory, fsync it, rename, fsync the
//!   directory) and JSON records written that way.
//! - [`time`]: RFC 3339 timestamps (formatted by the `jiff` crate).
//! - [`process`]: `/proc/<pid>/stat`, a process named by pid and start time, killing a
//!   process tree.
//! - [`wait`]: polling until a deadline.
//! - [`cgroup`]: the one naming scheme for the cgroups of kiln's containers.
//! - [`oci`]: the mounts and namespaces of an OCI config that build steps and services share.
//! - [`error`]: an error and its causes as one line.

pub mod cgroup;
pub mod error;
pub mod fs;
pub mod mount;
pub mod oci;
pub mod process;
pub mod time;
pub mod wait;
