//! The ingress's bounds: connections per client address and in total, and the deadlines of
//! each phase of a request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bounds an ingress enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once, in total (past it: 503 and close).
    pub max_connections: u64,
    /// Client connections open at once from one address.
    pub max_per_client: u64,
    /// A request head must arrive within this; it also bounds how long a kept-alive connection
    /// may stay idle between requests (the clock starts when the previous response ends).
    pub head_timeout: Duration,
    /// A request body must arrive in full within this of the gate letting it through.
    pub body_timeout: Duration,
    /// The upstream must answer (the response head) within this.
    pub upstream_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_per_client: 1_000,
            head_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(60),
        }
    }
}

/// Counts open client connections, per address and in total.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    total: AtomicU64,
    per: Mutex<HashMap<IpAddr, u64>>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The ingress is full.
    Total,
    /// This client has too many open.
    PerClient,
}

/// One admitted connection; it is counted out when dropped.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    /// Admits a connection from `ip` if both limits allow.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<Slot, Refusal> {
        let mut per = self.per.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= limits.max_connections {
            return Err(Refusal::Total);
        }
        let mine = per.entry(ip).or_insert(0);
        if *mine >= limits.max_per_client {
            return Err(Refusal::PerClient);
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            limiter: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per = self.limiter.per.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
        self.limiter.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_client_and_in_total_and_free_on_drop() {
        let l = Arc::new(ConnLimiter::default());
        let limits = Limits {
            max_connections: 3,
            max_per_client: 2,
            ..Limits::default()
        };
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        let a1 = l.admit(a, &limits).expect("a1");
        let _a2 = l.admit(a, &limits).expect("a2");
        assert_eq!(l.admit(a, &limits).err(), Some(Refusal::PerClient));
        let _b1 = l.admit(b, &limits).expect("b1");
        assert_eq!(l.admit(b, &limits).err(), Some(Refusal::Total));
        drop(a1);
        assert_eq!(l.open(), 2);
        l.admit(b, &limits).expect("room again");
    }
}
