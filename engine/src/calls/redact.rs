//! Removing credentials before anything about a call is hashed or stored.
//!
//! Two rules, applied to every request and response record, every error message and the
//! recorded configuration text:
//!
//! 1. The values of credential headers (`Authorization`, `Proxy-Authorization`, `api-key`,
//!    `x-api-key`, any case) are replaced whole.
//! 2. Every configured secret value (an `api_key`, a credential header's value and its
//!    token) is replaced wherever it appears: in a URL, a header, a body, an error text.

use serde_json::Value;
use std::borrow::Cow;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Header names whose values are credentials, lower case.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
];

/// True when `name` is a header that carries credentials.
pub fn is_credential_header(name: &str) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name.trim()))
}

/// The secrets a credential header's value holds: the whole value and, for a
/// `Scheme token` value such as `Bearer sk-1`, the token on its own.
pub fn secrets_of_header_value(value: &str) -> Vec<String> {
    let mut out = vec![value.trim().to_string()];
    if let Some((_, token)) = value.trim().split_once(char::is_whitespace) {
        let token = token.trim();
        if !token.is_empty() {
            out.push(token.to_string());
        }
    }
    out
}

/// The secrets of one plugin (or one run), applied by [`Redactor::text`] and friends.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    /// Non-empty, distinct, longest first, so that a secret containing another is
    /// replaced whole.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secret(s))", self.secrets.len())
    }
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// This redactor and `other`'s secrets together.
    pub fn merged(&self, other: &Redactor) -> Redactor {
        Redactor::new(self.secrets.iter().chain(&other.secrets).cloned())
    }

    /// The secrets, longest first.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), REDACTED));
            }
        }
        out
    }

    /// A header's value as it may be recorded.
    pub fn header(&self, name: &str, value: &str) -> String {
        if is_credential_header(name) {
            REDACTED.to_string()
        } else {
            self.text(value).into_owned()
        }
    }

    /// `value` with every secret replaced in its strings and object keys.
    pub fn value(&self, value: &Value) -> Value {
        if self.secrets.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.text(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.text(k).into_owned(), self.value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `bytes` with every secret replaced (secrets are text; so is any match).
    pub fn bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for s in &self.secrets {
            let needle = s.as_bytes();
            if needle.len() > out.len() {
                continue;
            }
            let mut replaced = Vec::with_capacity(out.len());
            let mut i = 0;
            while i < out.len() {
                if out[i..].starts_with(needle) {
                    replaced.extend_from_slice(REDACTED.as_bytes());
                    i += needle.len();
                } else {
                    replaced.push(out[i]);
                    i += 1;
                }
            }
            out = replaced;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn credential_headers_are_replaced_whole_in_any_case() {
        let r = Redactor::default();
        for name in [
            "Authorization",
            "api-key",
            "X-API-KEY",
            "proxy-authorization",
        ] {
            assert_eq!(r.header(name, "Bearer abc"), REDACTED, "{name}");
        }
        assert_eq!(
            r.header("content-type", "application/json"),
            "application/json"
        );
    }

    #[test]
    fn secrets_are_replaced_everywhere_longest_first() {
        let r = Redactor::new(["sk-1".to_string(), "sk-12345".to_string(), String::new()]);
        assert_eq!(
            r.text("https://x/?key=sk-12345&k2=sk-1"),
            "https://x/?key=<redacted>&k2=<redacted>"
        );
        assert_eq!(
            r.value(&json!({"sk-1": ["a sk-12345 b", 3]})),
            json!({"<redacted>": ["a <redacted> b", 3]})
        );
        assert_eq!(r.bytes(b"xsk-12345y"), b"x<redacted>y".to_vec());
    }

    #[test]
    fn a_header_value_yields_its_token() {
        assert_eq!(
            secrets_of_header_value("Bearer sk-9"),
            vec!["Bearer sk-9".to_string(), "sk-9".to_string()]
        );
        assert_eq!(secrets_of_header_value("sk-9"), vec!["sk-9".to_string()]);
    }

    proptest! {
        /// Whatever surrounds it, a secret never survives redaction of text, bytes or values.
        #[test]
        fn no_secret_survives(
            secret in "[a-zA-Z0-9_-]{6,20}",
            before in ".{0,30}",
            after in ".{0,30}",
        ) {
            // A secret that is part of the marker itself is trivially "in" the output.
            prop_assume!(!REDACTED.contains(secret.as_str()));
            let r = Redactor::new([secret.clone()]);
            let text = format!("{before}{secret}{after}");
            prop_assert!(!r.text(&text).contains(&secret));
            let bytes = r.bytes(text.as_bytes());
            prop_assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
            let v = r.value(&json!({"k": [text.clone()], text.clone(): 1}));
            prop_assert!(!v.to_string().contains(&secret));
        }
    }
}
