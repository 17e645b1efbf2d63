//! What a build reports while it runs, for a progress display (the CLI's) or nothing.

use super::report::{ServiceReport, StepReport};

/// Receives a build's events; every method has a do-nothing default.
pub trait Progress {
    /// A service's build starts; `hit` says the cache has its image (no step will run).
    fn service_started(&mut self, _service: &str, _hit: bool) {}
    /// A step starts (or is looked up in the cache).
    fn step_started(&mut self, _service: &str, _step: &str) {}
    /// A line of a running step's output.
    fn output(&mut self, _service: &str, _step: &str, _line: &str) {}
    /// A step is still running: called every 100 ms or so from the thread that runs the build
    /// (a display redraws its spinner here; the builder runs no thread of its own, and a ticker
    /// thread would stop the runtime from creating the step's container).
    fn tick(&mut self) {}
    /// A step is done.
    fn step_finished(&mut self, _service: &str, _step: &StepReport) {}
    /// A service is built (or tagged from the cache).
    fn service_finished(&mut self, _report: &ServiceReport) {}
}

/// A [`Progress`] that shows nothing.
pub struct Quiet;

impl Progress for Quiet {}
