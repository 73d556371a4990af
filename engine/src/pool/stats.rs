//! What the throttle did: per batch (for the ledger state the batch served) and per
//! executor (for the whole node).

use std::time::Duration;

/// The throttling one `execute_batch` call met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Capacity errors its items retried (one that ended in `retry_timeout` is not a retry).
    pub capacity_retries: u64,
    /// The highest dispatch delay in force for its items: at any of their dispatches, or
    /// set by any of their capacity errors.
    pub peak_delay: Duration,
    /// Time its items waited for the throttle, summed over items: spacing before their
    /// dispatches and back-off before their retries (not waiting for a pool permit).
    pub throttled: Duration,
}

impl BatchStats {
    /// Adds another batch's figures (the peak is the higher of the two).
    pub fn merge(&mut self, other: &BatchStats) {
        self.capacity_retries += other.capacity_retries;
        self.peak_delay = self.peak_delay.max(other.peak_delay);
        self.throttled = self.throttled.saturating_add(other.throttled);
    }
}

/// Everything an executor has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecutorStats {
    /// Calls made, first attempts and retries.
    pub dispatches: u64,
    /// Calls that succeeded.
    pub successes: u64,
    pub capacity_retries: u64,
    /// Items that gave up with `retry_timeout`.
    pub retry_timeouts: u64,
    /// The highest dispatch delay so far.
    pub peak_delay: Duration,
    /// The dispatch delay now.
    pub current_delay: Duration,
    /// Time spent waiting for the throttle, summed over items.
    pub throttled: Duration,
    /// The most items in flight at once (never above `pool_size`).
    pub peak_in_flight: usize,
}
