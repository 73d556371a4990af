//! Python's text forms of values: `repr(float)`, `repr(x)` and `str(x)`.
//!
//! ELSPETH is Python, so the bytes users already have in their outputs are Python's: CSV cells
//! are `str(value)`, gate labels are `str(value)`, LLM templates render `str(value)`. Sinks,
//! gates and templates all call into this one module so they cannot drift apart.

use std::fmt::Write as _;

use serde_json::{Number, Value};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Python's `repr(x)` for a float (identical to `str(x)` since Python 3.2).
///
/// Shortest digits that round-trip; positional notation when the decimal exponent is in
/// −4..=15 (always with a fraction: `1.0`), scientific otherwise with a signed, at least
/// two-digit exponent (`1e+16`, `1e-05`, `1.5e+300`).
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // Ryu gives the shortest digits that round-trip and, like Python's repr, breaks an exact
    // tie between two shortest candidates towards the even digit (Rust's own `{:e}` rounds
    // such ties up: 1077004770123625.25 must print as ...625.2). Only its layout differs from
    // Python's, so take the digits and exponent out of it and lay them out again.
    let mut buf = ryu::Buffer::new();
    let Some((digits, exp)) = decimal_digits(buf.format_finite(x.abs())) else {
        return format!("{x:?}");
    };
    let mut out = String::with_capacity(digits.len() + 8);
    if x < 0.0 {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() > int_len {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            } else {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    }
    out
}

/// Split a decimal rendering (`123.45`, `1e-7`, `1.5e16`, `0.001`) into its significant digits
/// (no leading or trailing zeros) and the decimal exponent of the first digit.
fn decimal_digits(text: &str) -> Option<(String, i32)> {
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = int_part.chars().chain(frac_part.chars()).collect();
    if all.is_empty() || !all.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let leading = all.bytes().take_while(|&b| b == b'0').count();
    let digits = all[leading..].trim_end_matches('0');
    if digits.is_empty() {
        return None;
    }
    let point = i32::try_from(int_part.len()).ok()?;
    let leading = i32::try_from(leading).ok()?;
    Some((digits.to_string(), point - 1 - leading + exp))
}

/// Python's `repr()` of a value: `None`, `True`, `1`, `1.0`, `'text'`, `[1, 'a']`,
/// `{'k': None}`.
pub fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    push_repr(&mut out, value);
    out
}

/// Python's `str()` of a value: strings are themselves, everything else is its repr
/// (containers show their items' reprs, as in Python).
pub fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python's `repr()` of a number as stored in a `Value` (ints stay ints, floats use
/// [`py_float_repr`]).
pub fn py_number_repr(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        py_float_repr(n.as_f64().unwrap_or(f64::NAN))
    }
}

fn push_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&py_number_repr(n)),
        Value::String(s) => push_str_repr(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_str_repr(out, k);
                out.push_str(": ");
                push_repr(out, v);
            }
            out.push('}');
        }
    }
}

/// Python's `repr()` of a `str`.
pub fn py_str_repr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_str_repr(&mut out, s);
    out
}

fn push_str_repr(out: &mut String, s: &str) {
    // Python prefers single quotes and switches to double quotes only when that avoids
    // escaping: the text has a ' and no ".
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        let code = c as u32;
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if c == quote => {
                out.push('\\');
                out.push(c);
            }
            _ if code < 0x20 || code == 0x7f => {
                let _ = write!(out, "\\x{code:02x}");
            }
            _ if code < 0x7f => out.push(c),
            _ if is_printable(c) => out.push(c),
            _ if code <= 0xff => {
                let _ = write!(out, "\\x{code:02x}");
            }
            _ if code <= 0xffff => {
                let _ = write!(out, "\\u{code:04x}");
            }
            _ => {
                let _ = write!(out, "\\U{code:08x}");
            }
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable()` for one character: everything except the "Other" and
/// "Separator" general categories, with the ASCII space as the one printable separator.
pub(crate) fn is_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::Surrogate
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::SpaceSeparator
    )
}

/// Python's `str.isspace()` for one character. Rust's `char::is_whitespace` is the Unicode
/// White_Space property; Python also counts the information separators U+001C..U+001F.
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Python's `type(x).__name__` for a JSON value (ELSPETH's error objects name types so).
pub fn py_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn float_repr_cases() {
        let cases: &[(f64, &str)] = &[
            (0.1, "0.1"),
            (1.0, "1.0"),
            (1e16, "1e+16"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (123456789012345.6, "123456789012345.6"),
            (5e-324, "5e-324"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (1.5e16, "1.5e+16"),
            (0.00012, "0.00012"),
            (1.2e-5, "1.2e-05"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e100, "1e+100"),
            (-1e-100, "-1e-100"),
            (123.456, "123.456"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(*x), *want, "repr of {x:e}");
        }
    }

    #[test]
    fn exact_ties_round_to_even_like_python() {
        // Each value is exactly halfway between its two shortest round-trip renderings
        // (written as sums so the literal is exact).
        assert_eq!(
            py_float_repr(1077004770123625.0 + 0.25),
            "1077004770123625.2"
        );
        assert_eq!(py_float_repr(558097040647.0 + 0.90625), "558097040647.9062");
        assert_eq!(py_float_repr(77348568524999.0 + 0.125), "77348568524999.12");
    }

    #[test]
    fn decimal_digits_parsing() {
        assert_eq!(decimal_digits("123.45"), Some(("12345".to_string(), 2)));
        assert_eq!(decimal_digits("0.001"), Some(("1".to_string(), -3)));
        assert_eq!(decimal_digits("1e16"), Some(("1".to_string(), 16)));
        assert_eq!(decimal_digits("1.5e-7"), Some(("15".to_string(), -7)));
        assert_eq!(decimal_digits("100.0"), Some(("1".to_string(), 2)));
        assert_eq!(decimal_digits("0.0"), None);
        assert_eq!(decimal_digits("x"), None);
    }

    #[test]
    fn repr_of_values() {
        assert_eq!(py_repr(&json!(null)), "None");
        assert_eq!(py_repr(&json!(true)), "True");
        assert_eq!(py_repr(&json!(false)), "False");
        assert_eq!(py_repr(&json!(3)), "3");
        assert_eq!(py_repr(&json!(-3)), "-3");
        assert_eq!(py_repr(&json!(u64::MAX)), "18446744073709551615");
        assert_eq!(py_repr(&json!(1.0)), "1.0");
        assert_eq!(py_repr(&json!("a")), "'a'");
        assert_eq!(
            py_repr(&json!({"prompt_tokens": 3, "completion_tokens": 4})),
            "{'prompt_tokens': 3, 'completion_tokens': 4}"
        );
        assert_eq!(
            py_repr(&json!([1, "x", null, [], {}, 2.5])),
            "[1, 'x', None, [], {}, 2.5]"
        );
    }

    #[test]
    fn str_repr_quotes_and_escapes() {
        assert_eq!(py_str_repr("it's"), "\"it's\"");
        assert_eq!(py_str_repr("say \"hi\""), "'say \"hi\"'");
        assert_eq!(py_str_repr("both ' and \""), "'both \\' and \"'");
        assert_eq!(py_str_repr("a\\b"), "'a\\\\b'");
        assert_eq!(py_str_repr("t\tn\nr\r"), "'t\\tn\\nr\\r'");
        assert_eq!(py_str_repr("\u{0}\u{1b}\u{7f}"), "'\\x00\\x1b\\x7f'");
        assert_eq!(py_str_repr("café ü 日本"), "'café ü 日本'");
        assert_eq!(py_str_repr("\u{a0}\u{ad}"), "'\\xa0\\xad'");
        assert_eq!(py_str_repr("\u{200b}\u{2028}"), "'\\u200b\\u2028'");
        assert_eq!(py_str_repr("😀"), "'😀'");
        assert_eq!(py_str_repr("\u{e0001}"), "'\\U000e0001'");
    }

    #[test]
    fn str_of_values() {
        assert_eq!(py_str(&json!("plain")), "plain");
        assert_eq!(py_str(&json!(null)), "None");
        assert_eq!(py_str(&json!(1.0)), "1.0");
        assert_eq!(py_str(&json!(["a"])), "['a']");
    }

    #[test]
    fn isspace_matches_python() {
        for c in [
            '\u{1c}', '\u{1f}', '\u{85}', '\u{a0}', '\u{3000}', ' ', '\t',
        ] {
            assert!(py_isspace(c), "{c:?}");
        }
        for c in ['\u{200b}', '\u{feff}', 'a', '_'] {
            assert!(!py_isspace(c), "{c:?}");
        }
    }

    proptest! {
        #[test]
        fn float_repr_round_trips(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let text = py_float_repr(x);
            let back: f64 = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back.to_bits(), x.to_bits(), "{}", text);
        }

        #[test]
        fn float_repr_layout(x in any::<f64>()) {
            prop_assume!(x.is_finite());
            let text = py_float_repr(x);
            // Either scientific with a signed two-or-more digit exponent, or positional with a
            // fraction: never a bare integer (Python always shows `.0`).
            if let Some((_, exp)) = text.split_once('e') {
                prop_assert!(exp.starts_with('+') || exp.starts_with('-'));
                prop_assert!(exp.len() >= 3);
            } else {
                prop_assert!(text.contains('.'));
            }
        }
    }
}
