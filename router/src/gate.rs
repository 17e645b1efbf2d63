//! Hold, switch, release: an environment's one piece of shared state.
//!
//! Every request passes its environment's gate after its head is read and before anything is
//! sent upstream. While the gate is held, requests wait there (an async wait: their
//! connections stay open and cost no thread); a request that passed holds a [`Ticket`] until
//! its response is relayed, so `hold` can wait for the old upstream to drain, never longer
//! than its own deadline. `release` lets the waiting requests through to whatever upstream is
//! current by then.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::upstream::Upstream;
use crate::endpoint::Endpoint;

/// Counters and state the router reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateStatus {
    /// The current upstream of the main app, as `IP:PORT[@NETNS_PATH]`.
    pub upstream: Option<String>,
    /// The current upstream of each named app.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, String>,
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
    apps: BTreeMap<String, Arc<Upstream>>,
    held_since: Option<Instant>,
    /// The control connection whose end releases the current hold.
    lease: Option<u64>,
    status: GateStatus,
}

/// The gate all requests of one environment pass.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
    /// Signalled when a request ends (for `hold`).
    changed: Condvar,
    /// Bumped on every release (for waiting requests).
    released: watch::Sender<u64>,
    /// How long a refusing upstream is retried.
    retry: Duration,
}

/// A request's pass through the gate, held until its response is relayed.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    /// Where the request goes.
    pub upstream: Arc<Upstream>,
    /// How long it waited at a held gate.
    pub waited: Duration,
}

/// A request waiting at a held gate; counted out when it passes or its client goes.
struct Waiting<'a>(&'a Gate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.status.waiting = s.status.waiting.saturating_sub(1);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.status.in_flight = s.status.in_flight.saturating_sub(1);
        self.gate.changed.notify_all();
    }
}

impl Gate {
    /// A gate with `upstream` (or none yet), held or open; a refusing upstream is retried for
    /// `retry` before a request fails.
    pub fn new(upstream: Option<Endpoint>, held: bool, retry: Duration) -> Self {
        let gate = Self {
            state: Mutex::default(),
            changed: Condvar::new(),
            released: watch::Sender::new(0),
            retry,
        };
        {
            let mut s = gate.lock();
            if let Some(e) = upstream {
                s.status.upstream = Some(e.to_string());
                s.upstream = Some(Arc::new(Upstream::new(e, retry)));
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

    /// Waits (async) while held; then the upstream of `app` (`None`: the main app), or
    /// `None` when there is none to send to.
    pub async fn admit(self: &Arc<Self>, app: Option<&str>) -> Option<Ticket> {
        let start = Instant::now();
        let mut waiting = None;
        loop {
            let mut rx = {
                let mut s = self.lock();
                if !s.status.held {
                    if let Some(w) = waiting.take() {
                        drop(s);
                        drop::<Waiting<'_>>(w);
                        s = self.lock();
                        s.status.held_total += 1;
                        let w = start.elapsed();
                        s.status.longest_hold_ms = s.status.longest_hold_ms.max(ms(w));
                    }
                    let upstream = match app {
                        Some(a) => s.apps.get(a).or(s.upstream.as_ref()),
                        None => s.upstream.as_ref(),
                    }?
                    .clone();
                    s.status.in_flight += 1;
                    return Some(Ticket {
                        gate: Arc::clone(self),
                        upstream,
                        waited: start.elapsed(),
                    });
                }
                if waiting.is_none() {
                    s.status.waiting += 1;
                    waiting = Some(Waiting(self));
                }
                self.released.subscribe()
            };
            // A closed channel cannot happen (the gate owns the sender); either way, look again.
            let _ = rx.changed().await;
        }
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

    /// Sends requests admitted from now on to `endpoint` (for `app`, or the main app); the
    /// old upstream's idle connections are closed when its last request ends.
    pub fn switch(&self, endpoint: Endpoint, app: Option<&str>) {
        let mut s = self.lock();
        let up = Arc::new(Upstream::new(endpoint.clone(), self.retry));
        match app {
            Some(a) => {
                s.status.apps.insert(a.to_string(), endpoint.to_string());
                s.apps.insert(a.to_string(), up);
            }
            None => {
                s.status.upstream = Some(endpoint.to_string());
                s.upstream = Some(up);
            }
        }
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
        self.released.send_modify(|g| *g = g.wrapping_add(1));
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

    /// How long a refusing upstream is retried.
    pub fn retry(&self) -> Duration {
        self.retry
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

    fn gate(upstream: Option<Endpoint>, held: bool) -> Arc<Gate> {
        Arc::new(Gate::new(upstream, held, Duration::from_secs(1)))
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_held_request_passes_after_release_to_the_new_upstream() {
        let rt = runtime();
        let gate = gate(Some(endpoint(1)), false);
        assert!(gate.hold(Duration::from_secs(1)), "nothing in flight");
        let g = Arc::clone(&gate);
        let waiter = rt.spawn(async move {
            g.admit(None)
                .await
                .map(|t| (t.upstream.endpoint.clone(), t.waited))
        });
        while gate.status().waiting == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        gate.switch(endpoint(2), None);
        assert_eq!(gate.release(), 1);
        let (went_to, waited) = rt.block_on(waiter).expect("join").expect("admitted");
        assert_eq!(went_to, endpoint(2));
        assert!(waited > Duration::ZERO);
        let st = gate.status();
        assert_eq!(
            (st.held, st.waiting, st.in_flight, st.held_total),
            (false, 0, 0, 1)
        );
        assert!(st.last_hold_ms.is_some());
    }

    #[test]
    fn hold_waits_for_requests_in_flight_but_never_past_its_deadline() {
        let rt = runtime();
        let gate = gate(Some(endpoint(1)), false);
        let ticket = rt.block_on(gate.admit(None)).expect("open gate admits");
        let t = Instant::now();
        assert!(!gate.hold(Duration::from_millis(50)), "one still in flight");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
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
    fn a_waiting_request_whose_client_goes_is_counted_out() {
        let rt = runtime();
        let gate = gate(Some(endpoint(1)), true);
        let g = Arc::clone(&gate);
        let waiter = rt.spawn(async move { g.admit(None).await.is_some() });
        while gate.status().waiting == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        waiter.abort();
        let _ = rt.block_on(waiter);
        assert_eq!(gate.status().waiting, 0);
    }

    #[test]
    fn a_lease_releases_its_hold_when_it_ends_and_only_its_own() {
        let gate = gate(Some(endpoint(1)), true);
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
    fn an_open_gate_without_upstream_admits_nothing_and_apps_fall_back_to_main() {
        let rt = runtime();
        assert!(rt.block_on(gate(None, false).admit(None)).is_none());
        let g = gate(Some(endpoint(1)), false);
        g.switch(endpoint(2), Some("api"));
        let to = |app| {
            rt.block_on(g.admit(app))
                .map(|t| t.upstream.endpoint.clone())
        };
        assert_eq!(to(Some("api")), Some(endpoint(2)));
        assert_eq!(to(Some("other")), Some(endpoint(1)));
        assert_eq!(to(None), Some(endpoint(1)));
    }
}
