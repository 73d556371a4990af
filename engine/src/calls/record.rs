//! A call's request and answer, as plugins build and read them and as the ledger records
//! them.
//!
//! The records are canonical JSON payloads (`docs/ledger-format.md`, "Call payloads"):
//!
//! - request: `{"method", "url", "headers": [[name, value], ...], "body"}`, where `body`
//!   is `null`, `{"json": value}` (sent as the value's canonical bytes) or `{"text": s}`;
//! - response: `{"status", "headers": [[name, value], ...], "body"}`, where `body` is
//!   `{"text": s}` (the exact bytes, when they are UTF-8) or `{"hex": s}`;
//! - error (no response): `{"error": {"kind", "message", "retryable"}}`;
//! - a response a resumed run took from the record instead of sending the request again
//!   (`attest resume`): the response's record plus `"reused": {"state", "index"}`, the
//!   call whose answer it is ([`Reused`]).
//!
//! All three are made only from redacted values. A plugin reads the answer in the very
//! form it was recorded in ([`Response::from_record`] of [`Response::to_record`] is the
//! identity), so a live run and its re-execution from the record see the same thing.

use super::redact::Redactor;
use attest_ledger::Hash32;
use serde_json::{json, Value};
use std::time::Duration;

/// A request body.
#[derive(Clone, Debug, PartialEq)]
pub enum RequestBody {
    /// Sent as the value's canonical JSON bytes, with `Content-Type: application/json`
    /// unless the request sets one.
    Json(Value),
    /// Sent as these bytes.
    Text(String),
}

/// A request as a plugin builds it, credentials included. It has no `Debug`: nothing
/// should print it. Its redacted record is [`Prepared::record`].
#[derive(Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<RequestBody>,
    /// The whole exchange must finish within this.
    pub timeout: Duration,
}

/// A request ready to be sent: the bytes that go on the wire, and the redacted record
/// that the ledger stores (and whose hash identifies the request).
pub struct Prepared {
    pub request: Request,
    /// The body as sent.
    pub body: Option<Vec<u8>>,
    /// Canonical JSON bytes of the redacted request.
    pub record: Vec<u8>,
    pub hash: Hash32,
}

impl Request {
    /// Encodes the body and builds the redacted record. Fails only when the body cannot
    /// be encoded canonically (a NaN or infinite number).
    pub fn prepare(mut self, redactor: &Redactor) -> Result<Prepared, String> {
        let body = match &self.body {
            None => None,
            Some(RequestBody::Text(t)) => Some(t.clone().into_bytes()),
            Some(RequestBody::Json(v)) => {
                let has_type = self
                    .headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
                if !has_type {
                    self.headers
                        .push(("content-type".into(), "application/json".into()));
                }
                Some(
                    attest_ledger::canonical::to_canonical_bytes(v)
                        .map_err(|e| format!("the request body cannot be encoded: {e}"))?,
                )
            }
        };
        let record_body = match &self.body {
            None => Value::Null,
            Some(RequestBody::Json(v)) => json!({ "json": redactor.value(v) }),
            Some(RequestBody::Text(t)) => json!({ "text": redactor.text(t) }),
        };
        let record = json!({
            "method": self.method,
            "url": redactor.text(&self.url),
            "headers": headers_record(&self.headers, redactor),
            "body": record_body,
        });
        let record = attest_ledger::canonical::to_canonical_bytes(&record)
            .map_err(|e| format!("the request cannot be recorded: {e}"))?;
        let hash = Hash32::of(&record);
        Ok(Prepared {
            request: self,
            body,
            record,
            hash,
        })
    }
}

fn headers_record(headers: &[(String, String)], redactor: &Redactor) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(k, v)| json!([k.to_ascii_lowercase(), redactor.header(k, v)]))
            .collect(),
    )
}

/// A response body, exactly as received (after redaction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    Text(String),
    /// Not UTF-8.
    Bytes(Vec<u8>),
}

/// An HTTP response. Header names are lower case, in the order received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ResponseBody,
}

impl Response {
    pub fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Response {
        let body = match String::from_utf8(body) {
            Ok(t) => ResponseBody::Text(t),
            Err(e) => ResponseBody::Bytes(e.into_bytes()),
        };
        Response {
            status,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            body,
        }
    }

    /// The first header of that name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, when it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        match &self.body {
            ResponseBody::Text(t) => Some(t),
            ResponseBody::Bytes(_) => None,
        }
    }

    /// True when the content type is JSON (`application/json`, `application/*+json`).
    pub fn is_json(&self) -> bool {
        let Some(ct) = self.header("content-type") else {
            return false;
        };
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        media == "application/json"
            || (media.starts_with("application/") && media.ends_with("+json"))
    }

    /// This response with every secret removed.
    pub fn redacted(self, redactor: &Redactor) -> Response {
        if redactor.is_empty() {
            return self;
        }
        Response {
            status: self.status,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), redactor.header(k, v)))
                .collect(),
            body: match self.body {
                ResponseBody::Text(t) => ResponseBody::Text(redactor.text(&t).into_owned()),
                ResponseBody::Bytes(b) => ResponseBody::Bytes(redactor.bytes(&b)),
            },
        }
    }

    pub fn to_record(&self) -> Value {
        let body = match &self.body {
            ResponseBody::Text(t) => json!({ "text": t }),
            ResponseBody::Bytes(b) => json!({ "hex": hex(b) }),
        };
        json!({
            "status": self.status,
            "headers": Value::Array(self.headers.iter().map(|(k, v)| json!([k, v])).collect()),
            "body": body,
        })
    }

    /// The record of this response answering a call that was not sent: the answer of
    /// the call `from`, which asked the same request (see [`Reused`]).
    pub fn to_reused_record(&self, from: &Reused) -> Value {
        let mut v = self.to_record();
        if let Some(map) = v.as_object_mut() {
            map.insert(
                "reused".into(),
                json!({"state": from.state, "index": from.index}),
            );
        }
        v
    }

    pub fn from_record(v: &Value) -> Option<Response> {
        let status = u16::try_from(v.get("status")?.as_u64()?).ok()?;
        let mut headers = Vec::new();
        for h in v.get("headers")?.as_array()? {
            let pair = h.as_array()?;
            match pair.as_slice() {
                [k, v] => headers.push((k.as_str()?.to_string(), v.as_str()?.to_string())),
                _ => return None,
            }
        }
        let body = v.get("body")?;
        let body = if let Some(t) = body.get("text") {
            ResponseBody::Text(t.as_str()?.to_string())
        } else {
            ResponseBody::Bytes(unhex(body.get("hex")?.as_str()?)?)
        };
        Some(Response {
            status,
            headers,
            body,
        })
    }
}

/// Where a reused answer comes from: call `index` of state `state` (its id as text), the
/// call that was sent and answered. A resumed run answers a call of an interrupted state's
/// next attempt this way when the interrupted attempt's call asked the same request and
/// its response is recorded (`crate::calls::ReusingBackend`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reused {
    pub state: String,
    pub index: u32,
}

impl Reused {
    /// The marker in a response record, if the record has one.
    pub fn of_record(v: &Value) -> Option<Reused> {
        let r = v.get("reused")?;
        Some(Reused {
            state: r.get("state")?.as_str()?.to_string(),
            index: u32::try_from(r.get("index")?.as_u64()?).ok()?,
        })
    }
}

/// Why a call got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection was refused.
    Refused,
    /// No complete answer within the timeout.
    Timeout,
    /// The connection was reset or closed mid-exchange.
    Reset,
    /// The host name did not resolve.
    Dns,
    /// The peer spoke broken HTTP.
    Protocol,
    /// TLS failed (certificate, handshake).
    Tls,
    /// The response was larger than the client accepts.
    TooLarge,
    /// The request itself cannot be sent (malformed URL or header).
    InvalidRequest,
    /// Any other I/O error.
    Io,
    /// The run stopped after the call was recorded and before its answer was: whether the
    /// request went out is not known. Recorded by `attest resume`, whose next attempt of
    /// the state sends it again.
    Interrupted,
}

impl FailureKind {
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::Dns => "dns",
            FailureKind::Protocol => "protocol",
            FailureKind::Tls => "tls",
            FailureKind::TooLarge => "too_large",
            FailureKind::InvalidRequest => "invalid_request",
            FailureKind::Io => "io",
            FailureKind::Interrupted => "interrupted",
        }
    }

    fn from_name(name: &str) -> Option<FailureKind> {
        use FailureKind::*;
        [
            Refused,
            Timeout,
            Reset,
            Dns,
            Protocol,
            Tls,
            TooLarge,
            InvalidRequest,
            Io,
            Interrupted,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// Transient network trouble is worth another attempt; a request that cannot be sent
    /// or a TLS failure is not.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            FailureKind::Refused
                | FailureKind::Timeout
                | FailureKind::Reset
                | FailureKind::Dns
                | FailureKind::Protocol
                | FailureKind::Io
                | FailureKind::Interrupted
        )
    }
}

/// A call that got no response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl CallFailure {
    /// What `attest resume` records for a call that was allocated (its request recorded)
    /// but has no completion: the run stopped in between, and nobody can tell whether the
    /// request was sent.
    pub fn interrupted() -> CallFailure {
        CallFailure {
            kind: FailureKind::Interrupted,
            message: "the run stopped before an answer was recorded; the request may or may \
             not have been sent, and the state's next attempt sends it again"
                .into(),
        }
    }

    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }

    pub fn to_record(&self) -> Value {
        json!({"error": {
            "kind": self.kind.name(),
            "message": self.message,
            "retryable": self.retryable(),
        }})
    }

    pub fn from_record(v: &Value) -> Option<CallFailure> {
        let e = v.get("error")?;
        Some(CallFailure {
            kind: FailureKind::from_name(e.get("kind")?.as_str()?)?,
            message: e.get("message")?.as_str()?.to_string(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(body: Option<RequestBody>) -> Request {
        Request {
            method: "POST".into(),
            url: "http://h/v1?key=sk-secret".into(),
            headers: vec![
                ("Authorization".into(), "Bearer sk-secret".into()),
                ("X-Trace".into(), "t sk-secret".into()),
            ],
            body,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_record_is_redacted_canonical_json_and_the_wire_keeps_the_secret() {
        let r = Redactor::new(["sk-secret".to_string()]);
        let p = request(Some(RequestBody::Json(json!({"b": "sk-secret", "a": 1}))))
            .prepare(&r)
            .unwrap();
        let text = String::from_utf8(p.record.clone()).unwrap();
        assert!(!text.contains("sk-secret"), "{text}");
        assert_eq!(
            text,
            r#"{"body":{"json":{"a":1,"b":"<redacted>"}},"headers":[["authorization","<redacted>"],["x-trace","t <redacted>"],["content-type","application/json"]],"method":"POST","url":"http://h/v1?key=<redacted>"}"#
        );
        assert_eq!(p.body.as_deref(), Some(&br#"{"a":1,"b":"sk-secret"}"#[..]));
        assert_eq!(p.hash, Hash32::of(&p.record));
        assert!(p
            .request
            .headers
            .iter()
            .any(|(k, v)| k == "Authorization" && v == "Bearer sk-secret"));
    }

    #[test]
    fn failures_round_trip() {
        let f = CallFailure {
            kind: FailureKind::Reset,
            message: "connection reset by peer".into(),
        };
        assert_eq!(CallFailure::from_record(&f.to_record()), Some(f));
        assert!(FailureKind::Timeout.retryable());
        let i = CallFailure::interrupted();
        assert_eq!(CallFailure::from_record(&i.to_record()), Some(i));
        assert!(FailureKind::Interrupted.retryable());
        assert!(!FailureKind::InvalidRequest.retryable());
    }

    proptest! {
        /// What a plugin reads live is exactly what re-execution reads back from the record.
        #[test]
        fn responses_round_trip_through_their_canonical_record(
            status in 100u16..600,
            headers in proptest::collection::vec(("[a-z-]{1,10}", ".{0,20}"), 0..5),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            text in ".{0,64}",
            as_text in any::<bool>(),
        ) {
            let bytes = if as_text { text.into_bytes() } else { body };
            let resp = Response::new(status, headers, bytes);
            let canonical = attest_ledger::canonical::to_canonical_bytes(&resp.to_record()).unwrap();
            let back: Value = serde_json::from_slice(&canonical).unwrap();
            prop_assert_eq!(Response::from_record(&back), Some(resp.clone()));
            // A reused answer reads as the same response, and names where it came from.
            let from = Reused { state: "t1@ask#1".into(), index: status.into() };
            let reused = resp.to_reused_record(&from);
            prop_assert_eq!(Response::from_record(&reused), Some(resp));
            prop_assert_eq!(Reused::of_record(&reused), Some(from));
            prop_assert_eq!(Reused::of_record(&back), None);
        }
    }
}
