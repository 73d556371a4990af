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
    /// This is [`PooledExecutor::execute_prepared`] with nothing to prepare.
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
        self.execute_prepared(items, NothingToPrepare, |item: &T, (), attempt| {
            work(item, attempt)
        })
    }

    /// Runs a batch in **rounds**, so that everything that must happen in a deterministic
    /// order happens on the calling thread (the replay rule of `calls/mod.rs`):
    ///
    /// 1. The caller's [`Submit::prepare`] runs for each item of the round, in item order,
    ///    on the calling thread (an audited call records its request and takes its index
    ///    here). An item whose preparation fails ends with [`PoolError::Failed`].
    /// 2. The round's prepared items are dispatched concurrently under the permits and the
    ///    throttle, exactly as [`PooledExecutor::execute_batch`] describes; `work` gets the
    ///    item and what was prepared for it.
    /// 3. When every item of the round has come back, the items that met a capacity error
    ///    are offered to [`Submit::retry`], in item order, on the calling thread, with the
    ///    pool's own verdict (`expired`: `max_capacity_retry_seconds` have passed since
    ///    the item's first dispatch). Those it retries form the next round, each waiting
    ///    out its back-off first; the others end with [`PoolError::RetryTimeout`].
    ///
    /// The throttle backs off at each capacity error as it happens, whoever retries.
    pub fn execute_prepared<T, P, R, E, S, F>(
        &self,
        items: Vec<T>,
        mut submit: S,
        work: F,
    ) -> Batch<R, E>
    where
        T: Send + 'static,
        P: Send,
        R: Send,
        E: Send,
        S: Submit<T, P, E>,
        F: Fn(&T, P, Attempt) -> Result<R, ItemError<E>> + Sync,
    {
        let mut slots: Vec<Slot<T, R, E>> = items
            .into_iter()
            .map(|item| Slot {
                item: Some(item),
                attempts: 0,
                first_dispatch: None,
                retry_at: None,
                result: None,
            })
            .collect();
        let mut stats = BatchStats::default();
        let mut waiting: Vec<usize> = (0..slots.len()).collect();
        while !waiting.is_empty() {
            // 1. Prepare, in item order, on this thread.
            let mut round = Vec::with_capacity(waiting.len());
            for index in waiting.drain(..) {
                let slot = &mut slots[index];
                let Some(item) = slot.item.take() else {
                    continue;
                };
                let number = slot.attempts.saturating_add(1);
                match submit.prepare(&item, number) {
                    Ok(prepared) => round.push(Job {
                        index,
                        item,
                        prepared,
                        number,
                        not_before: slot.retry_at,
                    }),
                    Err(e) => slot.result = Some(Err(PoolError::Failed(e))),
                }
            }
            // 2. Dispatch the round.
            let mut done = self.run_round(round, &work, &mut stats);
            done.sort_unstable_by_key(|d| d.index);
            // 3. Decide the retries, in item order, on this thread.
            for d in done {
                let slot = &mut slots[d.index];
                slot.attempts = d.number;
                let first = *slot.first_dispatch.get_or_insert(d.dispatched_at);
                match d.outcome {
                    Ran::Done(result) => slot.result = Some(result),
                    Ran::Capacity { error, at, delay } => {
                        let elapsed = at.saturating_sub(first);
                        let expired = elapsed >= self.config.max_capacity_retry();
                        if submit.retry(&d.item, &error, expired) {
                            self.throttle.count_retry(delay);
                            stats.capacity_retries += 1;
                            stats.throttled = stats.throttled.saturating_add(delay);
                            slot.retry_at = Some(at.saturating_add(delay));
                            slot.item = Some(d.item);
                            waiting.push(d.index);
                        } else {
                            self.throttle.count_retry_timeout();
                            slot.result = Some(Err(PoolError::RetryTimeout {
                                last: error,
                                attempts: d.number,
                                elapsed,
                            }));
                        }
                    }
                }
            }
        }
        Batch {
            results: slots
                .into_iter()
                .map(|s| {
                    // Every slot ends with a result: each round either settles an item or
                    // puts it back in `waiting`, and the loop runs until none waits.
                    s.result.unwrap_or(Err(PoolError::Panicked {
                        message: "the executor lost an item's result".into(),
                    }))
                })
                .collect(),
            stats,
        }
    }

    /// Runs one round's jobs concurrently: the calling thread and up to `pool_size - 1`
    /// helpers scoped to the round take jobs from the round's own queue.
    fn run_round<T, P, R, E, F>(
        &self,
        round: Vec<Job<T, P>>,
        work: &F,
        stats: &mut BatchStats,
    ) -> Vec<Done<T, R, E>>
    where
        T: Send,
        P: Send,
        R: Send,
        E: Send,
        F: Fn(&T, P, Attempt) -> Result<R, ItemError<E>> + Sync,
    {
        let n = round.len();
        // The round's own queue: each job is moved to exactly one thread.
        let queue = Mutex::new(round.into_iter());
        let drain = || {
            let mut done = Vec::new();
            let mut stats = BatchStats::default();
            loop {
                let next = lock(&queue).next();
                let Some(job) = next else {
                    break;
                };
                done.push(self.run_job(job, work, &mut stats));
            }
            (done, stats)
        };
        let helpers = n.min(self.config.pool_size()).saturating_sub(1);
        let (done, round_stats) = scope(|s| {
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
                    // Item panics are caught in `run_job`; this is a bug in the executor
                    // itself, and it propagates like one.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            (done, stats)
        });
        stats.merge(&round_stats);
        done
    }

    /// One dispatch of one item: wait out its back-off (holding no permit), take a permit
    /// and a slot of the gate, call.
    fn run_job<T, P, R, E, F>(
        &self,
        job: Job<T, P>,
        work: &F,
        stats: &mut BatchStats,
    ) -> Done<T, R, E>
    where
        F: Fn(&T, P, Attempt) -> Result<R, ItemError<E>>,
    {
        let clock = self.throttle.clock();
        if let Some(at) = job.not_before {
            clock.sleep_until(at);
        }
        let permit = self.permits.acquire();
        let slot = self.throttle.reserve();
        stats.throttled = stats.throttled.saturating_add(slot.wait);
        stats.peak_delay = stats.peak_delay.max(slot.delay);
        clock.sleep_until(slot.at);
        let attempt = Attempt {
            index: job.index,
            number: job.number,
            dispatched_at: slot.at,
        };
        let Job { item, prepared, .. } = job;
        // The function is shared by the round's threads and holds nothing the executor
        // relies on, so a panic cannot leave the executor's own state broken.
        let outcome = catch_unwind(AssertUnwindSafe(|| work(&item, prepared, attempt)));
        drop(permit);
        let outcome = match outcome {
            Ok(Ok(result)) => {
                self.throttle.on_success();
                Ran::Done(Ok(result))
            }
            Ok(Err(ItemError::Other(e))) => Ran::Done(Err(PoolError::Failed(e))),
            Err(payload) => Ran::Done(Err(PoolError::Panicked {
                message: panic_message(&*payload),
            })),
            Ok(Err(ItemError::Capacity(error))) => {
                // Every capacity error is a signal to back off, at once, for everyone
                // (the last one of an item that then gives up included).
                let delay = self.throttle.on_capacity_error();
                stats.peak_delay = stats.peak_delay.max(delay);
                Ran::Capacity {
                    error,
                    at: clock.now(),
                    delay,
                }
            }
        };
        Done {
            index: attempt.index,
            number: attempt.number,
            dispatched_at: attempt.dispatched_at,
            item,
            outcome,
        }
    }
}

/// What the calling thread does for each dispatch of an item, and after each capacity
/// error, in item order (see [`PooledExecutor::execute_prepared`]).
pub trait Submit<T, P, E> {
    /// What to send for attempt `number` (1 for the first) of `item`. An error ends the
    /// item with [`PoolError::Failed`], unsent.
    fn prepare(&mut self, item: &T, number: u32) -> Result<P, E>;

    /// Whether to call `item` again after the capacity error `last`. `expired` is the
    /// pool's rule: `max_capacity_retry_seconds` have passed since its first dispatch.
    /// The default follows it; re-execution follows the record instead.
    fn retry(&mut self, item: &T, last: &E, expired: bool) -> bool {
        let _ = (item, last);
        !expired
    }
}

/// The [`Submit`] of [`PooledExecutor::execute_batch`]: nothing to prepare, the pool's
/// deadline decides.
struct NothingToPrepare;

impl<T, E> Submit<T, (), E> for NothingToPrepare {
    fn prepare(&mut self, _: &T, _: u32) -> Result<(), E> {
        Ok(())
    }
}

/// An item between rounds.
struct Slot<T, R, E> {
    /// `None` while the item is out in a round, and once it has its result.
    item: Option<T>,
    /// Dispatches so far.
    attempts: u32,
    first_dispatch: Option<Duration>,
    /// When its back-off after a capacity error ends.
    retry_at: Option<Duration>,
    result: Option<Result<R, PoolError<E>>>,
}

/// One dispatch to make in a round.
struct Job<T, P> {
    index: usize,
    item: T,
    prepared: P,
    number: u32,
    not_before: Option<Duration>,
}

/// A dispatch made, with the item handed back for the calling thread.
struct Done<T, R, E> {
    index: usize,
    number: u32,
    dispatched_at: Duration,
    item: T,
    outcome: Ran<R, E>,
}

enum Ran<R, E> {
    Done(Result<R, PoolError<E>>),
    /// Out of capacity at `at`; the throttle backed off to `delay`.
    Capacity {
        error: E,
        at: Duration,
        delay: Duration,
    },
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
