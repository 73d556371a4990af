//! Answering the calls of a resumed attempt from the attempt it continues, where that one
//! got an answer, and sending only the rest (`attest resume`).
//!
//! A crash while a node was calling out leaves its state open with calls recorded, some
//! with their answers. The resume closes that state as interrupted and the node runs again
//! as the next attempt. Its calls are prepared in the same order (the replay rule in
//! [`super`]), so call `i` of the new attempt asks what call `i` of the interrupted one
//! asked. Where that call's response is recorded, the new call is answered with it and
//! sent nowhere: a request that was answered is not sent twice. The answer is recorded
//! with a marker naming the call that was really sent ([`Reused`]). A call whose answer
//! is not recorded (it was allocated and the run stopped, or it got no response at all)
//! is sent: nobody can tell whether the first one went out, and its completion in the
//! interrupted attempt says so (`CallFailure::interrupted`).

use super::backend::{Answer, BackendError, CallBackend, CallKey};
use super::record::{Prepared, Reused};
use super::recorded::recorded_answer;
use attest_ledger::{Hash32, Ledger, RunId, StateId, TokenId};
use std::sync::Arc;

/// Answers call `i` from call `i` of the earliest interrupted attempt that asked the same
/// request and has its response recorded; otherwise asks `live`.
pub struct ReusingBackend {
    ledger: Ledger,
    run: RunId,
    /// The interrupted attempts of the same node and subject, oldest first.
    interrupted: Vec<StateId>,
    live: Arc<dyn CallBackend>,
}

impl ReusingBackend {
    pub fn new(
        ledger: Ledger,
        run: RunId,
        interrupted: Vec<StateId>,
        live: Arc<dyn CallBackend>,
    ) -> ReusingBackend {
        ReusingBackend {
            ledger,
            run,
            interrupted,
            live,
        }
    }

    /// The recorded response for call `index` asking `request`, if an interrupted attempt
    /// has one. A response that was itself reused keeps naming the call that was sent.
    fn recorded(&self, index: u32, request: &Hash32) -> Result<Option<Answer>, BackendError> {
        for state in &self.interrupted {
            let key = CallKey { state, index };
            let Some((asked, Some(answer))) = recorded_answer(&self.ledger, &self.run, key)? else {
                continue;
            };
            if asked != *request {
                continue;
            }
            match answer {
                Answer::Response(response) => {
                    return Ok(Some(Answer::Reused {
                        response,
                        from: Reused {
                            state: state.to_string(),
                            index,
                        },
                    }))
                }
                reused @ Answer::Reused { .. } => return Ok(Some(reused)),
                // No response (refused, timed out, interrupted): asking again is a retry.
                Answer::Failed(_) => {}
            }
        }
        Ok(None)
    }
}

impl CallBackend for ReusingBackend {
    fn perform(&self, key: CallKey<'_>, request: &Prepared) -> Result<Answer, BackendError> {
        match self.recorded(key.index, &request.hash)? {
            Some(answer) => Ok(answer),
            None => self.live.perform(key, request),
        }
    }

    /// Capacity retries are decided live, as in any run: the pool's deadline.
    fn recorded_retry(
        &self,
        key: CallKey<'_>,
        request: &Hash32,
        served: Option<&TokenId>,
    ) -> Result<Option<bool>, BackendError> {
        self.live.recorded_retry(key, request, served)
    }
}
