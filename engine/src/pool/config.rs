//! The executor's settings, validated once: a [`PoolConfig`] can only be built from
//! options that satisfy every pool rule, so the executor never meets a pool of size 0 (no
//! permits: every batch would wait forever) or a multiplier that cannot back off.
//!
//! The configuration loader (`config/llm.rs`) applies the same rules first, with the key's
//! file:line:col; these checks make the rules part of the type for every other caller, and
//! `engine/tests/pool_config.rs` checks that the two agree on every input.

use crate::config::PoolOptions;
use std::time::Duration;

/// The AIMD throttle's settings (ELSPETH's `ThrottleConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    min_delay: Duration,
    max_delay: Duration,
    backoff_multiplier: f64,
    recovery_step: Duration,
}

impl ThrottleConfig {
    /// The floor of the dispatch delay, and its value before any capacity error.
    pub fn min_delay(&self) -> Duration {
        self.min_delay
    }
    /// The ceiling of the dispatch delay.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }
    /// The factor a capacity error multiplies the delay by; finite and above 1.
    pub fn backoff_multiplier(&self) -> f64 {
        self.backoff_multiplier
    }
    /// What a success takes off the delay.
    pub fn recovery_step(&self) -> Duration {
        self.recovery_step
    }
}

/// A pooled executor's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pool_size: usize,
    throttle: ThrottleConfig,
    max_capacity_retry: Duration,
}

impl PoolConfig {
    /// The most items in flight at once, across every caller of the executor; at least 1.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }
    pub fn throttle(&self) -> &ThrottleConfig {
        &self.throttle
    }
    /// How long after an item's first dispatch its capacity errors are still retried.
    pub fn max_capacity_retry(&self) -> Duration {
        self.max_capacity_retry
    }
}

/// A pool rule the options break, naming the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PoolConfigError {
    #[error("`pool_size` is 0; expected 1 or more")]
    PoolSize,
    #[error("`max_dispatch_delay_ms` is 0; expected more than 0")]
    MaxDelay,
    #[error(
        "`min_dispatch_delay_ms` ({min}) is greater than `max_dispatch_delay_ms` ({max}); \
         expected min <= max"
    )]
    MinAboveMax { min: u64, max: u64 },
    #[error("`backoff_multiplier` is {0}; expected a finite number more than 1")]
    BackoffMultiplier(f64),
    #[error(
        "`recovery_step_ms` is 0 while `min_dispatch_delay_ms` is 0, so the delay could never \
         come down after a capacity error"
    )]
    NoRecovery,
    #[error("`max_capacity_retry_seconds` is {0}; expected a finite number more than 0")]
    MaxCapacityRetry(f64),
}

impl TryFrom<&PoolOptions> for PoolConfig {
    type Error = PoolConfigError;

    fn try_from(o: &PoolOptions) -> Result<PoolConfig, PoolConfigError> {
        let pool_size = usize::try_from(o.pool_size).unwrap_or(usize::MAX);
        if pool_size == 0 {
            return Err(PoolConfigError::PoolSize);
        }
        if o.max_dispatch_delay_ms == 0 {
            return Err(PoolConfigError::MaxDelay);
        }
        if o.min_dispatch_delay_ms > o.max_dispatch_delay_ms {
            return Err(PoolConfigError::MinAboveMax {
                min: o.min_dispatch_delay_ms,
                max: o.max_dispatch_delay_ms,
            });
        }
        // Written so that NaN fails too.
        if !(o.backoff_multiplier.is_finite() && o.backoff_multiplier > 1.0) {
            return Err(PoolConfigError::BackoffMultiplier(o.backoff_multiplier));
        }
        if o.recovery_step_ms == 0 && o.min_dispatch_delay_ms == 0 {
            return Err(PoolConfigError::NoRecovery);
        }
        let retry = o.max_capacity_retry_seconds;
        if !(retry.is_finite() && retry > 0.0) {
            return Err(PoolConfigError::MaxCapacityRetry(retry));
        }
        Ok(PoolConfig {
            pool_size,
            throttle: ThrottleConfig {
                min_delay: Duration::from_millis(o.min_dispatch_delay_ms),
                max_delay: Duration::from_millis(o.max_dispatch_delay_ms),
                backoff_multiplier: o.backoff_multiplier,
                recovery_step: Duration::from_millis(o.recovery_step_ms),
            },
            // Longer than `Duration` can hold (about 584 billion years): never give up.
            max_capacity_retry: Duration::try_from_secs_f64(retry).unwrap_or(Duration::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut PoolOptions)) -> Result<PoolConfig, PoolConfigError> {
        let mut o = PoolOptions::default();
        f(&mut o);
        PoolConfig::try_from(&o)
    }

    #[test]
    fn defaults_are_elspeths() {
        let c = with(|_| {}).unwrap();
        assert_eq!(c.pool_size(), 1);
        assert_eq!(c.throttle().min_delay(), Duration::ZERO);
        assert_eq!(c.throttle().max_delay(), Duration::from_secs(5));
        assert_eq!(c.throttle().backoff_multiplier(), 2.0);
        assert_eq!(c.throttle().recovery_step(), Duration::from_millis(50));
        assert_eq!(c.max_capacity_retry(), Duration::from_secs(3600));
    }

    #[test]
    fn each_rule_is_refused_with_its_key() {
        assert_eq!(with(|o| o.pool_size = 0), Err(PoolConfigError::PoolSize));
        assert_eq!(
            with(|o| o.max_dispatch_delay_ms = 0),
            Err(PoolConfigError::MaxDelay)
        );
        assert_eq!(
            with(|o| o.min_dispatch_delay_ms = 6000),
            Err(PoolConfigError::MinAboveMax {
                min: 6000,
                max: 5000
            })
        );
        for bad in [1.0, 0.5, f64::NAN, f64::INFINITY] {
            let e = with(|o| o.backoff_multiplier = bad).unwrap_err();
            assert!(e.to_string().contains("`backoff_multiplier`"), "{e}");
        }
        assert_eq!(
            with(|o| o.recovery_step_ms = 0),
            Err(PoolConfigError::NoRecovery)
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = with(|o| o.max_capacity_retry_seconds = bad).unwrap_err();
            assert!(
                e.to_string().contains("`max_capacity_retry_seconds`"),
                "{e}"
            );
        }
    }

    #[test]
    fn edges_that_are_allowed() {
        // A fixed delay, a 0 step with a floor above 0, an absurdly long retry window.
        assert!(with(|o| {
            o.min_dispatch_delay_ms = 5000;
            o.recovery_step_ms = 0;
            o.max_capacity_retry_seconds = 1e300;
        })
        .is_ok_and(|c| c.max_capacity_retry() == Duration::MAX));
    }
}
