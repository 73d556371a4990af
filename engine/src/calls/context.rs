//! The audited client: a [`CallContext`] bound to one open state.
//!
//! The executor opens a [`CallScope`] for a state before a calling plugin runs, hands the
//! plugin the scope's [`CallContext`] by value, and closes the scope when the plugin
//! returns, before it records the state's close. Closing waits for calls in flight and
//! then refuses every further call from any clone of the context, so a call on a closed
//! state is impossible through this API as well as refused by the ledger's rules.
//!
//! Each call, in order:
//! 1. the request is encoded and redacted ([`super::Request::prepare`]);
//! 2. the [`Journal`] allocates its index and records the request (the ledger's per-state
//!    allocator: indices 0, 1, 2, ... whichever client or thread asks);
//! 3. the [`CallBackend`] answers it (live, or from a record);
//! 4. the answer is redacted, the plugin judges it ([`Verdict`]), and the journal records
//!    the response or error with that verdict: every allocated call gets a completion,
//!    even one dropped before it was sent.

use super::backend::{Answer, BackendError, CallBackend, CallKey};
use super::record::{CallFailure, Prepared, Request, Response};
use super::redact::Redactor;
use crate::pool::BatchStats;
use attest_ledger::{CallHandle, CallOutcome, Hash32, Pending, StateHandle, StateId, TokenId};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Where a state's calls are numbered and recorded.
pub enum Journal {
    /// The ledger: indices from its per-state allocator, requests and answers recorded.
    Ledger(StateHandle),
    /// Nowhere: indices counted here from 0 and nothing written. For re-execution against
    /// a record (`attest replay`), which must not write to the ledger it checks.
    Detached { state: StateId, next: AtomicU32 },
}

impl Journal {
    pub fn detached(state: StateId) -> Journal {
        Journal::Detached {
            state,
            next: AtomicU32::new(0),
        }
    }

    fn state(&self) -> &StateId {
        match self {
            Journal::Ledger(h) => h.id(),
            Journal::Detached { state, .. } => state,
        }
    }

    fn allocate(
        &self,
        kind: &str,
        request: &Prepared,
        served: Option<TokenId>,
    ) -> Result<u32, String> {
        match self {
            Journal::Ledger(h) => h
                .allocate_call(kind, request.record.clone(), served)
                .map(|c| c.index)
                .map_err(|e| e.to_string()),
            Journal::Detached { next, .. } => Ok(next.fetch_add(1, Ordering::SeqCst)),
        }
    }

    /// Sends the completion without waiting for it to be stored: the writer applies
    /// commits in the order they are sent, so the state's close, sent later, follows it.
    /// Whoever closes the scope checks the returned commit.
    fn complete(
        &self,
        index: u32,
        outcome: CallOutcome,
        answer: Vec<u8>,
        latency_us: u64,
    ) -> Result<Option<Pending>, String> {
        match self {
            Journal::Ledger(h) => {
                let call = CallHandle {
                    state: h.id().clone(),
                    index,
                };
                h.complete_call_nowait(&call, outcome, Some(answer), latency_us)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            Journal::Detached { .. } => Ok(None),
        }
    }
}

/// A plugin's judgement of a response, recorded on the call: an accepted response is
/// recorded `responded`; a rejected one `errored`, with this message and retryability
/// (and the response itself kept).
pub trait Verdict {
    fn message(&self) -> String;
    fn retryable(&self) -> bool;
}

/// Why a call did not produce the plugin's result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The call was made and got no response (refused, timeout, reset, ...). Recorded.
    #[error("{0}")]
    Failed(CallFailure),
    /// No call was made: the context has no state open for calls, or the request could
    /// not be encoded.
    #[error("{0}")]
    NotMade(String),
    /// The call could not be recorded, or (re-execution) answered: the run cannot go on.
    /// The executor also learns of it from [`CallScope::close`], whatever the plugin does.
    #[error("{0}")]
    Fault(CallFault),
}

/// A failure of the audit machinery rather than of the call: the executor stops the run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFault {
    #[error("recording a call failed: {0}")]
    Ledger(String),
    /// Re-execution could not answer from the record (`CALL_MISSING`, ...).
    #[error("{message}")]
    Replay { code: &'static str, message: String },
}

impl CallFault {
    fn replay(e: &BackendError) -> CallFault {
        match e {
            BackendError::Ledger(l) => CallFault::Ledger(l.to_string()),
            other => CallFault::Replay {
                code: other.code(),
                message: other.to_string(),
            },
        }
    }
}

struct Gate {
    open: bool,
    in_flight: usize,
    /// The first fault any call met.
    fault: Option<CallFault>,
    /// Completion commits sent and not yet confirmed.
    unconfirmed: Vec<Pending>,
    /// What a pooled executor's throttle did for this state's calls, if one served them.
    pool: Option<BatchStats>,
}

struct Scope {
    journal: Journal,
    backend: Arc<dyn CallBackend>,
    redactor: Arc<Redactor>,
    gate: Mutex<Gate>,
    idle: Condvar,
}

impl Scope {
    fn gate(&self) -> MutexGuard<'_, Gate> {
        // A panic elsewhere while holding the lock leaves the counters intact.
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fault(&self, f: CallFault) -> CallFault {
        self.gate().fault.get_or_insert(f.clone());
        f
    }
}

/// Counts a call as in flight from its allocation until its completion is recorded.
struct InFlight(Arc<Scope>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut g = self.0.gate();
        g.in_flight -= 1;
        if g.in_flight == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// What a plugin uses to make audited calls for the state it is running in. Owned and
/// immutable; clone it into any thread (every clone shares the state's one sequence of
/// indices). A plugin that makes no calls gets [`CallContext::none`].
#[derive(Clone)]
pub struct CallContext {
    scope: Option<Arc<Scope>>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scope {
            Some(s) => write!(f, "CallContext({})", s.journal.state()),
            None => write!(f, "CallContext(no calls)"),
        }
    }
}

/// Held by the executor while a state is open for calls.
pub struct CallScope {
    scope: Arc<Scope>,
    closed: bool,
}

impl CallScope {
    /// Opens `journal`'s state for calls answered by `backend`, redacting with `redactor`.
    pub fn open(
        journal: Journal,
        backend: Arc<dyn CallBackend>,
        redactor: Arc<Redactor>,
    ) -> (CallScope, CallContext) {
        let scope = Arc::new(Scope {
            journal,
            backend,
            redactor,
            gate: Mutex::new(Gate {
                open: true,
                in_flight: 0,
                fault: None,
                unconfirmed: Vec::new(),
                pool: None,
            }),
            idle: Condvar::new(),
        });
        (
            CallScope {
                scope: scope.clone(),
                closed: false,
            },
            CallContext { scope: Some(scope) },
        )
    }

    /// What the pooled executor's throttle did for this state's calls, summed over every
    /// batch a plugin reported ([`CallContext::record_pool`]); `None` if no pool served it.
    pub fn pool_stats(&self) -> Option<BatchStats> {
        self.scope.gate().pool
    }

    /// Refuses further calls, waits until every call in flight has its completion
    /// recorded, and reports the first fault a call met (which stops the run).
    pub fn close(self) -> Result<(), CallFault> {
        for p in self.close_unconfirmed()? {
            p.wait().map_err(|e| CallFault::Ledger(e.to_string()))?;
        }
        Ok(())
    }

    /// As [`CallScope::close`], except that the completions are only sent, not confirmed:
    /// the commits to check are returned. Anything the caller sends afterwards (the
    /// state's close) is applied after them; the executor checks them with the row.
    pub fn close_unconfirmed(mut self) -> Result<Vec<Pending>, CallFault> {
        self.shut()
    }

    fn shut(&mut self) -> Result<Vec<Pending>, CallFault> {
        self.closed = true;
        let mut g = self.scope.gate();
        g.open = false;
        while g.in_flight > 0 {
            g = self.scope.idle.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        let unconfirmed = std::mem::take(&mut g.unconfirmed);
        match g.fault.take() {
            Some(f) => Err(f),
            None => Ok(unconfirmed),
        }
    }
}

impl Drop for CallScope {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.shut();
        }
    }
}

impl CallContext {
    /// A context in which every call is refused: for plugins that make none.
    pub fn none() -> CallContext {
        CallContext { scope: None }
    }

    /// The state calls are recorded under, if any.
    pub fn state(&self) -> Option<&StateId> {
        self.scope.as_ref().map(|s| s.journal.state())
    }

    /// The token the state processes (none for a batch state).
    pub fn token(&self) -> Option<&TokenId> {
        match &self.state()?.subject {
            attest_ledger::Subject::Token(t) => Some(t),
            attest_ledger::Subject::Batch(_) => None,
        }
    }

    /// Records `request` and allocates its index, on this thread, before anything is sent
    /// (see the module's replay rule). `kind` names the client (`llm`, `http`).
    pub fn prepare(&self, kind: &str, request: Request) -> Result<PendingCall, CallError> {
        self.prepare_serving(kind, request, None)
    }

    /// As [`CallContext::prepare`], for a call a batch's state makes on behalf of one of
    /// its members: the record names the member token it `served` (the ledger checks that
    /// it is a member of the batch; on a token's state it may only name that token).
    pub fn prepare_serving(
        &self,
        kind: &str,
        request: Request,
        served: Option<TokenId>,
    ) -> Result<PendingCall, CallError> {
        let scope = self
            .scope
            .as_ref()
            .ok_or_else(|| CallError::NotMade("this plugin's context makes no calls".into()))?;
        let prepared = request
            .prepare(&scope.redactor)
            .map_err(|e| CallError::NotMade(scope.redactor.text(&e).into_owned()))?;
        {
            let mut g = scope.gate();
            if !g.open {
                return Err(CallError::NotMade(format!(
                    "state {} is closed: no more calls can be made for it",
                    scope.journal.state()
                )));
            }
            g.in_flight += 1;
        }
        let guard = InFlight(scope.clone());
        let index = scope
            .journal
            .allocate(kind, &prepared, served.clone())
            .map_err(|e| CallError::Fault(scope.fault(CallFault::Ledger(e))))?;
        Ok(PendingCall {
            scope: scope.clone(),
            index,
            served,
            prepared: Some(prepared),
            _in_flight: guard,
        })
    }

    /// Whether to call again after call `index` (asking `request` for `served`) met a
    /// capacity error, when the backend answers from a record: what the recorded run did
    /// ([`CallBackend::recorded_retry`]). `None` in a live run. A record that cannot be
    /// read is a fault, which stops the run like any other.
    pub fn recorded_retry(
        &self,
        index: u32,
        request: &Hash32,
        served: Option<&TokenId>,
    ) -> Result<Option<bool>, CallError> {
        let Some(scope) = &self.scope else {
            return Ok(None);
        };
        let key = CallKey {
            state: scope.journal.state(),
            index,
        };
        scope
            .backend
            .recorded_retry(key, request, served)
            .map_err(|e| CallError::Fault(scope.fault(CallFault::replay(&e))))
    }

    /// Adds what a pooled executor's throttle did for one batch of this state's calls to
    /// the state's pool statistics, which the executor records before the state closes.
    pub fn record_pool(&self, stats: &BatchStats) {
        if let Some(scope) = &self.scope {
            let mut g = scope.gate();
            g.pool.get_or_insert_with(BatchStats::default).merge(stats);
        }
    }

    /// [`CallContext::prepare`] and [`PendingCall::send`] in one.
    pub fn call<T, E: Verdict>(
        &self,
        kind: &str,
        request: Request,
        judge: impl FnOnce(&Response) -> Result<T, E>,
    ) -> Result<Result<T, E>, CallError> {
        self.prepare(kind, request)?.send(judge)
    }
}

/// A call whose request is recorded and whose index is allocated, not yet sent. Send it
/// from any thread; dropping it unsent records it as abandoned.
pub struct PendingCall {
    scope: Arc<Scope>,
    index: u32,
    served: Option<TokenId>,
    prepared: Option<Prepared>,
    _in_flight: InFlight,
}

impl PendingCall {
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The member token this call serves, if it was prepared for one.
    pub fn served(&self) -> Option<&TokenId> {
        self.served.as_ref()
    }

    /// The hash of the recorded (redacted) request.
    pub fn request_hash(&self) -> Option<attest_ledger::Hash32> {
        self.prepared.as_ref().map(|p| p.hash)
    }

    /// Sends the call, lets `judge` accept or reject the response, and records the
    /// outcome. `Ok(verdict)` when a response arrived (the verdict is recorded with it);
    /// `Err` when there was none, or the record could not be written.
    pub fn send<T, E: Verdict>(
        mut self,
        judge: impl FnOnce(&Response) -> Result<T, E>,
    ) -> Result<Result<T, E>, CallError> {
        let Some(prepared) = self.prepared.take() else {
            return Err(CallError::NotMade("the call was already sent".into()));
        };
        let scope = self.scope.clone();
        let state = scope.journal.state();
        let started = Instant::now();
        let answer = scope.backend.perform(
            CallKey {
                state,
                index: self.index,
            },
            &prepared,
        );
        let latency_us = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        let redactor = &scope.redactor;
        let (outcome, record, result) = match answer {
            Ok(Answer::Response(resp)) => {
                let resp = resp.redacted(redactor);
                let verdict = judge(&resp);
                let outcome = match &verdict {
                    Ok(_) => CallOutcome::Responded {
                        status: Some(resp.status),
                    },
                    Err(e) => CallOutcome::Errored {
                        error: redactor.text(&e.message()).into_owned(),
                        retryable: e.retryable(),
                    },
                };
                (outcome, resp.to_record(), Ok(verdict))
            }
            Ok(Answer::Failed(f)) => {
                let f = CallFailure {
                    kind: f.kind,
                    message: redactor.text(&f.message).into_owned(),
                };
                let outcome = CallOutcome::Errored {
                    error: f.to_string(),
                    retryable: f.retryable(),
                };
                (outcome, f.to_record(), Err(CallError::Failed(f)))
            }
            Err(e) => {
                let fault = scope.fault(CallFault::replay(&e));
                let message = redactor.text(&fault.to_string()).into_owned();
                let f = CallFailure {
                    kind: super::record::FailureKind::Io,
                    message: message.clone(),
                };
                let outcome = CallOutcome::Errored {
                    error: message,
                    retryable: false,
                };
                (outcome, f.to_record(), Err(CallError::Fault(fault)))
            }
        };
        self.complete(outcome, &record, latency_us)?;
        result
    }

    fn complete(
        &self,
        outcome: CallOutcome,
        record: &serde_json::Value,
        latency_us: u64,
    ) -> Result<(), CallError> {
        let scope = &self.scope;
        let bytes = attest_ledger::canonical::to_canonical_bytes(record)
            .map_err(|e| CallError::Fault(scope.fault(CallFault::Ledger(e.to_string()))))?;
        let sent = scope
            .journal
            .complete(self.index, outcome, bytes, latency_us)
            .map_err(|e| CallError::Fault(scope.fault(CallFault::Ledger(e))))?;
        if let Some(p) = sent {
            scope.gate().unconfirmed.push(p);
        }
        Ok(())
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if self.prepared.take().is_some() {
            // Allocated but never sent: it still gets a completion, so no call is lost.
            let f = CallFailure {
                kind: super::record::FailureKind::InvalidRequest,
                message: "abandoned before it was sent".into(),
            };
            let outcome = CallOutcome::Errored {
                error: f.to_string(),
                retryable: false,
            };
            let _ = self.complete(outcome, &f.to_record(), 0);
        }
    }
}
