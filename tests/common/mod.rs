//! Shim for test files that say `mod common;`: the fixtures live in kiln-testkit.
pub use kiln_testkit::common::*;
