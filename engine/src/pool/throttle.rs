//! The AIMD throttle: one per executor, shared by every dispatch of every caller.
//!
//! [`AimdDelay`] is the rule alone (ELSPETH's semantics); [`Throttle`] applies it as a
//! dispatch gate: each dispatch, a first attempt or a retry, reserves a moment at least the
//! current delay after the executor's previous dispatch and waits for it. The delay is
//! therefore the spacing between the executor's calls, not a pause each worker takes on its
//! own: ELSPETH's per-worker sleep let `pool_size` retries wake together and burst.

use super::clock::Clock;
use super::config::ThrottleConfig;
use super::stats::ExecutorStats;
use super::sync::{lock, Mutex};
use std::sync::Arc;
use std::time::Duration;

/// The dispatch delay and the rule that moves it.
///
/// - Before any capacity error the delay is the minimum.
/// - A capacity error sets it to `current × backoff_multiplier`, but at least
///   `max(recovery_step, min_delay)`, and at most `max_delay`. From an unthrottled state it
///   therefore *starts* at `max(recovery_step, min_delay)`; once throttled it *multiplies*.
///   (Taking the larger of the two, rather than ELSPETH's "start only when the delay is 0",
///   also restarts properly after recovering to a minimum above 0, where ELSPETH's rule
///   multiplied the minimum instead: a known ELSPETH defect.)
/// - A success takes `recovery_step` off, floored at the minimum.
#[derive(Debug, Clone)]
pub struct AimdDelay {
    config: ThrottleConfig,
    current: Duration,
}

impl AimdDelay {
    pub fn new(config: ThrottleConfig) -> AimdDelay {
        AimdDelay {
            current: config.min_delay(),
            config,
        }
    }

    pub fn current(&self) -> Duration {
        self.current
    }

    /// Backs off after a capacity error; returns the new delay.
    pub fn on_capacity_error(&mut self) -> Duration {
        let c = &self.config;
        let start = c.recovery_step().max(c.min_delay());
        // In whole nanoseconds, so that 100 ms × 2.0 is exactly 200 ms. A product beyond
        // the maximum is the maximum (and a float that large never reaches `from_nanos`).
        let multiplied = self.current.as_nanos() as f64 * c.backoff_multiplier();
        let multiplied = if multiplied >= c.max_delay().as_nanos() as f64 {
            c.max_delay()
        } else {
            Duration::from_nanos(multiplied.round() as u64)
        };
        self.current = multiplied.max(start).min(c.max_delay());
        self.current
    }

    /// Recovers after a success; returns the new delay.
    pub fn on_success(&mut self) -> Duration {
        self.current = self
            .current
            .saturating_sub(self.config.recovery_step())
            .max(self.config.min_delay());
        self.current
    }
}

/// A reserved dispatch: the moment to call at, how long that is from when it was
/// reserved, and the delay that spaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub at: Duration,
    pub wait: Duration,
    pub delay: Duration,
}

/// The shared gate: the delay, the last reserved dispatch, and the executor's figures.
pub(crate) struct Throttle {
    clock: Arc<dyn Clock>,
    state: Mutex<GateState>,
}

struct GateState {
    delay: AimdDelay,
    last_dispatch: Option<Duration>,
    stats: ExecutorStats,
}

impl Throttle {
    pub(crate) fn new(config: ThrottleConfig, clock: Arc<dyn Clock>) -> Throttle {
        let delay = AimdDelay::new(config);
        let stats = ExecutorStats {
            current_delay: delay.current(),
            peak_delay: delay.current(),
            ..ExecutorStats::default()
        };
        Throttle {
            clock,
            state: Mutex::new(GateState {
                delay,
                last_dispatch: None,
                stats,
            }),
        }
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Reserves the next dispatch: no earlier than now, and at least the current delay after
    /// the previous reservation. The caller sleeps until `Slot::at` outside the lock, so
    /// reservations stay in order while nobody waits holding the gate.
    pub(crate) fn reserve(&self) -> Slot {
        let mut s = lock(&self.state);
        let now = self.clock.now();
        let delay = s.delay.current();
        let at = match s.last_dispatch {
            Some(last) => now.max(last.saturating_add(delay)),
            None => now,
        };
        s.last_dispatch = Some(at);
        let wait = at - now;
        s.stats.dispatches += 1;
        s.stats.throttled = s.stats.throttled.saturating_add(wait);
        Slot { at, wait, delay }
    }

    /// A capacity error: backs off and returns the new delay, which the item waits before
    /// it is retried, if it is ([`Throttle::count_retry`]).
    pub(crate) fn on_capacity_error(&self) -> Duration {
        let mut s = lock(&self.state);
        let delay = s.delay.on_capacity_error();
        s.stats.current_delay = delay;
        s.stats.peak_delay = s.stats.peak_delay.max(delay);
        delay
    }

    /// An item is retried after a capacity error, backing off `delay` first (throttled time).
    pub(crate) fn count_retry(&self, delay: Duration) {
        let mut s = lock(&self.state);
        s.stats.capacity_retries += 1;
        s.stats.throttled = s.stats.throttled.saturating_add(delay);
    }

    /// An item gave up after a capacity error (`retry_timeout`).
    pub(crate) fn count_retry_timeout(&self) {
        lock(&self.state).stats.retry_timeouts += 1;
    }

    pub(crate) fn on_success(&self) {
        let mut s = lock(&self.state);
        s.stats.successes += 1;
        s.stats.current_delay = s.delay.on_success();
    }

    pub(crate) fn stats(&self) -> ExecutorStats {
        lock(&self.state).stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolOptions;
    use crate::pool::PoolConfig;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn delay(f: impl FnOnce(&mut PoolOptions)) -> AimdDelay {
        let mut o = PoolOptions::default();
        f(&mut o);
        AimdDelay::new(PoolConfig::try_from(&o).unwrap().throttle().clone())
    }

    /// Replays a script of `'c'` (capacity error) and `'s'` (success) and returns the delay
    /// after each step, in milliseconds.
    fn script(d: &mut AimdDelay, steps: &str) -> Vec<u64> {
        steps
            .chars()
            .map(|c| match c {
                'c' => d.on_capacity_error(),
                _ => d.on_success(),
            })
            .map(|d| d.as_millis() as u64)
            .collect()
    }

    #[test]
    fn defaults_start_at_the_step_double_and_recover_by_the_step() {
        // min 0, max 5000, ×2, step 50.
        let mut d = delay(|_| {});
        assert_eq!(d.current(), Duration::ZERO);
        assert_eq!(
            script(&mut d, "cccsssscs"),
            [50, 100, 200, 150, 100, 50, 0, 50, 0]
        );
    }

    #[test]
    fn capped_at_the_maximum() {
        let mut d = delay(|o| {
            o.max_dispatch_delay_ms = 500;
            o.recovery_step_ms = 100;
        });
        assert_eq!(
            script(&mut d, "ccccccs"),
            [100, 200, 400, 500, 500, 500, 400]
        );
    }

    #[test]
    fn starts_at_the_minimum_when_it_exceeds_the_step_and_floors_there() {
        let mut d = delay(|o| {
            o.min_dispatch_delay_ms = 300;
            o.recovery_step_ms = 100;
            o.backoff_multiplier = 1.5;
        });
        assert_eq!(d.current(), ms(300));
        // 300 × 1.5 = 450 (above max(100, 300)), then 675; down by 100, floored at 300.
        assert_eq!(
            script(&mut d, "ccsssss"),
            [450, 675, 575, 475, 375, 300, 300]
        );
    }

    #[test]
    fn restarts_at_the_step_after_recovering_to_a_small_minimum() {
        // ELSPETH multiplied the 10 ms floor to 20 ms here; the rule says start at 100.
        let mut d = delay(|o| {
            o.min_dispatch_delay_ms = 10;
            o.recovery_step_ms = 100;
        });
        assert_eq!(script(&mut d, "cssc"), [100, 10, 10, 100]);
    }

    #[test]
    fn a_zero_step_with_a_floor_still_backs_off() {
        let mut d = delay(|o| {
            o.min_dispatch_delay_ms = 100;
            o.recovery_step_ms = 0;
        });
        assert_eq!(script(&mut d, "ccs"), [200, 400, 400]);
    }

    // Uses the pool's locks outside a shuttle run, so not in the model-checking build.
    #[cfg(not(feature = "shuttle"))]
    #[test]
    fn the_gate_spaces_reservations_by_the_delay() {
        let clock = Arc::new(crate::pool::VirtualClock::new());
        let o = PoolOptions {
            min_dispatch_delay_ms: 100,
            ..PoolOptions::default()
        };
        let config = PoolConfig::try_from(&o).unwrap();
        let t = Throttle::new(config.throttle().clone(), clock.clone());
        let first = t.reserve();
        assert_eq!((first.at, first.wait), (ms(0), ms(0)));
        let second = t.reserve();
        assert_eq!((second.at, second.wait), (ms(100), ms(100)));
        // Later than the spacing requires: no wait.
        clock.advance(ms(500));
        let third = t.reserve();
        assert_eq!((third.at, third.wait), (ms(500), ms(0)));
        assert_eq!(t.stats().throttled, ms(100));
        assert_eq!(t.stats().dispatches, 3);
    }
}
