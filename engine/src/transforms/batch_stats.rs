//! `batch_stats`: count, sum and mean of a numeric field over a batch (ELSPETH-CONFIG §7).

use crate::formats::python::py_type_name;
use crate::plan::{BatchTransform, TransformError};
use crate::value::{Row, Value};
use serde_json::json;

pub struct BatchStats {
    pub value_field: String,
    pub group_by: Option<String>,
    pub compute_mean: bool,
}

/// Python 3.12's `sum()` over ints and floats, which decides the printed sum: exact integer
/// addition until the first float, then Neumaier-compensated float addition (the
/// compensation added at the end; later ints added plainly).
#[derive(Clone, Copy, Debug, PartialEq)]
enum PySum {
    Int(i128),
    Float { f: f64, c: f64 },
}

impl PySum {
    fn add(self, v: &serde_json::Number) -> Result<PySum, &'static str> {
        let int = v
            .as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from));
        Ok(match (self, int) {
            (PySum::Int(i), Some(b)) => PySum::Int(i.checked_add(b).ok_or("int_overflow")?),
            (PySum::Int(i), None) => PySum::Float {
                f: i as f64 + v.as_f64().unwrap_or(f64::NAN),
                c: 0.0,
            },
            (PySum::Float { f, c }, Some(b)) => PySum::Float { f: f + b as f64, c },
            (PySum::Float { f, c }, None) => {
                let x = v.as_f64().unwrap_or(f64::NAN);
                let t = f + x;
                let c = if f.abs() >= x.abs() {
                    c + ((f - t) + x)
                } else {
                    c + ((x - t) + f)
                };
                PySum::Float { f: t, c }
            }
        })
    }

    fn value(self) -> f64 {
        match self {
            PySum::Int(i) => i as f64,
            PySum::Float { f, c } if c != 0.0 && c.is_finite() => f + c,
            PySum::Float { f, .. } => f,
        }
    }
}

fn number(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

impl BatchStats {
    /// One group's output row; `members` are (index in batch, row).
    fn group_row(
        &self,
        members: &[(usize, &Row)],
        group: Option<&Value>,
    ) -> Result<Row, TransformError> {
        let mut sum = PySum::Int(0);
        let mut count = 0u64;
        let mut skipped = Vec::new();
        for (i, row) in members {
            let v = row.get(&self.value_field).unwrap_or(&Value::Null);
            // ELSPETH crashes the run on a value that is not a number; attest fails the
            // batch with the reason.
            let Value::Number(n) = v else {
                return Err(TransformError::new(json!({
                    "reason": "type_mismatch", "field": self.value_field,
                    "expected": "int or float", "actual": py_type_name(v), "index": i,
                })));
            };
            if n.as_f64().is_some_and(|f| !f.is_finite()) {
                skipped.push(*i);
                continue;
            }
            sum = sum.add(n).map_err(|reason| {
                TransformError::new(json!({"reason": reason, "field": self.value_field}))
            })?;
            count += 1;
        }
        if count == 0 && !skipped.is_empty() {
            return Err(TransformError::new(
                json!({"reason": "all_non_finite", "field": self.value_field}),
            ));
        }
        let total = sum.value();
        if !total.is_finite() {
            return Err(TransformError::new(
                json!({"reason": "float_overflow", "field": self.value_field}),
            ));
        }
        let mut out = Row::new();
        out.insert("count".into(), json!(count));
        out.insert(
            "sum".into(),
            match sum {
                PySum::Int(i) => i64::try_from(i).map_or_else(|_| number(total), Value::from),
                PySum::Float { .. } => number(total),
            },
        );
        out.insert("batch_size".into(), json!(members.len()));
        if self.compute_mean {
            out.insert(
                "mean".into(),
                if count == 0 {
                    Value::Null
                } else {
                    number(total / count as f64)
                },
            );
        }
        if !skipped.is_empty() {
            out.insert("skipped_non_finite".into(), json!(skipped.len()));
            out.insert("skipped_non_finite_indices".into(), json!(skipped));
        }
        if let Some(g) = &self.group_by {
            out.insert(g.clone(), group.cloned().unwrap_or(Value::Null));
        }
        Ok(out)
    }
}

impl BatchTransform for BatchStats {
    fn process_batch(&self, rows: &[Row]) -> Result<Vec<Row>, TransformError> {
        let Some(g) = &self.group_by else {
            let members: Vec<(usize, &Row)> = rows.iter().enumerate().collect();
            return Ok(vec![self.group_row(&members, None)?]);
        };
        // One output row per group, in the order groups first appear. (ELSPETH crashes on
        // a batch holding more than one group.)
        let mut groups: Vec<(Value, Vec<(usize, &Row)>)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let key = row.get(g).cloned().unwrap_or(Value::Null);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, m)) => m.push((i, row)),
                None => groups.push((key, vec![(i, row)])),
            }
        }
        groups
            .iter()
            .map(|(k, m)| self.group_row(m, Some(k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: Value) -> Vec<Row> {
        values
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_object().unwrap().clone())
            .collect()
    }

    fn stats(group_by: Option<&str>) -> BatchStats {
        BatchStats {
            value_field: "v".into(),
            group_by: group_by.map(String::from),
            compute_mean: true,
        }
    }

    #[test]
    fn sums_like_python() {
        let out = stats(None)
            .process_batch(&rows(json!([{"v": 0.1}, {"v": 0.2}, {"v": 0.3}])))
            .unwrap();
        assert_eq!(
            Value::Object(out[0].clone()),
            json!({"count": 3, "sum": 0.6, "batch_size": 3, "mean": 0.19999999999999998})
        );
        let out = stats(None)
            .process_batch(&rows(json!([{"v": 1}, {"v": 2}])))
            .unwrap();
        assert_eq!(out[0]["sum"], json!(3));
        assert_eq!(out[0]["mean"], json!(1.5));
    }

    #[test]
    fn one_row_per_group_in_first_seen_order() {
        let out = stats(Some("g"))
            .process_batch(&rows(json!([
                {"g": "b", "v": 1}, {"g": "a", "v": 10}, {"g": "b", "v": 3}
            ])))
            .unwrap();
        assert_eq!(
            out.into_iter().map(Value::Object).collect::<Vec<_>>(),
            vec![
                json!({"count": 2, "sum": 4, "batch_size": 2, "mean": 2.0, "g": "b"}),
                json!({"count": 1, "sum": 10, "batch_size": 1, "mean": 10.0, "g": "a"}),
            ]
        );
    }

    #[test]
    fn non_numbers_fail_the_batch() {
        let e = stats(None)
            .process_batch(&rows(json!([{"v": 1}, {"v": "2"}])))
            .unwrap_err();
        assert_eq!(e.reason["reason"], "type_mismatch");
        assert_eq!(e.reason["index"], 1);
    }
}
