//! Reading a chat-completions response into the row's fields (ELSPETH-CONFIG §9.2), or
//! into the row error that says why it cannot be used.

use crate::calls::Response;
use crate::plan::TransformError;
use crate::transforms::calling::{retryable_status, snippet};
use serde_json::{json, Map, Value};

/// What a usable answer contributes to the row.
#[derive(Debug, PartialEq)]
pub struct Answer {
    /// The content, trimmed, with a surrounding code fence removed.
    pub text: String,
    /// Only the token counts the provider reported: `prompt_tokens`, `completion_tokens`.
    pub usage: Map<String, Value>,
    /// The model the provider says answered (the requested one if it does not say).
    pub model: String,
}

fn failed(error: String) -> TransformError {
    TransformError::new(json!({"reason": "llm_call_failed", "error": error}))
}

/// Judges a response: an [`Answer`], or the row error (retryable for capacity and server
/// errors, permanent otherwise).
pub fn judge(resp: &Response, requested_model: &str) -> Result<Answer, TransformError> {
    let body_text = resp.text().unwrap_or("");
    if !(200..300).contains(&resp.status) {
        if let Some(e) = retryable_status(resp.status) {
            return Err(e);
        }
        if context_length_exceeded(body_text) {
            return Err(TransformError::new(json!({
                "reason": "context_length_exceeded",
                "status_code": resp.status,
                "error": snippet(body_text, 500),
            })));
        }
        return Err(TransformError::new(json!({
            "reason": "llm_call_failed",
            "status_code": resp.status,
            "error": format!("HTTP {}: {}", resp.status, snippet(body_text, 500)),
        })));
    }
    if !resp.is_json() {
        return Err(failed(format!(
            "the response's content type is {}; expected application/json",
            resp.header("content-type").unwrap_or("missing")
        )));
    }
    let body: Value = serde_json::from_str(body_text).map_err(|e| {
        failed(format!(
            "the response is not valid JSON ({e}): {}",
            snippet(body_text, 200)
        ))
    })?;
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| failed("the response has no choices".into()))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    if message
        .get("tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
    {
        return Err(failed("the response asks for tool calls".into()));
    }
    match choice.get("finish_reason").and_then(Value::as_str) {
        None | Some("stop") => {}
        Some("length") => {
            return Err(TransformError::new(
                json!({"reason": "response_truncated", "finish_reason": "length"}),
            ))
        }
        Some("content_filter") => {
            return Err(TransformError::new(
                json!({"reason": "content_filtered", "finish_reason": "content_filter"}),
            ))
        }
        Some(other) => {
            return Err(TransformError::new(
                json!({"reason": "unexpected_finish_reason", "finish_reason": other}),
            ))
        }
    }
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| failed("the response's content is null or empty".into()))?;
    let mut usage = Map::new();
    if let Some(u) = body.get("usage") {
        for key in ["prompt_tokens", "completion_tokens"] {
            if let Some(n) = u.get(key).filter(|n| n.is_number()) {
                usage.insert(key.to_string(), n.clone());
            }
        }
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(requested_model)
        .to_string();
    Ok(Answer {
        text: strip_fence(content),
        usage,
        model,
    })
}

/// The provider's way of saying the prompt is too long (OpenAI's error code, or its words).
fn context_length_exceeded(body: &str) -> bool {
    let code = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.pointer("/error/code")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    code.as_deref() == Some("context_length_exceeded")
        || body.to_ascii_lowercase().contains("maximum context length")
}

/// The text trimmed and, when it is wrapped in a Markdown code fence (```` ```json ... ``` ````),
/// the text inside it, trimmed.
pub fn strip_fence(content: &str) -> String {
    let t = content.trim();
    let inner = t
        .strip_prefix("```")
        .and_then(|rest| rest.strip_suffix("```"))
        .filter(|_| t.len() >= 6);
    match inner {
        Some(inner) => {
            // An info string (`json`) runs to the end of the opening line.
            let body = match inner.split_once('\n') {
                Some((info, rest)) if !info.trim().contains(char::is_whitespace) => rest,
                _ => inner,
            };
            body.trim().to_string()
        }
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, ct: &str, body: &str) -> Response {
        Response::new(
            status,
            vec![("content-type".into(), ct.into())],
            body.as_bytes().to_vec(),
        )
    }

    fn ok(content: &str, finish: &str) -> Response {
        resp(
            200,
            "application/json",
            &json!({
                "model": "m-1",
                "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
            })
            .to_string(),
        )
    }

    fn reason(e: TransformError) -> (String, bool) {
        (
            e.reason["reason"].as_str().unwrap().to_string(),
            e.retryable,
        )
    }

    #[test]
    fn a_usable_answer_gives_text_usage_and_model() {
        let a = judge(&ok("  ```json\n{\"a\": 1}\n```  ", "stop"), "asked").unwrap();
        assert_eq!(a.text, "{\"a\": 1}");
        assert_eq!(
            Value::Object(a.usage),
            json!({"prompt_tokens": 3, "completion_tokens": 4})
        );
        assert_eq!(a.model, "m-1");
        let bare = resp(
            200,
            "application/json; charset=utf-8",
            r#"{"choices":[{"message":{"content":"hi"}}]}"#,
        );
        let a = judge(&bare, "asked").unwrap();
        assert_eq!(
            (a.text.as_str(), a.usage.len(), a.model.as_str()),
            ("hi", 0, "asked")
        );
    }

    #[test]
    fn every_unusable_response_has_its_reason() {
        let cases = [
            (resp(429, "application/json", "{}"), "rate_limited", true),
            (resp(503, "text/plain", "busy"), "rate_limited", true),
            (resp(529, "text/plain", "overloaded"), "rate_limited", true),
            (resp(500, "text/plain", "oops"), "server_error", true),
            (
                resp(401, "application/json", "{}"),
                "llm_call_failed",
                false,
            ),
            (
                resp(
                    400,
                    "application/json",
                    r#"{"error":{"code":"context_length_exceeded"}}"#,
                ),
                "context_length_exceeded",
                false,
            ),
            (resp(200, "text/html", "<html>"), "llm_call_failed", false),
            (
                resp(200, "application/json", "{not json"),
                "llm_call_failed",
                false,
            ),
            (
                resp(200, "application/json", r#"{"choices":[]}"#),
                "llm_call_failed",
                false,
            ),
            (ok("", "stop"), "llm_call_failed", false),
            (ok("x", "length"), "response_truncated", false),
            (ok("x", "content_filter"), "content_filtered", false),
            (ok("x", "tool_calls"), "unexpected_finish_reason", false),
        ];
        for (r, want, retryable) in cases {
            let got = reason(judge(&r, "m").unwrap_err());
            assert_eq!(got, (want.to_string(), retryable), "{r:?}");
        }
    }

    #[test]
    fn fences_are_stripped_only_when_they_surround() {
        assert_eq!(strip_fence("```\nabc\n```"), "abc");
        assert_eq!(strip_fence("```python\nx = 1\n```"), "x = 1");
        assert_eq!(strip_fence("say ```x``` now"), "say ```x``` now");
        assert_eq!(strip_fence("  plain \n"), "plain");
        assert_eq!(strip_fence("```"), "```");
    }
}
