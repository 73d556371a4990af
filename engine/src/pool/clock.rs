//! Time as the pool sees it, injected so that tests of the throttle's delays and of the
//! capacity deadline are exact and never sleep for real.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock the executor reads and sleeps on.
pub trait Clock: Send + Sync {
    /// Time since the clock's own origin. Never goes backwards.
    fn now(&self) -> Duration;
    /// Returns once [`Clock::now`] has reached `deadline` (at once if it has).
    fn sleep_until(&self, deadline: Duration);
}

/// The real clock: [`Instant`] and [`std::thread::sleep`].
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep_until(&self, deadline: Duration) {
        // `sleep` may wake early on some platforms; loop until the deadline has passed.
        loop {
            let now = self.now();
            if now >= deadline {
                return;
            }
            std::thread::sleep(deadline - now);
        }
    }
}

/// A clock for tests: time stands still until someone sleeps (which jumps it forward to
/// the sleeper's deadline) or calls [`VirtualClock::advance`] (a simulated latency).
/// Nothing waits for real, so timings computed from it are exact.
#[derive(Debug, Default)]
pub struct VirtualClock {
    nanos: AtomicU64,
}

impl VirtualClock {
    pub fn new() -> VirtualClock {
        VirtualClock::default()
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, deadline: Duration) {
        let deadline = u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(deadline, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_moves_only_when_told() {
        let clock = VirtualClock::new();
        assert_eq!(clock.now(), Duration::ZERO);
        clock.advance(Duration::from_millis(50));
        assert_eq!(clock.now(), Duration::from_millis(50));
        // Sleeping jumps forward to the deadline, never backwards.
        clock.sleep_until(Duration::from_millis(120));
        assert_eq!(clock.now(), Duration::from_millis(120));
        clock.sleep_until(Duration::from_millis(10));
        assert_eq!(clock.now(), Duration::from_millis(120));
    }

    #[test]
    fn system_clock_sleeps_at_least_until_the_deadline() {
        let clock = SystemClock::new();
        let deadline = clock.now() + Duration::from_millis(2);
        clock.sleep_until(deadline);
        assert!(clock.now() >= deadline);
    }
}
