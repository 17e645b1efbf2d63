//! Shim for test files that include `deploy_support/mod.rs`: the fixtures live in kiln-testkit.
pub use kiln_testkit::deploy_support::*;
