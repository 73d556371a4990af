//! `http` (attest's own): one request per row to a configured URL, for enrichment APIs,
//! through the audited client. The URL and body are templates over `row`; the response
//! must be JSON, and the fields named in `response_fields` (JSON Pointers) are copied into
//! the row, or the whole body goes to `response_field`.

use crate::calls::redact::{is_credential_header, secrets_of_header_value};
use crate::calls::{CallContext, Redactor, Request, RequestBody, Response};
use crate::config::{HttpMethod, HttpOptions};
use crate::plan::{CallSpec, Transform, TransformError};
use crate::template::Template;
use crate::transforms::calling::{call_error, retryable_status, snippet};
use crate::value::{Row, Value};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub struct Http {
    url: Template,
    method: &'static str,
    headers: Vec<(String, String)>,
    body: Option<Template>,
    response_fields: Vec<(String, String)>,
    response_field: String,
    timeout: Duration,
    spec: CallSpec,
}

impl Http {
    pub fn new(o: &HttpOptions) -> Result<Http, String> {
        let url = Template::new(&o.url).map_err(|e| format!("url: {e}"))?;
        let body = o
            .body_template
            .as_deref()
            .map(Template::new)
            .transpose()
            .map_err(|e| format!("body_template: {e}"))?;
        // Credential headers' values (and their tokens) are secrets wherever they appear.
        let secrets = o
            .headers
            .iter()
            .filter(|(k, _)| is_credential_header(k))
            .flat_map(|(_, v)| secrets_of_header_value(v));
        Ok(Http {
            url,
            method: match o.method {
                HttpMethod::Get => "GET",
                HttpMethod::Post => "POST",
                HttpMethod::Put => "PUT",
                HttpMethod::Patch => "PATCH",
                HttpMethod::Delete => "DELETE",
            },
            headers: o.headers.clone(),
            body,
            response_fields: o.response_fields.clone(),
            response_field: o.response_field.clone(),
            timeout: Duration::from_secs_f64(o.timeout_seconds),
            spec: CallSpec {
                redactor: Arc::new(Redactor::new(secrets)),
                concurrency: 1,
            },
        })
    }

    /// The parsed body, or why the response cannot be used.
    fn judge(&self, resp: &Response) -> Result<Value, TransformError> {
        let text = resp.text().unwrap_or("");
        if !(200..300).contains(&resp.status) {
            if let Some(e) = retryable_status(resp.status) {
                return Err(e);
            }
            return Err(TransformError::new(json!({
                "reason": "http_call_failed",
                "status_code": resp.status,
                "error": format!("HTTP {}: {}", resp.status, snippet(text, 500)),
            })));
        }
        if !resp.is_json() {
            return Err(TransformError::new(json!({
                "reason": "wrong_content_type",
                "content_type": resp.header("content-type"),
                "error": "expected application/json",
            })));
        }
        serde_json::from_str(text).map_err(|e| {
            TransformError::new(json!({
                "reason": "invalid_json",
                "error": format!("{e}: {}", snippet(text, 200)),
            }))
        })
    }
}

fn rendering_failed(what: &str, e: String) -> TransformError {
    TransformError::new(
        json!({"reason": "template_rendering_failed", "template": what, "error": e}),
    )
}

impl Transform for Http {
    fn process(&self, row: &Row, ctx: CallContext) -> Result<Row, TransformError> {
        let context = json!({"row": row});
        let url = self
            .url
            .render(&context)
            .map_err(|e| rendering_failed("url", e))?;
        let mut headers = self.headers.clone();
        let body = match &self.body {
            None => None,
            Some(t) => {
                let text = t
                    .render(&context)
                    .map_err(|e| rendering_failed("body_template", e))?;
                let typed = headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
                if !typed && serde_json::from_str::<Value>(&text).is_ok() {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                Some(RequestBody::Text(text))
            }
        };
        let request = Request {
            method: self.method.into(),
            url,
            headers,
            body,
            timeout: self.timeout,
        };
        let parsed = ctx
            .call("http", request, |resp| self.judge(resp))
            .map_err(|e| call_error(e, "http_call_failed"))??;
        let mut out = row.clone();
        if self.response_fields.is_empty() {
            out.insert(self.response_field.clone(), parsed);
            return Ok(out);
        }
        for (field, pointer) in &self.response_fields {
            let value = parsed.pointer(pointer).ok_or_else(|| {
                TransformError::new(json!({
                    "reason": "missing_response_field", "field": field, "pointer": pointer,
                }))
            })?;
            out.insert(field.clone(), value.clone());
        }
        Ok(out)
    }

    fn calls(&self) -> Option<&CallSpec> {
        Some(&self.spec)
    }
}
