//! Property test: for random expression trees and rows, rendering the tree to text, parsing
//! it and evaluating it gives what a separate, deliberately simple evaluator computes
//! directly from the tree.
//!
//! The reference shares no code with the implementation: its own value type, its own
//! equality, ordering, arithmetic, conversions and float/string formatting (using
//! different algorithms where a natural alternative exists, e.g. shortest float digits by
//! trying precisions). When the two disagree, one of them is wrong about Python.

use std::cmp::Ordering;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Number, Value};

use super::gen::{self, ArOp, CmpKind, G};
use crate::expr::{EvalErrorKind, Expr};
use crate::value::Row;

/// A reference value.
#[derive(Debug, Clone)]
enum R {
    N,
    B(bool),
    I(i128),
    F(f64),
    S(String),
    L(Vec<R>),
    T(Vec<R>),
    D(Vec<(String, R)>),
}

/// A reference outcome other than a value. `Skip` marks cases the reference does not
/// model (correctly rounded division of huge ints, repetition near the size limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum E {
    Kind(EvalErrorKind),
    Skip,
}

type Res = Result<R, E>;

fn fail<T>(kind: EvalErrorKind) -> Result<T, E> {
    Err(E::Kind(kind))
}

fn type_error<T>() -> Result<T, E> {
    fail(EvalErrorKind::Type)
}

fn from_json(v: &Value) -> R {
    match v {
        Value::Null => R::N,
        Value::Bool(b) => R::B(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => R::I(i128::from(i)),
            (None, Some(u), _) => R::I(i128::from(u)),
            (_, _, f) => R::F(f.unwrap_or(0.0)),
        },
        Value::String(s) => R::S(s.clone()),
        Value::Array(xs) => R::L(xs.iter().map(from_json).collect()),
        Value::Object(m) => R::D(m.iter().map(|(k, v)| (k.clone(), from_json(v))).collect()),
    }
}

fn to_json(r: &R) -> Result<Value, E> {
    Ok(match r {
        R::N => Value::Null,
        R::B(b) => Value::Bool(*b),
        R::I(i) => {
            if let Ok(v) = i64::try_from(*i) {
                Value::from(v)
            } else if let Ok(v) = u64::try_from(*i) {
                Value::from(v)
            } else {
                return fail(EvalErrorKind::Unrepresentable);
            }
        }
        R::F(f) => match Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            None => return fail(EvalErrorKind::Unrepresentable),
        },
        R::S(s) => Value::String(s.clone()),
        R::L(xs) | R::T(xs) => Value::Array(xs.iter().map(to_json).collect::<Result<_, _>>()?),
        R::D(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<Result<_, E>>()?,
        ),
    })
}

fn truth(r: &R) -> bool {
    match r {
        R::N => false,
        R::B(b) => *b,
        R::I(i) => *i != 0,
        R::F(f) => *f != 0.0,
        R::S(s) => !s.is_empty(),
        R::L(xs) | R::T(xs) => !xs.is_empty(),
        R::D(d) => !d.is_empty(),
    }
}

#[derive(Clone, Copy)]
enum Num {
    I(i128),
    F(f64),
}

fn num(r: &R) -> Option<Num> {
    match r {
        R::B(b) => Some(Num::I(if *b { 1 } else { 0 })),
        R::I(i) => Some(Num::I(*i)),
        R::F(f) => Some(Num::F(*f)),
        _ => None,
    }
}

/// Exact int/float comparison by a different route than the implementation's: convert the
/// int to float (monotone rounding), and only when that lands exactly on the float compare
/// as integers.
fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    let rounded = i as f64;
    if rounded != f {
        return rounded.partial_cmp(&f);
    }
    // Here f is an integer-valued float at most 2^127 in magnitude.
    if f >= 2f64.powi(127) {
        return Some(Ordering::Less);
    }
    Some(i.cmp(&(f as i128)))
}

fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (Num::F(x), Num::F(y)) => x.partial_cmp(&y),
        (Num::I(x), Num::F(y)) => cmp_int_float(x, y),
        (Num::F(x), Num::I(y)) => cmp_int_float(y, x).map(Ordering::reverse),
    }
}

fn eq(a: &R, b: &R) -> bool {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return num_cmp(x, y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (R::N, R::N) => true,
        (R::S(x), R::S(y)) => x == y,
        (R::L(x), R::L(y)) | (R::T(x), R::T(y)) => {
            x.len() == y.len() && (0..x.len()).all(|i| eq(&x[i], &y[i]))
        }
        (R::D(x), R::D(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| k == k2 && eq(v, v2)))
        }
        _ => false,
    }
}

fn holds(op: CmpKind, o: Ordering) -> bool {
    match op {
        CmpKind::Lt => o.is_lt(),
        CmpKind::Le => o.is_le(),
        CmpKind::Gt => o.is_gt(),
        CmpKind::Ge => o.is_ge(),
        _ => false,
    }
}

fn order(op: CmpKind, a: &R, b: &R) -> Result<bool, E> {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return Ok(num_cmp(x, y).is_some_and(|o| holds(op, o)));
    }
    match (a, b) {
        (R::S(x), R::S(y)) => Ok(holds(op, x.chars().cmp(y.chars()))),
        (R::L(x), R::L(y)) | (R::T(x), R::T(y)) => {
            for i in 0..x.len().min(y.len()) {
                if !eq(&x[i], &y[i]) {
                    return order(op, &x[i], &y[i]);
                }
            }
            Ok(holds(op, x.len().cmp(&y.len())))
        }
        _ => type_error(),
    }
}

fn hashable(r: &R) -> bool {
    match r {
        R::L(_) | R::D(_) => false,
        R::T(xs) => xs.iter().all(hashable),
        _ => true,
    }
}

fn contains(container: &R, item: &R) -> Result<bool, E> {
    match container {
        R::S(s) => match item {
            R::S(sub) => Ok(s.contains(sub.as_str())),
            _ => type_error(),
        },
        R::L(xs) | R::T(xs) => Ok(xs.iter().any(|x| eq(x, item))),
        R::D(entries) => {
            if !hashable(item) {
                return type_error();
            }
            Ok(entries.iter().any(|(k, _)| eq(&R::S(k.clone()), item)))
        }
        _ => type_error(),
    }
}

fn compare(op: CmpKind, a: &R, b: &R) -> Result<bool, E> {
    match op {
        CmpKind::Eq => Ok(eq(a, b)),
        CmpKind::Ne => Ok(!eq(a, b)),
        CmpKind::In => contains(b, a),
        CmpKind::NotIn => contains(b, a).map(|x| !x),
        _ => order(op, a, b),
    }
}

fn overflow<T>() -> Result<T, E> {
    fail(EvalErrorKind::Overflow)
}

fn zero<T>() -> Result<T, E> {
    fail(EvalErrorKind::ZeroDivision)
}

/// CPython's float floor division and modulo (`float_divmod`), which snaps the quotient to
/// the nearest integer rather than flooring the rounded true quotient.
fn py_float_divmod(x: f64, y: f64) -> (f64, f64) {
    let m0 = x % y;
    let mut div = (x - m0) / y;
    let m = if m0 == 0.0 {
        0.0f64.copysign(y)
    } else if (m0 < 0.0) != (y < 0.0) {
        div -= 1.0;
        m0 + y
    } else {
        m0
    };
    let q = if div == 0.0 {
        0.0f64.copysign(x / y)
    } else {
        let f = div.floor();
        if div - f > 0.5 {
            f + 1.0
        } else {
            f
        }
    };
    (q, m)
}

fn arith(op: ArOp, a: R, b: R) -> Res {
    match (num(&a), num(&b)) {
        (Some(Num::I(x)), Some(Num::I(y))) => match op {
            ArOp::Add => x.checked_add(y).map(R::I).map_or_else(overflow, Ok),
            ArOp::Sub => x.checked_sub(y).map(R::I).map_or_else(overflow, Ok),
            ArOp::Mul => x.checked_mul(y).map(R::I).map_or_else(overflow, Ok),
            ArOp::Div if y == 0 => zero(),
            ArOp::Div => {
                let exact = 1u128 << 53;
                if x.unsigned_abs() > exact || y.unsigned_abs() > exact {
                    return Err(E::Skip);
                }
                Ok(R::F(x as f64 / y as f64))
            }
            ArOp::FloorDiv | ArOp::Mod if y == 0 => zero(),
            ArOp::FloorDiv => {
                let Some(q) = x.checked_div(y) else {
                    return overflow();
                };
                let inexact = q.checked_mul(y) != Some(x);
                // Truncation rounded towards zero; floor differs for negative quotients.
                Ok(R::I(if inexact && ((x < 0) != (y < 0)) {
                    q - 1
                } else {
                    q
                }))
            }
            ArOp::Mod => {
                // x mod y with the divisor's sign, computed from the Euclidean remainder.
                let r = x.checked_rem_euclid(y).unwrap_or(0);
                Ok(R::I(if y < 0 && r != 0 { r + y } else { r }))
            }
        },
        (Some(p), Some(q)) => {
            let f = |n: Num| match n {
                Num::I(i) => i as f64,
                Num::F(f) => f,
            };
            let (x, y) = (f(p), f(q));
            match op {
                ArOp::Add => Ok(R::F(x + y)),
                ArOp::Sub => Ok(R::F(x - y)),
                ArOp::Mul => Ok(R::F(x * y)),
                _ if y == 0.0 => zero(),
                ArOp::Div => Ok(R::F(x / y)),
                ArOp::FloorDiv => Ok(R::F(py_float_divmod(x, y).0)),
                ArOp::Mod => Ok(R::F(py_float_divmod(x, y).1)),
            }
        }
        _ => match (op, a, b) {
            (ArOp::Add, R::S(x), R::S(y)) => Ok(R::S(x + &y)),
            (ArOp::Add, R::L(x), R::L(y)) => Ok(R::L([x, y].concat())),
            (ArOp::Add, R::T(x), R::T(y)) => Ok(R::T([x, y].concat())),
            (ArOp::Mul, seq @ (R::S(_) | R::L(_) | R::T(_)), n)
            | (ArOp::Mul, n, seq @ (R::S(_) | R::L(_) | R::T(_))) => match num(&n) {
                Some(Num::I(count)) => repeat(seq, count),
                _ => type_error(),
            },
            (ArOp::Mod, R::S(_), _) => fail(EvalErrorKind::Unsupported),
            _ => type_error(),
        },
    }
}

fn repeat(seq: R, count: i128) -> Res {
    if count > i128::from(i64::MAX) || count < i128::from(i64::MIN) {
        return overflow();
    }
    let len = match &seq {
        R::S(s) => s.chars().count(),
        R::L(xs) | R::T(xs) => xs.len(),
        _ => 0,
    };
    let n = if count < 0 || len == 0 { 0 } else { count };
    let estimate = (len as f64) * (n as f64);
    if estimate >= 1e9 {
        return fail(EvalErrorKind::TooLarge);
    }
    if estimate > 1e6 {
        return Err(E::Skip);
    }
    let n = n as usize;
    Ok(match seq {
        R::S(s) => R::S(std::iter::repeat_n(s.as_str(), n).collect()),
        R::L(xs) => R::L(std::iter::repeat_n(xs, n).flatten().collect()),
        R::T(xs) => R::T(std::iter::repeat_n(xs, n).flatten().collect()),
        other => other,
    })
}

fn py_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Python's rule for underscores in numeric text: each one between two digits.
fn underscores_ok(s: &str) -> bool {
    let c: Vec<char> = s.chars().collect();
    (0..c.len()).all(|i| {
        c[i] != '_'
            || (i > 0
                && c[i - 1].is_ascii_digit()
                && c.get(i + 1).is_some_and(char::is_ascii_digit))
    })
}

fn parse_int(s: &str) -> Res {
    let t = s.trim_matches(py_space);
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let digits: String = body.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || !underscores_ok(body) {
        return fail(EvalErrorKind::Value);
    }
    match digits.parse::<i128>() {
        Ok(v) => Ok(R::I(if t.starts_with('-') { -v } else { v })),
        Err(_) => overflow(),
    }
}

fn parse_float(s: &str) -> Res {
    let t = s.trim_matches(py_space);
    if !underscores_ok(t) {
        return fail(EvalErrorKind::Value);
    }
    let cleaned: String = t.chars().filter(|c| *c != '_').collect();
    cleaned
        .parse::<f64>()
        .map(R::F)
        .map_err(|_| E::Kind(EvalErrorKind::Value))
}

fn call(name: &str, args: Vec<R>) -> Res {
    let arg = args.into_iter().next();
    match (name, arg) {
        ("len", Some(R::S(s))) => Ok(R::I(s.chars().count() as i128)),
        ("len", Some(R::L(xs) | R::T(xs))) => Ok(R::I(xs.len() as i128)),
        ("len", Some(R::D(d))) => Ok(R::I(d.len() as i128)),
        ("str", None) => Ok(R::S(String::new())),
        ("str", Some(v)) => Ok(R::S(py_str(&v))),
        ("bool", None) => Ok(R::B(false)),
        ("bool", Some(v)) => Ok(R::B(truth(&v))),
        ("int", None) => Ok(R::I(0)),
        ("int", Some(R::B(b))) => Ok(R::I(i128::from(b))),
        ("int", Some(R::I(i))) => Ok(R::I(i)),
        ("int", Some(R::F(f))) if f.is_nan() => fail(EvalErrorKind::Value),
        ("int", Some(R::F(f))) if f.trunc() >= 2f64.powi(127) || f.trunc() < -(2f64.powi(127)) => {
            overflow()
        }
        ("int", Some(R::F(f))) => Ok(R::I(f.trunc() as i128)),
        ("int", Some(R::S(s))) => parse_int(&s),
        ("float", None) => Ok(R::F(0.0)),
        ("float", Some(R::B(b))) => Ok(R::F(if b { 1.0 } else { 0.0 })),
        ("float", Some(R::I(i))) => Ok(R::F(i as f64)),
        ("float", Some(R::F(f))) => Ok(R::F(f)),
        ("float", Some(R::S(s))) => parse_float(&s),
        ("abs", Some(R::B(b))) => Ok(R::I(i128::from(b))),
        ("abs", Some(R::I(i))) => i.checked_abs().map(R::I).map_or_else(overflow, Ok),
        ("abs", Some(R::F(f))) => Ok(R::F(f.abs())),
        _ => type_error(),
    }
}

/// Shortest repr by trying every precision until the text reads back as the same float.
fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f < 0.0 { "-inf" } else { "inf" }.into();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let a = f.abs();
    if a == 0.0 {
        return format!("{sign}0.0");
    }
    let mut sci = format!("{a:.16e}");
    for precision in 0..17 {
        let candidate = format!("{a:.precision$e}");
        if candidate.parse::<f64>() == Ok(a) {
            sci = candidate;
            break;
        }
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or(("0", "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits = mantissa.replace('.', "");
    let body = if (-4..16).contains(&exp) {
        if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else {
            let int_len = exp as usize + 1;
            let padded = format!("{digits:0<int_len$}");
            let (int_part, frac) = padded.split_at(int_len);
            format!("{int_part}.{}", if frac.is_empty() { "0" } else { frac })
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!(
            "{first}{dot}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    };
    format!("{sign}{body}")
}

fn str_repr(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = q.to_string();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

fn repr(r: &R) -> String {
    let items = |xs: &[R]| xs.iter().map(repr).collect::<Vec<_>>().join(", ");
    match r {
        R::N => "None".into(),
        R::B(true) => "True".into(),
        R::B(false) => "False".into(),
        R::I(i) => i.to_string(),
        R::F(f) => float_repr(*f),
        R::S(s) => str_repr(s),
        R::L(xs) => format!("[{}]", items(xs)),
        R::T(xs) if xs.len() == 1 => format!("({},)", items(xs)),
        R::T(xs) => format!("({})", items(xs)),
        R::D(d) => format!(
            "{{{}}}",
            d.iter()
                .map(|(k, v)| format!("{}: {}", str_repr(k), repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn py_str(r: &R) -> String {
    match r {
        R::S(s) => s.clone(),
        other => repr(other),
    }
}

fn label(r: &R) -> String {
    match r {
        R::B(b) => b.to_string(),
        other => py_str(other),
    }
}

fn index(container: R, key: R) -> Res {
    let seq_index = |len: usize, key: &R| -> Result<usize, E> {
        let i = match key {
            R::I(i) => *i,
            R::B(b) => i128::from(*b),
            _ => return type_error(),
        };
        let len = len as i128;
        let j = if i < 0 { len + i } else { i };
        if j < 0 || j >= len {
            return fail(EvalErrorKind::IndexOutOfRange);
        }
        Ok(j as usize)
    };
    match container {
        R::D(entries) => {
            if !hashable(&key) {
                return type_error();
            }
            let R::S(k) = &key else {
                return fail(EvalErrorKind::MissingKey);
            };
            entries
                .into_iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v)
                .ok_or(E::Kind(EvalErrorKind::MissingKey))
        }
        R::L(xs) | R::T(xs) => {
            let i = seq_index(xs.len(), &key)?;
            Ok(xs[i].clone())
        }
        R::S(s) => {
            let chars: Vec<char> = s.chars().collect();
            let i = seq_index(chars.len(), &key)?;
            Ok(R::S(chars[i].to_string()))
        }
        _ => type_error(),
    }
}

fn eval(g: &G, row: &Row) -> Res {
    let ev = |g: &G| eval(g, row);
    match g {
        G::Null => Ok(R::N),
        G::Bool(b) => Ok(R::B(*b)),
        G::Int(i) => Ok(R::I(i128::from(*i))),
        G::Float(f) => Ok(R::F(*f)),
        G::Str(s) => Ok(R::S(s.clone())),
        G::List(items) => Ok(R::L(items.iter().map(ev).collect::<Result<_, _>>()?)),
        G::Tuple(items) => Ok(R::T(items.iter().map(ev).collect::<Result<_, _>>()?)),
        G::Dict(entries) => {
            let mut out: Vec<(String, R)> = Vec::new();
            for (k, v) in entries {
                let v = ev(v)?;
                match out.iter_mut().find(|(name, _)| name == k) {
                    Some(slot) => slot.1 = v,
                    None => out.push((k.clone(), v)),
                }
            }
            Ok(R::D(out))
        }
        G::Field(k) => row
            .get(k)
            .map(from_json)
            .ok_or(E::Kind(EvalErrorKind::MissingKey)),
        G::Get(k, default) => {
            let default = match default {
                Some(d) => ev(d)?,
                None => R::N,
            };
            Ok(row.get(k).map_or(default, from_json))
        }
        G::Index(base, key) => {
            let container = ev(base)?;
            let key = ev(key)?;
            index(container, key)
        }
        G::Call(name, args) => call(name, args.iter().map(ev).collect::<Result<_, _>>()?),
        G::Neg(x) | G::Pos(x) => {
            let negate = matches!(g, G::Neg(_));
            match num(&ev(x)?) {
                Some(Num::I(i)) if negate => i.checked_neg().map(R::I).map_or_else(overflow, Ok),
                Some(Num::I(i)) => Ok(R::I(i)),
                Some(Num::F(f)) => Ok(R::F(if negate { -f } else { f })),
                None => type_error(),
            }
        }
        G::Not(x) => Ok(R::B(!truth(&ev(x)?))),
        G::Arith(op, l, r) => {
            let a = ev(l)?;
            let b = ev(r)?;
            arith(*op, a, b)
        }
        G::And(l, r) => {
            let a = ev(l)?;
            if truth(&a) {
                ev(r)
            } else {
                Ok(a)
            }
        }
        G::Or(l, r) => {
            let a = ev(l)?;
            if truth(&a) {
                Ok(a)
            } else {
                ev(r)
            }
        }
        G::Cmp(first, links) => {
            let mut left = ev(first)?;
            for (op, operand) in links {
                let right = ev(operand)?;
                if !compare(*op, &left, &right)? {
                    return Ok(R::B(false));
                }
                left = right;
            }
            Ok(R::B(true))
        }
        G::IsNone(x, negated) => Ok(R::B(matches!(ev(x)?, R::N) != *negated)),
        G::If(then, cond, otherwise) => {
            if truth(&ev(cond)?) {
                ev(then)
            } else {
                ev(otherwise)
            }
        }
        G::Paren(x) => ev(x),
    }
}

/// Runs the implementation and the reference on one case and describes any disagreement.
fn check(g: &G, row: &Row) -> Result<(), TestCaseError> {
    let text = gen::render(g);
    let expr = Expr::parse(&text)
        .map_err(|e| TestCaseError::fail(format!("{text:?} did not parse: {e}")))?;
    let want = eval(g, row);
    if matches!(want, Err(E::Skip)) {
        return Err(TestCaseError::reject("outside the reference's model"));
    }
    let got_label = expr.eval_route_label(row).map_err(|e| E::Kind(e.kind));
    let want_label = want.as_ref().map(label).map_err(|e| *e);
    prop_assert_eq!(&got_label, &want_label, "label of {:?} on {:?}", text, row);

    let got_value = expr.eval(row).map_err(|e| E::Kind(e.kind));
    let want_value = want.as_ref().map_err(|e| *e).and_then(to_json);
    prop_assert_eq!(&got_value, &want_value, "value of {:?} on {:?}", text, row);

    let got_truth = expr.eval_truthy(row).map_err(|e| E::Kind(e.kind));
    let want_truth = want.as_ref().map(truth).map_err(|e| *e);
    prop_assert_eq!(got_truth, want_truth, "truth of {:?}", text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        max_global_rejects: 3000,
        // Keep regression seeds beside this file rather than in a crate-level folder.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn parse_and_eval_agree_with_the_reference(g in gen::expr(), row in gen::row()) {
        check(&g, &row)?;
    }
}

/// Cases the property test found or that exercise corners it reaches rarely.
#[test]
fn reference_agrees_on_known_corners() {
    let row: Row = match serde_json::json!({"a": -7, "b": 0.1, "s": "x_1", "l": [1, [2]]}) {
        Value::Object(m) => m,
        _ => Row::new(),
    };
    let int = |i| Box::new(G::Int(i));
    let float = |f| Box::new(G::Float(f));
    let field = |k: &str| Box::new(G::Field(k.to_string()));
    let cases = vec![
        G::Arith(ArOp::FloorDiv, field("a"), int(2)),
        G::Arith(ArOp::Mod, field("a"), int(-3)),
        G::Arith(ArOp::Mod, float(-0.0), int(5)),
        G::Arith(ArOp::FloorDiv, int(1), field("b")),
        G::Arith(
            ArOp::Mul,
            int(i64::MIN),
            Box::new(G::Arith(ArOp::Mul, int(i64::MIN), int(2))),
        ),
        G::Neg(Box::new(G::Arith(
            ArOp::Mul,
            int(i64::MIN),
            Box::new(G::Arith(ArOp::Mul, int(i64::MAX), int(2))),
        ))),
        G::Cmp(
            int((1 << 53) + 1),
            vec![(CmpKind::Eq, G::Float(9007199254740992.0))],
        ),
        G::Call("str", vec![G::Float(1e16)]),
        G::Call("str", vec![G::Float(1e-5)]),
        G::Call("int", vec![G::Str("1_0".into())]),
        G::Call("float", vec![G::Str("-nan".into())]),
        G::Index(Box::new(G::Index(field("l"), int(-1))), int(0)),
        G::Arith(ArOp::Mul, Box::new(G::Str("ab".into())), int(i64::MAX)),
        G::Cmp(
            Box::new(G::List(vec![G::Int(1), G::Str("a".into())])),
            vec![(CmpKind::Lt, G::List(vec![G::Int(1), G::Int(2)]))],
        ),
    ];
    for g in &cases {
        if let Err(e) = check(g, &row) {
            panic!("{}: {e}", gen::render(g));
        }
    }
}
