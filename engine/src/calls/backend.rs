//! The seam between an audited call and the outside world.
//!
//! The audited client ([`super::CallContext`]) allocates the call's index and records the
//! request; a [`CallBackend`] then answers it. [`super::LiveBackend`] sends the request
//! (ureq, with a timeout); [`super::RecordedBackend`] answers from an earlier run's record
//! and sends nothing, which is what `attest replay` and `attest resume` need. Neither
//! writes to the ledger: recording stays with the client and its [`super::Journal`].

use super::record::{CallFailure, Prepared, Response};
use attest_ledger::{Hash32, LedgerError, StateId, TokenId};

/// Which call is being answered.
#[derive(Clone, Copy, Debug)]
pub struct CallKey<'a> {
    pub state: &'a StateId,
    pub index: u32,
}

/// What a call came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Response(Response),
    /// No response: refused, timed out, reset, ...
    Failed(CallFailure),
}

/// A backend that could not answer at all (the state is boxed: this error is rare, and
/// the `Ok` path should not pay for its size). Not a property of the call (those are
/// [`Answer::Failed`]): re-execution stops and reports it as a divergence.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("CALL_MISSING: call {index} of state {state} is not in the record")]
    Missing { state: Box<StateId>, index: u32 },
    #[error(
        "CALL_REQUEST_CHANGED: call {index} of state {state}: the request now hashes to \
         {now}, the record has {recorded}"
    )]
    RequestChanged {
        state: Box<StateId>,
        index: u32,
        recorded: Hash32,
        now: Hash32,
    },
    #[error("CALL_INCOMPLETE: call {index} of state {state} was recorded without an answer")]
    Incomplete { state: Box<StateId>, index: u32 },
    #[error("CALL_UNREADABLE: call {index} of state {state}: {why}")]
    Unreadable {
        state: Box<StateId>,
        index: u32,
        why: String,
    },
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
}

impl BackendError {
    /// The failure code `attest replay` reports.
    pub fn code(&self) -> &'static str {
        match self {
            BackendError::Missing { .. } => "CALL_MISSING",
            BackendError::RequestChanged { .. } => "CALL_REQUEST_CHANGED",
            BackendError::Incomplete { .. } => "CALL_INCOMPLETE",
            BackendError::Unreadable { .. } => "CALL_UNREADABLE",
            BackendError::Ledger(_) => "LEDGER",
        }
    }
}

/// Answers calls. Shared by every worker thread.
pub trait CallBackend: Send + Sync {
    /// Answers the call `key` whose request is `request` (already recorded by the caller).
    fn perform(&self, key: CallKey<'_>, request: &Prepared) -> Result<Answer, BackendError>;

    /// Whether the recorded run called again after call `key` met a capacity error: a
    /// later call of the same state asks the same `request` for the same `served` token.
    /// `None` when there is no record to follow (a live run), and the pooled executor's
    /// own deadline decides. Re-execution follows the record, because the deadline is a
    /// matter of wall-clock time that a re-execution cannot reproduce.
    fn recorded_retry(
        &self,
        key: CallKey<'_>,
        request: &Hash32,
        served: Option<&TokenId>,
    ) -> Result<Option<bool>, BackendError> {
        let _ = (key, request, served);
        Ok(None)
    }
}
