//! Pooled execution of external calls: [`PooledExecutor`] and its AIMD throttle.
//!
//! Generic over the work item and its result; it knows nothing of HTTP or the ledger.
//! A transform node makes one executor and shares it with every worker thread; each
//! worker calls [`PooledExecutor::execute_batch`] with the items of its row (one for a
//! single `llm` call, one per query for multi-query, one per member row for `llm_batch`).
//!
//! # Ordering and isolation (ELSPETH seeds 000 and 002)
//!
//! ELSPETH's executor kept one reorder buffer for all batches, so two concurrent batches
//! drained each other's results; its fix serialised batches with a lock. Here there is no
//! executor-wide buffer to share. Each `execute_batch` call owns its queue of items and the
//! vector its results are gathered into, both on its own stack; its helper threads are
//! scoped to the call and return what they computed, tagged with the item's index, when the
//! call joins them. The results are then sorted by that index. Another batch's result
//! cannot reach this vector because no other batch can name it, and batches never wait on
//! one another except for pool permits.
//!
//! # Snapshots (seed 001)
//!
//! ELSPETH's workers read a per-run context that the orchestrator kept changing. Here an
//! item is moved into the executor (`T: Send + 'static`: it cannot borrow the caller's
//! variables), moved again to the one thread that runs it, and lent to the call function
//! immutably. The function itself is `Fn + Sync`, so it cannot carry mutable per-row state
//! either. What a call sees is what its item held when it was submitted.
//!
//! # Concurrency
//!
//! At most `pool_size` calls are in flight across all callers: a permit is taken before
//! each call (retries included) and given back as soon as it returns. Permits are handed
//! out in arrival order, so no caller can be overtaken indefinitely.
//!
//! The calling thread runs items itself rather than handing them to a standing pool of
//! threads. A worker blocks on its row's results either way, so a standing pool would add
//! two thread hand-offs per call and nothing else: rows are already in flight together
//! because the engine's workers call the executor at the same time, and `pool_size`
//! workers calling at once fill the pool. (The run gives a calling plan half as many
//! workers again, `run::call_workers`, so that rows preparing and recording their requests
//! outside the pool do not leave its permits idle.) Only a batch of several items needs more
//! threads, and it gets up to `pool_size - 1` helpers scoped to the call, which can
//! borrow the call's function and queue directly. `docs/benchmarks.md` has the figures.
//!
//! # Throttling
//!
//! [`AimdDelay`] holds the delay and ELSPETH's rule for it; the executor's gate spaces
//! every dispatch (first calls and retries, across all callers) at least the current delay
//! apart. A call that reports [`ItemError::Capacity`] backs the delay off at once; the item
//! then waits the delay (holding no permit) and is retried until
//! `max_capacity_retry_seconds` have passed since its first dispatch, then fails with
//! [`PoolError::RetryTimeout`]. Any other error is returned at once. Time comes from an
//! injected [`Clock`], so tests run on [`VirtualClock`].
//!
//! # Rounds: retries are prepared by the submitter (the replay rule)
//!
//! An audited call's index is taken when its request is recorded, and re-execution
//! answers each call by (state, index), so the order in which a state's calls are
//! prepared must not depend on thread timing (`calls/mod.rs`). A capacity retry is a new
//! call, so the executor does not prepare it on whichever thread met the error. A batch
//! runs in rounds ([`PooledExecutor::execute_prepared`]): the calling thread prepares the
//! round's items in item order ([`Submit::prepare`]), the round runs concurrently, and
//! only when the whole round is back does the calling thread decide, again in item order,
//! which capacity failures are retried ([`Submit::retry`]) and prepare them as the next
//! round. The throttle and the deadline stay here: the submitter is told whether the
//! deadline has passed, and re-execution may instead follow what the record says the
//! recorded run decided. A retry therefore waits for the slowest call of its round, which
//! costs at most one call's latency on top of the back-off.

mod clock;
mod config;
mod executor;
mod permits;
mod stats;
mod sync;
mod throttle;

#[cfg(all(test, feature = "shuttle"))]
mod model_check;

pub use clock::{Clock, SystemClock, VirtualClock};
pub use config::{PoolConfig, PoolConfigError, ThrottleConfig};
pub use executor::{Attempt, Batch, ItemError, PoolError, PooledExecutor, Submit};
pub use stats::{BatchStats, ExecutorStats};
pub use throttle::AimdDelay;
