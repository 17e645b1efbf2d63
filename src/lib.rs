//! kiln's library half: `deploy` (environments, the router, volumes, health) composes the
//! crates for the `kiln` binary, the end-to-end tests and the bench.

pub mod deploy;
