//! Waiting with a deadline: one implementation of "try, pause, try again until time is up".

use std::time::{Duration, Instant};

/// The instant a wait gives up at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// The time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
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

/// Polls `done` every `pause` until it is true (→ true) or the deadline passes (→ false).
pub fn until(deadline: Deadline, pause: Duration, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if deadline.passed() {
            return false;
        }
        std::thread::sleep(pause);
    }
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
}
