//! Answering calls from an earlier run's record, sending nothing.

use super::backend::{Answer, BackendError, CallBackend, CallKey};
use super::record::{CallFailure, Prepared, Response};
use attest_ledger::{Hash32, Ledger, RunId, TokenId};

/// Answers call (state, index) with what run `run` recorded for the same (state, index),
/// after checking that the request hashes to the recorded request hash. Reads the ledger
/// and never writes it.
pub struct RecordedBackend {
    ledger: Ledger,
    run: RunId,
}

impl RecordedBackend {
    pub fn new(ledger: Ledger, run: RunId) -> RecordedBackend {
        RecordedBackend { ledger, run }
    }
}

impl CallBackend for RecordedBackend {
    fn recorded_retry(
        &self,
        key: CallKey<'_>,
        request: &Hash32,
        served: Option<&TokenId>,
    ) -> Result<Option<bool>, BackendError> {
        // Calls are numbered without gaps, so the state's later calls are the indices
        // after this one until the first that is not recorded.
        let mut index = key.index;
        loop {
            index = match index.checked_add(1) {
                Some(i) => i,
                None => return Ok(Some(false)),
            };
            match self.ledger.call_record(&self.run, key.state, index)? {
                None => return Ok(Some(false)),
                Some(rec) if rec.request == *request && rec.served.as_ref() == served => {
                    return Ok(Some(true))
                }
                Some(_) => {}
            }
        }
    }

    fn perform(&self, key: CallKey<'_>, request: &Prepared) -> Result<Answer, BackendError> {
        let state = || Box::new(key.state.clone());
        let index = key.index;
        let rec = self
            .ledger
            .call_record(&self.run, key.state, index)?
            .ok_or_else(|| BackendError::Missing {
                state: state(),
                index,
            })?;
        if rec.request != request.hash {
            return Err(BackendError::RequestChanged {
                state: state(),
                index,
                recorded: rec.request,
                now: request.hash,
            });
        }
        let done = rec.completion.ok_or_else(|| BackendError::Incomplete {
            state: state(),
            index,
        })?;
        let unreadable = |why: String| BackendError::Unreadable {
            state: state(),
            index,
            why,
        };
        let hash = done
            .response
            .ok_or_else(|| unreadable("the completion names no answer payload".into()))?;
        let bytes = self
            .ledger
            .payload(&hash)?
            .ok_or_else(|| unreadable(format!("payload {hash} is not stored (purged?)")))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| unreadable(format!("payload {hash} is not JSON: {e}")))?;
        if value.get("error").is_some() {
            CallFailure::from_record(&value)
                .map(Answer::Failed)
                .ok_or_else(|| unreadable(format!("payload {hash} is not a call error")))
        } else {
            Response::from_record(&value)
                .map(Answer::Response)
                .ok_or_else(|| unreadable(format!("payload {hash} is not a call response")))
        }
    }
}
