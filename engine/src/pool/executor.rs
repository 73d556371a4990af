//! [`PooledExecutor`]: runs a batch's items concurrently under the pool's permits and
//! throttle, and hands each caller its own results in submission order.

use super::clock::{Clock, SystemClock};
use super::config::PoolConfig;
use super::permits::Permits;
use super::stats::{BatchStats, ExecutorStats};
use super::sync::{lock, scope, spawn_helper, Mutex};
use super::throttle::Throttle;
use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

/// Which call this is, handed to the item's function with the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The item's position in its batch.
    pub index: usize,
    /// 1 for the first call, 2 for the first capacity retry, ...
    pub number: u32,
    /// When the throttle let this call go, on the executor's clock.
    pub dispatched_at: Duration,
}

/// How one call of an item's function failed, as the function classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemError<E> {
    /// The far side is out of capacity (HTTP 429, 503, 529): the executor backs off and
    /// retries the item until its capacity deadline.
    Capacity(E),
    /// Anything else: returned at once, for the caller's own retry policy.
    Other(E),
}

/// Why an item has no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError<E> {
    /// The function's [`ItemError::Other`], unchanged.
    Failed(E),
    /// Capacity errors went on past `max_capacity_retry_seconds` after the first call.
    RetryTimeout {
        /// The last capacity error.
        last: E,
        /// Calls made, the first included.
        attempts: u32,
        /// From the first call to the last capacity error.
        elapsed: Duration,
    },
    /// The function panicked; the panic stayed with this item.
    Panicked { message: String },
}

impl<E> PoolError<E> {
    /// A stable name for the failure, for error rows and the ledger.
    pub fn reason(&self) -> &'static str {
        match self {
            PoolError::Failed(_) => "failed",
            PoolError::RetryTimeout { .. } => "retry_timeout",
            PoolError::Panicked { .. } => "panicked",
        }
    }
}

impl<E: fmt::Display> fmt::Display for PoolError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Failed(e) => write!(f, "{e}"),
            PoolError::RetryTimeout {
                last,
                attempts,
                elapsed,
            } => write!(
                f,
                "retry_timeout: still out of capacity after {attempts} calls over {:.3} s: {last}",
                elapsed.as_secs_f64()
            ),
            PoolError::Panicked { message } => write!(f, "the call panicked: {message}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for PoolError<E> {}

/// What one `execute_batch` call returns.
#[derive(Debug)]
pub struct Batch<R, E> {
    /// One per item, in the order the items were given.
    pub results: Vec<Result<R, PoolError<E>>>,
    /// The throttling this batch met.
    pub stats: BatchStats,
}

/// One per transform node, shared (by reference or `Arc`) by every worker thread.
///
/// The executor holds only what must be shared: the permits that bound work in flight and
/// the throttle. Everything about a batch (its items, their results, the order to return
/// them in) lives in that `execute_batch` call, so concurrent batches cannot see each
/// other's results. See the module documentation for why it works this way.
pub struct PooledExecutor {
    config: PoolConfig,
    permits: Permits,
    throttle: Throttle,
}

impl fmt::Debug for PooledExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledExecutor")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PooledExecutor {
    /// An executor on the real clock.
    pub fn new(config: PoolConfig) -> PooledExecutor {
        PooledExecutor::with_clock(config, Arc::new(SystemClock::new()))
    }

    /// An executor on the given clock (tests use [`super::VirtualClock`]).
    pub fn with_clock(config: PoolConfig, clock: Arc<dyn Clock>) -> PooledExecutor {
        PooledExecutor {
            permits: Permits::new(config.pool_size()),
            throttle: Throttle::new(config.throttle().clone(), clock),
            config,
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Everything this executor has done so far.
    pub fn stats(&self) -> ExecutorStats {
        ExecutorStats {
            peak_in_flight: self.permits.peak_in_use(),
            ..self.throttle.stats()
        }
    }

    /// Runs `work` on every item, concurrently, and returns the results in the items'
    /// order. Blocks until every item has a result.
    ///
    /// - Each item is the call's own snapshot of its context, moved in (hence `'static`:
    ///   an item cannot borrow a context the caller goes on to change). `work` sees it
    ///   only by shared reference, once per attempt.
    /// - At most `pool_size` calls are in flight across every caller of this executor. The
    ///   calling thread runs items itself; a batch of several items also gets up to
    ///   `pool_size - 1` helper threads, which live only for this call.
    /// - A capacity error is retried under the throttle until the item's deadline; any
    ///   other error is returned at once; a panic becomes that item's
    ///   [`PoolError::Panicked`]. No outcome of one item affects another's result.
    /// - `work` must not call `execute_batch` on the same executor: the inner call would
    ///   wait for a permit its own caller holds (with `pool_size` 1, for ever).
    ///
    /// ```compile_fail,E0597
    /// # use attest_engine::pool::{PooledExecutor, PoolConfig, ItemError};
    /// # let exec = PooledExecutor::new(PoolConfig::try_from(&Default::default()).unwrap());
    /// // A context borrowed from the caller is refused: items must be owned snapshots.
    /// let ctx = String::from("state-1");
    /// let items = vec![&ctx];
    /// exec.execute_batch(items, |c, _| Ok::<_, ItemError<()>>(c.len()));
    /// ```
    pub fn execute_batch<T, R, E, F>(&self, items: Vec<T>, work: F) -> Batch<R, E>
    where
        T: Send + 'static,
        R: Send,
        E: Send,
        F: Fn(&T, Attempt) -> Result<R, ItemError<E>> + Sync,
    {
        let n = items.len();
        // The batch's own queue: each item is moved to exactly one thread, with its index.
        let queue = Mutex::new(items.into_iter().enumerate());
        let drain = || {
            let mut done = Vec::new();
            let mut stats = BatchStats::default();
            loop {
                let next = lock(&queue).next();
                let Some((index, item)) = next else {
                    break;
                };
                done.push((index, self.run_item(index, item, &work, &mut stats)));
            }
            (done, stats)
        };
        let helpers = n.min(self.config.pool_size()).saturating_sub(1);
        let (mut done, stats) = scope(|s| {
            let handles: Vec<_> = (0..helpers)
                .filter_map(|_| spawn_helper(s, drain))
                .collect();
            let (mut done, mut stats) = drain();
            for handle in handles {
                match handle.join() {
                    Ok((part, part_stats)) => {
                        done.extend(part);
                        stats.merge(&part_stats);
                    }
                    // Item panics are caught in `run_item`; this is a bug in the executor
                    // itself, and it propagates like one.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            (done, stats)
        });
        // The reorder buffer: every index 0..n appears exactly once, whichever thread ran it.
        done.sort_unstable_by_key(|(index, _)| *index);
        Batch {
            results: done.into_iter().map(|(_, result)| result).collect(),
            stats,
        }
    }

    /// One item, to its result: dispatch through the permits and the gate, retry capacity
    /// errors until the deadline.
    fn run_item<T, R, E, F>(
        &self,
        index: usize,
        item: T,
        work: &F,
        stats: &mut BatchStats,
    ) -> Result<R, PoolError<E>>
    where
        F: Fn(&T, Attempt) -> Result<R, ItemError<E>>,
    {
        let clock = self.throttle.clock();
        let mut number: u32 = 0;
        let mut first_dispatch = None;
        let mut retry_at = None;
        loop {
            number = number.saturating_add(1);
            // Back off before a retry holding no permit, so others' work goes on meanwhile.
            if let Some(at) = retry_at {
                clock.sleep_until(at);
            }
            let permit = self.permits.acquire();
            let slot = self.throttle.reserve();
            stats.throttled = stats.throttled.saturating_add(slot.wait);
            stats.peak_delay = stats.peak_delay.max(slot.delay);
            clock.sleep_until(slot.at);
            let first = *first_dispatch.get_or_insert(slot.at);
            let attempt = Attempt {
                index,
                number,
                dispatched_at: slot.at,
            };
            // The function is shared by the batch's threads and holds nothing the executor
            // relies on, so a panic cannot leave the executor's own state broken.
            let outcome = catch_unwind(AssertUnwindSafe(|| work(&item, attempt)));
            drop(permit);
            match outcome {
                Ok(Ok(result)) => {
                    self.throttle.on_success();
                    return Ok(result);
                }
                Ok(Err(ItemError::Other(e))) => return Err(PoolError::Failed(e)),
                Err(payload) => {
                    return Err(PoolError::Panicked {
                        message: panic_message(&*payload),
                    })
                }
                Ok(Err(ItemError::Capacity(e))) => {
                    let now = clock.now();
                    let elapsed = now.saturating_sub(first);
                    let give_up = elapsed >= self.config.max_capacity_retry();
                    // Every capacity error is a signal to back off, the last one included.
                    let delay = self.throttle.on_capacity_error(!give_up);
                    stats.peak_delay = stats.peak_delay.max(delay);
                    if give_up {
                        return Err(PoolError::RetryTimeout {
                            last: e,
                            attempts: number,
                            elapsed,
                        });
                    }
                    stats.capacity_retries += 1;
                    stats.throttled = stats.throttled.saturating_add(delay);
                    retry_at = Some(now.saturating_add(delay));
                }
            }
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}
