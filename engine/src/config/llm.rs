//! Options of the `llm` transform and `llm_batch` aggregation (ELSPETH-CONFIG §9.2,
//! issue 7), including the pooled executor's settings, which are checked here so that a
//! bad pool never reaches the AIMD throttle.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::decode::{float_of, int_of, string_map, to_json, Fields};
use super::error::{Diagnostics, Loc, Located};
use super::names::is_identifier;
use super::plugins::{common, positive_seconds, response_field};
use super::schema::Schema;
use super::yaml::{Kind, Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmProvider {
    OpenRouter,
    OpenAi,
    Azure,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmOptions {
    pub schema: Schema,
    pub provider: LlmProvider,
    /// The model asked for. Azure: defaults to `deployment_name`.
    pub model: String,
    /// Usually `${ENV}`; never recorded in the ledger.
    pub api_key: String,
    /// OpenRouter: `https://openrouter.ai/api/v1`; OpenAI: `https://api.openai.com/v1`;
    /// Azure: the `endpoint`.
    pub base_url: String,
    /// Azure only.
    pub deployment_name: Option<String>,
    /// Azure only; default `2024-10-21`.
    pub api_version: Option<String>,
    /// Jinja template (the prompt). From `template` or `template_file`.
    pub template: String,
    /// The file `template` was read from, as written.
    pub template_source: Option<String>,
    pub system_prompt: Option<String>,
    pub system_prompt_source: Option<String>,
    /// Free-form data for templates (`lookup`), as JSON.
    pub lookup: Option<serde_json::Value>,
    pub lookup_source: Option<String>,
    /// None: not declared; Some([]): explicit opt-out.
    pub required_input_fields: Option<Vec<String>>,
    /// > 0 when given.
    pub max_tokens: Option<u64>,
    /// Default 0.0, in 0..=2.
    pub temperature: f64,
    /// Default `llm_response`.
    pub response_field: String,
    /// Default 60.
    pub timeout_seconds: f64,
    /// Multi-query mode, in file order.
    pub queries: Option<Vec<LlmQuery>>,
    pub pool: PoolOptions,
}

/// The pooled executor and its AIMD throttle.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolOptions {
    /// Default 1; ≥ 1.
    pub pool_size: u64,
    /// Default 0; ≤ max_dispatch_delay_ms.
    pub min_dispatch_delay_ms: u64,
    /// Default 5000; > 0.
    pub max_dispatch_delay_ms: u64,
    /// Default 2.0; > 1.
    pub backoff_multiplier: f64,
    /// Default 50; not 0 when the minimum is 0 (the delay could never come down).
    pub recovery_step_ms: u64,
    /// Default 3600; > 0.
    pub max_capacity_retry_seconds: f64,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            pool_size: 1,
            min_dispatch_delay_ms: 0,
            max_dispatch_delay_ms: 5000,
            backoff_multiplier: 2.0,
            recovery_step_ms: 50,
            max_capacity_retry_seconds: 3600.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// JSON-object mode.
    Standard,
    /// JSON schema `<query>_output`, every output field required.
    Structured,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutputType {
    String,
    Integer,
    Number,
    Boolean,
    Enum(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputField {
    pub suffix: String,
    pub ty: OutputType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmQuery {
    pub name: String,
    /// Template variable → row field, in file order.
    pub input_fields: Vec<(String, String)>,
    /// Overrides the transform's template.
    pub template: Option<String>,
    pub max_tokens: Option<u64>,
    /// Default `standard`.
    pub response_format: ResponseFormat,
    pub output_fields: Vec<OutputField>,
}

pub(crate) fn llm(
    f: &mut Fields<'_>,
    base_dir: Option<&Path>,
    d: &mut Diagnostics,
) -> Option<LlmOptions> {
    let before = d.error_count();
    let provider = f
        .required("provider", d)
        .and_then(|n| {
            super::decode::choice_of(n, "`provider`", &["openrouter", "openai", "azure"], d)
        })
        .map(|p| match p {
            "azure" => LlmProvider::Azure,
            "openai" => LlmProvider::OpenAi,
            _ => LlmProvider::OpenRouter,
        });
    let (schema, required_input_fields) = common(f, d, true);
    let template = text_or_file(f, "template", "template_file", base_dir, d);
    let system_prompt = text_or_file(f, "system_prompt", "system_prompt_file", base_dir, d);
    let lookup = lookup(f, base_dir, d);
    let max_tokens = positive_int(f, "max_tokens", d);
    let temperature = match f.get("temperature") {
        None => Some(0.0),
        Some(n) => float_of(n, "`temperature`", d).and_then(|t| {
            if (0.0..=2.0).contains(&t) {
                Some(t)
            } else {
                d.error(n.loc, format!("`temperature` is {t}; expected 0 to 2"));
                None
            }
        }),
    };
    let response_field = response_field(f, "llm_response", d);
    let timeout_seconds = positive_seconds(f, "timeout_seconds", 60.0, d);
    let queries = f.get("queries").and_then(|n| queries(n, d));
    let pool = pool(f, d);

    let mut model = None;
    let mut api_key = None;
    let mut base_url = None;
    let mut deployment_name = None;
    let mut api_version = None;
    match provider {
        Some(LlmProvider::OpenRouter) | Some(LlmProvider::OpenAi) => {
            model = f.req_str("model", d).map(|m| m.value);
            api_key = f.req_str("api_key", d).map(|k| k.value);
            let default_url = if provider == Some(LlmProvider::OpenAi) {
                "https://api.openai.com/v1"
            } else {
                "https://openrouter.ai/api/v1"
            };
            base_url = Some(f.str_or("base_url", default_url, d));
        }
        Some(LlmProvider::Azure) => {
            deployment_name = f.req_str("deployment_name", d).map(|m| m.value);
            base_url = f.req_str("endpoint", d).map(|m| m.value);
            api_key = f.req_str("api_key", d).map(|k| k.value);
            api_version = Some(f.str_or("api_version", "2024-10-21", d));
            model = f
                .opt_str("model", d)
                .map(|m| m.value)
                .or_else(|| deployment_name.clone());
        }
        // Unknown provider (already reported): accept its keys so that only that one error
        // is shown.
        None => {
            for key in [
                "model",
                "api_key",
                "base_url",
                "deployment_name",
                "endpoint",
                "api_version",
            ] {
                f.allow(key);
            }
        }
    }

    // The template's `row` needs declared inputs so that field contracts can be checked.
    if let Some((template, _)) = &template {
        if required_input_fields.is_none() && uses_row(template) {
            d.error(
                f.owner(),
                format!(
                    "{} use `row` in the template but do not declare `required_input_fields`; \
                     expected the list of fields the template reads (or [] to opt out)",
                    f.what()
                ),
            );
        }
    }
    if d.error_count() > before {
        return None;
    }
    let (template, template_source) = template?;
    let (system_prompt, system_prompt_source) = match system_prompt {
        Some((text, source)) => (Some(text), source),
        None => (None, None),
    };
    let (lookup, lookup_source) = match lookup {
        Some((value, source)) => (Some(value), source),
        None => (None, None),
    };
    Some(LlmOptions {
        schema: schema?,
        provider: provider?,
        model: model?,
        api_key: api_key?,
        base_url: base_url?,
        deployment_name,
        api_version,
        template,
        template_source,
        system_prompt,
        system_prompt_source,
        lookup,
        lookup_source,
        required_input_fields,
        max_tokens,
        temperature: temperature?,
        response_field: response_field?,
        timeout_seconds: timeout_seconds?,
        queries,
        pool: pool?,
    })
}

/// True when a Jinja expression or statement mentions the variable `row`.
fn uses_row(template: &str) -> bool {
    let mut rest = template;
    while let Some(open) = rest.find(['{']) {
        let after = &rest[open + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            _ => {
                rest = after;
                continue;
            }
        };
        let body_start = &after[1..];
        let end = body_start.find(close).unwrap_or(body_start.len());
        let body = &body_start[..end];
        let mut words = body.split(|c: char| !(c.is_alphanumeric() || c == '_'));
        // `x.row` is an attribute, not the variable: check the character before.
        let mut offset = 0;
        for word in words.by_ref() {
            let preceded_by_dot = offset > 0 && body.as_bytes().get(offset - 1) == Some(&b'.');
            if word == "row" && !preceded_by_dot {
                return true;
            }
            offset += word.len() + 1;
        }
        rest = &body_start[end..];
    }
    false
}

/// Either the inline key or the `_file` key (read relative to the settings file), not both.
/// Returns the text and, when read from a file, the file as written.
fn text_or_file(
    f: &mut Fields<'_>,
    key: &'static str,
    file_key: &'static str,
    base_dir: Option<&Path>,
    d: &mut Diagnostics,
) -> Option<(String, Option<String>)> {
    let inline = f.opt_str(key, d);
    let file = f.opt_str(file_key, d);
    match (inline, file) {
        (Some(_), Some(file)) => {
            d.error(
                file.loc,
                format!("both `{key}` and `{file_key}` are given; expected only one of them"),
            );
            None
        }
        (Some(text), None) => Some((text.value, None)),
        (None, Some(file)) => {
            let text = read_beside(&file, base_dir, d)?;
            Some((text, Some(file.value)))
        }
        (None, None) => {
            if key == "template" {
                d.error(
                    f.owner(),
                    format!(
                        "{} are missing required key `template` (or `template_file`)",
                        f.what()
                    ),
                );
            }
            None
        }
    }
}

fn lookup(
    f: &mut Fields<'_>,
    base_dir: Option<&Path>,
    d: &mut Diagnostics,
) -> Option<(serde_json::Value, Option<String>)> {
    let inline = f.get("lookup");
    let file = f.opt_str("lookup_file", d);
    match (inline, file) {
        (Some(_), Some(file)) => {
            d.error(
                file.loc,
                "both `lookup` and `lookup_file` are given; expected only one of them",
            );
            None
        }
        (Some(node), None) => to_json(node, d).map(|v| (v, None)),
        (None, Some(file)) => {
            let text = read_beside(&file, base_dir, d)?;
            let name = resolved(&file, base_dir).display().to_string();
            let mut inner = Diagnostics::new(name);
            let value = match super::yaml::parse(&text, &mut inner) {
                // ELSPETH: an empty lookup file is an empty mapping.
                Some(node) if node.is_null() => Some(serde_json::Value::Object(Default::default())),
                Some(node) => to_json(&node, &mut inner),
                None => None,
            };
            let (errors, _) = inner.finish();
            let failed = !errors.is_empty();
            for e in errors {
                d.push(e);
            }
            if failed {
                return None;
            }
            value.map(|v| (v, Some(file.value)))
        }
        (None, None) => None,
    }
}

fn resolved(file: &Located<String>, base_dir: Option<&Path>) -> PathBuf {
    match base_dir {
        Some(base) => base.join(&file.value),
        None => PathBuf::from(&file.value),
    }
}

/// Reads a file named relative to the settings file; it must stay inside that directory.
fn read_beside(
    file: &Located<String>,
    base_dir: Option<&Path>,
    d: &mut Diagnostics,
) -> Option<String> {
    let base = base_dir.unwrap_or(Path::new("."));
    let path = base.join(&file.value);
    let inside = match (path.canonicalize(), base.canonicalize()) {
        (Ok(p), Ok(b)) => p.starts_with(b),
        _ => {
            d.error(
                file.loc,
                format!(
                    "cannot open `{}` (looked for {}); expected a file beside the settings file",
                    file.value,
                    path.display()
                ),
            );
            return None;
        }
    };
    if !inside {
        d.error(
            file.loc,
            format!(
                "`{}` is outside the settings file's directory; expected a path inside it",
                file.value
            ),
        );
        return None;
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) => {
            d.error(
                file.loc,
                format!(
                    "cannot read `{}`: {e}; expected a UTF-8 text file",
                    file.value
                ),
            );
            None
        }
    }
}

fn positive_int(f: &mut Fields<'_>, key: &'static str, d: &mut Diagnostics) -> Option<u64> {
    let v = f.opt_int(key, d)?;
    if v.value <= 0 {
        d.error(
            v.loc,
            format!("`{key}` is {}; expected more than 0", v.value),
        );
        return None;
    }
    Some(v.value as u64)
}

/// A whole number of milliseconds (or the pool size) at least `min`; `None` when invalid
/// (reported), with the location to blame in cross-key checks.
fn pool_int(
    f: &mut Fields<'_>,
    key: &'static str,
    default: u64,
    min: i64,
    d: &mut Diagnostics,
) -> Option<(u64, Loc)> {
    let Some(n) = f.get(key) else {
        return Some((default, f.owner()));
    };
    let v = int_of(n, &format!("`{key}`"), d)?;
    if v < min {
        d.error(n.loc, format!("`{key}` is {v}; expected {min} or more"));
        return None;
    }
    Some((v as u64, n.loc))
}

/// Issue 7's pool rules, each error naming its key.
fn pool(f: &mut Fields<'_>, d: &mut Diagnostics) -> Option<PoolOptions> {
    let before = d.error_count();
    let defaults = PoolOptions::default();
    let pool_size = pool_int(f, "pool_size", defaults.pool_size, 1, d);
    let min = pool_int(
        f,
        "min_dispatch_delay_ms",
        defaults.min_dispatch_delay_ms,
        0,
        d,
    );
    let max = pool_int(
        f,
        "max_dispatch_delay_ms",
        defaults.max_dispatch_delay_ms,
        0,
        d,
    );
    let recovery = pool_int(f, "recovery_step_ms", defaults.recovery_step_ms, 0, d);
    if let Some((0, loc)) = max {
        d.error(loc, "`max_dispatch_delay_ms` is 0; expected more than 0");
    }
    if let (Some((min_v, min_loc)), Some((max_v, max_loc))) = (min, max) {
        if max_v > 0 && min_v > max_v {
            let at = if f.has("min_dispatch_delay_ms") {
                min_loc
            } else {
                max_loc
            };
            d.error(
                at,
                format!(
                    "`min_dispatch_delay_ms` ({min_v}) is greater than `max_dispatch_delay_ms` \
                     ({max_v}); expected min <= max"
                ),
            );
        }
    }
    if let (Some((0, min_loc)), Some((0, recovery_loc))) = (min, recovery) {
        let at = if f.has("recovery_step_ms") {
            recovery_loc
        } else {
            min_loc
        };
        d.error(
            at,
            "`recovery_step_ms` is 0 while `min_dispatch_delay_ms` is 0, so the delay could \
             never come down after a capacity error; expected `recovery_step_ms` above 0 or \
             `min_dispatch_delay_ms` above 0",
        );
    }
    let backoff_multiplier = match f.get("backoff_multiplier") {
        None => Some(defaults.backoff_multiplier),
        Some(n) => float_of(n, "`backoff_multiplier`", d).filter(|&v| {
            if v <= 1.0 {
                d.error(
                    n.loc,
                    format!("`backoff_multiplier` is {v}; expected more than 1"),
                );
            }
            v > 1.0
        }),
    };
    let max_capacity_retry_seconds = positive_seconds(
        f,
        "max_capacity_retry_seconds",
        defaults.max_capacity_retry_seconds,
        d,
    );
    if d.error_count() > before {
        return None;
    }
    Some(PoolOptions {
        pool_size: pool_size?.0,
        min_dispatch_delay_ms: min?.0,
        max_dispatch_delay_ms: max?.0,
        backoff_multiplier: backoff_multiplier?,
        recovery_step_ms: recovery?.0,
        max_capacity_retry_seconds: max_capacity_retry_seconds?,
    })
}

fn queries(node: &Node, d: &mut Diagnostics) -> Option<Vec<LlmQuery>> {
    // A mapping name → spec, or a list of specs each with a `name`.
    let mut specs: Vec<(Located<String>, &Node, bool)> = Vec::new();
    match &node.kind {
        Kind::Map(_) => {
            for (name, spec) in super::decode::string_keyed(node, "`queries`", d)? {
                specs.push((name, spec, false));
            }
        }
        Kind::Seq(items) => {
            for item in items {
                let name = match &item.kind {
                    Kind::Map(pairs) => pairs
                        .iter()
                        .find(|(k, _)| k.as_str() == Some("name"))
                        .and_then(|(_, v)| super::decode::located_str(v, "query `name`", d)),
                    _ => None,
                };
                match name {
                    Some(name) => specs.push((name, item, true)),
                    None if matches!(item.kind, Kind::Map(_)) => {
                        d.error(item.loc, "a query in a list needs a `name`");
                    }
                    None => d.error(
                        item.loc,
                        format!("a query must be a mapping; found {}", item.describe()),
                    ),
                }
            }
        }
        _ => {
            d.error(
                node.loc,
                format!(
                    "`queries` must be a mapping of name → query or a list of queries; found {}",
                    node.describe()
                ),
            );
            return None;
        }
    }
    let before = d.error_count();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (name, spec, named_in_list) in specs {
        if !is_identifier(&name.value) {
            d.error(
                name.loc,
                format!(
                    "query name `{}` is not an identifier; expected letters, digits and `_` (it \
                     prefixes output fields)",
                    name.value
                ),
            );
        } else if !seen.insert(name.value.clone()) {
            d.error(
                name.loc,
                format!(
                    "query `{}` is defined twice; expected unique names",
                    name.value
                ),
            );
        }
        if let Some(q) = query(name, spec, named_in_list, d) {
            out.push(q);
        }
    }
    (d.error_count() == before).then_some(out)
}

fn query(
    name: Located<String>,
    node: &Node,
    named_in_list: bool,
    d: &mut Diagnostics,
) -> Option<LlmQuery> {
    let what = format!("query `{}`", name.value);
    let mut f = Fields::options(node, name.loc, what.clone(), d)?;
    let before = d.error_count();
    if named_in_list {
        f.allow("name");
    }
    let input_fields = f
        .required("input_fields", d)
        .and_then(|n| string_map(n, "`input_fields`", d))
        .unwrap_or_default();
    let template = f.opt_str("template", d);
    if let Some(t) = &template {
        if mentions_positional_input(&t.value) {
            d.error(
                t.loc,
                "query templates name their inputs (`{{ var }}` from input_fields); \
                 `{{ input_N }}` is not supported",
            );
        }
    }
    let max_tokens = positive_int(&mut f, "max_tokens", d);
    let response_format = match f.opt_choice("response_format", &["standard", "structured"], d) {
        Some(c) if c.value == "structured" => ResponseFormat::Structured,
        _ => ResponseFormat::Standard,
    };
    let output_fields = f
        .get("output_fields")
        .map(|n| output_fields(n, d))
        .unwrap_or_default();
    f.finish(d);
    if d.error_count() > before {
        return None;
    }
    Some(LlmQuery {
        name: name.value,
        input_fields: input_fields
            .into_iter()
            .map(|(k, v)| (k.value, v.value))
            .collect(),
        template: template.map(|t| t.value),
        max_tokens,
        response_format,
        output_fields,
    })
}

fn mentions_positional_input(template: &str) -> bool {
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        let after = rest[i + 2..].trim_start();
        if let Some(digits) = after.strip_prefix("input_") {
            if digits.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                return true;
            }
        }
        rest = &rest[i + 2..];
    }
    false
}

fn output_fields(node: &Node, d: &mut Diagnostics) -> Vec<OutputField> {
    let Kind::Seq(items) = &node.kind else {
        d.error(
            node.loc,
            format!(
                "`output_fields` must be a list of {{suffix, type}}; found {}",
                node.describe()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for item in items {
        let Some(mut f) = Fields::options(item, item.loc, "output field", d) else {
            continue;
        };
        let suffix = f.req_str("suffix", d);
        let ty = f.required("type", d).and_then(|n| {
            super::decode::choice_of(
                n,
                "output field `type`",
                &["string", "integer", "number", "boolean", "enum"],
                d,
            )
        });
        let values = f.entry("values");
        let ty = match (ty, values) {
            (Some("enum"), Some((_, v))) => {
                super::decode::str_list_of(v, "`values`", d).and_then(|l| {
                    if l.is_empty() {
                        d.error(v.loc, "`values` is empty; expected the allowed strings");
                        None
                    } else {
                        Some(OutputType::Enum(l.into_iter().map(|s| s.value).collect()))
                    }
                })
            }
            (Some("enum"), None) => {
                d.error(item.loc, "an enum output field needs `values`");
                None
            }
            (Some(_), Some((loc, _))) => {
                d.error(loc, "`values` applies only to `type: enum`");
                None
            }
            (Some("string"), None) => Some(OutputType::String),
            (Some("integer"), None) => Some(OutputType::Integer),
            (Some("number"), None) => Some(OutputType::Number),
            (Some(_), None) => Some(OutputType::Boolean),
            (None, _) => None,
        };
        f.finish(d);
        if let Some(s) = &suffix {
            if !is_identifier(&s.value) {
                d.error(
                    s.loc,
                    format!(
                        "suffix `{}` is not an identifier; expected letters, digits and `_`",
                        s.value
                    ),
                );
                continue;
            }
            if !seen.insert(s.value.clone()) {
                d.error(
                    s.loc,
                    format!(
                        "suffix `{}` appears twice; expected unique suffixes",
                        s.value
                    ),
                );
                continue;
            }
        }
        if let (Some(suffix), Some(ty)) = (suffix, ty) {
            out.push(OutputField {
                suffix: suffix.value,
                ty,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_detection() {
        assert!(uses_row("Hello {{ row.name }}"));
        assert!(uses_row("{% for k in row %}{{k}}{% endfor %}"));
        assert!(uses_row("{{row['x']}}"));
        assert!(!uses_row("Hello {{ lookup.row }}"));
        assert!(!uses_row("row {{ name }}"));
        assert!(!uses_row("{{ rows }}"));
    }

    #[test]
    fn positional_inputs() {
        assert!(mentions_positional_input("a {{ input_1 }}"));
        assert!(mentions_positional_input("{{input_2}}"));
        assert!(!mentions_positional_input("{{ input_text }}"));
    }
}
