//! `keyword_filter`: a row whose named string fields match a blocked pattern is an error
//! result (it goes to `on_error`). Patterns are searched anywhere in the value.
//!
//! ELSPETH uses Python's `re`; attest uses the `regex` crate, whose syntax covers the
//! common subset (classes, `\b`, `\w` with Unicode, inline `(?i)`) but not look-around or
//! back-references: such a pattern is refused when the pipeline loads.

use crate::formats::python::py_type_name;
use crate::plan::{CallContext, Transform, TransformError};
use crate::value::{Row, Value};
use regex::Regex;
use serde_json::json;

pub enum Fields {
    /// Every string field of the row, in row order.
    All,
    Named(Vec<String>),
}

pub struct KeywordFilter {
    fields: Fields,
    /// (source text, compiled) in configuration order.
    patterns: Vec<(String, Regex)>,
}

impl KeywordFilter {
    /// Compiles the patterns; the error names the pattern that does not compile.
    pub fn new(fields: Fields, patterns: &[String]) -> Result<KeywordFilter, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                Regex::new(p)
                    .map(|r| (p.clone(), r))
                    .map_err(|e| format!("blocked pattern {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(KeywordFilter { fields, patterns })
    }

    fn check(&self, field: &str, text: &str) -> Result<(), TransformError> {
        for (source, re) in &self.patterns {
            if let Some(m) = re.find(text) {
                // Positions in code points, as Python reports them.
                let pos = text[..m.start()].chars().count();
                return Err(TransformError::new(json!({
                    "reason": "blocked_content",
                    "field": field,
                    "matched_pattern": source,
                    "match_position": pos,
                    "match_length": m.as_str().chars().count(),
                    "field_length": text.chars().count(),
                })));
            }
        }
        Ok(())
    }
}

impl Transform for KeywordFilter {
    fn process(&self, row: &Row, _ctx: CallContext) -> Result<Row, TransformError> {
        match &self.fields {
            Fields::All => {
                for (k, v) in row {
                    if let Value::String(s) = v {
                        self.check(k, s)?;
                    }
                }
            }
            Fields::Named(names) => {
                for name in names {
                    match row.get(name) {
                        None => {}
                        Some(Value::String(s)) => self.check(name, s)?,
                        Some(other) => {
                            return Err(TransformError::new(json!({
                                "reason": "non_string_field", "field": name, "actual_type": py_type_name(other),
                            })))
                        }
                    }
                }
            }
        }
        Ok(row.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn first_hit_in_field_then_pattern_order() {
        let f = KeywordFilter::new(
            Fields::Named(vec!["a".into(), "b".into()]),
            &["(?i)secret".into(), r"\bpw\b".into()],
        )
        .unwrap();
        let e = f
            .process(
                &row(json!({"a": "ok", "b": "my pw and SECRET"})),
                CallContext::none(),
            )
            .unwrap_err();
        assert_eq!(e.reason["field"], "b");
        assert_eq!(e.reason["matched_pattern"], "(?i)secret");
        assert_eq!(e.reason["match_position"], 10);
        assert_eq!(
            f.process(&row(json!({"a": "fine"})), CallContext::none())
                .unwrap(),
            row(json!({"a": "fine"}))
        );
    }

    #[test]
    fn non_string_named_field_is_an_error_and_all_skips_non_strings() {
        let f = KeywordFilter::new(Fields::Named(vec!["n".into()]), &["x".into()]).unwrap();
        assert_eq!(
            f.process(&row(json!({"n": 1})), CallContext::none())
                .unwrap_err()
                .reason["reason"],
            "non_string_field"
        );
        let all = KeywordFilter::new(Fields::All, &["x".into()]).unwrap();
        assert!(all
            .process(&row(json!({"n": 1, "s": "abc"})), CallContext::none())
            .is_ok());
        assert!(all
            .process(&row(json!({"s": "xyz"})), CallContext::none())
            .is_err());
    }

    #[test]
    fn unsupported_patterns_are_refused_with_their_text() {
        let e = KeywordFilter::new(Fields::All, &["(?<=a)b".into()])
            .err()
            .unwrap();
        assert!(e.contains("(?<=a)b"), "{e}");
    }
}
