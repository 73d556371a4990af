//! Python's `str()` and `repr()` of values: what `str(x)` returns in a condition, and how a
//! non-string, non-bool result becomes a route label.

use serde_json::Value;

use super::pyvalue::{number_to_py, PyValue};
use super::MAX_VALUE_DEPTH;

/// Python `repr(float)`. One implementation serves gate labels, `str()` in conditions and
/// the sinks: `formats::python::py_float_repr`, which also breaks exact ties between two
/// shortest candidates towards the even digit as Python does (a copy here that used Rust's
/// `{:e}` printed `1000000000000003.25` as `…003.3`; Python prints `…003.2`).
pub(crate) fn float_repr(f: f64) -> String {
    crate::formats::python::py_float_repr(f)
}

/// Python `repr(str)`: single quotes unless the text contains a single quote and no double
/// quote; backslash escapes for the quote, backslash, `\t \n \r` and non-printable
/// characters.
pub(crate) fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_printable(c) => {
                let cp = c as u32;
                if cp < 0x100 {
                    out.push_str(&format!("\\x{cp:02x}"));
                } else if cp < 0x10000 {
                    out.push_str(&format!("\\u{cp:04x}"));
                } else {
                    out.push_str(&format!("\\U{cp:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable()` for one character, approximated without the Unicode
/// database: controls (Cc), separators other than space (Zs, Zl, Zp), the format
/// characters (Cf), private use (Co) and noncharacters are escaped. Unassigned code points
/// (Cn) are not recognised and print as themselves, where Python would escape them.
fn is_printable(c: char) -> bool {
    let cp = c as u32;
    !matches!(
        cp,
        0x00..=0x1f
            | 0x7f..=0xa0
            | 0xad
            | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x890..=0x891
            | 0x8e2
            | 0x1680
            | 0x180e
            | 0x2000..=0x200f
            | 0x2028..=0x202f
            | 0x205f..=0x206f
            | 0x3000
            | 0xe000..=0xf8ff
            | 0xfdd0..=0xfdef
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0xfffe..=0xffff
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
            | 0xf0000..=0x10ffff
    )
}

/// Python `repr()`.
pub(crate) fn py_repr(v: &PyValue) -> String {
    let mut out = String::new();
    write_repr(v, &mut out);
    out
}

/// Python `str()`: a string is itself, everything else its repr.
pub(crate) fn py_str(v: &PyValue) -> String {
    match v {
        PyValue::Str(s) => s.clone(),
        other => py_repr(other),
    }
}

/// The route label of a result: bools are lower-cased (`true`/`false`, matching YAML route
/// keys), strings are themselves, anything else is Python `str()`.
pub(crate) fn label(v: &PyValue) -> String {
    match v {
        PyValue::Bool(b) => b.to_string(),
        other => py_str(other),
    }
}

// Recursion depth is bounded: values come from rows (depth-limited on conversion) or from
// literals (bounded by the parser's nesting limit).
fn write_repr(v: &PyValue, out: &mut String) {
    match v {
        PyValue::None => out.push_str("None"),
        PyValue::Bool(true) => out.push_str("True"),
        PyValue::Bool(false) => out.push_str("False"),
        PyValue::Int(i) => out.push_str(&i.to_string()),
        PyValue::Float(f) => out.push_str(&float_repr(*f)),
        PyValue::Str(s) => out.push_str(&str_repr(s)),
        PyValue::List(xs) => write_items(xs, "[", "]", out),
        PyValue::Tuple(xs) if xs.len() == 1 => write_items(xs, "(", ",)", out),
        PyValue::Tuple(xs) => write_items(xs, "(", ")", out),
        PyValue::Set(xs) if xs.is_empty() => out.push_str("set()"),
        PyValue::Set(xs) => write_items(xs, "{", "}", out),
        PyValue::Dict(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(k, out);
                out.push_str(": ");
                write_repr(v, out);
            }
            out.push('}');
        }
    }
}

fn write_items(items: &[PyValue], open: &str, close: &str, out: &mut String) {
    out.push_str(open);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(item, out);
    }
    out.push_str(close);
}

/// Route label of a row value (see [`label`]). Written directly over the JSON value rather
/// than converting it, so that it needs no error path: a value nested deeper than
/// [`MAX_VALUE_DEPTH`] prints `...` there (no route can be named like that anyway).
pub(crate) fn json_label(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        other => {
            let mut out = String::new();
            write_json_repr(other, 0, &mut out);
            out
        }
    }
}

fn write_json_repr(v: &Value, depth: usize, out: &mut String) {
    if depth > MAX_VALUE_DEPTH {
        out.push_str("...");
        return;
    }
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => write_repr(&number_to_py(n), out),
        Value::String(s) => out.push_str(&str_repr(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json_repr(item, depth + 1, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&str_repr(k));
                out.push_str(": ");
                write_json_repr(item, depth + 1, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        // Each expected string is CPython's repr of the same float.
        let cases: &[(f64, &str)] = &[
            (1.0, "1.0"),
            (-1.5, "-1.5"),
            // An exact tie between two shortest candidates goes to the even digit.
            (1_000_000_000_000_003.0 + 0.25, "1000000000000003.2"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e16, "1.5e+16"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (1.5e300, "1.5e+300"),
            (1e22, "1e+22"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (123456789.123, "123456789.123"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for &(f, want) in cases {
            assert_eq!(float_repr(f), want, "repr of {f:e}");
        }
    }

    #[test]
    fn strings_repr_like_python() {
        assert_eq!(str_repr("abc"), "'abc'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("it's \"x\""), "'it\\'s \"x\"'");
        assert_eq!(str_repr("a\\b\n\t\r"), "'a\\\\b\\n\\t\\r'");
        assert_eq!(str_repr("\x01\x7f\u{a0}é"), "'\\x01\\x7f\\xa0é'");
        assert_eq!(str_repr("\u{200b}\u{feff}"), "'\\u200b\\ufeff'");
        assert_eq!(str_repr("\u{e0001}😀"), "'\\U000e0001😀'");
    }

    #[test]
    fn containers_repr_like_python() {
        let v = PyValue::List(vec![
            PyValue::Int(1),
            PyValue::Float(2.0),
            PyValue::Str("a".into()),
            PyValue::None,
            PyValue::Bool(true),
            PyValue::Tuple(vec![PyValue::Int(1)]),
            PyValue::Tuple(vec![]),
            PyValue::Set(vec![]),
            PyValue::Set(vec![PyValue::Int(3)]),
            PyValue::Dict(vec![(PyValue::Str("k".into()), PyValue::List(vec![]))]),
        ]);
        assert_eq!(
            py_str(&v),
            "[1, 2.0, 'a', None, True, (1,), (), set(), {3}, {'k': []}]"
        );
    }

    #[test]
    fn labels() {
        assert_eq!(label(&PyValue::Bool(true)), "true");
        assert_eq!(label(&PyValue::Str("x y".into())), "x y");
        assert_eq!(label(&PyValue::Int(-3)), "-3");
        assert_eq!(label(&PyValue::Float(1.0)), "1.0");
        assert_eq!(label(&PyValue::None), "None");
        let json = serde_json::json!({"a": [1, 1.0, null, true, "q'"]});
        assert_eq!(json_label(&json), "{'a': [1, 1.0, None, True, \"q'\"]}");
    }
}
