//! What the calling transforms (`llm`, `http`) share: how a status code or a failed call
//! becomes a row error, and how a row error is recorded on the call it judged.

use crate::calls::{CallError, Verdict};
use crate::plan::TransformError;
use serde_json::json;

/// A row error that judged a response is recorded on that call too.
impl Verdict for TransformError {
    fn message(&self) -> String {
        TransformError::message(self)
    }
    fn retryable(&self) -> bool {
        self.retryable
    }
}

/// Capacity errors: the provider is busy. Retried (for now under the pipeline's retry
/// policy; with the pooled executor, by its AIMD throttle).
pub fn is_capacity_status(status: u16) -> bool {
    matches!(status, 429 | 503 | 529)
}

/// The row error for a status outside 2xx that is worth retrying (capacity, 5xx), or
/// `None` for a permanent one, which each plugin words itself.
pub fn retryable_status(status: u16) -> Option<TransformError> {
    let reason = if is_capacity_status(status) {
        "rate_limited"
    } else if (500..600).contains(&status) {
        "server_error"
    } else {
        return None;
    };
    Some(TransformError {
        reason: json!({"reason": reason, "status_code": status}),
        retryable: true,
    })
}

/// The row error for a call that got no response, or could not be made. `permanent` names
/// the plugin's reason for errors not worth retrying (`llm_call_failed`, ...).
pub fn call_error(e: CallError, permanent: &str) -> TransformError {
    match e {
        CallError::Failed(f) if f.retryable() => TransformError {
            reason: json!({"reason": "network_error", "kind": f.kind.name(), "error": f.message}),
            retryable: true,
        },
        CallError::Failed(f) => TransformError::new(
            json!({"reason": permanent, "kind": f.kind.name(), "error": f.message}),
        ),
        other => TransformError::new(json!({"reason": permanent, "error": other.to_string()})),
    }
}

/// At most `n` characters of `text`, for error messages that quote a response.
pub fn snippet(text: &str, n: usize) -> String {
    let mut s: String = text.chars().take(n).collect();
    if text.chars().count() > n {
        s.push_str("...");
    }
    s
}
