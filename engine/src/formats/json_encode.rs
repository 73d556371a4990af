//! JSON text exactly as Python's `json.dumps(value, indent=...)` writes it.
//!
//! ELSPETH's JSON sink calls `json.dump` with the defaults, so its bytes are: separators
//! `", "` and `": "` (`","` between items once `indent` is set), `ensure_ascii` escaping with
//! lowercase `\uXXXX` and surrogate pairs, floats in Python's repr, keys in insertion order.

use std::fmt::Write as _;

use serde_json::Value;

use super::python::py_number_repr;

/// Indentation as Python's `json.dumps` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Indent {
    /// Spaces per level; Python's `' ' * n` makes a negative count behave as 0 (newlines only).
    width: usize,
}

impl Indent {
    /// `None` = compact output on one line; `Some(n)` = newline plus `n` spaces per level.
    pub(crate) fn from_option(indent: Option<i64>) -> Option<Indent> {
        indent.map(|n| Indent {
            width: usize::try_from(n.max(0)).unwrap_or(0),
        })
    }

    /// The newline and indentation that starts a line at `level`.
    pub(crate) fn newline(self, level: usize) -> String {
        let mut s = String::with_capacity(1 + self.width * level);
        s.push('\n');
        s.extend(std::iter::repeat_n(' ', self.width * level));
        s
    }
}

/// `json.dumps(value)` (compact) or `json.dumps(value, indent=n)`.
pub fn py_json_dumps(value: &Value, indent: Option<i64>) -> String {
    let mut out = String::new();
    encode_value(&mut out, value, Indent::from_option(indent), 0);
    out
}

/// Encode `value` as if it sat at nesting `level` of an indented document (the level only
/// matters when `indent` is set).
pub(crate) fn encode_value(out: &mut String, value: &Value, indent: Option<Indent>, level: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // Values never hold NaN or infinities (serde_json refuses them), so the repr is
        // always a valid JSON number.
        Value::Number(n) => out.push_str(&py_number_repr(n)),
        Value::String(s) => encode_str(out, s),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                push_separator(out, i == 0, indent, level + 1);
                encode_value(out, item, indent, level + 1);
            }
            push_closing(out, indent, level);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                push_separator(out, i == 0, indent, level + 1);
                encode_str(out, k);
                out.push_str(": ");
                encode_value(out, v, indent, level + 1);
            }
            push_closing(out, indent, level);
            out.push('}');
        }
    }
}

fn push_separator(out: &mut String, first: bool, indent: Option<Indent>, level: usize) {
    match indent {
        None => {
            if !first {
                out.push_str(", ");
            }
        }
        Some(ind) => {
            if !first {
                out.push(',');
            }
            out.push_str(&ind.newline(level));
        }
    }
}

fn push_closing(out: &mut String, indent: Option<Indent>, level: usize) {
    if let Some(ind) = indent {
        out.push_str(&ind.newline(level));
    }
}

/// A JSON string with `ensure_ascii=True`: only printable ASCII is written as itself.
pub(crate) fn encode_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compact_separators_and_order() {
        let v = json!([{"b": 1, "a": [1, 2.0, "x"], "c": {"d": null}}, {"a": true}]);
        assert_eq!(
            py_json_dumps(&v, None),
            r#"[{"b": 1, "a": [1, 2.0, "x"], "c": {"d": null}}, {"a": true}]"#
        );
    }

    #[test]
    fn ensure_ascii_escapes() {
        let v = json!("é\u{7f}\u{1}\"\\/\u{8}\u{c}\n\r\t😀");
        assert_eq!(
            py_json_dumps(&v, None),
            r#""\u00e9\u007f\u0001\"\\/\b\f\n\r\t\ud83d\ude00""#
        );
    }

    #[test]
    fn floats_use_python_repr() {
        let v = json!([1e16, 1e-5, 0.1, -0.0, 3.0, 12]);
        assert_eq!(
            py_json_dumps(&v, None),
            "[1e+16, 1e-05, 0.1, -0.0, 3.0, 12]"
        );
    }

    #[test]
    fn indent_two() {
        let v = json!([{"a": 1, "b": [1, {}], "c": []}]);
        assert_eq!(
            py_json_dumps(&v, Some(2)),
            "[\n  {\n    \"a\": 1,\n    \"b\": [\n      1,\n      {}\n    ],\n    \"c\": []\n  }\n]"
        );
    }

    #[test]
    fn indent_zero_and_negative_are_newlines_only() {
        let v = json!({"a": [1]});
        let want = "{\n\"a\": [\n1\n]\n}";
        assert_eq!(py_json_dumps(&v, Some(0)), want);
        assert_eq!(py_json_dumps(&v, Some(-3)), want);
    }
}
