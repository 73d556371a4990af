//! `batch_replicate`: each row becomes N copies, N read from a field (ELSPETH-CONFIG §7).

use crate::formats::python::py_type_name;
use crate::plan::{BatchTransform, TransformError};
use crate::value::{Row, Value};
use serde_json::json;

pub struct BatchReplicate {
    pub copies_field: String,
    pub default_copies: u64,
    pub max_copies: u64,
    pub include_copy_index: bool,
}

impl BatchTransform for BatchReplicate {
    fn process_batch(&self, rows: &[Row]) -> Result<Vec<Row>, TransformError> {
        let mut out = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let n = match row.get(&self.copies_field) {
                None => self.default_copies,
                Some(Value::Number(n)) if n.as_u64().is_some() || n.as_i64().is_some() => {
                    // A negative count is outside 1..=max: dropped below.
                    n.as_u64().unwrap_or(0)
                }
                // ELSPETH crashes the run here; attest fails the batch with the reason.
                Some(other) => {
                    return Err(TransformError::new(json!({
                        "reason": "type_mismatch", "field": self.copies_field,
                        "expected": "int", "actual": py_type_name(other), "index": i,
                    })))
                }
            };
            if n == 0 || n > self.max_copies {
                continue; // ELSPETH drops a row whose count is out of range
            }
            for c in 0..n {
                let mut copy = row.clone();
                if self.include_copy_index {
                    copy.insert("copy_index".into(), json!(c));
                }
                out.push(copy);
            }
        }
        if out.is_empty() {
            return Err(TransformError::new(json!({
                "reason": "all_rows_dropped", "field": self.copies_field,
            })));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_rows_with_their_index_and_drops_out_of_range_counts() {
        let p = BatchReplicate {
            copies_field: "copies".into(),
            default_copies: 1,
            max_copies: 3,
            include_copy_index: true,
        };
        let rows: Vec<Row> = [
            json!({"id": 1, "copies": 2}),
            json!({"id": 2}),
            json!({"id": 3, "copies": 9}),
            json!({"id": 4, "copy_index": 7, "copies": 1}),
        ]
        .iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let out: Vec<Value> = p
            .process_batch(&rows)
            .unwrap()
            .into_iter()
            .map(Value::Object)
            .collect();
        assert_eq!(
            out,
            vec![
                json!({"id": 1, "copies": 2, "copy_index": 0}),
                json!({"id": 1, "copies": 2, "copy_index": 1}),
                json!({"id": 2, "copy_index": 0}),
                json!({"id": 4, "copy_index": 0, "copies": 1}),
            ]
        );
        let bad = [json!({"copies": null}).as_object().unwrap().clone()];
        assert_eq!(
            p.process_batch(&bad).unwrap_err().reason["reason"],
            "type_mismatch"
        );
    }
}
