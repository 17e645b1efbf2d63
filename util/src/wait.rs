//! Waiting with a deadline: one implementation of "try, pause, try again until time is up".

use std::time::{Duration, Instant};

/// The instant a wait gives up at (or none: a wait without a time limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now().checked_add(timeout))
    }

    /// No deadline: the wait lasts until it is over.
    pub fn never() -> Self {
        Self(None)
    }

    /// `timeout` from now, or [`never`](Self::never) without one.
    pub fn within(timeout: Option<Duration>) -> Self {
        timeout.map_or(Self::never(), Self::after)
    }

    /// The time left (zero once passed; [`Duration::MAX`] without a deadline).
    pub fn remaining(&self) -> Duration {
        self.0.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        })
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }
}

/// Calls `attempt` with the time left until it succeeds; once another `pause` would reach the
/// deadline, the last failure is returned.
pub fn retry<T, E>(
    deadline: Deadline,
    pause: Duration,
    mut attempt: impl FnMut(Duration) -> Result<T, E>,
) -> Result<T, E> {
    loop {
        match attempt(deadline.remaining()) {
            Ok(v) => return Ok(v),
            Err(e) if deadline.remaining() <= pause => return Err(e),
            Err(_) => std::thread::sleep(pause),
        }
    }
}

/// Polls `check` every `pause` until it gives a value (→ `Some`) or the deadline passes
/// (→ `None`); `check` runs at least once, and once more after the deadline's last pause.
pub fn poll<T>(
    deadline: Deadline,
    pause: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if deadline.passed() {
            return None;
        }
        std::thread::sleep(pause.min(deadline.remaining()));
    }
}

/// Polls `done` every `pause` until it is true (→ true) or the deadline passes (→ false).
pub fn until(deadline: Deadline, pause: Duration, mut done: impl FnMut() -> bool) -> bool {
    poll(deadline, pause, || done().then_some(())).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_returns_the_first_success_or_the_last_failure() {
        let mut n = 0;
        let got: Result<u32, u32> = retry(
            Deadline::after(Duration::from_secs(5)),
            Duration::from_millis(1),
            |_| {
                n += 1;
                if n == 3 {
                    Ok(n)
                } else {
                    Err(n)
                }
            },
        );
        assert_eq!(got, Ok(3));
        let start = Instant::now();
        let mut tries = 0;
        let got: Result<(), u32> = retry(
            Deadline::after(Duration::from_millis(30)),
            Duration::from_millis(5),
            |_| {
                tries += 1;
                Err(tries)
            },
        );
        assert_eq!(got, Err(tries));
        assert!(tries > 1 && start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn until_gives_up_at_the_deadline() {
        let start = Instant::now();
        assert!(!until(
            Deadline::after(Duration::from_millis(20)),
            Duration::from_millis(2),
            || false
        ));
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(until(
            Deadline::after(Duration::ZERO),
            Duration::ZERO,
            || true
        ));
    }

    #[test]
    fn poll_returns_the_value_once_there_and_never_waits_without_end() {
        let mut n = 0;
        let got = poll(Deadline::never(), Duration::from_millis(1), || {
            n += 1;
            (n == 4).then_some(n)
        });
        assert_eq!(got, Some(4));
        assert!(!Deadline::never().passed());
        assert_eq!(Deadline::within(None).remaining(), Duration::MAX);
        let start = Instant::now();
        let none: Option<()> = poll(
            Deadline::within(Some(Duration::from_millis(20))),
            Duration::from_secs(10),
            || None,
        );
        assert!(none.is_none());
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(20) && waited < Duration::from_secs(5),
            "a long pause is cut at the deadline: {waited:?}"
        );
    }
}
