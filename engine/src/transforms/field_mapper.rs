//! `field_mapper`: renames (and with `select_only`, selects) fields.
//!
//! ELSPETH applies the mapping entry by entry on a copy of the row, so a swap
//! `{a: b, b: a}` loses a field there. attest reads every source from the input row and
//! writes every target into the output, so a swap swaps (a documented divergence).

use crate::plan::{CallContext, Transform, TransformError};
use crate::value::{Row, Value};
use serde_json::json;

pub struct FieldMapper {
    /// (source, target) in configuration order. A source containing `.` is a nested path.
    pub mapping: Vec<(String, String)>,
    pub select_only: bool,
    pub strict: bool,
}

fn lookup<'a>(row: &'a Row, source: &str) -> Result<Option<&'a Value>, TransformError> {
    if let Some(v) = row.get(source) {
        return Ok(Some(v));
    }
    if !source.contains('.') {
        return Ok(None);
    }
    let mut parts = source.split('.');
    let first = parts.next().unwrap_or_default();
    let mut cur = match row.get(first) {
        Some(v) => v,
        None => return Ok(None),
    };
    for p in parts {
        match cur {
            Value::Object(m) => match m.get(p) {
                Some(v) => cur = v,
                None => return Ok(None),
            },
            _ => {
                return Err(TransformError::new(json!({
                    "reason": "type_mismatch",
                    "field": source,
                    "message": format!("{source}: {p} is read from a value that is not an object"),
                })))
            }
        }
    }
    Ok(Some(cur))
}

impl Transform for FieldMapper {
    fn process(&self, row: &Row, _ctx: CallContext) -> Result<Row, TransformError> {
        let mut found: Vec<(&str, &str, Value)> = Vec::with_capacity(self.mapping.len());
        for (source, target) in &self.mapping {
            match lookup(row, source)? {
                Some(v) => found.push((source, target, v.clone())),
                None if self.strict => {
                    return Err(TransformError::new(json!({
                        "reason": "missing_field",
                        "field": source,
                        "message": format!("field {source:?} is missing"),
                    })))
                }
                None => {}
            }
        }
        // ELSPETH crashes the run when a target already exists and is not itself being
        // renamed away; attest fails only this row.
        for (_, target, _) in &found {
            let renamed_away = found.iter().any(|(s, _, _)| s == target);
            if !self.select_only && row.contains_key(*target) && !renamed_away {
                return Err(TransformError::new(json!({
                    "reason": "field_collision",
                    "field": target,
                    "message": format!("target field {target:?} already exists in the row"),
                })));
            }
        }
        let mut out = if self.select_only {
            Row::new()
        } else {
            row.clone()
        };
        // Remove every renamed top-level source first, then write the targets at the end
        // in mapping order: reading from the input keeps swaps intact.
        for (source, _, _) in &found {
            if !source.contains('.') || row.contains_key(*source) {
                out.shift_remove(*source);
            }
        }
        for (_, target, value) in found {
            out.shift_remove(target);
            out.insert(target.to_string(), value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap_or_default()
    }

    fn mapper(pairs: &[(&str, &str)]) -> FieldMapper {
        FieldMapper {
            mapping: pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            select_only: false,
            strict: false,
        }
    }

    #[test]
    fn renamed_fields_move_to_the_end() {
        let out = mapper(&[("name", "customer")])
            .process(
                &row(json!({"id": 1, "name": "x", "amount": 2})),
                CallContext::none(),
            )
            .unwrap();
        assert_eq!(
            Value::Object(out).to_string(),
            r#"{"id":1,"amount":2,"customer":"x"}"#
        );
    }

    #[test]
    fn a_swap_swaps() {
        let out = mapper(&[("a", "b"), ("b", "a")])
            .process(&row(json!({"a": 1, "b": 2, "c": 3})), CallContext::none())
            .unwrap();
        assert_eq!(Value::Object(out).to_string(), r#"{"c":3,"b":1,"a":2}"#);
    }

    #[test]
    fn a_target_that_exists_fails_the_row() {
        let e = mapper(&[("a", "c")])
            .process(&row(json!({"a": 1, "c": 3})), CallContext::none())
            .unwrap_err();
        assert_eq!(e.reason["reason"], "field_collision");
    }

    #[test]
    fn missing_is_skipped_or_an_error_when_strict() {
        let m = mapper(&[("zz", "y")]);
        assert_eq!(
            m.process(&row(json!({"a": 1})), CallContext::none())
                .unwrap(),
            row(json!({"a": 1}))
        );
        let strict = FieldMapper { strict: true, ..m };
        let e = strict
            .process(&row(json!({"a": 1})), CallContext::none())
            .unwrap_err();
        assert_eq!(e.reason["reason"], "missing_field");
    }

    #[test]
    fn nested_paths_and_select_only() {
        let m = FieldMapper {
            select_only: true,
            ..mapper(&[("meta.score", "score")])
        };
        let out = m
            .process(
                &row(json!({"id": 1, "meta": {"score": 5}})),
                CallContext::none(),
            )
            .unwrap();
        assert_eq!(out, row(json!({"score": 5})));
    }
}
