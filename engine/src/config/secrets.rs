//! The secrets a pipeline configures, and its settings text with them removed.
//!
//! A run records the pipeline file's text (its hash is the run's configuration hash), so a
//! credential written literally in the file (`api_key: sk-...`) must be taken out before
//! the text is hashed or stored. A `${VAR}` reference is kept as written: the file holds
//! no secret there, only its name.

use super::error::{Diagnostics, Loc};
use super::yaml::{self, Kind, Node};
use super::{AggregationOptions, PipelineConfig, TransformOptions};
use crate::calls::redact::{is_credential_header, secrets_of_header_value, REDACTED};
use crate::calls::Redactor;

/// Literal secrets shorter than this are removed only where they are the value of a
/// credential key, not wherever else the text happens to contain them: replacing every
/// `k` of a file whose key is `k` would leave no configuration to replay.
const MIN_FREE_TEXT_SECRET: usize = 8;

/// Every secret value the configuration holds, after `${VAR}` expansion: each `llm` and
/// `llm_batch` `api_key`, and the value (and token) of each credential header of an
/// `http` transform.
pub fn secrets(config: &PipelineConfig) -> Redactor {
    let mut out = Vec::new();
    for t in &config.transforms {
        match &t.options {
            TransformOptions::Llm(o) => out.push(o.api_key.clone()),
            TransformOptions::Http(o) => {
                for (k, v) in &o.headers {
                    if is_credential_header(k) {
                        out.extend(secrets_of_header_value(v));
                    }
                }
            }
            _ => {}
        }
    }
    for a in &config.aggregations {
        if let AggregationOptions::LlmBatch(o) = &a.options {
            out.push(o.api_key.clone());
        }
    }
    Redactor::new(out)
}

/// `text` (the settings file) with every literal credential replaced by `"<redacted>"`:
/// the value of any `api_key` key and of any credential header (`Authorization`,
/// `api-key`, ...) under a `headers` key, wherever written, unless it is a `${VAR}`
/// reference; then any other occurrence of a configured secret of 8 characters or more.
pub fn redact_text(text: &str, secrets: &Redactor) -> String {
    let mut spans = Vec::new();
    let mut diag = Diagnostics::new("settings".to_string());
    if let Some(root) = yaml::parse(text, &mut diag) {
        credential_spans(&root, false, text, &mut spans);
    }
    // Replace from the end so earlier offsets stay valid.
    spans.sort_unstable();
    spans.dedup();
    let mut out = text.to_string();
    for (start, end) in spans.into_iter().rev() {
        if start <= end && end <= out.len() {
            out.replace_range(start..end, &format!("\"{REDACTED}\""));
        }
    }
    let long = Redactor::new(
        secrets
            .secrets()
            .iter()
            .filter(|s| s.chars().count() >= MIN_FREE_TEXT_SECRET)
            .cloned(),
    );
    long.text(&out).into_owned()
}

/// Byte spans of the literal credential values under `node`.
fn credential_spans(node: &Node, in_headers: bool, text: &str, out: &mut Vec<(usize, usize)>) {
    match &node.kind {
        Kind::Map(pairs) => {
            for (k, v) in pairs {
                let key = k.as_str().unwrap_or("");
                let credential = key == "api_key" || (in_headers && is_credential_header(key));
                if credential {
                    if let Kind::Str(raw) = &v.kind {
                        if !raw.contains("${") {
                            if let Some(span) = byte_span(text, v.loc, v.end) {
                                out.push(with_block_header(text, v, span));
                            }
                        }
                    }
                }
                credential_spans(v, key == "headers", text, out);
            }
        }
        Kind::Seq(items) => {
            for item in items {
                credential_spans(item, false, text, out);
            }
        }
        _ => {}
    }
}

/// A block scalar's span starts at its content: take its header (`|`, `>-`, ...) too,
/// so the replacement is a plain quoted value on the key's line.
fn with_block_header(text: &str, v: &Node, (start, end): (usize, usize)) -> (usize, usize) {
    if v.style != yaml::Style::Block {
        return (start, end);
    }
    let before = &text[..start];
    let line_end = before.trim_end().len();
    let line_start = before[..line_end].rfind('\n').map_or(0, |i| i + 1);
    match before[line_start..line_end].rfind(['|', '>']) {
        Some(i) => (line_start + i, end),
        None => (start, end),
    }
}

/// The byte range between two (line, column) positions (1-based, columns in characters),
/// trimmed of trailing white space: a block scalar's span runs to the next key.
fn byte_span(text: &str, start: Loc, end: Loc) -> Option<(usize, usize)> {
    let s = byte_offset(text, start)?;
    let e = byte_offset(text, end)?;
    if e < s {
        return None;
    }
    let e = s + text[s..e].trim_end().len();
    Some((s, e))
}

fn byte_offset(text: &str, at: Loc) -> Option<usize> {
    let mut line_start = 0;
    for _ in 1..at.line {
        line_start += text[line_start..].find('\n')? + 1;
    }
    let line = &text[line_start..];
    let col = at.column.saturating_sub(1);
    let within = line
        .char_indices()
        .nth(col)
        .map(|(i, _)| i)
        .unwrap_or(line.len());
    Some(line_start + within)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str, secrets: &[&str]) -> String {
        redact_text(text, &Redactor::new(secrets.iter().map(|s| s.to_string())))
    }

    #[test]
    fn literal_keys_go_and_references_stay() {
        let text = "a:\n  api_key: sk-literal-1\n  b: {api_key: 'sk-2', other: x}\n  c:\n    api_key: ${KEY}\n";
        let out = redact(text, &[]);
        assert_eq!(
            out,
            "a:\n  api_key: \"<redacted>\"\n  b: {api_key: \"<redacted>\", other: x}\n  c:\n    api_key: ${KEY}\n"
        );
    }

    #[test]
    fn credential_headers_and_block_scalars_go() {
        let text = "headers:\n  Authorization: \"Bearer abc\"\n  X-Other: keep\napi_key: |\n  sk-block\nnext: 1\n";
        let out = redact(text, &[]);
        assert_eq!(
            out,
            "headers:\n  Authorization: \"<redacted>\"\n  X-Other: keep\napi_key: \"<redacted>\"\nnext: 1\n"
        );
    }

    #[test]
    fn long_secrets_go_anywhere_short_ones_only_at_their_key() {
        let text = "# key sk-long-secret\napi_key: k\nkind: keep\n";
        let out = redact(text, &["sk-long-secret", "k"]);
        assert_eq!(
            out,
            "# key <redacted>\napi_key: \"<redacted>\"\nkind: keep\n"
        );
    }

    #[test]
    fn multibyte_text_before_a_key_is_kept() {
        let text = "name: \"héllo wörld\"\nopts: {note: ñ, api_key: sk-é-secret}\n";
        let out = redact(text, &[]);
        assert_eq!(
            out,
            "name: \"héllo wörld\"\nopts: {note: ñ, api_key: \"<redacted>\"}\n"
        );
    }
}
