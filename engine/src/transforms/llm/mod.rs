//! `llm`: chat completions against an OpenAI-compatible endpoint (OpenRouter, OpenAI,
//! Azure OpenAI), through the audited client and the node's pooled executor
//! (ELSPETH-CONFIG §9.2).
//!
//! - Single query: the prompt is the `template` rendered with `row` and `lookup`; the
//!   answer adds `<response_field>`, `<response_field>_usage` and
//!   `<response_field>_model` to the row.
//! - Multi-query (`queries`, `multi.rs`): one call per query, all under the row's one
//!   state, in parallel through the pool; each query's typed output fields and answer are
//!   appended in query order, all or nothing.
//!
//! Every node has one [`PooledExecutor`], shared by all workers, so that at most
//! `pool_size` calls of the node are in flight across rows. With `pool_size` above 1 a
//! capacity error (429, 503, 529) is retried by the pool's AIMD throttle until
//! `max_capacity_retry_seconds`, then the call fails `retry_timeout`; other retryable
//! errors (timeouts, resets, other 5xx) follow the pipeline's `retry` policy. With
//! `pool_size` 1 there is no throttle, as in ELSPETH: a capacity error is retryable like
//! the others. Anything else sends the unchanged row to `on_error`, with the error
//! recorded on the state and on the call.

mod batch;
mod multi;
mod provider;
mod response;

pub use batch::LlmBatch;
pub use response::strip_fence;

use crate::calls::{CallContext, Redactor, Request, RequestBody};
use crate::config::LlmOptions;
use crate::plan::{CallSpec, Transform, TransformError};
use crate::pool::{PoolConfig, PooledExecutor};
use crate::template::Template;
use crate::transforms::pooled::{send_all, Capacity, PooledCall};
use crate::value::{Row, Value};
use multi::Query;
use provider::Endpoint;
use response::Answer;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// What every call of a node sends, whatever the mode, and how its answer is read.
struct Client {
    endpoint: Endpoint,
    model: String,
    system_prompt: Option<String>,
    lookup: Value,
    temperature: f64,
    max_tokens: Option<u64>,
    response_field: String,
    timeout: Duration,
}

impl Client {
    fn new(o: &LlmOptions) -> Client {
        Client {
            endpoint: Endpoint::of(o),
            model: o.model.clone(),
            system_prompt: o.system_prompt.clone(),
            lookup: o.lookup.clone().unwrap_or(Value::Null),
            temperature: o.temperature,
            max_tokens: o.max_tokens,
            response_field: o.response_field.clone(),
            timeout: Duration::from_secs_f64(o.timeout_seconds),
        }
    }

    /// A chat completion asking `prompt`; `max_tokens` and `response_format` when given.
    fn request(
        &self,
        prompt: String,
        max_tokens: Option<u64>,
        response_format: Option<&Value>,
    ) -> Request {
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
        if let Some(map) = body.as_object_mut() {
            if let Some(n) = max_tokens {
                map.insert("max_tokens".into(), json!(n));
            }
            if let Some(f) = response_format {
                map.insert("response_format".into(), f.clone());
            }
        }
        Request {
            method: "POST".into(),
            url: self.endpoint.url.clone(),
            headers: vec![self.endpoint.auth.clone()],
            body: Some(RequestBody::Json(body)),
            timeout: self.timeout,
        }
    }

    fn judge(&self, resp: &crate::calls::Response) -> Result<Answer, TransformError> {
        response::judge(resp, &self.model)
    }

    /// Adds `<prefix>`, `<prefix>_usage` and `<prefix>_model` for an answer.
    fn append(out: &mut Row, prefix: &str, answer: Answer) {
        out.insert(prefix.to_string(), Value::String(answer.text));
        out.insert(format!("{prefix}_usage"), Value::Object(answer.usage));
        out.insert(format!("{prefix}_model"), Value::String(answer.model));
    }
}

/// The node's executor, and whether it throttles capacity errors: ELSPETH pools (and
/// throttles) only with `pool_size` above 1.
fn pool_of(o: &LlmOptions) -> Result<(PooledExecutor, Capacity), String> {
    let config = PoolConfig::try_from(&o.pool).map_err(|e| e.to_string())?;
    let capacity = if config.pool_size() > 1 {
        Capacity::Throttled
    } else {
        Capacity::Returned
    };
    Ok((PooledExecutor::new(config), capacity))
}

fn call_spec(o: &LlmOptions) -> CallSpec {
    CallSpec {
        redactor: Arc::new(Redactor::new([o.api_key.clone()])),
        concurrency: usize::try_from(o.pool.pool_size).unwrap_or(usize::MAX),
    }
}

enum Mode {
    /// Boxed: a compiled template is large, and a node holds one mode or the other.
    Single(Box<Template>),
    Multi(Vec<Query>),
}

pub struct Llm {
    client: Client,
    mode: Mode,
    pool: PooledExecutor,
    capacity: Capacity,
    spec: CallSpec,
}

impl Llm {
    /// Fails when a template does not compile or the pool options break a pool rule.
    pub fn new(o: &LlmOptions) -> Result<Llm, String> {
        let mode = match &o.queries {
            None => Mode::Single(Box::new(
                Template::new(&o.template).map_err(|e| format!("template: {e}"))?,
            )),
            Some(queries) => Mode::Multi(
                queries
                    .iter()
                    .map(|q| Query::new(q, &o.template))
                    .collect::<Result<_, _>>()?,
            ),
        };
        let (pool, capacity) = pool_of(o)?;
        Ok(Llm {
            client: Client::new(o),
            mode,
            pool,
            capacity,
            spec: call_spec(o),
        })
    }

    fn single(
        &self,
        template: &Template,
        row: &Row,
        ctx: CallContext,
    ) -> Result<Row, TransformError> {
        let context = json!({"row": row, "lookup": self.client.lookup});
        let prompt = template.render(&context).map_err(|e| {
            TransformError::new(json!({"reason": "template_rendering_failed", "error": e}))
        })?;
        let call = PooledCall {
            request: self.client.request(prompt, self.client.max_tokens, None),
            served: None,
        };
        let answer = self
            .send(&ctx, vec![call])
            .pop()
            .unwrap_or_else(|| Err(lost_answer()))?;
        let mut out = row.clone();
        Client::append(&mut out, &self.client.response_field, answer);
        Ok(out)
    }

    fn send(
        &self,
        ctx: &CallContext,
        calls: Vec<PooledCall>,
    ) -> Vec<Result<Answer, TransformError>> {
        send_all(
            &self.pool,
            ctx,
            "llm",
            "llm_call_failed",
            self.capacity,
            calls,
            |resp| self.client.judge(resp),
        )
    }
}

/// The executor returns one result per call; a missing one would be a bug, and it fails
/// the row rather than the run.
fn lost_answer() -> TransformError {
    TransformError::new(json!({
        "reason": "llm_call_failed",
        "error": "the executor returned no result for the call",
    }))
}

impl Transform for Llm {
    fn process(&self, row: &Row, ctx: CallContext) -> Result<Row, TransformError> {
        match &self.mode {
            Mode::Single(template) => self.single(template, row, ctx),
            Mode::Multi(queries) => multi::process(self, queries, row, &ctx),
        }
    }

    fn calls(&self) -> Option<&CallSpec> {
        Some(&self.spec)
    }
}
