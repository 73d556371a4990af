//! Source-side schema validation and coercion (ELSPETH-CONFIG §2).
//!
//! Coercion happens only in sources. A CSV cell is a string and is parsed by the rules of the
//! §2 table; JSON values follow the same string rules plus the JSON-native conversions. The
//! validator is stateful because of *type lock-in*: in flexible and observed mode the first
//! valid row fixes the type of every undeclared field, and later rows that disagree are
//! quarantined.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use super::python::py_repr;
use super::schema::{FieldType, Schema, SchemaMode};
use crate::value::Row;

/// A row the schema refused: the row to write to the quarantine sink and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub row: Row,
    pub message: String,
}

/// The type an undeclared field was locked to by the first valid row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Str,
    /// Lists and objects are never checked after lock-in.
    Unchecked,
}

impl Kind {
    fn of(v: &Value) -> Kind {
        match v {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(n) if n.is_f64() => Kind::Float,
            Value::Number(_) => Kind::Int,
            Value::String(_) => Kind::Str,
            Value::Array(_) | Value::Object(_) => Kind::Unchecked,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Str => "str",
            Kind::Unchecked => "list/object",
        }
    }
}

/// Validates and coerces the rows of one source, in order.
#[derive(Debug)]
pub struct Validator {
    schema: Schema,
    /// Undeclared field → locked type; `None` until the first valid row.
    locked: Option<HashMap<String, Kind>>,
}

impl Validator {
    pub fn new(schema: Schema) -> Self {
        Validator {
            schema,
            locked: None,
        }
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Validate one JSON item. Anything but an object is rejected and quarantined as
    /// `{"_raw": item}`.
    pub fn validate_value(&mut self, item: Value) -> Result<Row, Rejection> {
        match item {
            Value::Object(row) => self.validate(row),
            other => {
                let message = format!("expected a JSON object, got {}", type_name(&other));
                let mut row = Map::new();
                row.insert("_raw".to_string(), other);
                Err(Rejection { row, message })
            }
        }
    }

    /// Validate one row. On success the row has declared fields first (declaration order,
    /// missing optional ones as null) and then the extras in input order.
    pub fn validate(&mut self, input: Row) -> Result<Row, Rejection> {
        let validated = match self.schema.mode {
            SchemaMode::Observed => {
                // Observed rows pass untouched; values cannot be NaN or infinite because a
                // `Value` cannot hold them (CSV coercion and the JSON reader refuse them).
                input
            }
            SchemaMode::Fixed | SchemaMode::Flexible => match self.check_declared(&input) {
                Ok(row) => row,
                Err(errors) => {
                    return Err(Rejection {
                        row: input,
                        message: errors.join("; "),
                    })
                }
            },
        };
        if self.schema.mode == SchemaMode::Fixed {
            return Ok(validated);
        }
        if let Some(locked) = &self.locked {
            let errors = lock_violations(locked, &validated);
            if !errors.is_empty() {
                // ELSPETH quarantines the *validated* row for a lock-in violation (the schema
                // itself accepted it), not the raw input.
                return Err(Rejection {
                    row: validated,
                    message: errors.join("; "),
                });
            }
        } else {
            let locked = validated
                .iter()
                .filter(|(k, _)| self.schema.field(k).is_none())
                .map(|(k, v)| (k.clone(), Kind::of(v)))
                .collect();
            self.locked = Some(locked);
        }
        Ok(validated)
    }

    fn check_declared(&self, input: &Row) -> Result<Row, Vec<String>> {
        let mut out = Map::new();
        let mut errors = Vec::new();
        for spec in &self.schema.fields {
            match input.get(&spec.name) {
                None if spec.optional => {
                    out.insert(spec.name.clone(), Value::Null);
                }
                None => errors.push(format!("field '{}': required field is missing", spec.name)),
                Some(Value::Null) if spec.optional || spec.ty == FieldType::Any => {
                    out.insert(spec.name.clone(), Value::Null);
                }
                Some(Value::Null) => errors.push(format!(
                    "field '{}': null is not allowed ({} is not optional)",
                    spec.name,
                    spec.ty.name()
                )),
                Some(v) => match coerce(spec.ty, v) {
                    Ok(c) => {
                        out.insert(spec.name.clone(), c);
                    }
                    Err(why) => errors.push(format!("field '{}': {why}", spec.name)),
                },
            }
        }
        for (k, v) in input {
            if self.schema.field(k).is_some() {
                continue;
            }
            match self.schema.mode {
                SchemaMode::Fixed => errors.push(format!(
                    "field '{k}': not declared in the fixed schema (value {})",
                    describe(v)
                )),
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

fn lock_violations(locked: &HashMap<String, Kind>, row: &Row) -> Vec<String> {
    let mut errors = Vec::new();
    for (k, v) in row {
        let Some(&want) = locked.get(k) else {
            // Fields first seen after lock-in are not checked.
            continue;
        };
        let got = Kind::of(v);
        if got == Kind::Null || want == Kind::Unchecked || got == want {
            continue;
        }
        errors.push(format!(
            "field '{k}': type {} differs from {} fixed by the first valid row (value {})",
            got.name(),
            want.name(),
            describe(v)
        ));
    }
    errors
}

/// Coerce one non-null value to a declared type.
pub fn coerce(ty: FieldType, v: &Value) -> Result<Value, String> {
    match ty {
        FieldType::Any => Ok(v.clone()),
        FieldType::Str => match v {
            Value::String(_) => Ok(v.clone()),
            other => Err(format!("expected str, got {}", describe(other))),
        },
        FieldType::Int => match v {
            Value::String(s) => parse_int(s).map(Value::Number),
            Value::Bool(b) => Ok(Value::Number(i64::from(*b).into())),
            Value::Number(n) if !n.is_f64() => Ok(v.clone()),
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if x.fract() != 0.0 {
                    return Err(format!(
                        "expected int, got float {} with a fractional part",
                        describe(v)
                    ));
                }
                float_to_int(x)
                    .ok_or_else(|| format!("int {} does not fit in 64 bits", describe(v)))
            }
            other => Err(format!("expected int, got {}", describe(other))),
        },
        FieldType::Float => match v {
            Value::String(s) => parse_float(s).map(float_value),
            Value::Bool(b) => Ok(float_value(if *b { 1.0 } else { 0.0 })),
            Value::Number(n) => Ok(float_value(n.as_f64().unwrap_or(f64::NAN))),
            other => Err(format!("expected float, got {}", describe(other))),
        },
        FieldType::Bool => match v {
            Value::String(s) => parse_bool(s).map(Value::Bool),
            Value::Bool(_) => Ok(v.clone()),
            Value::Number(n) => match n.as_f64() {
                Some(0.0) => Ok(Value::Bool(false)),
                Some(1.0) => Ok(Value::Bool(true)),
                _ => Err(format!(
                    "expected bool, got {} (only 0 and 1 convert)",
                    describe(v)
                )),
            },
            other => Err(format!("expected bool, got {}", describe(other))),
        },
    }
}

fn float_value(x: f64) -> Value {
    // Callers only pass finite values; NaN would become null rather than panic.
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn float_to_int(x: f64) -> Option<Value> {
    // 2^63 and 2^64 are exact in f64, so these half-open ranges are the exact int ranges.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    if (-TWO_63..TWO_63).contains(&x) {
        Some(Value::Number((x as i64).into()))
    } else if (0.0..TWO_64).contains(&x) {
        Some(Value::Number((x as u64).into()))
    } else {
        None
    }
}

// The string rules below are pydantic-core's (ELSPETH validates with pydantic 2 in lax
// mode), including its quirks with `_`; a differential run against pydantic 2.13 agrees on
// every case in the tests below.

/// Remove `_` separators that sit between two ASCII digits; `None` if any `_` does not.
fn strip_digit_underscores(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.char_indices() {
        if c == '_' {
            let before = i > 0 && bytes[i - 1].is_ascii_digit();
            let after = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !(before && after) {
                return None;
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The digits of an int's integer part, `_` separators removed. pydantic-core first skips a
/// leading run of zeros *and underscores* (`0__1` is 1), then allows only single `_` between
/// digits; the text may never end in `_`.
fn int_digits(int_part: &str) -> Option<String> {
    if int_part.is_empty() || int_part.ends_with('_') {
        return None;
    }
    let rest = if int_part.starts_with('0') {
        int_part.trim_start_matches(['0', '_'])
    } else {
        int_part
    };
    if rest.is_empty() {
        return Some("0".to_string());
    }
    let digits = strip_digit_underscores(rest)?;
    digits.bytes().all(|b| b.is_ascii_digit()).then_some(digits)
}

/// The §2 int rule for text: trimmed; optional sign; ASCII digits with single `_` between
/// digits; optionally `.` followed by zeros only (no `_` there).
pub fn parse_int(s: &str) -> Result<Number, String> {
    let bad = || format!("{} is not a valid int", describe_str(s));
    let t = s.trim();
    let (negative, unsigned) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let int_part = match unsigned.split_once('.') {
        Some((i, frac)) => {
            if frac.is_empty() || !frac.bytes().all(|b| b == b'0') {
                return Err(format!(
                    "{} is not a valid int (a fraction must be zeros only)",
                    describe_str(s)
                ));
            }
            i
        }
        None => unsigned,
    };
    let digits = int_digits(int_part).ok_or_else(bad)?;
    let text = if negative {
        format!("-{digits}")
    } else {
        digits
    };
    if let Ok(i) = text.parse::<i64>() {
        return Ok(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Ok(u.into());
    }
    Err(format!("{} does not fit in a 64-bit int", describe_str(s)))
}

/// pydantic-core's underscore stripping for floats: no leading or trailing `_`, no `__`;
/// otherwise every `_` goes, wherever it is (`-_1`, `1_e5` are accepted).
fn strip_float_underscores(s: &str) -> Option<String> {
    if s.starts_with('_') || s.ends_with('_') || s.contains("__") {
        return None;
    }
    Some(s.replace('_', ""))
}

/// The §2 float rule for text: trimmed decimal or exponent form (`.5`, `5.`, `1_000.5`);
/// underflow gives 0.0; inf, nan and overflow are rejected.
pub fn parse_float(s: &str) -> Result<f64, String> {
    // Rust's float grammar is pydantic-core's (it parses with it), but it also accepts
    // "inf"/"nan"; those and overflow to infinity are rejected below. The underscore retry
    // works on the *untrimmed* text, so ` 1_0` is rejected while ` 10` is not.
    let parsed = s
        .trim()
        .parse::<f64>()
        .ok()
        .or_else(|| strip_float_underscores(s).and_then(|p| p.parse::<f64>().ok()));
    match parsed {
        Some(x) if x.is_finite() => Ok(x),
        Some(_) => Err(format!(
            "{} is not a finite float (inf, nan and overflow are rejected)",
            describe_str(s)
        )),
        None => Err(format!("{} is not a valid float", describe_str(s))),
    }
}

/// The §2 bool rule for text: case-insensitive and *untrimmed*.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    const TRUE: &[&str] = &["true", "t", "yes", "y", "on", "1"];
    const FALSE: &[&str] = &["false", "f", "no", "n", "off", "0"];
    if TRUE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Ok(true)
    } else if FALSE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Ok(false)
    } else {
        Err(format!(
            "{} is not a valid bool (true/false, t/f, yes/no, y/n, on/off, 1/0)",
            describe_str(s)
        ))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// Longest value text quoted in an error message; a 10 MB cell must not make a 10 MB message.
const MAX_SHOWN: usize = 60;

fn describe_str(s: &str) -> String {
    let shown = py_repr(&Value::String(truncate(s)));
    if s.chars().count() > MAX_SHOWN {
        format!("{shown}... ({} chars)", s.chars().count())
    } else {
        shown
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_SHOWN).collect()
}

/// A value as it appears in an error message: its type and a short Python repr.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("str {}", describe_str(s)),
        other => {
            let r = py_repr(other);
            if r.chars().count() > MAX_SHOWN {
                format!("{} {}...", type_name(other), truncate(&r))
            } else {
                format!("{} {r}", type_name(other))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::schema::FieldSpec;
    use serde_json::json;

    fn c(ty: FieldType, v: Value) -> Result<Value, String> {
        coerce(ty, &v)
    }

    fn s(text: &str) -> Value {
        Value::String(text.to_string())
    }

    // --- §2 table, CSV strings -------------------------------------------------------------

    #[test]
    fn int_accepted() {
        let cases: &[(&str, Value)] = &[
            ("1", json!(1)),
            (" 42 ", json!(42)),
            ("\t-7\n", json!(-7)),
            ("+5", json!(5)),
            ("1_000", json!(1000)),
            ("1_000_000", json!(1_000_000)),
            ("1.0", json!(1)),
            ("-1.00", json!(-1)),
            ("007", json!(7)),
            ("-0", json!(0)),
            ("9223372036854775807", json!(i64::MAX)),
            ("-9223372036854775808", json!(i64::MIN)),
            ("18446744073709551615", json!(u64::MAX)),
            ("1_0.0", json!(10)),
            ("1_000.00", json!(1000)),
            ("0__1", json!(1)),
            ("-0__1", json!(-1)),
            ("0___0", json!(0)),
            ("0__1_2", json!(12)),
            ("0__0.00", json!(0)),
            (" 1_0 ", json!(10)),
            ("\u{a0}1", json!(1)),
            ("1.0\u{a0}", json!(1)),
        ];
        for (text, want) in cases {
            let got = c(FieldType::Int, s(text));
            assert_eq!(got.as_ref(), Ok(want), "int from {text:?}");
            assert!(
                got.map(|v| !v.is_f64()).unwrap_or(false),
                "{text:?} must be an int"
            );
        }
    }

    #[test]
    fn int_rejected() {
        for text in [
            "1.5", "1.", "1e3", "0x10", "", " ", "1_", "_1", "1__0", "--1", "+-1", "١٢", "1 2",
            ".0", "1.0.0", "1.01", "abc", "∞", "1.0_0", "1_0.0_0", "1_0.", "-_1", "+_1", "1_.0",
            "0_", "00__", "0__.0", "0_1__2", "1e_5", "- 1", "１", "²", "0x",
        ] {
            let got = c(FieldType::Int, s(text));
            assert!(got.is_err(), "int from {text:?} should fail, got {got:?}");
        }
    }

    #[test]
    fn sign_after_leading_zeros_is_rejected_unlike_pydantic() {
        // pydantic-core strips leading zeros before it looks for the sign and so reads "0-4"
        // as -4. attest deliberately does not: that turns range-like text into a negative
        // number without a word.
        for text in ["0-4", "00-5", "0_-1", "+0-407"] {
            assert!(c(FieldType::Int, s(text)).is_err(), "{text:?}");
        }
    }

    #[test]
    fn big_ints_beyond_64_bits_are_reported_not_rounded() {
        let e = c(FieldType::Int, s("123456789012345678901234567890"))
            .err()
            .unwrap_or_default();
        assert!(e.contains("64-bit"), "{e}");
    }

    #[test]
    fn float_accepted() {
        let cases: &[(&str, f64)] = &[
            ("1.5", 1.5),
            (" 2 ", 2.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("-3.25", -3.25),
            ("1e3", 1000.0),
            ("1E-2", 0.01),
            ("1_000.5", 1000.5),
            ("+0.5", 0.5),
            ("1e-400", 0.0),
            ("-_1", -1.0),
            ("+_1", 1.0),
            ("1_.0", 1.0),
            ("1._0", 1.0),
            ("1.0_0", 1.0),
            ("1_0.", 10.0),
            ("1e_5", 100000.0),
            ("1_e5", 100000.0),
            ("1_0e1_0", 1e11),
            ("1 ", 1.0),
            ("\u{a0}1", 1.0),
        ];
        for (text, want) in cases {
            let got = c(FieldType::Float, s(text));
            assert_eq!(got, Ok(json!(want)), "float from {text:?}");
        }
    }

    #[test]
    fn float_rejected() {
        for text in [
            "inf", "-inf", "Infinity", "nan", "NaN", "1e400", "-1e400", "", "1,5", "abc", "1_",
            "_1.0", "0x1p3", ".", "e5", " 1_0", "1_0 ", " 1_000.5", "1__0", "0__0", "_.5", ".5_",
            "1e5_", "1___0",
        ] {
            let got = c(FieldType::Float, s(text));
            assert!(got.is_err(), "float from {text:?} should fail, got {got:?}");
        }
    }

    #[test]
    fn bool_accepted() {
        for t in [
            "true", "TRUE", "True", "t", "T", "yes", "Yes", "y", "on", "ON", "1",
        ] {
            assert_eq!(c(FieldType::Bool, s(t)), Ok(json!(true)), "{t:?}");
        }
        for f in ["false", "False", "f", "no", "NO", "n", "off", "Off", "0"] {
            assert_eq!(c(FieldType::Bool, s(f)), Ok(json!(false)), "{f:?}");
        }
    }

    #[test]
    fn bool_rejected() {
        for text in ["", "2", "1.0", " true", "true ", "tru", "yes!", "0.0", "-1"] {
            assert!(c(FieldType::Bool, s(text)).is_err(), "bool from {text:?}");
        }
    }

    #[test]
    fn str_and_any_are_verbatim() {
        for text in ["", "  padded  ", "1", "true", "line\nbreak"] {
            assert_eq!(c(FieldType::Str, s(text)), Ok(s(text)));
            assert_eq!(c(FieldType::Any, s(text)), Ok(s(text)));
        }
    }

    // --- JSON natives ------------------------------------------------------------------------

    #[test]
    fn json_native_int() {
        assert_eq!(c(FieldType::Int, json!(5)), Ok(json!(5)));
        assert_eq!(c(FieldType::Int, json!(1.0)), Ok(json!(1)));
        assert_eq!(c(FieldType::Int, json!(-3.0)), Ok(json!(-3)));
        assert_eq!(c(FieldType::Int, json!(true)), Ok(json!(1)));
        assert_eq!(c(FieldType::Int, json!(false)), Ok(json!(0)));
        assert!(c(FieldType::Int, json!(1.5)).is_err());
        assert!(c(FieldType::Int, json!(1e30)).is_err());
        assert!(c(FieldType::Int, json!([1])).is_err());
        assert!(c(FieldType::Int, json!({})).is_err());
    }

    #[test]
    fn json_native_float() {
        let one = c(FieldType::Float, json!(1));
        assert_eq!(one, Ok(json!(1.0)));
        assert!(one.map(|v| v.is_f64()).unwrap_or(false));
        assert_eq!(c(FieldType::Float, json!(true)), Ok(json!(1.0)));
        assert_eq!(c(FieldType::Float, json!(false)), Ok(json!(0.0)));
        assert_eq!(c(FieldType::Float, json!(2.5)), Ok(json!(2.5)));
        assert!(c(FieldType::Float, json!([])).is_err());
    }

    #[test]
    fn json_native_bool() {
        assert_eq!(c(FieldType::Bool, json!(true)), Ok(json!(true)));
        assert_eq!(c(FieldType::Bool, json!(0)), Ok(json!(false)));
        assert_eq!(c(FieldType::Bool, json!(1)), Ok(json!(true)));
        assert_eq!(c(FieldType::Bool, json!(1.0)), Ok(json!(true)));
        assert_eq!(c(FieldType::Bool, json!(0.0)), Ok(json!(false)));
        assert!(c(FieldType::Bool, json!(2)).is_err());
        assert!(c(FieldType::Bool, json!(0.5)).is_err());
    }

    #[test]
    fn json_native_str_rejects_numbers_and_bools() {
        assert!(c(FieldType::Str, json!(1)).is_err());
        assert!(c(FieldType::Str, json!(1.5)).is_err());
        assert!(c(FieldType::Str, json!(true)).is_err());
        assert_eq!(
            c(FieldType::Any, json!([1, {"a": null}])),
            Ok(json!([1, {"a": null}]))
        );
    }

    // --- rows ----------------------------------------------------------------------------

    fn row(v: Value) -> Row {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn keys(r: &Row) -> Vec<&str> {
        r.keys().map(String::as_str).collect()
    }

    #[test]
    fn empty_csv_cell_is_never_null() {
        let mut v = Validator::new(Schema::fixed(vec![FieldSpec::new(
            "n",
            FieldType::Int,
            true,
        )]));
        let e = v
            .validate(row(json!({"n": ""})))
            .err()
            .map(|r| r.message)
            .unwrap_or_default();
        assert!(e.contains("field 'n'") && e.contains("''"), "{e}");
        let mut v = Validator::new(Schema::fixed(vec![FieldSpec::new(
            "s",
            FieldType::Str,
            true,
        )]));
        assert_eq!(v.validate(row(json!({"s": ""}))), Ok(row(json!({"s": ""}))));
    }

    #[test]
    fn declared_first_then_extras_and_missing_optional_is_null() {
        let schema = Schema::flexible(vec![
            FieldSpec::new("id", FieldType::Int, false),
            FieldSpec::new("note", FieldType::Str, true),
        ]);
        let mut v = Validator::new(schema);
        let out = v.validate(row(json!({"x": "1", "id": "7", "y": "2"})));
        let out = out.unwrap_or_default();
        assert_eq!(keys(&out), vec!["id", "note", "x", "y"]);
        assert_eq!(out.get("id"), Some(&json!(7)));
        assert_eq!(out.get("note"), Some(&Value::Null));
    }

    #[test]
    fn fixed_rejects_extras_and_missing_required_with_raw_row() {
        let schema = Schema::fixed(vec![
            FieldSpec::new("id", FieldType::Int, false),
            FieldSpec::new("name", FieldType::Str, false),
        ]);
        let mut v = Validator::new(schema);
        let input = row(json!({"id": "x", "extra": "1"}));
        let rej = v.validate(input.clone()).err();
        let rej = rej.unwrap_or(Rejection {
            row: Map::new(),
            message: String::new(),
        });
        assert_eq!(rej.row, input);
        assert!(rej.message.contains("field 'id'"), "{}", rej.message);
        assert!(rej.message.contains("'x'"), "{}", rej.message);
        assert!(
            rej.message.contains("field 'name': required"),
            "{}",
            rej.message
        );
        assert!(
            rej.message.contains("field 'extra': not declared"),
            "{}",
            rej.message
        );
    }

    #[test]
    fn null_handling() {
        let schema = Schema::fixed(vec![
            FieldSpec::new("a", FieldType::Int, true),
            FieldSpec::new("b", FieldType::Any, false),
            FieldSpec::new("c", FieldType::Str, false),
        ]);
        let mut v = Validator::new(schema);
        let ok = v.validate(row(json!({"a": null, "b": null, "c": "x"})));
        assert!(ok.is_ok(), "{ok:?}");
        let bad = v.validate(row(json!({"a": 1, "b": 1, "c": null})));
        let msg = bad.err().map(|r| r.message).unwrap_or_default();
        assert!(msg.contains("field 'c': null"), "{msg}");
    }

    #[test]
    fn type_lock_in_observed() {
        let mut v = Validator::new(Schema::observed());
        // A quarantined first row does not lock anything (observed never rejects, so use
        // the lock itself): the first valid row locks.
        assert!(v
            .validate(row(json!({"a": 1, "b": null, "c": [1], "d": "s"})))
            .is_ok());
        // Same types, nulls, lists → fine; new fields unchecked.
        assert!(v
            .validate(row(
                json!({"a": 2, "b": null, "c": {"x": 1}, "d": null, "e": 1.5})
            ))
            .is_ok());
        // int vs float
        let r = v.validate(row(json!({"a": 2.5})));
        let msg = r
            .as_ref()
            .err()
            .map(|r| r.message.clone())
            .unwrap_or_default();
        assert!(msg.contains("field 'a'") && msg.contains("float"), "{msg}");
        // null in row 1 then a value
        assert!(v.validate(row(json!({"b": "now set"}))).is_err());
        // bool vs int
        assert!(v.validate(row(json!({"a": true}))).is_err());
        // the later rejection did not change the lock
        assert!(v.validate(row(json!({"a": 3}))).is_ok());
    }

    #[test]
    fn type_lock_in_flexible_skips_declared_and_first_invalid_row() {
        let schema = Schema::flexible(vec![FieldSpec::new("id", FieldType::Int, false)]);
        let mut v = Validator::new(schema);
        assert!(v.validate(row(json!({"id": "bad", "x": 1}))).is_err());
        assert!(v.validate(row(json!({"id": 1, "x": "s"}))).is_ok());
        assert!(v.validate(row(json!({"id": 2.0, "x": "t"}))).is_ok());
        let rej = v.validate(row(json!({"id": "3", "x": 5})));
        let rej = rej.err();
        assert!(rej.is_some());
        // Quarantined row for a lock-in violation is the validated (coerced) row.
        assert_eq!(rej.map(|r| r.row), Some(row(json!({"id": 3, "x": 5}))));
    }

    #[test]
    fn non_objects_are_quarantined_as_raw() {
        let mut v = Validator::new(Schema::observed());
        let rej = v.validate_value(json!([1, 2])).err();
        assert_eq!(
            rej.as_ref().map(|r| r.row.clone()),
            Some(row(json!({"_raw": [1, 2]})))
        );
        assert!(rej.map(|r| r.message).unwrap_or_default().contains("list"));
    }

    #[test]
    fn huge_values_make_short_messages() {
        let big = "9".repeat(10_000_000);
        let e = c(FieldType::Int, s(&big)).err().unwrap_or_default();
        assert!(e.len() < 200, "{}", e.len());
        let e = c(FieldType::Bool, s(&big)).err().unwrap_or_default();
        assert!(e.len() < 200, "{}", e.len());
    }
}
