//! `json_explode`: one row per element of an array field (ELSPETH-CONFIG §4).

use crate::formats::python::py_type_name;
use crate::plan::{Expand, TransformError};
use crate::value::{Row, Value};
use serde_json::json;

pub struct JsonExplode {
    pub array_field: String,
    /// Where each element goes; the loader ensures it differs from `array_field`.
    pub output_field: String,
    /// Adds `item_index` (ELSPETH's fixed name) with the 0-based index.
    pub include_index: bool,
}

impl Expand for JsonExplode {
    fn expand(&self, row: &Row) -> Result<Vec<Row>, TransformError> {
        // ELSPETH crashes the run on a missing or non-list field; attest sends the row to
        // on_error with the reason.
        let items = match row.get(&self.array_field) {
            None => {
                return Err(TransformError::new(
                    json!({"reason": "missing_field", "field": self.array_field}),
                ))
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(TransformError::new(json!({
                    "reason": "type_mismatch", "field": self.array_field,
                    "expected": "list", "actual": py_type_name(other),
                })))
            }
        };
        if items.is_empty() {
            return Err(TransformError::new(json!({
                "reason": "invalid_input", "field": self.array_field, "error": "empty array",
            })));
        }
        let mut base = row.clone();
        base.shift_remove(&self.array_field);
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let mut out = base.clone();
                out.insert(self.output_field.clone(), item.clone());
                if self.include_index {
                    out.insert("item_index".into(), json!(i));
                }
                out
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explode(include_index: bool, row: Value) -> Result<Vec<Value>, Value> {
        let p = JsonExplode {
            array_field: "tags".into(),
            output_field: "tag".into(),
            include_index,
        };
        p.expand(row.as_object().unwrap())
            .map(|rows| rows.into_iter().map(Value::Object).collect())
            .map_err(|e| e.reason)
    }

    #[test]
    fn one_row_per_element_without_the_array_and_with_the_index_last() {
        assert_eq!(
            explode(true, json!({"id": 1, "tags": ["a", {"b": 2}], "z": 0})).unwrap(),
            vec![
                json!({"id": 1, "z": 0, "tag": "a", "item_index": 0}),
                json!({"id": 1, "z": 0, "tag": {"b": 2}, "item_index": 1}),
            ]
        );
        assert_eq!(
            explode(false, json!({"tags": [7]})).unwrap(),
            vec![json!({"tag": 7})]
        );
    }

    #[test]
    fn empty_missing_and_non_list_are_row_errors() {
        assert_eq!(
            explode(true, json!({"tags": []})).unwrap_err(),
            json!({"reason": "invalid_input", "field": "tags", "error": "empty array"})
        );
        assert_eq!(
            explode(true, json!({"id": 1})).unwrap_err()["reason"],
            "missing_field"
        );
        assert_eq!(
            explode(true, json!({"tags": "a,b"})).unwrap_err()["actual"],
            "str"
        );
    }
}
