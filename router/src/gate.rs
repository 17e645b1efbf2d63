//! Hold, switch, release: the router's one piece of shared state.
//!
//! Every request passes the gate after its head is read and before anything is sent upstream.
//! While the gate is held, requests wait there (their connections stay open and accepted); a
//! request that passed holds a [`Ticket`] until its response is relayed, so `hold` can wait
//! for the old upstream to drain. `release` lets the waiting requests through to whatever
//! upstream is current by then.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::upstream::Upstream;
use crate::endpoint::Endpoint;

/// Counters and state the router reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateStatus {
    /// The current upstream, as `IP:PORT[@NETNS_PATH]`.
    pub upstream: Option<String>,
    /// Whether requests are being held.
    pub held: bool,
    /// Requests waiting at the gate now.
    pub waiting: u64,
    /// Requests between the gate and the end of their response now.
    pub in_flight: u64,
    /// Client connections accepted since start.
    pub connections: u64,
    /// Responses relayed in full.
    pub served: u64,
    /// Requests answered with an error (502/503) or cut off by the upstream.
    pub failed: u64,
    /// Requests whose client went away before its response was written.
    pub aborted: u64,
    /// Requests that waited at a held gate, since start.
    pub held_total: u64,
    /// Longest time a request waited at a held gate, in milliseconds.
    pub longest_hold_ms: f64,
    /// Length of the last hold (hold → release), in milliseconds.
    pub last_hold_ms: Option<f64>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its response was relayed in full.
    Served,
    /// The router answered with an error, or the upstream broke the response.
    Failed,
    /// The client went away.
    Aborted,
}

/// The mutable part, under the gate's lock.
#[derive(Debug, Default)]
struct State {
    upstream: Option<Arc<Upstream>>,
    held_since: Option<Instant>,
    /// The control connection whose end releases the current hold.
    lease: Option<u64>,
    status: GateStatus,
}

/// The gate all requests pass.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

/// A request's pass through the gate, held until its response is relayed.
#[derive(Debug)]
pub struct Ticket<'a> {
    gate: &'a Gate,
    /// Where the request goes.
    pub upstream: Arc<Upstream>,
    /// How long it waited at a held gate.
    pub waited: Duration,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.status.in_flight = s.status.in_flight.saturating_sub(1);
        self.gate.changed.notify_all();
    }
}

impl Gate {
    /// A gate with `upstream` (or none yet), held or open.
    pub fn new(upstream: Option<Endpoint>, held: bool) -> Self {
        let gate = Self::default();
        {
            let mut s = gate.lock();
            if let Some(e) = upstream {
                s.status.upstream = Some(e.to_string());
                s.upstream = Some(Arc::new(Upstream::new(e)));
            }
            if held {
                s.status.held = true;
                s.held_since = Some(Instant::now());
            }
        }
        gate
    }

    /// The state, even if a thread panicked while holding the lock (counters stay usable).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits while held; `None` when open with no upstream to send to.
    pub fn admit(&self) -> Option<Ticket<'_>> {
        let mut s = self.lock();
        let start = Instant::now();
        let mut waited = None;
        while s.status.held {
            if waited.is_none() {
                s.status.waiting += 1;
                waited = Some(start);
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        let waited = waited.map_or(Duration::ZERO, |t| {
            s.status.waiting -= 1;
            s.status.held_total += 1;
            let w = t.elapsed();
            s.status.longest_hold_ms = s.status.longest_hold_ms.max(ms(w));
            w
        });
        let upstream = s.upstream.clone()?;
        s.status.in_flight += 1;
        Some(Ticket {
            gate: self,
            upstream,
            waited,
        })
    }

    /// Holds new requests and waits up to `timeout` for those in flight to finish; true when
    /// none is left in flight.
    pub fn hold(&self, timeout: Duration) -> bool {
        let mut s = self.lock();
        if !s.status.held {
            s.status.held = true;
            s.held_since = Some(Instant::now());
        }
        let deadline = Instant::now() + timeout;
        while s.status.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Sends requests admitted from now on to `endpoint`; the old upstream's idle
    /// connections are closed when its last request ends.
    pub fn switch(&self, endpoint: Endpoint) {
        let mut s = self.lock();
        s.status.upstream = Some(endpoint.to_string());
        s.upstream = Some(Arc::new(Upstream::new(endpoint)));
    }

    /// Ties the current hold (or the next, until a release) to `session`.
    pub fn lease(&self, session: u64) {
        self.lock().lease = Some(session);
    }

    /// Ends `session`'s lease: opens the gate if `session` still holds it; returns whether it
    /// did.
    pub fn end_lease(&self, session: u64) -> bool {
        let held = {
            let mut s = self.lock();
            if s.lease != Some(session) {
                return false;
            }
            s.lease = None;
            s.status.held
        };
        held && {
            self.release();
            true
        }
    }

    /// Opens the gate; returns how many requests were waiting.
    pub fn release(&self) -> u64 {
        let mut s = self.lock();
        if let Some(since) = s.held_since.take() {
            s.status.last_hold_ms = Some(ms(since.elapsed()));
        }
        s.status.held = false;
        s.lease = None;
        self.changed.notify_all();
        s.status.waiting
    }

    /// Counts a request's end.
    pub fn record(&self, outcome: Outcome) {
        let mut s = self.lock();
        match outcome {
            Outcome::Served => s.status.served += 1,
            Outcome::Failed => s.status.failed += 1,
            Outcome::Aborted => s.status.aborted += 1,
        }
    }

    /// Counts an accepted client connection.
    pub fn connection(&self) {
        self.lock().status.connections += 1;
    }

    /// A snapshot of the counters.
    pub fn status(&self) -> GateStatus {
        self.lock().status.clone()
    }
}

/// A duration in milliseconds, fractional.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16) -> Endpoint {
        Endpoint::host(([127, 0, 0, 1], port).into())
    }

    #[test]
    fn a_held_request_passes_after_release_to_the_new_upstream() {
        let gate = Gate::new(Some(endpoint(1)), false);
        assert!(gate.hold(Duration::from_secs(1)), "nothing in flight");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                gate.admit()
                    .map(|t| (t.upstream.endpoint.clone(), t.waited))
            });
            while gate.status().waiting == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            gate.switch(endpoint(2));
            assert_eq!(gate.release(), 1);
            let (went_to, waited) = waiter.join().expect("join").expect("admitted");
            assert_eq!(went_to, endpoint(2));
            assert!(waited > Duration::ZERO);
        });
        let st = gate.status();
        assert_eq!(
            (st.held, st.waiting, st.in_flight, st.held_total),
            (false, 0, 0, 1)
        );
        assert!(st.last_hold_ms.is_some());
    }

    #[test]
    fn hold_waits_for_requests_in_flight() {
        let gate = Gate::new(Some(endpoint(1)), false);
        let ticket = gate.admit().expect("open gate admits");
        assert!(!gate.hold(Duration::from_millis(20)), "one still in flight");
        std::thread::scope(|s| {
            let holder = s.spawn(|| gate.hold(Duration::from_secs(10)));
            std::thread::sleep(Duration::from_millis(10));
            drop(ticket);
            assert!(
                holder.join().expect("join"),
                "drained once the ticket ended"
            );
        });
    }

    #[test]
    fn a_lease_releases_its_hold_when_it_ends_and_only_its_own() {
        let gate = Gate::new(Some(endpoint(1)), true);
        gate.lease(1);
        assert!(gate.end_lease(1), "the dead session's hold is released");
        assert!(!gate.status().held);
        assert!(!gate.end_lease(1), "a lease ends once");
        // A release ends the lease: a manual hold afterwards is not the session's.
        gate.lease(4);
        gate.release();
        assert!(gate.hold(Duration::from_secs(1)));
        assert!(!gate.end_lease(4));
        gate.release();
        // A later deploy's hold outlives an earlier session ending late.
        gate.lease(2);
        gate.lease(3);
        assert!(gate.hold(Duration::from_secs(1)));
        assert!(!gate.end_lease(2));
        assert!(gate.status().held);
        assert!(gate.end_lease(3));
        assert!(!gate.status().held);
    }

    #[test]
    fn an_open_gate_without_upstream_admits_nothing() {
        assert!(Gate::new(None, false).admit().is_none());
    }
}
