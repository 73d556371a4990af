//! The values an expression computes with, and their conversion from and to row values.
//!
//! Evaluation cannot work on `serde_json::Value` directly: Python distinguishes tuples and
//! sets from lists (`(1, 2) == [1, 2]` is false, `str((1,))` is `'(1,)'`), has NaN and
//! infinities, allows dict keys that are not strings, and integers wider than 64 bits appear
//! in intermediate results. Row values are converted on access (only the part of the row an
//! expression reads), and the result is converted back at the end.

use serde_json::{Number, Value};

use super::error::{EvalErrorKind, Fail};
use super::MAX_VALUE_DEPTH;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyValue {
    None,
    Bool(bool),
    /// Python ints are unbounded; i128 covers every i64 and u64 row value and the products
    /// of two of them, and overflow beyond it is an error rather than a wrong answer.
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    /// Elements in insertion order, without duplicates (by Python equality). Python's own
    /// iteration order depends on hashing, so `str()` of a set may differ from Python.
    Set(Vec<PyValue>),
    /// Entries in insertion order without duplicate keys, like a Python dict.
    Dict(Vec<(PyValue, PyValue)>),
}

impl PyValue {
    /// The Python type name, for messages that read like Python's.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Set(_) => "set",
            PyValue::Dict(_) => "dict",
        }
    }

    /// Whether Python could use this value as a dict key or set element.
    pub fn is_hashable(&self) -> bool {
        match self {
            PyValue::List(_) | PyValue::Set(_) | PyValue::Dict(_) => false,
            PyValue::Tuple(items) => items.iter().all(PyValue::is_hashable),
            _ => true,
        }
    }

    /// Fails with Python's message when the value cannot be a dict key or set element.
    pub fn require_hashable(&self) -> Result<(), Fail> {
        if self.is_hashable() {
            Ok(())
        } else {
            Err(Fail::type_error(format!(
                "unhashable type: '{}'",
                self.type_name()
            )))
        }
    }

    /// Converts a row value. Depth is bounded so that a pathological row cannot overflow
    /// the stack in this or any later recursive operation.
    pub fn from_json(value: &Value) -> Result<PyValue, Fail> {
        from_json_at(value, 0)
    }

    pub fn from_row(row: &serde_json::Map<String, Value>) -> Result<PyValue, Fail> {
        let mut entries = Vec::with_capacity(row.len());
        for (k, v) in row {
            entries.push((PyValue::Str(k.clone()), from_json_at(v, 1)?));
        }
        Ok(PyValue::Dict(entries))
    }

    /// Converts a result back into a row value. Tuples and sets become arrays; what JSON
    /// cannot hold is refused rather than approximated, so a result never changes meaning.
    pub fn to_json(&self) -> Result<Value, Fail> {
        Ok(match self {
            PyValue::None => Value::Null,
            PyValue::Bool(b) => Value::Bool(*b),
            PyValue::Int(i) => Value::Number(int_to_number(*i)?),
            PyValue::Float(f) => match Number::from_f64(*f) {
                Some(n) => Value::Number(n),
                None => {
                    return Err(Fail::new(
                        EvalErrorKind::Unrepresentable,
                        format!(
                            "the float {} cannot be stored in a row value",
                            super::repr::float_repr(*f)
                        ),
                    ))
                }
            },
            PyValue::Str(s) => Value::String(s.clone()),
            PyValue::List(items) | PyValue::Tuple(items) | PyValue::Set(items) => Value::Array(
                items
                    .iter()
                    .map(PyValue::to_json)
                    .collect::<Result<_, _>>()?,
            ),
            PyValue::Dict(entries) => {
                let mut map = serde_json::Map::with_capacity(entries.len());
                for (k, v) in entries {
                    let PyValue::Str(key) = k else {
                        return Err(Fail::new(
                            EvalErrorKind::Unrepresentable,
                            format!(
                                "a dict with a key of type '{}' cannot be stored in a row value \
                                 (row keys are strings)",
                                k.type_name()
                            ),
                        ));
                    };
                    map.insert(key.clone(), v.to_json()?);
                }
                Value::Object(map)
            }
        })
    }
}

fn from_json_at(value: &Value, depth: usize) -> Result<PyValue, Fail> {
    if depth > MAX_VALUE_DEPTH {
        return Err(Fail::new(
            EvalErrorKind::TooDeep,
            format!("row value nested deeper than {MAX_VALUE_DEPTH} levels"),
        ));
    }
    Ok(match value {
        Value::Null => PyValue::None,
        Value::Bool(b) => PyValue::Bool(*b),
        Value::Number(n) => number_to_py(n),
        Value::String(s) => PyValue::Str(s.clone()),
        Value::Array(items) => PyValue::List(
            items
                .iter()
                .map(|v| from_json_at(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                entries.push((PyValue::Str(k.clone()), from_json_at(v, depth + 1)?));
            }
            PyValue::Dict(entries)
        }
    })
}

/// Without serde_json's `arbitrary_precision` a number is exactly one of u64, i64 or f64;
/// the ints are kept as ints (1 and 1.0 print differently).
pub(crate) fn number_to_py(n: &Number) -> PyValue {
    if let Some(u) = n.as_u64() {
        PyValue::Int(i128::from(u))
    } else if let Some(i) = n.as_i64() {
        PyValue::Int(i128::from(i))
    } else {
        PyValue::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

fn int_to_number(i: i128) -> Result<Number, Fail> {
    if let Ok(v) = i64::try_from(i) {
        Ok(Number::from(v))
    } else if let Ok(v) = u64::try_from(i) {
        Ok(Number::from(v))
    } else {
        Err(Fail::new(
            EvalErrorKind::Unrepresentable,
            format!("the integer {i} does not fit in a row value (64 bits)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trip_keeps_ints_and_floats_apart() {
        let v = json!({"i": 1, "f": 1.0, "u": u64::MAX, "n": i64::MIN, "l": [null, true, "s"]});
        let py = PyValue::from_json(&v).unwrap_or(PyValue::None);
        assert!(matches!(&py, PyValue::Dict(e) if e[0].1 == PyValue::Int(1)));
        assert!(matches!(&py, PyValue::Dict(e) if e[1].1 == PyValue::Float(1.0)));
        assert_eq!(py.to_json(), Ok(v));
    }

    #[test]
    fn unrepresentable_results_are_refused() {
        let kind = |v: PyValue| v.to_json().map_err(|f| f.kind);
        assert_eq!(
            kind(PyValue::Float(f64::NAN)),
            Err(EvalErrorKind::Unrepresentable)
        );
        assert_eq!(
            kind(PyValue::Int(i128::from(u64::MAX) + 1)),
            Err(EvalErrorKind::Unrepresentable)
        );
        assert_eq!(
            kind(PyValue::Dict(vec![(PyValue::Int(1), PyValue::None)])),
            Err(EvalErrorKind::Unrepresentable)
        );
        assert_eq!(
            kind(PyValue::Tuple(vec![PyValue::Int(1)])),
            Ok(serde_json::json!([1]))
        );
    }

    #[test]
    fn deep_rows_are_refused_not_overflowed() {
        let mut v = Value::Null;
        for _ in 0..(MAX_VALUE_DEPTH + 5) {
            v = Value::Array(vec![v]);
        }
        assert_eq!(
            PyValue::from_json(&v).map_err(|f| f.kind),
            Err(EvalErrorKind::TooDeep)
        );
    }

    #[test]
    fn hashability_follows_python() {
        assert!(PyValue::Tuple(vec![PyValue::Int(1), PyValue::Str("a".into())]).is_hashable());
        assert!(!PyValue::Tuple(vec![PyValue::List(vec![])]).is_hashable());
        assert!(!PyValue::Dict(vec![]).is_hashable());
        assert!(PyValue::Float(f64::NAN).is_hashable());
    }
}
