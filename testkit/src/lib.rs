//! kiln-testkit: fixtures for kiln's end-to-end tests and its bench (a dev-dependency only,
//! never part of a shipped crate).
//!
//! - [`common`]: the `kiln` binary under test, sandboxes with their own store and runtime
//!   root, a busybox rootfs, git helpers, the examples.
//! - [`build_support`]: a project's git repository, a busybox base image, a loopback service
//!   that records what reaches it, and the checks that a build left nothing behind.
//! - [`runtime_support`]: an OCI bundle run through the `kiln` binary.
//! - [`deploy_support`]: an environment with namespaces, test apps and a router.
//! - [`loadgen`]: a tiny HTTP app and a keep-alive load generator (tests and bench).
//! - [`ingress_support`]: the host ingress, raw HTTP over TCP, a response reader.

pub mod build_support;
pub mod common;
pub mod deploy_support;
pub mod ingress_support;
pub mod loadgen;
pub mod runtime_support;
