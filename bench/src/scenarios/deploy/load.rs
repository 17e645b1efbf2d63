//! Keep-alive clients running around an action, and their results added up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use kiln_router::Endpoint;
use kiln_testkit::loadgen::{self, LoadResult};

/// First failure reasons kept by `sum`.
const KEEP_ERRORS: usize = 5;

/// Runs clients for `before`, calls `during`, runs them `after` more; their results and the
/// whole time.
pub fn under_load(
    target: &Endpoint,
    clients: usize,
    before: Duration,
    after: Duration,
    during: impl FnOnce() -> Result<()>,
) -> Result<(Vec<LoadResult>, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let handles = loadgen::load(target, clients, &stop);
    std::thread::sleep(before);
    let outcome = during();
    std::thread::sleep(after);
    stop.store(true, Ordering::Relaxed);
    let results = handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("load client panicked"))
        })
        .collect::<Result<Vec<_>>>()?;
    let took = t.elapsed();
    outcome?;
    Ok((results, took))
}

/// All clients' results added up (longest is the max; the first few errors kept).
pub fn sum(results: &[LoadResult]) -> LoadResult {
    let mut all = LoadResult::default();
    for r in results {
        all.ok += r.ok;
        all.failed += r.failed;
        all.total += r.total;
        all.longest = all.longest.max(r.longest);
        let room = KEEP_ERRORS.saturating_sub(all.errors.len());
        all.errors.extend(r.errors.iter().take(room).cloned());
    }
    all
}
