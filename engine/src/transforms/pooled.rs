//! Audited calls sent through a node's pooled executor: the one place where the audited
//! client ([`CallContext`]) meets the pool ([`PooledExecutor`]).
//!
//! The calls of one state (a row's query, a row's several queries, a batch's member rows)
//! are one [`PooledExecutor::execute_prepared`] batch. Each round's requests are recorded
//! and take their indices on the calling thread, in call order; a capacity retry is
//! recorded again, as a new call, by the calling thread after its round. So a state's
//! indices depend only on its calls and on which of them met capacity errors, and
//! re-execution answers every call, retries included, by (state, index). Whether a
//! capacity error is retried is the pool's deadline in a live run and the record's
//! decision in a re-execution ([`CallContext::recorded_retry`]), since the deadline is
//! wall-clock time. What the throttle did is added to the state's pool statistics.

use crate::calls::{CallContext, CallError, PendingCall, Request, Response, Verdict};
use crate::plan::TransformError;
use crate::pool::{ItemError, PoolError, PooledExecutor, Submit};
use crate::transforms::calling::{call_error, is_capacity_status};
use attest_ledger::{Hash32, TokenId};
use serde_json::json;

/// One call to make: its request and, for a batch's state, the member token it serves.
#[derive(Clone)]
pub struct PooledCall {
    pub request: Request,
    pub served: Option<TokenId>,
}

/// How the node treats capacity errors (HTTP 429, 503, 529).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// Retried by the pool's AIMD throttle until `max_capacity_retry_seconds`, then
    /// `retry_timeout` (`pool_size` above 1).
    Throttled,
    /// Returned like any other retryable error (`pool_size` 1: ELSPETH has no pool then).
    Returned,
}

/// Sends `calls` for the state `ctx` is bound to, concurrently through `pool`, and returns
/// each call's judged answer or row error, in call order. `kind` names the client in the
/// record; `permanent` is the reason given to errors not worth retrying (`llm_call_failed`).
pub fn send_all<T, J>(
    pool: &PooledExecutor,
    ctx: &CallContext,
    kind: &str,
    permanent: &str,
    capacity: Capacity,
    calls: Vec<PooledCall>,
    judge: J,
) -> Vec<Result<T, TransformError>>
where
    T: Send,
    J: Fn(&Response) -> Result<T, TransformError> + Sync,
{
    let submitter = Submitter {
        ctx,
        kind,
        permanent,
    };
    let batch = pool.execute_prepared(calls, submitter, |_call, pending: PendingCall, _| {
        let index = pending.index();
        let request = pending.request_hash();
        let failed = |error: TransformError| Failed {
            error,
            call: Some((index, request)),
        };
        match pending.send(|resp| {
            judge(resp).map_err(|error| Judged {
                error,
                capacity: is_capacity_status(resp.status),
            })
        }) {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(Judged {
                error,
                capacity: true,
            })) if capacity == Capacity::Throttled => Err(ItemError::Capacity(failed(error))),
            Ok(Err(j)) => Err(ItemError::Other(failed(j.error))),
            Err(e) => Err(ItemError::Other(failed(call_error(e, permanent)))),
        }
    });
    ctx.record_pool(&batch.stats);
    batch
        .results
        .into_iter()
        .map(|r| {
            r.map_err(|e| match e {
                PoolError::Failed(f) => f.error,
                // Only what the record decides (not the elapsed time, nor the configured
                // deadline), so that re-execution states the same error.
                PoolError::RetryTimeout { last, attempts, .. } => TransformError::new(json!({
                    "reason": "retry_timeout",
                    "attempts": attempts,
                    "last_error": last.error.reason,
                })),
                PoolError::Panicked { message } => TransformError::new(json!({
                    "reason": permanent,
                    "error": format!("judging the answer panicked: {message}"),
                })),
            })
        })
        .collect()
}

/// A row error, with the call it judged (index and request hash), if one was made.
struct Failed {
    error: TransformError,
    call: Option<(u32, Option<Hash32>)>,
}

/// A rejected response, and whether the status said the far side is out of capacity.
/// Recorded on the call like the row error it carries.
struct Judged {
    error: TransformError,
    capacity: bool,
}

impl Verdict for Judged {
    fn message(&self) -> String {
        self.error.message()
    }
    fn retryable(&self) -> bool {
        self.error.retryable
    }
}

/// Records each round's requests, in call order, on the calling thread.
struct Submitter<'a> {
    ctx: &'a CallContext,
    kind: &'a str,
    permanent: &'a str,
}

impl Submit<PooledCall, PendingCall, Failed> for Submitter<'_> {
    fn prepare(&mut self, call: &PooledCall, _attempt: u32) -> Result<PendingCall, Failed> {
        self.ctx
            .prepare_serving(self.kind, call.request.clone(), call.served.clone())
            .map_err(|e: CallError| Failed {
                error: call_error(e, self.permanent),
                call: None,
            })
    }

    fn retry(&mut self, call: &PooledCall, last: &Failed, expired: bool) -> bool {
        let Some((index, Some(request))) = last.call else {
            return !expired;
        };
        match self
            .ctx
            .recorded_retry(index, &request, call.served.as_ref())
        {
            Ok(Some(retried)) => retried,
            Ok(None) => !expired,
            // The record could not be read: the fault is kept on the state and stops the
            // run; calling again would only meet it again.
            Err(_) => false,
        }
    }
}
