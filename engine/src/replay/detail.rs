//! What the record keeps of a source row beyond its canonical payload, so that
//! re-execution hands the pipeline exactly the record the source handed it.
//!
//! A row's payload is its canonical form, which sorts object keys. But field order decides
//! output bytes (CSV columns come from the first row's keys; JSON sinks write keys in
//! order), and a quarantined row's quarantine row (the raw line of a ragged CSV record,
//! line numbers) is not derivable from the raw record. So ingestion records, with a
//! [`Event::RowDetail`] whose payload is the canonical form of
//!
//! ```json
//! {"order": SHAPE, "quarantine": {"row": ROW, "order": SHAPE}}
//! ```
//!
//! - `order`, at the first row a reader ingests and whenever the record's shape differs
//!   from the last one recorded (a CSV file records it once): it applies from this row on;
//! - `quarantine`, for every row that failed validation: the row sent to the quarantine
//!   sink, and its shape.
//!
//! A **shape** is `null` when every object in a value has its keys in canonical order,
//! else `{"o": [[key, SHAPE], ...]}` for an object (its keys in their real order) and
//! `{"a": [SHAPE, ...]}` for an array, where any of the inner shapes may be `null`.
//! Applying a value's shape to its canonical form gives the value back, order and all.

use crate::run::io::SourceRecord;
use crate::run::EngineError;
use crate::value::{Map, Value};
use attest_ledger::{Commit, Event};

/// The shape of `v` (see the module documentation).
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let children: Vec<Value> = m.values().map(shape).collect();
            let sorted = m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b);
            if sorted && children.iter().all(Value::is_null) {
                return Value::Null;
            }
            let pairs = m
                .keys()
                .zip(children)
                .map(|(k, s)| Value::Array(vec![Value::String(k.clone()), s]))
                .collect();
            let mut o = Map::new();
            o.insert("o".into(), Value::Array(pairs));
            Value::Object(o)
        }
        Value::Array(items) => {
            let children: Vec<Value> = items.iter().map(shape).collect();
            if children.iter().all(Value::is_null) {
                return Value::Null;
            }
            let mut a = Map::new();
            a.insert("a".into(), Value::Array(children));
            Value::Object(a)
        }
        _ => Value::Null,
    }
}

/// Whether `v` has shape `s`, without building `v`'s shape (the common case at ingestion:
/// every row of a CSV file has the shape of the one before).
fn has_shape(v: &Value, s: &Value) -> bool {
    match (v, s) {
        (_, Value::Null) => shape_is_null(v),
        (Value::Object(m), Value::Object(o)) => match o.get("o") {
            Some(Value::Array(pairs)) if pairs.len() == m.len() => {
                m.iter().zip(pairs).all(|((k, child), pair)| match pair {
                    Value::Array(p) if p.len() == 2 => {
                        p[0].as_str() == Some(k.as_str()) && has_shape(child, &p[1])
                    }
                    _ => false,
                })
            }
            _ => false,
        },
        (Value::Array(items), Value::Object(o)) => match o.get("a") {
            Some(Value::Array(shapes)) if shapes.len() == items.len() => {
                items.iter().zip(shapes).all(|(i, s)| has_shape(i, s))
            }
            _ => false,
        },
        _ => false,
    }
}

fn shape_is_null(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b) && m.values().all(shape_is_null)
        }
        Value::Array(items) => items.iter().all(shape_is_null),
        _ => true,
    }
}

/// Puts the objects of `v` (in canonical order, as parsed from a payload) back into the
/// order `s` records. A shape that does not fit the value is an error: both come from
/// the verified record, so it can only mean the record is not what ingestion wrote.
pub fn apply_shape(v: Value, s: &Value) -> Result<Value, String> {
    let misfit = || "the recorded field order does not fit the recorded row".to_string();
    match (v, s) {
        (v, Value::Null) => Ok(v),
        (Value::Object(mut m), Value::Object(o)) => {
            let Some(Value::Array(pairs)) = o.get("o") else {
                return Err(misfit());
            };
            if pairs.len() != m.len() {
                return Err(misfit());
            }
            let mut out = Map::new();
            for pair in pairs {
                let (Some(key), Some(child)) = (
                    pair.get(0).and_then(Value::as_str),
                    pair.get(1)
                        .filter(|_| pair.as_array().is_some_and(|p| p.len() == 2)),
                ) else {
                    return Err(misfit());
                };
                let value = m.remove(key).ok_or_else(misfit)?;
                out.insert(key.to_string(), apply_shape(value, child)?);
            }
            Ok(Value::Object(out))
        }
        (Value::Array(items), Value::Object(o)) => {
            let Some(Value::Array(shapes)) = o.get("a") else {
                return Err(misfit());
            };
            if shapes.len() != items.len() {
                return Err(misfit());
            }
            items
                .into_iter()
                .zip(shapes)
                .map(|(i, s)| apply_shape(i, s))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        _ => Err(misfit()),
    }
}

/// Records row details at ingestion, in source order (one per run's reader). It
/// remembers the last shape recorded, so a file whose rows share one shape costs one
/// detail.
#[derive(Default)]
pub struct DetailRecorder {
    /// `None` until the first row, whose shape is always recorded (even `null`): a reader
    /// that starts again after a resume must not lean on a shape recorded before it.
    last: Option<Value>,
}

impl DetailRecorder {
    pub fn new() -> DetailRecorder {
        DetailRecorder::default()
    }

    /// Adds `row`'s detail to `commit` (after its `RowIngested`) if it needs one.
    pub fn record(
        &mut self,
        commit: &mut Commit,
        row: u64,
        record: &SourceRecord,
    ) -> Result<(), EngineError> {
        let mut detail = Map::new();
        let unchanged = self
            .last
            .as_ref()
            .is_some_and(|last| has_shape(&record.raw, last));
        if !unchanged {
            let s = shape(&record.raw);
            detail.insert("order".into(), s.clone());
            self.last = Some(s);
        }
        if let Err(q) = &record.parsed {
            let row = Value::Object(q.row.clone());
            let mut quarantine = Map::new();
            quarantine.insert("order".into(), shape(&row));
            quarantine.insert("row".into(), row);
            detail.insert("quarantine".into(), Value::Object(quarantine));
        }
        if detail.is_empty() {
            return Ok(());
        }
        let detail = commit.value(&Value::Object(detail))?;
        commit.push(Event::RowDetail { row, detail });
        Ok(())
    }
}

/// A row's detail as read back.
#[derive(Debug, Default, PartialEq)]
pub struct Detail {
    /// The shape from this row on, when it changed here.
    pub order: Option<Value>,
    /// The quarantine row, in its order.
    pub quarantine: Option<Map<String, Value>>,
}

/// Reads a detail payload.
pub fn read_detail(bytes: &[u8]) -> Result<Detail, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut m) = v else {
        return Err("not a JSON object".into());
    };
    let order = m.remove("order");
    let quarantine = match m.remove("quarantine") {
        None => None,
        Some(Value::Object(mut q)) => {
            let row = q.remove("row").unwrap_or(Value::Null);
            let order = q.remove("order").unwrap_or(Value::Null);
            match apply_shape(row, &order)? {
                Value::Object(row) => Some(row),
                _ => return Err("the quarantine row is not an object".into()),
            }
        }
        Some(_) => return Err("`quarantine` is not an object".into()),
    };
    Ok(Detail { order, quarantine })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn canonical(v: &Value) -> Value {
        let bytes = attest_ledger::canonical::to_canonical_bytes(v).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn keys(v: &Value) -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn canonical_order_has_no_shape_and_other_orders_do() {
        assert_eq!(
            shape(&json!({"a": 1, "b": [1, 2], "c": {"x": 1}})),
            Value::Null
        );
        assert_eq!(shape(&json!([1, "x", null])), Value::Null);
        let s = shape(&json!({"id": 1, "amount": 2}));
        assert_eq!(s, json!({"o": [["id", null], ["amount", null]]}));
        let nested = json!({"a": {"z": 1, "y": 2}});
        assert_eq!(
            shape(&nested),
            json!({"o": [["a", {"o": [["z", null], ["y", null]]}]]})
        );
    }

    #[test]
    fn a_shape_puts_a_canonical_row_back_in_order() {
        let row = json!({"id": "1", "name": "Ada", "amount": "2.5", "tags": [{"b": 1, "a": 2}]});
        let back = apply_shape(canonical(&row), &shape(&row)).unwrap();
        assert_eq!(back, row);
        assert_eq!(keys(&back), ["id", "name", "amount", "tags"]);
        assert_eq!(keys(&back["tags"][0]), ["b", "a"]);
    }

    #[test]
    fn a_shape_that_does_not_fit_is_refused() {
        let s = shape(&json!({"id": 1, "amount": 2}));
        assert!(apply_shape(json!({"amount": 2, "other": 1}), &s).is_err());
        assert!(apply_shape(json!({"amount": 2}), &s).is_err());
        assert!(apply_shape(json!([1]), &s).is_err());
        assert!(apply_shape(json!({"a": 1}), &json!({"o": 3})).is_err());
    }

    fn record(raw: Value, quarantined: bool) -> SourceRecord {
        let row = raw.as_object().cloned().unwrap_or_default();
        SourceRecord {
            raw,
            parsed: if quarantined {
                Err(crate::run::io::Quarantine {
                    row,
                    error: "bad".into(),
                })
            } else {
                Ok(row)
            },
        }
    }

    /// Which rows get a detail: the first always, then a change of shape, and every
    /// quarantined row; each detail reads back to what was recorded.
    #[test]
    fn details_are_recorded_where_needed_and_read_back() {
        let mut recorder = DetailRecorder::new();
        let rows = [
            (json!({"a": 1, "b": 2}), false),
            (json!({"a": 3, "b": 4}), false),
            (json!({"b": 5, "a": 6}), false),
            (json!({"b": 7, "a": 8}), true),
            (json!({"b": 9, "a": 10}), false),
        ];
        let mut recorded = Vec::new();
        for (i, (raw, quarantined)) in rows.into_iter().enumerate() {
            let mut commit = Commit::new();
            recorder
                .record(&mut commit, i as u64, &record(raw, quarantined))
                .unwrap();
            let carried: Vec<attest_ledger::Hash32> = commit.payloads().map(|(h, _)| *h).collect();
            for item in commit.items {
                if let attest_ledger::Item::Event(Event::RowDetail { row, detail }) = item {
                    // The detail's bytes travel in the commit that references them.
                    assert_eq!(carried, [detail], "row {row}");
                    recorded.push(row);
                }
            }
        }
        assert_eq!(recorded, [0, 2, 3]);
        let order = shape(&json!({"b": 0, "a": 0}));
        let bytes = attest_ledger::canonical::to_canonical_bytes(&json!({"order": order})).unwrap();
        assert_eq!(
            read_detail(&bytes).unwrap(),
            Detail {
                order: Some(order.clone()),
                quarantine: None
            }
        );
        let q = json!({"quarantine": {"row": {"a": 8, "b": 7}, "order": order}});
        let detail =
            read_detail(&attest_ledger::canonical::to_canonical_bytes(&q).unwrap()).unwrap();
        let row = detail.quarantine.unwrap();
        assert_eq!(row.keys().collect::<Vec<_>>(), ["b", "a"]);
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-e]{1,2}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// `v` with the keys of every object in reverse order.
    fn reversed(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .rev()
                    .map(|(k, c)| (k.clone(), reversed(c)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(reversed).collect()),
            other => other.clone(),
        }
    }

    proptest! {
        /// For any value, its canonical form with its shape applied is the value again,
        /// key order included, and the value has its own shape.
        #[test]
        fn shape_round_trips_any_value(v in value()) {
            let s = shape(&v);
            prop_assert!(has_shape(&v, &s));
            let back = apply_shape(canonical(&v), &s).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&v).unwrap());
        }

        /// A value is never taken to have the shape of the same value in another order.
        #[test]
        fn another_order_is_another_shape(v in value()) {
            let w = reversed(&v);
            prop_assert_eq!(canonical(&v), canonical(&w));
            let differ = serde_json::to_string(&v).unwrap() != serde_json::to_string(&w).unwrap();
            prop_assert_eq!(has_shape(&v, &shape(&w)), !differ);
        }
    }
}
