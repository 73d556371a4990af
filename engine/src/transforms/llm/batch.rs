//! `llm_batch`: the batch-aware LLM aggregation plugin (ELSPETH-CONFIG §7, "batch LLMs").
//!
//! A flushed batch is processed in its one state (seed 003: no per-row state ids are
//! invented). Each member row's prompt is the `template` rendered with `row` and
//! `lookup`; the rows' calls are sent concurrently through the node's pooled executor, all
//! under the batch's state, each recorded with the member token it served
//! (`CallAllocated.served`), so that lineage for a member row shows its own call.
//!
//! Every output row is its input row plus four fields, the same for every row so that a
//! CSV sink sees one header: `<rf>` (the answer, fence-stripped), `<rf>_usage`,
//! `<rf>_model`, and `<rf>_error` (null on success; on a row's failure the error object,
//! with `<rf>` and `<rf>_model` null and `<rf>_usage` `{}`). One failed row does not fail
//! the batch; a batch whose every row failed is an error, and (ELSPETH §7) all its members
//! end FAILED. Capacity errors are throttled and retried by the pool when `pool_size` is
//! above 1; other errors, retryable or not, are the row's error (aggregations are not
//! retried by the pipeline's policy). Multi-query (`queries`) is refused at load.

use super::{lost_answer, pool_of, Client};
use crate::calls::CallContext;
use crate::config::LlmOptions;
use crate::plan::{BatchTransform, CallSpec, TransformError};
use crate::pool::PooledExecutor;
use crate::template::Template;
use crate::transforms::pooled::{send_all, Capacity, PooledCall};
use crate::value::{Row, Value};
use attest_ledger::TokenId;
use serde_json::{json, Map};

pub struct LlmBatch {
    client: Client,
    template: Template,
    pool: PooledExecutor,
    capacity: Capacity,
    spec: CallSpec,
}

impl LlmBatch {
    pub fn new(o: &LlmOptions) -> Result<LlmBatch, String> {
        if o.queries.is_some() {
            return Err(
                "`queries` (multi-query) is not supported by `llm_batch`; use an \
                        `llm` transform for multi-query rows"
                    .into(),
            );
        }
        let template = Template::new(&o.template).map_err(|e| format!("template: {e}"))?;
        let (pool, capacity) = pool_of(o)?;
        Ok(LlmBatch {
            client: Client::new(o),
            template,
            pool,
            capacity,
            spec: super::call_spec(o),
        })
    }
}

impl BatchTransform for LlmBatch {
    /// Without a call context no call can be made: every row fails, and so the batch.
    fn process_batch(&self, rows: &[Row]) -> Result<Vec<Row>, TransformError> {
        self.process_batch_calling(rows, &[], CallContext::none())
    }

    fn calls(&self) -> Option<&CallSpec> {
        Some(&self.spec)
    }

    fn process_batch_calling(
        &self,
        rows: &[Row],
        members: &[TokenId],
        ctx: CallContext,
    ) -> Result<Vec<Row>, TransformError> {
        // The prompts, in member order; a row whose prompt cannot be rendered makes no call.
        let mut results: Vec<Option<Result<_, TransformError>>> = Vec::with_capacity(rows.len());
        let mut calls = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let context = json!({"row": row, "lookup": self.client.lookup});
            match self.template.render(&context) {
                Ok(prompt) => {
                    calls.push(PooledCall {
                        request: self.client.request(prompt, self.client.max_tokens, None),
                        served: members.get(i).cloned(),
                    });
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(TransformError::new(
                    json!({"reason": "template_rendering_failed", "error": e}),
                )))),
            }
        }
        let mut answers = send_all(
            &self.pool,
            &ctx,
            "llm",
            "llm_call_failed",
            self.capacity,
            calls,
            |resp| self.client.judge(resp),
        )
        .into_iter();
        let rf = &self.client.response_field;
        let mut out = Vec::with_capacity(rows.len());
        let mut errors = Vec::new();
        for (row, result) in rows.iter().zip(results) {
            let result = match result {
                Some(r) => r,
                None => answers.next().unwrap_or_else(|| Err(lost_answer())),
            };
            let mut o = row.clone();
            match result {
                Ok(answer) => {
                    Client::append(&mut o, rf, answer);
                    o.insert(format!("{rf}_error"), Value::Null);
                }
                Err(e) => {
                    o.insert(rf.clone(), Value::Null);
                    o.insert(format!("{rf}_usage"), Value::Object(Map::new()));
                    o.insert(format!("{rf}_model"), Value::Null);
                    o.insert(format!("{rf}_error"), e.reason.clone());
                    errors.push(e.reason);
                }
            }
            out.push(o);
        }
        if !rows.is_empty() && errors.len() == rows.len() {
            return Err(TransformError::new(json!({
                "reason": "all_rows_failed",
                "rows": rows.len(),
                "first_error": errors.swap_remove(0),
            })));
        }
        Ok(out)
    }
}
