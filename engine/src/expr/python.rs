//! Python's semantics for the operators conditions use: truthiness, equality, ordering,
//! membership and arithmetic, over [`PyValue`].
//!
//! Each rule follows CPython 3.12 behaviour for the types that can occur; the comments say
//! where that behaviour is not the obvious one.

use std::cmp::Ordering;

use super::ast::{BinOp, CmpOp};
use super::error::{EvalErrorKind, Fail};
use super::pyvalue::PyValue;
use super::MAX_VALUE_SIZE;

/// Python truthiness: `None`, `False`, zero, and empty strings and containers are false.
/// NaN is true (it is not equal to zero).
pub(crate) fn truthy(v: &PyValue) -> bool {
    match v {
        PyValue::None => false,
        PyValue::Bool(b) => *b,
        PyValue::Int(i) => *i != 0,
        PyValue::Float(f) => *f != 0.0,
        PyValue::Str(s) => !s.is_empty(),
        PyValue::List(xs) | PyValue::Tuple(xs) | PyValue::Set(xs) => !xs.is_empty(),
        PyValue::Dict(entries) => !entries.is_empty(),
    }
}

/// A number in Python's numeric tower: bool is an int subtype (`True + 1 == 2`).
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num(v: &PyValue) -> Option<Num> {
    match v {
        PyValue::Bool(b) => Some(Num::Int(i128::from(*b))),
        PyValue::Int(i) => Some(Num::Int(*i)),
        PyValue::Float(f) => Some(Num::Float(*f)),
        _ => None,
    }
}

/// Python compares ints and floats exactly (`2**53 + 1 != 2.0**53`), never by converting
/// the int to a float. `None` means unordered (a NaN is involved).
pub(crate) fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // 2^127 is exactly representable; every i128 is below it and at or above its negation.
    const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    let t = f.trunc();
    if t >= TWO_127 {
        return Some(Ordering::Less);
    }
    if t < -TWO_127 {
        return Some(Ordering::Greater);
    }
    // `t` is integral and within [-2^127, 2^127), so the cast is exact.
    match i.cmp(&(t as i128)) {
        Ordering::Equal => {
            let frac = f - t;
            Some(if frac > 0.0 {
                Ordering::Less
            } else if frac < 0.0 {
                Ordering::Greater
            } else {
                Ordering::Equal
            })
        }
        other => Some(other),
    }
}

fn num_cmp(x: Num, y: Num) -> Option<Ordering> {
    match (x, y) {
        (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
        (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
        (Num::Int(a), Num::Float(b)) => cmp_int_float(a, b),
        (Num::Float(a), Num::Int(b)) => cmp_int_float(b, a).map(Ordering::reverse),
    }
}

/// Python `==`. Values of unrelated types are simply unequal; `1 == 1.0 == True`;
/// a list never equals a tuple; dicts and sets compare regardless of order.
pub(crate) fn py_eq(a: &PyValue, b: &PyValue) -> bool {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return num_cmp(x, y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (PyValue::None, PyValue::None) => true,
        (PyValue::Str(x), PyValue::Str(y)) => x == y,
        (PyValue::List(x), PyValue::List(y)) | (PyValue::Tuple(x), PyValue::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (PyValue::Set(x), PyValue::Set(y)) => x.len() == y.len() && is_subset(x, y),
        (PyValue::Dict(x), PyValue::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| dict_get(y, k).is_some_and(|w| py_eq(v, w)))
        }
        _ => false,
    }
}

fn is_subset(x: &[PyValue], y: &[PyValue]) -> bool {
    x.iter().all(|e| y.iter().any(|f| py_eq(e, f)))
}

/// Dict lookup by Python equality (so `{1: 'a'}[1.0]` finds the entry, as in Python,
/// where equal numbers hash alike).
pub(crate) fn dict_get<'d>(
    entries: &'d [(PyValue, PyValue)],
    key: &PyValue,
) -> Option<&'d PyValue> {
    entries.iter().find(|(k, _)| py_eq(k, key)).map(|(_, v)| v)
}

/// Evaluates one link of a comparison chain.
pub(crate) fn compare(op: CmpOp, a: &PyValue, b: &PyValue) -> Result<bool, Fail> {
    match op {
        CmpOp::Eq => Ok(py_eq(a, b)),
        CmpOp::Ne => Ok(!py_eq(a, b)),
        CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => order(op, a, b),
        CmpOp::In => contains(b, a),
        CmpOp::NotIn => contains(b, a).map(|found| !found),
        // The parser only lets `is` compare with the literal None, where identity and
        // "is the None value" coincide.
        CmpOp::Is => Ok(matches!((a, b), (PyValue::None, PyValue::None))),
        CmpOp::IsNot => Ok(!matches!((a, b), (PyValue::None, PyValue::None))),
    }
}

fn test(op: CmpOp, ordering: Ordering) -> bool {
    match op {
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::Le => ordering != Ordering::Greater,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::Ge => ordering != Ordering::Less,
        _ => false,
    }
}

/// `< <= > >=`. Only numbers, strings (by code point), same-kind sequences
/// (lexicographically) and sets (by inclusion) are ordered; anything else is a TypeError,
/// as in Python 3.
fn order(op: CmpOp, a: &PyValue, b: &PyValue) -> Result<bool, Fail> {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return Ok(num_cmp(x, y).is_some_and(|o| test(op, o)));
    }
    match (a, b) {
        // UTF-8 byte order is code point order.
        (PyValue::Str(x), PyValue::Str(y)) => Ok(test(op, x.as_str().cmp(y.as_str()))),
        (PyValue::List(x), PyValue::List(y)) | (PyValue::Tuple(x), PyValue::Tuple(y)) => {
            // Python finds the first pair that is not equal and applies the operator to
            // it (which may raise); only if none differ do the lengths decide.
            match x.iter().zip(y).find(|(p, q)| !py_eq(p, q)) {
                Some((p, q)) => order(op, p, q),
                None => Ok(test(op, x.len().cmp(&y.len()))),
            }
        }
        (PyValue::Set(x), PyValue::Set(y)) => Ok(match op {
            CmpOp::Lt => x.len() < y.len() && is_subset(x, y),
            CmpOp::Le => is_subset(x, y),
            CmpOp::Gt => y.len() < x.len() && is_subset(y, x),
            _ => is_subset(y, x),
        }),
        _ => Err(Fail::type_error(format!(
            "'{}' not supported between instances of '{}' and '{}'",
            op.symbol(),
            a.type_name(),
            b.type_name()
        ))),
    }
}

/// `item in container`.
pub(crate) fn contains(container: &PyValue, item: &PyValue) -> Result<bool, Fail> {
    match container {
        PyValue::Str(s) => match item {
            PyValue::Str(sub) => Ok(s.contains(sub.as_str())),
            other => Err(Fail::type_error(format!(
                "'in <string>' requires string as left operand, not {}",
                other.type_name()
            ))),
        },
        PyValue::List(xs) | PyValue::Tuple(xs) => Ok(xs.iter().any(|x| py_eq(x, item))),
        PyValue::Set(xs) => {
            item.require_hashable()?;
            Ok(xs.iter().any(|x| py_eq(x, item)))
        }
        PyValue::Dict(entries) => {
            item.require_hashable()?;
            Ok(dict_get(entries, item).is_some())
        }
        other => Err(Fail::type_error(format!(
            "argument of type '{}' is not iterable",
            other.type_name()
        ))),
    }
}

/// Unary `-` and `+`; both turn a bool into an int, as in Python.
pub(crate) fn unary_number(negate: bool, v: &PyValue) -> Result<PyValue, Fail> {
    match num(v) {
        Some(Num::Int(i)) if negate => i
            .checked_neg()
            .map(PyValue::Int)
            .ok_or_else(|| Fail::overflow(format!("integer result of -({i}) is out of range"))),
        Some(Num::Int(i)) => Ok(PyValue::Int(i)),
        Some(Num::Float(f)) => Ok(PyValue::Float(if negate { -f } else { f })),
        None => Err(Fail::type_error(format!(
            "bad operand type for unary {}: '{}'",
            if negate { "-" } else { "+" },
            v.type_name()
        ))),
    }
}

pub(crate) fn binary(op: BinOp, a: PyValue, b: PyValue) -> Result<PyValue, Fail> {
    if let (Some(x), Some(y)) = (num(&a), num(&b)) {
        return match (x, y) {
            (Num::Int(p), Num::Int(q)) => int_binary(op, p, q),
            _ => float_binary(op, to_float(x), to_float(y)),
        };
    }
    let unsupported = |a: &PyValue, b: &PyValue| {
        Fail::type_error(format!(
            "unsupported operand type(s) for {}: '{}' and '{}'",
            op.symbol(),
            a.type_name(),
            b.type_name()
        ))
    };
    match (op, a, b) {
        (BinOp::Add, PyValue::Str(mut x), PyValue::Str(y)) => {
            x.push_str(&y);
            Ok(PyValue::Str(x))
        }
        (BinOp::Add, PyValue::List(mut x), PyValue::List(y)) => {
            x.extend(y);
            Ok(PyValue::List(x))
        }
        (BinOp::Add, PyValue::Tuple(mut x), PyValue::Tuple(y)) => {
            x.extend(y);
            Ok(PyValue::Tuple(x))
        }
        (BinOp::Sub, PyValue::Set(x), PyValue::Set(y)) => Ok(PyValue::Set(
            x.into_iter()
                .filter(|e| !y.iter().any(|f| py_eq(e, f)))
                .collect(),
        )),
        (BinOp::Mul, seq, n) | (BinOp::Mul, n, seq)
            if is_sequence(&seq) && matches!(num(&n), Some(Num::Int(_))) =>
        {
            let count = match num(&n) {
                Some(Num::Int(c)) => c,
                _ => 0,
            };
            repeat(seq, count)
        }
        (BinOp::Mul, seq, n) | (BinOp::Mul, n, seq) if is_sequence(&seq) && num(&n).is_some() => {
            Err(Fail::type_error(format!(
                "can't multiply sequence by non-int of type '{}'",
                n.type_name()
            )))
        }
        (BinOp::Mod, PyValue::Str(_), _) => Err(Fail::new(
            EvalErrorKind::Unsupported,
            "printf-style string formatting ('...' % value) is not supported in conditions",
        )),
        (_, a, b) => Err(unsupported(&a, &b)),
    }
}

fn is_sequence(v: &PyValue) -> bool {
    matches!(v, PyValue::Str(_) | PyValue::List(_) | PyValue::Tuple(_))
}

fn to_float(x: Num) -> f64 {
    match x {
        // Rounds to nearest, ties to even: the same as Python's int-to-float conversion.
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    }
}

fn int_binary(op: BinOp, a: i128, b: i128) -> Result<PyValue, Fail> {
    let overflow = || {
        Fail::overflow(format!(
            "integer result of {a} {} {b} is out of range (integers are limited to ±2^127)",
            op.symbol()
        ))
    };
    let zero = |message: &str| Err(Fail::new(EvalErrorKind::ZeroDivision, message));
    match op {
        BinOp::Add => a.checked_add(b).map(PyValue::Int).ok_or_else(overflow),
        BinOp::Sub => a.checked_sub(b).map(PyValue::Int).ok_or_else(overflow),
        BinOp::Mul => a.checked_mul(b).map(PyValue::Int).ok_or_else(overflow),
        BinOp::Div if b == 0 => zero("division by zero"),
        BinOp::Div => Ok(PyValue::Float(int_true_div(a, b))),
        BinOp::FloorDiv if b == 0 => zero("integer division or modulo by zero"),
        BinOp::FloorDiv => {
            // Rust truncates towards zero; Python floors.
            let q = a.checked_div(b).ok_or_else(overflow)?;
            let r = a.checked_rem(b).unwrap_or(0);
            Ok(PyValue::Int(if r != 0 && ((r < 0) != (b < 0)) {
                q - 1
            } else {
                q
            }))
        }
        BinOp::Mod if b == 0 => zero("integer division or modulo by zero"),
        BinOp::Mod => {
            // checked_rem fails only for MIN % -1, whose remainder is 0. The result takes
            // the sign of the divisor.
            let r = a.checked_rem(b).unwrap_or(0);
            Ok(PyValue::Int(if r != 0 && ((r < 0) != (b < 0)) {
                r + b
            } else {
                r
            }))
        }
    }
}

fn float_binary(op: BinOp, a: f64, b: f64) -> Result<PyValue, Fail> {
    let zero = |message: &str| Err(Fail::new(EvalErrorKind::ZeroDivision, message));
    Ok(PyValue::Float(match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div if b == 0.0 => return zero("float division by zero"),
        BinOp::Div => a / b,
        BinOp::FloorDiv if b == 0.0 => return zero("float floor division by zero"),
        BinOp::FloorDiv => float_divmod(a, b).0,
        BinOp::Mod if b == 0.0 => return zero("float modulo by zero"),
        BinOp::Mod => float_divmod(a, b).1,
    }))
}

/// CPython's float `divmod`: the remainder takes the divisor's sign and the quotient is
/// nudged so that `q * b + r` reproduces `a` as closely as floats allow.
pub(crate) fn float_divmod(a: f64, b: f64) -> (f64, f64) {
    // Rust's `%` on floats is C's fmod.
    let mut rem = a % b;
    let mut div = (a - rem) / b;
    if rem != 0.0 {
        if (b < 0.0) != (rem < 0.0) {
            rem += b;
            div -= 1.0;
        }
    } else {
        rem = 0.0f64.copysign(b);
    }
    let floor = if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0.0f64.copysign(a / b)
    };
    (floor, rem)
}

/// `a / b` for ints, correctly rounded like Python's (which does not convert both to
/// floats first: that would round twice for ints above 2^53). `b` must not be zero.
pub(crate) fn int_true_div(a: i128, b: i128) -> f64 {
    const EXACT: u128 = 1 << 53;
    let negative = (a < 0) != (b < 0);
    let (n, d) = (a.unsigned_abs(), b.unsigned_abs());
    let magnitude = if n <= EXACT && d <= EXACT {
        // Both convert exactly, and IEEE division rounds correctly.
        n as f64 / d as f64
    } else {
        ratio_to_f64(n, d)
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// Correctly rounded `n / d` (d > 0) by binary long division: find the first 54
/// significant quotient bits (53 kept plus one rounding bit) and whether anything nonzero
/// remains below them, then round half to even.
fn ratio_to_f64(n: u128, d: u128) -> f64 {
    if n == 0 || d == 0 {
        return 0.0;
    }
    let bits = |x: u128| 128 - x.leading_zeros();
    let mut q = n / d;
    let mut r = n % d;
    let mut exp: i32 = 0;
    let sticky;
    if bits(q) > 54 {
        let shift = bits(q) - 54;
        sticky = (q & ((1u128 << shift) - 1)) != 0 || r != 0;
        q >>= shift;
        exp = shift as i32;
    } else {
        while bits(q) < 54 {
            // r < d <= 2^127, so doubling it cannot overflow.
            r <<= 1;
            q <<= 1;
            if r >= d {
                r -= d;
                q |= 1;
            }
            exp -= 1;
        }
        sticky = r != 0;
    }
    let round_bit = q & 1;
    let mut mantissa = q >> 1;
    exp += 1;
    if round_bit == 1 && (sticky || mantissa & 1 == 1) {
        mantissa += 1;
    }
    // The quotient lies in [2^-127, 2^127], far from the subnormal and overflow ranges,
    // so scaling by an exact power of two is exact.
    let scale = f64::from_bits(((exp + 1023) as u64) << 52);
    mantissa as f64 * scale
}

/// Repetition (`'ab' * 3`, `[0] * n`); a count of zero or less gives an empty sequence.
fn repeat(seq: PyValue, count: i128) -> Result<PyValue, Fail> {
    // CPython converts the count to a machine-sized index first, even when the sequence
    // is empty.
    if i64::try_from(count).is_err() {
        return Err(Fail::overflow(
            "cannot fit 'int' into an index-sized integer",
        ));
    }
    let count = u128::try_from(count).unwrap_or(0);
    let too_large = || {
        Fail::new(
            EvalErrorKind::TooLarge,
            format!("repetition would build a value larger than {MAX_VALUE_SIZE} bytes"),
        )
    };
    let check = |unit: usize| -> Result<usize, Fail> {
        let total = (unit as u128).checked_mul(count).ok_or_else(too_large)?;
        if total > MAX_VALUE_SIZE as u128 {
            return Err(too_large());
        }
        // total fits, and count <= total whenever unit > 0.
        Ok(count as usize)
    };
    match seq {
        PyValue::Str(s) if s.is_empty() || count == 0 => Ok(PyValue::Str(String::new())),
        PyValue::Str(s) => Ok(PyValue::Str(s.repeat(check(s.len())?))),
        PyValue::List(xs) if xs.is_empty() || count == 0 => Ok(PyValue::List(Vec::new())),
        PyValue::List(xs) => Ok(PyValue::List(repeat_items(&xs, check(size_of_items(&xs))?))),
        PyValue::Tuple(xs) if xs.is_empty() || count == 0 => Ok(PyValue::Tuple(Vec::new())),
        PyValue::Tuple(xs) => Ok(PyValue::Tuple(repeat_items(
            &xs,
            check(size_of_items(&xs))?,
        ))),
        other => Err(Fail::type_error(format!(
            "can't multiply '{}' by an int",
            other.type_name()
        ))),
    }
}

fn repeat_items(items: &[PyValue], count: usize) -> Vec<PyValue> {
    let mut out = Vec::with_capacity(items.len().saturating_mul(count));
    for _ in 0..count {
        out.extend(items.iter().cloned());
    }
    out
}

/// The memory one value takes before counting what it owns.
const VALUE_BYTES: usize = std::mem::size_of::<PyValue>();

/// Roughly the bytes a value occupies: each value's own size plus the bytes of strings.
/// Counting an element as one unit instead let `(1,) * 6666666` build 200 MB (found by
/// fuzzing), so every value costs what it really takes.
fn size_of(v: &PyValue) -> usize {
    match v {
        PyValue::Str(s) => s.len().saturating_add(VALUE_BYTES),
        PyValue::List(xs) | PyValue::Tuple(xs) | PyValue::Set(xs) => {
            size_of_items(xs).saturating_add(VALUE_BYTES)
        }
        PyValue::Dict(entries) => entries.iter().fold(VALUE_BYTES, |acc, (k, v)| {
            acc.saturating_add(size_of(k)).saturating_add(size_of(v))
        }),
        _ => VALUE_BYTES,
    }
}

fn size_of_items(items: &[PyValue]) -> usize {
    items
        .iter()
        .fold(0usize, |acc, v| acc.saturating_add(size_of(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_float_comparison_is_exact() {
        let two53 = 1i128 << 53;
        assert_eq!(
            cmp_int_float(two53 + 1, two53 as f64),
            Some(Ordering::Greater)
        );
        assert_eq!(cmp_int_float(two53, two53 as f64), Some(Ordering::Equal));
        assert_eq!(cmp_int_float(-3, -2.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(-2, -2.5), Some(Ordering::Greater));
        assert_eq!(cmp_int_float(i128::MAX, 1.7e38), Some(Ordering::Greater));
        assert_eq!(
            cmp_int_float(i128::MAX, 2f64.powi(127)),
            Some(Ordering::Less)
        );
        assert_eq!(cmp_int_float(i128::MIN, -1.8e38), Some(Ordering::Greater));
        assert_eq!(
            cmp_int_float(i128::MIN, -(2f64.powi(127))),
            Some(Ordering::Equal)
        );
        assert_eq!(cmp_int_float(0, f64::INFINITY), Some(Ordering::Less));
        assert_eq!(cmp_int_float(0, f64::NAN), None);
    }

    #[test]
    fn true_division_is_correctly_rounded() {
        // Expected values computed with CPython 3.11: float.hex(a / b).
        let cases: &[(i128, i128, f64)] = &[
            (1, 3, 1.0 / 3.0),
            (-7, 2, -3.5),
            (0, -5, -0.0),
            // (2**53 + 1) / 1 rounds to even: 2**53.
            ((1 << 53) + 1, 1, 9007199254740992.0),
            // (2**53 + 3) / 1 rounds up to 2**53 + 4.
            ((1 << 53) + 3, 1, 9007199254740996.0),
            // 10**30 / 7 == 1.4285714285714285e+29
            (
                1_000_000_000_000_000_000_000_000_000_000,
                7,
                1.4285714285714285e29,
            ),
            // (2**64 - 1) / (2**64 + 1) is within half an ulp of 1.0.
            ((1i128 << 64) - 1, (1i128 << 64) + 1, 1.0),
            (i128::MAX, 1, 1.7014118346046923e38),
            (1, i128::MIN, -5.877471754111438e-39),
        ];
        for &(a, b, want) in cases {
            let got = int_true_div(a, b);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{a} / {b}: {got:e} vs {want:e}"
            );
        }
    }

    #[test]
    fn true_division_of_wide_ints_matches_cpython() {
        // Random operands from 1 to 127 bits; expected bits are CPython 3.11's
        // struct.pack('<d', a / b), which is correctly rounded for any ints.
        let cases: &[(i128, i128, u64)] = &[
            (
                -35789710110760246153082995843012316103,
                1,
                0xC7BAECD8F1D961F3,
            ),
            (
                -45703692825309699722756036604389816283,
                1,
                0xC7C1311B03F3F38C,
            ),
            (
                -27844572015193433187352817845957734183,
                1,
                0xC7B4F2AB6490FC99,
            ),
            (
                -150026920861681984317355923975688357926,
                10430779633273967792,
                0xC3E8F360E02F8366,
            ),
            (
                43363278780218324118582833451065151582,
                17482144350526720242,
                0x43C136221A2EB71C,
            ),
            (
                -153266814751497533801507864581935135536,
                4078239883182463693,
                0xC4004C658EAF2314,
            ),
            (
                -544045941515319076372048931009,
                166314784907375171,
                0xC287CD0D28E7DD3F,
            ),
            (
                836669779702270093466922346073,
                208363331907992213,
                0x428D3755728C7BC0,
            ),
            (
                -741661684965242696118015115374,
                112329807459873284,
                0xC29805176FDCB4EC,
            ),
            (
                1099447532108017860,
                -9157231070389319136,
                0xBFBEBC7831BDEAA6,
            ),
            (
                -12651751616517998823,
                -17034486841352872402,
                0x3FE7C4501EDD6C08,
            ),
            (
                -12917018977576638119,
                3316111241534796840,
                0xC00F296ED180B29A,
            ),
            (
                171609391507993408,
                -1148421434201794083469458743382,
                0xBD4507CEB8778265,
            ),
            (
                -117980313241719519,
                156885615034545898912973474313,
                0xBD6A758C32FC7BB0,
            ),
            (
                -188795915341002819,
                -185556778210414966872215319765,
                0x3D71E637434893F5,
            ),
            (
                57240890962235325933364541214569032810,
                -97495311389315357026273784460809793415,
                0xBFE2C9A3EABAE555,
            ),
            (
                32112404945823660465850517634757575235,
                77619315340707578465413434674145268812,
                0x3FDA7A557FACAEE2,
            ),
            (
                -78285608362294728901597389311775858433,
                11059173482003529256875983096124441130,
                0xC01C50AF507ECE7D,
            ),
            (-460344004859653740740080, -6, 0x44B03F37672B76E1),
            (-276134539333887106269008, -6, 0x44A37DC2D906E492),
            (-92603750090696600146168, 3, 0xC49A2569978A63F8),
            (-13795578359760583, 1062027273611787, 0xC029FACE094B3238),
            (-7658571929294142, 13301170673840336, 0xBFE26CCDF1852787),
            (-3928952769044655, -15698143764314067, 0x3FD0049C1BE1053B),
            (
                -125805906070067318429255192,
                -4948916446570615,
                0x4217ACD08DC98085,
            ),
            (
                790498584570933984574665050,
                -7782078862502577,
                0xC237A69A041CEAA2,
            ),
            (
                1204434155774013832141630011,
                -6149424046173505,
                0xC246CD1F17590E8C,
            ),
        ];
        for &(a, b, want) in cases {
            let got = int_true_div(a, b);
            assert_eq!(
                got.to_bits(),
                want,
                "{a} / {b}: {got:e} vs {:e}",
                f64::from_bits(want)
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..proptest::test_runner::Config::default()
        })]

        /// The long-division path must agree with plain float division wherever the latter
        /// is exact (both operands at most 2^53), including near-ties.
        #[test]
        fn long_division_agrees_with_exact_float_division(
            n in 0u128..=(1u128 << 53),
            d in 1u128..=(1u128 << 53),
        ) {
            proptest::prop_assert_eq!(ratio_to_f64(n, d).to_bits(), (n as f64 / d as f64).to_bits());
        }
    }

    #[test]
    fn float_divmod_follows_cpython() {
        assert_eq!(float_divmod(7.0, -2.0), (-4.0, -1.0));
        assert_eq!(float_divmod(-7.5, 2.0), (-4.0, 0.5));
        let (q, r) = float_divmod(-0.0, 5.0);
        assert!(q == 0.0 && q.is_sign_negative() && r == 0.0 && r.is_sign_positive());
        let (_, r) = float_divmod(4.0, -2.0);
        assert!(r == 0.0 && r.is_sign_negative());
        assert_eq!(float_divmod(-1.0, f64::INFINITY).1, f64::INFINITY);
        // CPython: divmod(0.1, 0.01) == (10.0, 3.469446951953614e-18).
        assert_eq!(float_divmod(0.1, 0.01), (10.0, 3.469446951953614e-18));
    }
}
