//! Shim for test files that include `runtime_support/mod.rs`: the fixtures live in kiln-testkit.
pub use kiln_testkit::runtime_support::*;
