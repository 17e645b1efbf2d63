//! The benchmark scenarios: one module each, listed in `ALL`, and the helpers they share.

mod build;
mod deploy;
mod kiln_bin;
mod layer;
mod lifecycle;
mod net;
mod project;
mod registry;
mod unpack;
mod vendor;

use anyhow::Result;

use crate::report::{Params, Report};

/// A named benchmark scenario.
pub struct Scenario {
    /// Name given on the command line.
    pub name: &'static str,
    /// Runs the scenario and returns its report.
    pub run: fn(&Params) -> Result<Report>,
}

/// Every scenario the harness knows.
const ALL: &[Scenario] = &[
    Scenario {
        name: "net",
        run: net::run,
    },
    Scenario {
        name: "deploy",
        run: deploy::run,
    },
    Scenario {
        name: "layer",
        run: layer::run,
    },
    Scenario {
        name: "unpack",
        run: unpack::run,
    },
    Scenario {
        name: "lifecycle",
        run: lifecycle::run,
    },
    Scenario {
        name: "build",
        run: build::run,
    },
    Scenario {
        name: "registry",
        run: registry::run,
    },
    Scenario {
        name: "vendor",
        run: vendor::run,
    },
];

/// Finds a scenario by name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// The names of all scenarios.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|s| s.name).collect()
}
