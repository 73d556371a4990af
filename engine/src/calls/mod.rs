//! Audited external calls: every request a plugin sends out, and every answer it gets,
//! goes through here and into the ledger.
//!
//! - [`context`]: the [`CallContext`] a plugin receives, bound to one open state, and the
//!   [`CallScope`] the executor holds to close it. Call indices come from the ledger's
//!   per-state allocator, so any number of clients on one state share one sequence
//!   (seed 004), and a context cannot call once its state has closed.
//! - [`record`]: a request and a response as plugins build and read them, and their
//!   canonical JSON records (what the ledger stores and lineage shows).
//! - [`redact`]: credentials and configured secrets removed before anything is hashed or
//!   stored.
//! - [`backend`]: the seam between a call and the outside world: [`LiveBackend`] sends it
//!   with ureq, [`RecordedBackend`] answers it from an earlier run's record and sends
//!   nothing (replay, resume).
//!
//! # Order of calls within one state: the replay rule
//!
//! A call is identified by (state, index), and re-execution answers it from the record
//! with the same (state, index), after checking that the request hashes the same. For
//! that to be deterministic, **indices are allocated in submission order, before
//! dispatch**: [`CallContext::prepare`] records the request and takes the next index on the
//! thread that submits it; only then may the [`PendingCall`] be sent, from any thread, in
//! any order, concurrently with others. A plugin that makes several calls for one state
//! prepares them in an order that depends only on its input (query order, member order),
//! and a retried call is prepared again by the submitter, after the round it belongs to.
//! Re-execution then allocates the same indices for the same requests, whatever order
//! the answers arrive in. `docs/replay.md` states the same rule for users.
//!
//! The pooled executor keeps this rule for capacity retries by running a state's calls in
//! rounds, each prepared on the submitting thread (`crate::pool`, `execute_prepared`), and
//! `crate::transforms::pooled` is where the two meet. Whether a capacity error is retried
//! is decided live by the pool's deadline and in re-execution by the record
//! ([`CallContext::recorded_retry`]).

pub mod backend;
pub mod context;
mod live;
pub mod record;
mod recorded;
pub mod redact;

pub use backend::{Answer, BackendError, CallBackend, CallKey};
pub use context::{CallContext, CallError, CallFault, CallScope, Journal, PendingCall, Verdict};
pub use live::LiveBackend;
pub use record::{
    CallFailure, FailureKind, Prepared, Request, RequestBody, Response, ResponseBody,
};
pub use recorded::RecordedBackend;
pub use redact::Redactor;
