//! External calls in re-execution: every call is answered from the record by (state, call
//! index), after its request is checked against the recorded one, and nothing is sent
//! ([`crate::calls::RecordedBackend`]). A call the record cannot answer stops the
//! re-execution; this module keeps such refusals whole (rows run concurrently, so more
//! than one may be refused before the run stops), so the report can name the call that
//! comes first in the record, its state and its place, rather than a run that failed.

use super::compare::{Divergence, DivergenceCode};
use crate::calls::{Answer, BackendError, CallBackend, CallKey, Prepared, RecordedBackend};
use attest_ledger::{Ledger, LedgerError, RunId, StateId};
use std::sync::Mutex;

/// A call the record could not answer.
#[derive(Debug)]
struct Refusal {
    state: StateId,
    index: u32,
    error: String,
    kind: RefusalKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefusalKind {
    Missing,
    RequestChanged {
        recorded: attest_ledger::Hash32,
        now: attest_ledger::Hash32,
    },
    Incomplete,
    Unreadable,
    Ledger,
}

/// The recorded backend, keeping the calls it could not answer.
pub(crate) struct RecordedCalls {
    inner: RecordedBackend,
    refused: Mutex<Vec<Refusal>>,
}

impl RecordedCalls {
    pub(crate) fn new(ledger: Ledger, run: RunId) -> RecordedCalls {
        RecordedCalls {
            inner: RecordedBackend::new(ledger, run),
            refused: Mutex::new(Vec::new()),
        }
    }

    /// The divergence of the call the record could not answer that comes first in the
    /// record (a call the record has, by its allocation's seq, before one it lacks).
    pub(crate) fn divergence(
        &self,
        ledger: &Ledger,
        run: &RunId,
    ) -> Result<Option<Divergence>, LedgerError> {
        let refused = self
            .refused
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        let mut first: Option<Divergence> = None;
        for r in refused {
            let d = describe(ledger, run, r)?;
            let earlier = match (&first, d.seq) {
                (None, _) => true,
                (Some(f), Some(seq)) => f.seq.is_none_or(|s| seq < s),
                (Some(_), None) => false,
            };
            if earlier {
                first = Some(d);
            }
        }
        Ok(first)
    }
}

/// A refusal as a divergence, placed at the record's allocation of the call where the
/// record has it.
fn describe(ledger: &Ledger, run: &RunId, r: Refusal) -> Result<Divergence, LedgerError> {
    let recorded = ledger.call_record(run, &r.state, r.index)?;
    let call = format!("call {} of state {}", r.index, r.state);
    let (code, expected, found) = match r.kind {
        RefusalKind::Missing => (
            DivergenceCode::CallMissing,
            "no such call".to_string(),
            call,
        ),
        RefusalKind::RequestChanged { recorded, now } => (
            DivergenceCode::CallRequestChanged,
            format!("request {recorded}"),
            format!("request {now}"),
        ),
        RefusalKind::Incomplete => (
            DivergenceCode::CallIncomplete,
            "an answered call".to_string(),
            "a call recorded without an answer".to_string(),
        ),
        RefusalKind::Unreadable | RefusalKind::Ledger => (
            DivergenceCode::CallUnreadable,
            "a recorded answer".to_string(),
            "an answer that cannot be read".to_string(),
        ),
    };
    Ok(Divergence {
        code,
        seq: recorded.map(|c| c.allocated_seq),
        node: Some(r.state.node.to_string()),
        token: Some(r.state.subject.to_string()),
        expected,
        found,
        message: r.error,
    })
}

impl CallBackend for RecordedCalls {
    /// The record's retry decisions after capacity errors (the pooled executor's deadline
    /// is wall-clock time; re-execution follows what the recorded run did).
    fn recorded_retry(
        &self,
        key: CallKey<'_>,
        request: &attest_ledger::Hash32,
        served: Option<&attest_ledger::TokenId>,
    ) -> Result<Option<bool>, BackendError> {
        self.inner.recorded_retry(key, request, served)
    }

    fn perform(&self, key: CallKey<'_>, request: &Prepared) -> Result<Answer, BackendError> {
        let answered = self.inner.perform(key, request);
        if let Err(e) = &answered {
            let kind = match e {
                BackendError::Missing { .. } => RefusalKind::Missing,
                BackendError::RequestChanged { recorded, now, .. } => RefusalKind::RequestChanged {
                    recorded: *recorded,
                    now: *now,
                },
                BackendError::Incomplete { .. } => RefusalKind::Incomplete,
                BackendError::Unreadable { .. } => RefusalKind::Unreadable,
                BackendError::Ledger(_) => RefusalKind::Ledger,
            };
            if let Ok(mut refused) = self.refused.lock() {
                refused.push(Refusal {
                    state: key.state.clone(),
                    index: key.index,
                    error: e.to_string(),
                    kind,
                });
            }
        }
        answered
    }
}
