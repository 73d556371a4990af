//! `truncate`: shortens string fields to a maximum length in code points, with an
//! optional suffix that counts towards the maximum.

use crate::formats::python::py_type_name;
use crate::plan::{CallContext, Transform, TransformError};
use crate::value::{Row, Value};
use serde_json::json;

pub struct Truncate {
    /// (field, max length) in configuration order; the loader ensures max > suffix length.
    pub fields: Vec<(String, u64)>,
    pub suffix: String,
    pub strict: bool,
}

impl Transform for Truncate {
    fn process(&self, row: &Row, _ctx: CallContext) -> Result<Row, TransformError> {
        let mut out = row.clone();
        let suffix_len = self.suffix.chars().count() as u64;
        for (field, max) in &self.fields {
            let Some(v) = out.get_mut(field) else {
                if self.strict {
                    return Err(TransformError::new(
                        json!({"reason": "missing_field", "field": field}),
                    ));
                }
                continue;
            };
            let Value::String(s) = v else {
                return Err(TransformError::new(json!({
                    "reason": "type_mismatch", "field": field, "expected": "str", "actual": py_type_name(v),
                })));
            };
            if s.chars().count() as u64 > *max {
                let keep = max.saturating_sub(suffix_len) as usize;
                let mut t: String = s.chars().take(keep).collect();
                t.push_str(&self.suffix);
                *s = t;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_in_code_points_with_the_suffix_counted() {
        let t = Truncate {
            fields: vec![("s".into(), 5)],
            suffix: "..".into(),
            strict: false,
        };
        let row = json!({"s": "héllo wörld", "n": 1})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(
            t.process(&row, CallContext::none()).unwrap()["s"],
            json!("hél..")
        );
        let short = json!({"s": "abc"}).as_object().cloned().unwrap();
        assert_eq!(
            t.process(&short, CallContext::none()).unwrap()["s"],
            json!("abc")
        );
    }

    #[test]
    fn non_strings_are_errors_and_missing_is_skipped_unless_strict() {
        let t = Truncate {
            fields: vec![("s".into(), 5)],
            suffix: String::new(),
            strict: false,
        };
        let e = t
            .process(
                &json!({"s": null}).as_object().cloned().unwrap(),
                CallContext::none(),
            )
            .unwrap_err();
        assert_eq!(e.reason["actual"], "NoneType");
        assert!(t.process(&Row::new(), CallContext::none()).is_ok());
        let strict = Truncate { strict: true, ..t };
        assert_eq!(
            strict
                .process(&Row::new(), CallContext::none())
                .unwrap_err()
                .reason["reason"],
            "missing_field"
        );
    }
}
