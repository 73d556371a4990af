//! `llm`: one chat completion per row against an OpenAI-compatible endpoint (OpenRouter,
//! OpenAI, Azure OpenAI), through the audited client (ELSPETH-CONFIG §9.2).
//!
//! The prompt is the `template` rendered with `row` and `lookup`; the answer adds
//! `<response_field>`, `<response_field>_usage` and `<response_field>_model` to the row.
//! A capacity (429, 503, 529), server (5xx) or network error is retryable and follows the
//! pipeline's `retry` policy; anything else sends the unchanged row to `on_error`, with the
//! error recorded on the state and on the call.

mod provider;
mod response;

pub use response::strip_fence;

use crate::calls::{CallContext, Redactor, Request, RequestBody};
use crate::config::LlmOptions;
use crate::plan::{CallSpec, Transform, TransformError};
use crate::template::Template;
use crate::transforms::calling::call_error;
use crate::value::{Row, Value};
use provider::Endpoint;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub struct Llm {
    endpoint: Endpoint,
    model: String,
    template: Template,
    system_prompt: Option<String>,
    lookup: Value,
    temperature: f64,
    max_tokens: Option<u64>,
    response_field: String,
    timeout: Duration,
    spec: CallSpec,
}

impl Llm {
    /// Fails when the template does not compile, or the options ask for what this build
    /// does not run yet (multi-query).
    pub fn new(o: &LlmOptions) -> Result<Llm, String> {
        if o.queries.is_some() {
            return Err(
                "multi-query mode (`queries`) is not supported by this build yet; use one \
                 `llm` transform per query"
                    .into(),
            );
        }
        let template = Template::new(&o.template).map_err(|e| format!("template: {e}"))?;
        Ok(Llm {
            endpoint: Endpoint::of(o),
            model: o.model.clone(),
            template,
            system_prompt: o.system_prompt.clone(),
            lookup: o.lookup.clone().unwrap_or(Value::Null),
            temperature: o.temperature,
            max_tokens: o.max_tokens,
            response_field: o.response_field.clone(),
            timeout: Duration::from_secs_f64(o.timeout_seconds),
            spec: CallSpec {
                redactor: Arc::new(Redactor::new([o.api_key.clone()])),
                concurrency: usize::try_from(o.pool.pool_size).unwrap_or(usize::MAX),
            },
        })
    }

    fn request(&self, prompt: String) -> Request {
        let mut messages = Vec::new();
        if let Some(sp) = &self.system_prompt {
            messages.push(json!({"role": "system", "content": sp}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
        });
        if let (Some(n), Some(map)) = (self.max_tokens, body.as_object_mut()) {
            map.insert("max_tokens".into(), json!(n));
        }
        Request {
            method: "POST".into(),
            url: self.endpoint.url.clone(),
            headers: vec![self.endpoint.auth.clone()],
            body: Some(RequestBody::Json(body)),
            timeout: self.timeout,
        }
    }
}

impl Transform for Llm {
    fn process(&self, row: &Row, ctx: CallContext) -> Result<Row, TransformError> {
        let context = json!({"row": row, "lookup": self.lookup});
        let prompt = self.template.render(&context).map_err(|e| {
            TransformError::new(json!({"reason": "template_rendering_failed", "error": e}))
        })?;
        let answer = ctx
            .call("llm", self.request(prompt), |resp| {
                response::judge(resp, &self.model)
            })
            .map_err(|e| call_error(e, "llm_call_failed"))??;
        let rf = &self.response_field;
        let mut out = row.clone();
        out.insert(rf.clone(), Value::String(answer.text));
        out.insert(format!("{rf}_usage"), Value::Object(answer.usage));
        out.insert(format!("{rf}_model"), Value::String(answer.model));
        Ok(out)
    }

    fn calls(&self) -> Option<&CallSpec> {
        Some(&self.spec)
    }
}
