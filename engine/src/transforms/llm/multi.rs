//! Multi-query `llm` (ELSPETH-CONFIG §9.2, `queries`): one call per query, all under
//! the row's one state, each asking for a JSON object whose keys are the query's output
//! fields.
//!
//! - A query's prompt is its `template` (or the transform's) rendered with its
//!   `input_fields` (template variable → row field), `source_row` (the whole row) and
//!   `lookup`. A missing input field is `template_context_failed`.
//! - The request asks for JSON: `response_format: {"type": "json_object"}` (`standard`)
//!   or a strict JSON schema named `<query>_output` with every output field required
//!   (`structured`).
//! - Each query appends, in query order: `<query>_<suffix>` for each output field (the
//!   answer must be a JSON object with that key and type), then `<query>_<rf>`,
//!   `<query>_<rf>_usage` and `<query>_<rf>_model`.
//! - All or nothing: if any query fails, the row is unchanged and goes to `on_error` with
//!   `{"reason": "multi_query_failed", "failed_queries": [{"query", "reason", ...}]}`.
//!
//! With `pool_size` above 1 the queries run in parallel through the pool (capacity errors
//! throttled and retried, other retryable errors retried by the pipeline's policy, the
//! whole row again). With `pool_size` 1 they run one after the other, the first failure
//! ends the row, and (as in ELSPETH) a retryable provider error is an error result, never
//! retried.

use super::{lost_answer, Client, Llm};
use crate::calls::CallContext;
use crate::config::{LlmQuery, OutputField, OutputType, ResponseFormat};
use crate::plan::TransformError;
use crate::template::Template;
use crate::transforms::llm::response::Answer;
use crate::transforms::pooled::{Capacity, PooledCall};
use crate::value::{Row, Value};
use serde_json::{json, Map};

pub(super) struct Query {
    name: String,
    input_fields: Vec<(String, String)>,
    template: Template,
    max_tokens: Option<u64>,
    /// The request's `response_format`.
    response_format: Value,
    output_fields: Vec<OutputField>,
}

impl Query {
    pub(super) fn new(q: &LlmQuery, transform_template: &str) -> Result<Query, String> {
        let source = q.template.as_deref().unwrap_or(transform_template);
        let template =
            Template::new(source).map_err(|e| format!("query `{}`: template: {e}", q.name))?;
        Ok(Query {
            name: q.name.clone(),
            input_fields: q.input_fields.clone(),
            template,
            max_tokens: q.max_tokens,
            response_format: response_format(q),
            output_fields: q.output_fields.clone(),
        })
    }

    /// The query's prompt for `row`, or the reason it has none.
    fn prompt(&self, row: &Row, lookup: &Value) -> Result<String, Map<String, Value>> {
        let mut context = Map::new();
        for (var, field) in &self.input_fields {
            let value = row.get(field).ok_or_else(|| {
                reason(json!({
                    "reason": "template_context_failed",
                    "error": format!("input field `{field}` (for `{var}`) is not in the row"),
                }))
            })?;
            context.insert(var.clone(), value.clone());
        }
        context.insert("source_row".into(), Value::Object(row.clone()));
        context.insert("lookup".into(), lookup.clone());
        self.template
            .render(&Value::Object(context))
            .map_err(|e| reason(json!({"reason": "template_rendering_failed", "error": e})))
    }

    /// Appends the query's fields for `answer` to `out`, or says why the answer cannot be
    /// used.
    fn read(&self, answer: Answer, rf: &str, out: &mut Row) -> Result<(), Map<String, Value>> {
        let mut fields = Vec::with_capacity(self.output_fields.len());
        if !self.output_fields.is_empty() {
            let parsed: Value = serde_json::from_str(&answer.text).map_err(|e| {
                reason(json!({"reason": "json_parse_failed", "error": e.to_string()}))
            })?;
            let Value::Object(object) = parsed else {
                return Err(reason(json!({
                    "reason": "invalid_json_type",
                    "error": "the answer is JSON but not an object",
                })));
            };
            for f in &self.output_fields {
                let value = object.get(&f.suffix).ok_or_else(|| {
                    reason(json!({"reason": "missing_output_field", "field": f.suffix}))
                })?;
                if !has_type(value, &f.ty) {
                    return Err(reason(json!({
                        "reason": "field_type_mismatch",
                        "field": f.suffix,
                        "expected": type_name(&f.ty),
                        "value": value,
                    })));
                }
                fields.push((format!("{}_{}", self.name, f.suffix), value.clone()));
            }
        }
        for (k, v) in fields {
            out.insert(k, v);
        }
        Client::append(out, &format!("{}_{rf}", self.name), answer);
        Ok(())
    }
}

fn reason(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => Map::from_iter([("reason".to_string(), other)]),
    }
}

/// JSON-object mode, or a strict schema of the output fields, all required.
fn response_format(q: &LlmQuery) -> Value {
    match q.response_format {
        ResponseFormat::Standard => json!({"type": "json_object"}),
        ResponseFormat::Structured => {
            let properties: Map<String, Value> = q
                .output_fields
                .iter()
                .map(|f| (f.suffix.clone(), type_schema(&f.ty)))
                .collect();
            let required: Vec<&str> = q.output_fields.iter().map(|f| f.suffix.as_str()).collect();
            json!({
                "type": "json_schema",
                "json_schema": {
                    "name": format!("{}_output", q.name),
                    "strict": true,
                    "schema": {
                        "type": "object",
                        "properties": properties,
                        "required": required,
                        "additionalProperties": false,
                    },
                },
            })
        }
    }
}

fn type_schema(ty: &OutputType) -> Value {
    match ty {
        OutputType::Enum(values) => json!({"type": "string", "enum": values}),
        other => json!({"type": type_name(other)}),
    }
}

fn type_name(ty: &OutputType) -> &'static str {
    match ty {
        OutputType::String => "string",
        OutputType::Integer => "integer",
        OutputType::Number => "number",
        OutputType::Boolean => "boolean",
        OutputType::Enum(_) => "enum",
    }
}

/// Whether `v` has the output field's type. An integer may be written as an integral
/// float (`3.0`); booleans are not numbers.
fn has_type(v: &Value, ty: &OutputType) -> bool {
    match ty {
        OutputType::String => v.is_string(),
        OutputType::Integer => {
            v.is_i64()
                || v.is_u64()
                || v.as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        OutputType::Number => v.is_number(),
        OutputType::Boolean => v.is_boolean(),
        OutputType::Enum(values) => v.as_str().is_some_and(|s| values.iter().any(|x| x == s)),
    }
}

/// Runs a row's queries and assembles its output, all or nothing.
pub(super) fn process(
    llm: &Llm,
    queries: &[Query],
    row: &Row,
    ctx: &CallContext,
) -> Result<Row, TransformError> {
    let client = &llm.client;
    // Every prompt first: a row whose prompts cannot all be rendered makes no call.
    let mut calls = Vec::with_capacity(queries.len());
    let mut failed = Vec::new();
    for q in queries {
        match q.prompt(row, &client.lookup) {
            Ok(prompt) => calls.push(PooledCall {
                request: client.request(
                    prompt,
                    q.max_tokens.or(client.max_tokens),
                    Some(&q.response_format),
                ),
                served: None,
            }),
            Err(why) => failed.push(of_query(&q.name, why)),
        }
    }
    if !failed.is_empty() {
        return Err(multi_query_failed(failed, false));
    }
    let answers = match llm.capacity {
        Capacity::Throttled => llm.send(ctx, calls),
        Capacity::Returned => {
            // ELSPETH without a pool: one query after the other, stopping at a failure.
            let mut answers = Vec::with_capacity(calls.len());
            for call in calls {
                let answer = llm
                    .send(ctx, vec![call])
                    .pop()
                    .unwrap_or_else(|| Err(lost_answer()));
                let stop = answer.is_err();
                answers.push(answer);
                if stop {
                    break;
                }
            }
            answers
        }
    };
    let mut out = row.clone();
    let mut retryable = false;
    for (q, answer) in queries.iter().zip(answers) {
        let read = match answer {
            Ok(answer) => q.read(answer, &client.response_field, &mut out),
            Err(e) => {
                retryable |= e.retryable;
                Err(reason(e.reason))
            }
        };
        if let Err(why) = read {
            failed.push(of_query(&q.name, why));
        }
    }
    if failed.is_empty() {
        Ok(out)
    } else {
        // Without a pool a retryable error is an error result (ELSPETH's "surprising"
        // rule); with one, capacity errors were already retried, and what is left
        // retryable (a timeout, a reset, a 5xx) goes to the pipeline's retry policy.
        let retry = retryable && llm.capacity == Capacity::Throttled;
        Err(multi_query_failed(failed, retry))
    }
}

fn of_query(name: &str, why: Map<String, Value>) -> Value {
    let mut entry = Map::new();
    entry.insert("query".into(), Value::String(name.to_string()));
    entry.extend(why);
    Value::Object(entry)
}

fn multi_query_failed(failed: Vec<Value>, retryable: bool) -> TransformError {
    TransformError {
        reason: json!({"reason": "multi_query_failed", "failed_queries": failed}),
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LlmQuery;

    fn query(fields: Vec<OutputField>, format: ResponseFormat) -> Query {
        Query::new(
            &LlmQuery {
                name: "q".into(),
                input_fields: vec![("t".into(), "text".into())],
                template: Some("say {{ t }} of {{ source_row.id }}".into()),
                max_tokens: None,
                response_format: format,
                output_fields: fields,
            },
            "unused",
        )
        .unwrap()
    }

    fn field(suffix: &str, ty: OutputType) -> OutputField {
        OutputField {
            suffix: suffix.into(),
            ty,
        }
    }

    fn answer(text: &str) -> Answer {
        Answer {
            text: text.into(),
            usage: Map::new(),
            model: "m".into(),
        }
    }

    fn row() -> Row {
        reason(json!({"id": 7, "text": "hello"}))
    }

    #[test]
    fn prompts_see_named_inputs_and_the_source_row() {
        let q = query(vec![], ResponseFormat::Standard);
        assert_eq!(q.prompt(&row(), &Value::Null).unwrap(), "say hello of 7");
        let mut missing = row();
        missing.remove("text");
        let why = q.prompt(&missing, &Value::Null).unwrap_err();
        assert_eq!(why["reason"], "template_context_failed");
    }

    #[test]
    fn output_fields_are_typed_and_appended_before_the_answer() {
        let q = query(
            vec![
                field("score", OutputType::Integer),
                field("label", OutputType::Enum(vec!["a".into(), "b".into()])),
                field("ok", OutputType::Boolean),
            ],
            ResponseFormat::Standard,
        );
        let mut out = row();
        q.read(
            answer(r#"{"label": "b", "score": 3.0, "ok": true, "extra": 1}"#),
            "llm_response",
            &mut out,
        )
        .unwrap();
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "text",
                "q_score",
                "q_label",
                "q_ok",
                "q_llm_response",
                "q_llm_response_usage",
                "q_llm_response_model"
            ]
        );
        assert_eq!(out["q_score"], json!(3.0));
        let cases = [
            ("not json", "json_parse_failed"),
            ("[1, 2]", "invalid_json_type"),
            (r#"{"score": 1, "ok": true}"#, "missing_output_field"),
            (
                r#"{"score": 1.5, "label": "a", "ok": true}"#,
                "field_type_mismatch",
            ),
            (
                r#"{"score": true, "label": "a", "ok": true}"#,
                "field_type_mismatch",
            ),
            (
                r#"{"score": 1, "label": "c", "ok": true}"#,
                "field_type_mismatch",
            ),
            (
                r#"{"score": 1, "label": "a", "ok": "yes"}"#,
                "field_type_mismatch",
            ),
        ];
        for (text, want) in cases {
            let mut out = row();
            let why = q.read(answer(text), "llm_response", &mut out).unwrap_err();
            assert_eq!(why["reason"], want, "{text}");
            assert_eq!(out, row(), "{text}: the row changed");
        }
    }

    #[test]
    fn structured_mode_asks_for_a_strict_schema() {
        let q = LlmQuery {
            name: "grade".into(),
            input_fields: vec![],
            template: None,
            max_tokens: None,
            response_format: ResponseFormat::Structured,
            output_fields: vec![
                field("score", OutputType::Number),
                field("tier", OutputType::Enum(vec!["x".into()])),
            ],
        };
        assert_eq!(
            response_format(&q),
            json!({"type": "json_schema", "json_schema": {
            "name": "grade_output", "strict": true, "schema": {
                "type": "object",
                "properties": {"score": {"type": "number"}, "tier": {"type": "string", "enum": ["x"]}},
                "required": ["score", "tier"],
                "additionalProperties": false,
            }}})
        );
    }
}
