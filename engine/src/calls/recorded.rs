//! Answering calls from an earlier run's record, sending nothing.

use super::backend::{Answer, BackendError, CallBackend, CallKey};
use super::record::{CallFailure, Prepared, Response, Reused};
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
        let (recorded, answer) =
            recorded_answer(&self.ledger, &self.run, key)?.ok_or_else(|| {
                BackendError::Missing {
                    state: state(),
                    index,
                }
            })?;
        if recorded != request.hash {
            return Err(BackendError::RequestChanged {
                state: state(),
                index,
                recorded,
                now: request.hash,
            });
        }
        answer.ok_or_else(|| BackendError::Incomplete {
            state: state(),
            index,
        })
    }
}

/// What run `run` recorded for call `key`: its request hash and, once it was completed,
/// its answer as recorded (a response, a reused response with its marker, or the error
/// of a call that got none). `None` when the call is not in the record.
pub(crate) fn recorded_answer(
    ledger: &Ledger,
    run: &RunId,
    key: CallKey<'_>,
) -> Result<Option<(Hash32, Option<Answer>)>, BackendError> {
    let Some(rec) = ledger.call_record(run, key.state, key.index)? else {
        return Ok(None);
    };
    let Some(done) = rec.completion else {
        return Ok(Some((rec.request, None)));
    };
    let unreadable = |why: String| BackendError::Unreadable {
        state: Box::new(key.state.clone()),
        index: key.index,
        why,
    };
    let hash = done
        .response
        .ok_or_else(|| unreadable("the completion names no answer payload".into()))?;
    let bytes = ledger
        .payload(&hash)?
        .ok_or_else(|| unreadable(format!("payload {hash} is not stored (purged?)")))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| unreadable(format!("payload {hash} is not JSON: {e}")))?;
    let answer = if value.get("error").is_some() {
        CallFailure::from_record(&value)
            .map(Answer::Failed)
            .ok_or_else(|| unreadable(format!("payload {hash} is not a call error")))?
    } else {
        let response = Response::from_record(&value)
            .ok_or_else(|| unreadable(format!("payload {hash} is not a call response")))?;
        // A recorded reuse is answered as it was recorded: marker and all.
        match Reused::of_record(&value) {
            Some(from) => Answer::Reused { response, from },
            None => Answer::Response(response),
        }
    };
    Ok(Some((rec.request, Some(answer))))
}
