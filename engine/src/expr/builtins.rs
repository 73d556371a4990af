//! The functions conditions may call: `len str int float bool abs`, with Python's
//! conversion rules (`int(' 12 ')` is 12, `int('1.5')` is an error, `int(2.9)` is 2, ...).

use super::ast::Builtin;
use super::error::Fail;
use super::lexer::py_isspace;
use super::python::truthy;
use super::pyvalue::PyValue;
use super::repr::{float_repr, py_str, str_repr};

/// CPython (3.11+) refuses to convert strings of more than 4300 digits to int in bases
/// that are not powers of two, to avoid quadratic work; we keep the same limit so the same
/// inputs fail.
const INT_MAX_STR_DIGITS: usize = 4300;

/// Calls `func`; the parser has already checked the number of arguments.
pub(crate) fn call(func: Builtin, mut args: Vec<PyValue>) -> Result<PyValue, Fail> {
    let second = if args.len() > 1 { args.pop() } else { None };
    let first = args.pop();
    match (func, first) {
        (Builtin::Len, Some(v)) => len(&v),
        (Builtin::Abs, Some(v)) => abs(&v),
        (Builtin::Str, None) => Ok(PyValue::Str(String::new())),
        (Builtin::Str, Some(v)) => Ok(PyValue::Str(py_str(&v))),
        (Builtin::Bool, None) => Ok(PyValue::Bool(false)),
        (Builtin::Bool, Some(v)) => Ok(PyValue::Bool(truthy(&v))),
        (Builtin::Float, None) => Ok(PyValue::Float(0.0)),
        (Builtin::Float, Some(v)) => to_float(&v).map(PyValue::Float),
        (Builtin::Int, None) => Ok(PyValue::Int(0)),
        (Builtin::Int, Some(v)) => to_int(&v, second.as_ref()).map(PyValue::Int),
        (Builtin::Len | Builtin::Abs, None) => Err(Fail::type_error(format!(
            "{}() takes exactly one argument (0 given)",
            func.name()
        ))),
    }
}

fn len(v: &PyValue) -> Result<PyValue, Fail> {
    let n = match v {
        // Python counts code points, not bytes.
        PyValue::Str(s) => s.chars().count(),
        PyValue::List(xs) | PyValue::Tuple(xs) | PyValue::Set(xs) => xs.len(),
        PyValue::Dict(entries) => entries.len(),
        other => {
            return Err(Fail::type_error(format!(
                "object of type '{}' has no len()",
                other.type_name()
            )))
        }
    };
    Ok(PyValue::Int(n as i128))
}

fn abs(v: &PyValue) -> Result<PyValue, Fail> {
    match v {
        PyValue::Bool(b) => Ok(PyValue::Int(i128::from(*b))),
        PyValue::Int(i) => i
            .checked_abs()
            .map(PyValue::Int)
            .ok_or_else(|| Fail::overflow(format!("abs({i}) is out of range"))),
        PyValue::Float(f) => Ok(PyValue::Float(f.abs())),
        other => Err(Fail::type_error(format!(
            "bad operand type for abs(): '{}'",
            other.type_name()
        ))),
    }
}

fn to_float(v: &PyValue) -> Result<f64, Fail> {
    match v {
        PyValue::Bool(b) => Ok(f64::from(u8::from(*b))),
        PyValue::Int(i) => Ok(*i as f64),
        PyValue::Float(f) => Ok(*f),
        PyValue::Str(s) => parse_float(s),
        other => Err(Fail::type_error(format!(
            "float() argument must be a string or a real number, not '{}'",
            other.type_name()
        ))),
    }
}

fn to_int(v: &PyValue, base: Option<&PyValue>) -> Result<i128, Fail> {
    if let Some(base) = base {
        let base = match base {
            PyValue::Bool(b) => i128::from(*b),
            PyValue::Int(i) => *i,
            other => {
                return Err(Fail::type_error(format!(
                    "'{}' object cannot be interpreted as an integer",
                    other.type_name()
                )))
            }
        };
        let PyValue::Str(s) = v else {
            return Err(Fail::type_error(
                "int() can't convert non-string with explicit base",
            ));
        };
        return match u32::try_from(base) {
            Ok(b) if b == 0 || (2..=36).contains(&b) => parse_int(s, b),
            _ => Err(Fail::value_error("int() base must be >= 2 and <= 36, or 0")),
        };
    }
    match v {
        PyValue::Bool(b) => Ok(i128::from(*b)),
        PyValue::Int(i) => Ok(*i),
        PyValue::Float(f) => float_to_int(*f),
        PyValue::Str(s) => parse_int(s, 10),
        other => Err(Fail::type_error(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            other.type_name()
        ))),
    }
}

/// `int(float)` truncates towards zero.
fn float_to_int(f: f64) -> Result<i128, Fail> {
    if f.is_nan() {
        return Err(Fail::value_error("cannot convert float NaN to integer"));
    }
    if f.is_infinite() {
        return Err(Fail::overflow("cannot convert float infinity to integer"));
    }
    const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    let t = f.trunc();
    if !(-TWO_127..TWO_127).contains(&t) {
        return Err(Fail::overflow(format!(
            "int({}) is out of range (integers are limited to ±2^127)",
            float_repr(f)
        )));
    }
    Ok(t as i128)
}

/// `int(text, base)` with Python's rules: surrounding whitespace, a sign, an optional
/// `0x`/`0o`/`0b` prefix matching the base (base 0 infers it), and underscores only
/// between digits. Only ASCII digits are accepted (Python also takes other Unicode decimal
/// digits).
pub(crate) fn parse_int(text: &str, base: u32) -> Result<i128, Fail> {
    let invalid = || {
        Fail::value_error(format!(
            "invalid literal for int() with base {base}: {}",
            str_repr(text)
        ))
    };
    let s = text.trim_matches(py_isspace);
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower_prefix = s.get(..2).map(str::to_ascii_lowercase);
    let prefixed_radix = match lower_prefix.as_deref() {
        Some("0x") => Some(16),
        Some("0o") => Some(8),
        Some("0b") => Some(2),
        _ => None,
    };
    let (radix, digits, prefixed) = match (base, prefixed_radix) {
        (0, Some(r)) => (r, &s[2..], true),
        (0, None) => (10, s, false),
        (b, Some(r)) if b == r => (b, &s[2..], true),
        (b, _) => (b, s, false),
    };
    // After a prefix one underscore may come before the first digit: 0x_ff.
    let digits = match digits.strip_prefix('_') {
        Some(rest) if prefixed => rest,
        _ => digits,
    };
    let mut value: i128 = 0;
    let mut count = 0usize;
    let mut previous_underscore = true; // a leading underscore is invalid
    for c in digits.chars() {
        if c == '_' {
            if previous_underscore {
                return Err(invalid());
            }
            previous_underscore = true;
            continue;
        }
        let d = c.to_digit(radix).ok_or_else(invalid)?;
        previous_underscore = false;
        count += 1;
        value = value
            .checked_mul(i128::from(radix))
            .and_then(|v| v.checked_add(i128::from(d)))
            .ok_or_else(|| {
                Fail::overflow(format!(
                    "int() of {} is out of range (integers are limited to ±2^127)",
                    str_repr(text)
                ))
            })?;
    }
    if count == 0 || previous_underscore {
        return Err(invalid());
    }
    // Base 0 reads a literal as Python source would: no leading zeros on a nonzero decimal.
    if base == 0 && !prefixed && value != 0 && digits.starts_with('0') {
        return Err(invalid());
    }
    if !radix.is_power_of_two() && count > INT_MAX_STR_DIGITS {
        return Err(Fail::value_error(format!(
            "Exceeds the limit ({INT_MAX_STR_DIGITS} digits) for integer string conversion: \
             value has {count} digits"
        )));
    }
    Ok(if negative { -value } else { value })
}

/// `float(text)`: surrounding whitespace, underscores only between digits, and otherwise
/// exactly the syntax Rust's float parser accepts (decimal, exponent, `inf`, `infinity`,
/// `nan`, any case, optional sign), which is Python's.
pub(crate) fn parse_float(text: &str) -> Result<f64, Fail> {
    let invalid = || {
        Fail::value_error(format!(
            "could not convert string to float: {}",
            str_repr(text)
        ))
    };
    let s = text.trim_matches(py_isspace);
    let chars: Vec<char> = s.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c == '_' {
            let digit_before = i > 0 && chars[i - 1].is_ascii_digit();
            let digit_after = chars.get(i + 1).is_some_and(char::is_ascii_digit);
            if !(digit_before && digit_after) {
                return Err(invalid());
            }
        }
    }
    let cleaned: String = chars.into_iter().filter(|c| *c != '_').collect();
    cleaned.parse::<f64>().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::error::EvalErrorKind;

    fn int_of(s: &str, base: u32) -> Result<i128, EvalErrorKind> {
        parse_int(s, base).map_err(|f| f.kind)
    }

    #[test]
    fn int_parsing_follows_python() {
        use EvalErrorKind::{Overflow, Value};
        assert_eq!(int_of(" 12 ", 10), Ok(12));
        assert_eq!(int_of("\t-1_000\n", 10), Ok(-1000));
        assert_eq!(int_of("+7", 10), Ok(7));
        assert_eq!(int_of("010", 10), Ok(10));
        assert_eq!(int_of("0x1F", 16), Ok(31));
        assert_eq!(int_of("1f", 16), Ok(31));
        assert_eq!(int_of("0x_1f", 0), Ok(31));
        assert_eq!(int_of("0b101", 0), Ok(5));
        assert_eq!(int_of("0o17", 8), Ok(15));
        assert_eq!(int_of("z", 36), Ok(35));
        assert_eq!(int_of("00", 0), Ok(0));
        assert_eq!(int_of("010", 0), Err(Value));
        assert_eq!(int_of("0x10", 10), Err(Value));
        assert_eq!(int_of("1.5", 10), Err(Value));
        assert_eq!(int_of("", 10), Err(Value));
        assert_eq!(int_of("-", 10), Err(Value));
        assert_eq!(int_of("_1", 10), Err(Value));
        assert_eq!(int_of("1_", 10), Err(Value));
        assert_eq!(int_of("1__0", 10), Err(Value));
        assert_eq!(int_of("- 1", 10), Err(Value));
        assert_eq!(int_of("١٢", 10), Err(Value));
        assert_eq!(int_of(&"9".repeat(40), 10), Err(Overflow));
        assert_eq!(int_of(&"0".repeat(4301), 10), Err(Value));
        assert_eq!(int_of(&"0".repeat(4301), 16), Ok(0));
        let msg = parse_int("x", 10).err().map(|f| f.message);
        assert_eq!(
            msg.as_deref(),
            Some("invalid literal for int() with base 10: 'x'")
        );
    }

    #[test]
    fn float_parsing_follows_python() {
        let f = |s: &str| parse_float(s).map_err(|f| f.kind);
        assert_eq!(f(" 1.5 "), Ok(1.5));
        assert_eq!(f("1_000.5"), Ok(1000.5));
        assert_eq!(f("-2e3"), Ok(-2000.0));
        assert_eq!(f(".5"), Ok(0.5));
        assert_eq!(f("5."), Ok(5.0));
        assert_eq!(f("1e400"), Ok(f64::INFINITY));
        assert_eq!(f("-Infinity"), Ok(f64::NEG_INFINITY));
        assert!(parse_float("NaN").is_ok_and(f64::is_nan));
        for bad in [
            "", "abc", "1_", "_1", "1__0", "1._5", "0x10", "1e", "1.5.2", "in f",
        ] {
            assert_eq!(f(bad), Err(EvalErrorKind::Value), "{bad:?}");
        }
    }

    #[test]
    fn conversions() {
        let call1 = |func, v| call(func, vec![v]).map_err(|f| f.kind);
        assert_eq!(
            call1(Builtin::Int, PyValue::Float(-2.9)),
            Ok(PyValue::Int(-2))
        );
        assert_eq!(
            call1(Builtin::Int, PyValue::Float(f64::NAN)),
            Err(EvalErrorKind::Value)
        );
        assert_eq!(
            call1(Builtin::Int, PyValue::Float(f64::INFINITY)),
            Err(EvalErrorKind::Overflow)
        );
        assert_eq!(
            call1(Builtin::Int, PyValue::Float(1e39)),
            Err(EvalErrorKind::Overflow)
        );
        assert_eq!(
            call1(Builtin::Int, PyValue::Bool(true)),
            Ok(PyValue::Int(1))
        );
        assert_eq!(call1(Builtin::Int, PyValue::None), Err(EvalErrorKind::Type));
        assert_eq!(
            call1(Builtin::Float, PyValue::Int(3)),
            Ok(PyValue::Float(3.0))
        );
        assert_eq!(
            call1(Builtin::Float, PyValue::List(vec![])),
            Err(EvalErrorKind::Type)
        );
        assert_eq!(
            call1(Builtin::Abs, PyValue::Int(i128::MIN)),
            Err(EvalErrorKind::Overflow)
        );
        assert_eq!(
            call1(Builtin::Len, PyValue::Str("héllo".into())),
            Ok(PyValue::Int(5))
        );
        assert_eq!(
            call1(Builtin::Len, PyValue::Int(5)),
            Err(EvalErrorKind::Type)
        );
        let two = |a, b| call(Builtin::Int, vec![a, b]).map_err(|f| f.kind);
        assert_eq!(
            two(PyValue::Str("ff".into()), PyValue::Int(16)),
            Ok(PyValue::Int(255))
        );
        assert_eq!(
            two(PyValue::Int(5), PyValue::Int(16)),
            Err(EvalErrorKind::Type)
        );
        assert_eq!(
            two(PyValue::Str("1".into()), PyValue::Int(1)),
            Err(EvalErrorKind::Value)
        );
        assert_eq!(
            two(PyValue::Str("1".into()), PyValue::Float(2.0)),
            Err(EvalErrorKind::Type)
        );
    }
}
