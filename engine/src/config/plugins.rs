//! Options of the transforms that need no external service (ELSPETH-CONFIG §4), and of
//! attest's `http` transform. Each plugin's options are checked strictly: an unknown key or
//! a value of the wrong type is an error at its location.

use std::collections::HashSet;

use super::decode::{float_of, int_of, string_keyed, string_map, Fields};
use super::error::{Diagnostics, Located};
use super::names::is_identifier;
use super::schema::{identifier_list, parse_schema, Schema};
use super::yaml::Kind;

#[derive(Debug, Clone, PartialEq)]
pub struct PassthroughOptions {
    pub schema: Schema,
    pub required_input_fields: Option<Vec<String>>,
    /// Default false.
    pub validate_input: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldMapperOptions {
    pub schema: Schema,
    pub required_input_fields: Option<Vec<String>>,
    /// source → target, in file order. A source containing `.` is a nested path.
    pub mapping: Vec<(String, String)>,
    /// Default false: start from a copy of the row; true: from an empty row.
    pub select_only: bool,
    /// Default false: a missing source is skipped; true: it is a row error.
    pub strict: bool,
    /// Default false.
    pub validate_input: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TruncateOptions {
    pub schema: Schema,
    pub required_input_fields: Option<Vec<String>>,
    /// field → maximum length in code points (≥ 1), in file order.
    pub fields: Vec<(String, u64)>,
    /// Default "": counts toward the maximum.
    pub suffix: String,
    /// Default false.
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KeywordFields {
    /// Every string field of the row, in row order.
    All,
    Named(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeywordFilterOptions {
    pub schema: Schema,
    pub required_input_fields: Option<Vec<String>>,
    pub fields: KeywordFields,
    /// Python `re` patterns, searched anywhere in the value; checked here for emptiness,
    /// length and nested quantifiers. Their syntax is checked by the plugin's regex engine.
    pub blocked_patterns: Vec<Located<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JsonExplodeOptions {
    pub schema: Schema,
    pub array_field: String,
    /// Default `item`.
    pub output_field: String,
    /// Default true: add `item_index`.
    pub include_index: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// attest's enrichment transform: one request per row.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOptions {
    pub schema: Schema,
    pub required_input_fields: Option<Vec<String>>,
    /// A template rendered per row (like `body_template`).
    pub url: String,
    /// Default GET.
    pub method: HttpMethod,
    /// Header name → value; values may use `${ENV}` for credentials (redacted in the ledger).
    pub headers: Vec<(String, String)>,
    /// Template for the request body; no body when absent.
    pub body_template: Option<String>,
    /// Output field → JSON Pointer into the response body, in file order. When empty the
    /// whole parsed body is stored under `response_field`.
    pub response_fields: Vec<(String, String)>,
    /// Default `http_response`.
    pub response_field: String,
    /// Default 30.
    pub timeout_seconds: f64,
}

/// `schema` (attest defaults it to observed; ELSPETH requires it) and
/// `required_input_fields` (absent = not declared, `[]` = explicit opt-out).
pub(crate) fn common(
    f: &mut Fields<'_>,
    d: &mut Diagnostics,
    with_required_inputs: bool,
) -> (Option<Schema>, Option<Vec<String>>) {
    let schema = match f.entry("schema") {
        Some((loc, n)) if !n.is_null() => parse_schema(n, loc, d),
        _ => Some(Schema::observed(f.owner())),
    };
    let required = if with_required_inputs {
        f.get("required_input_fields")
            .and_then(|n| identifier_list(n, "`required_input_fields`", d))
            .map(|l| l.into_iter().map(|s| s.value).collect())
    } else {
        None
    };
    (schema, required)
}

pub(crate) fn passthrough(f: &mut Fields<'_>, d: &mut Diagnostics) -> Option<PassthroughOptions> {
    let (schema, required_input_fields) = common(f, d, true);
    let validate_input = f.bool_or("validate_input", false, d);
    Some(PassthroughOptions {
        schema: schema?,
        required_input_fields,
        validate_input,
    })
}

pub(crate) fn field_mapper(f: &mut Fields<'_>, d: &mut Diagnostics) -> Option<FieldMapperOptions> {
    let before = d.error_count();
    let (schema, required_input_fields) = common(f, d, true);
    let mut mapping = Vec::new();
    if let Some(n) = f.get("mapping") {
        if let Some(pairs) = string_map(n, "`mapping`", d) {
            let mut targets = HashSet::new();
            for (from, to) in pairs {
                if !targets.insert(to.value.clone()) {
                    d.error(
                        to.loc,
                        format!(
                            "`mapping` has two entries with the target `{}`; expected each \
                             target once",
                            to.value
                        ),
                    );
                }
                mapping.push((from.value, to.value));
            }
        }
    }
    let select_only = f.bool_or("select_only", false, d);
    let strict = f.bool_or("strict", false, d);
    let validate_input = f.bool_or("validate_input", false, d);
    if d.error_count() > before {
        return None;
    }
    Some(FieldMapperOptions {
        schema: schema?,
        required_input_fields,
        mapping,
        select_only,
        strict,
        validate_input,
    })
}

pub(crate) fn truncate(f: &mut Fields<'_>, d: &mut Diagnostics) -> Option<TruncateOptions> {
    let before = d.error_count();
    let (schema, required_input_fields) = common(f, d, true);
    let suffix = f.opt_str("suffix", d);
    let suffix_len = suffix.as_ref().map_or(0, |s| s.value.chars().count());
    let mut fields = Vec::new();
    if let Some(n) = f.get("fields") {
        for (name, value) in string_keyed(n, "`fields`", d).unwrap_or_default() {
            let what = format!("the maximum length of `{}`", name.value);
            let Some(max) = int_of(value, &what, d) else {
                continue;
            };
            if max < 1 {
                d.error(value.loc, format!("{what} is {max}; expected 1 or more"));
                continue;
            }
            if (suffix_len as i64) >= max {
                d.error(
                    value.loc,
                    format!(
                        "{what} is {max} but the suffix is {suffix_len} characters; expected \
                         every maximum to be longer than the suffix"
                    ),
                );
                continue;
            }
            fields.push((name.value, max as u64));
        }
    }
    let strict = f.bool_or("strict", false, d);
    if d.error_count() > before {
        return None;
    }
    Some(TruncateOptions {
        schema: schema?,
        required_input_fields,
        fields,
        suffix: suffix.map(|s| s.value).unwrap_or_default(),
        strict,
    })
}

pub(crate) fn keyword_filter(
    f: &mut Fields<'_>,
    d: &mut Diagnostics,
) -> Option<KeywordFilterOptions> {
    let before = d.error_count();
    let (schema, required_input_fields) = common(f, d, true);
    let fields = f.required("fields", d).and_then(|n| match &n.kind {
        Kind::Str(s) if s == "all" => Some(KeywordFields::All),
        Kind::Str(s) => Some(KeywordFields::Named(vec![s.clone()])),
        Kind::Seq(_) => super::decode::str_list_of(n, "`fields`", d)
            .map(|l| KeywordFields::Named(l.into_iter().map(|s| s.value).collect())),
        _ => {
            d.error(
                n.loc,
                format!(
                    "`fields` must be a field name, a list of names or `all`; found {}",
                    n.describe()
                ),
            );
            None
        }
    });
    let patterns = f
        .required("blocked_patterns", d)
        .and_then(|n| super::decode::str_list_of(n, "`blocked_patterns`", d).map(|l| (n.loc, l)));
    if let Some((loc, list)) = &patterns {
        if list.is_empty() {
            d.error(
                *loc,
                "`blocked_patterns` is empty; expected at least one pattern",
            );
        }
        for p in list {
            if let Err(message) = check_pattern(&p.value) {
                d.error(p.loc, message);
            }
        }
    }
    if d.error_count() > before {
        return None;
    }
    Some(KeywordFilterOptions {
        schema: schema?,
        required_input_fields,
        fields: fields?,
        blocked_patterns: patterns?.1,
    })
}

/// ELSPETH's load-time pattern checks: not empty, at most 1000 characters, and no
/// quantified group that is quantified again (`(a+)+`), the classic catastrophic
/// backtracking shape.
fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("blocked pattern is empty; expected a regular expression".to_string());
    }
    let len = p.chars().count();
    if len > 1000 {
        return Err(format!(
            "blocked pattern is {len} characters long; expected at most 1000"
        ));
    }
    if has_nested_quantifier(p) {
        return Err(format!(
            "blocked pattern `{p}` quantifies a group that already contains a quantifier \
             (catastrophic backtracking); expected e.g. `(ab)+` or `a+` instead"
        ));
    }
    Ok(())
}

fn has_nested_quantifier(p: &str) -> bool {
    let chars: Vec<char> = p.chars().collect();
    // For each open group: does it contain a quantifier?
    let mut groups: Vec<bool> = Vec::new();
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            i += 2;
            continue;
        }
        if in_class {
            if c == ']' {
                in_class = false;
            }
            i += 1;
            continue;
        }
        match c {
            '[' => in_class = true,
            '(' => groups.push(false),
            '+' | '*' | '{' => {
                if let Some(top) = groups.last_mut() {
                    *top = true;
                }
            }
            ')' => {
                let quantified_inside = groups.pop().unwrap_or(false);
                let followed = matches!(chars.get(i + 1), Some('+' | '*' | '{'));
                if quantified_inside && followed {
                    return true;
                }
                // A quantified inner group makes the enclosing group quantified too.
                if quantified_inside || followed {
                    if let Some(top) = groups.last_mut() {
                        *top = true;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

pub(crate) fn json_explode(f: &mut Fields<'_>, d: &mut Diagnostics) -> Option<JsonExplodeOptions> {
    let before = d.error_count();
    let (schema, _) = common(f, d, false);
    let array_field = f.req_str("array_field", d);
    let output_field = f.opt_str("output_field", d);
    let include_index = f.bool_or("include_index", true, d);
    if let (Some(a), Some(o)) = (&array_field, &output_field) {
        if a.value == o.value {
            d.error(
                o.loc,
                format!(
                    "`output_field` is `{}`, the same as `array_field`; expected a different name",
                    o.value
                ),
            );
        }
    }
    if d.error_count() > before {
        return None;
    }
    Some(JsonExplodeOptions {
        schema: schema?,
        array_field: array_field?.value,
        output_field: output_field.map_or_else(|| "item".to_string(), |o| o.value),
        include_index,
    })
}

/// A positive, finite number of seconds.
pub(crate) fn positive_seconds(
    f: &mut Fields<'_>,
    key: &'static str,
    default: f64,
    d: &mut Diagnostics,
) -> Option<f64> {
    let Some(node) = f.get(key) else {
        return Some(default);
    };
    let value = float_of(node, &format!("`{key}`"), d)?;
    if value <= 0.0 {
        d.error(
            node.loc,
            format!("`{key}` is {value}; expected more than 0"),
        );
        return None;
    }
    Some(value)
}

pub(crate) fn response_field(
    f: &mut Fields<'_>,
    default: &str,
    d: &mut Diagnostics,
) -> Option<String> {
    match f.opt_str("response_field", d) {
        None => Some(default.to_string()),
        Some(s) if is_identifier(&s.value) => Some(s.value),
        Some(s) => {
            d.error(
                s.loc,
                format!(
                    "`response_field` `{}` is not an identifier; expected letters, digits and \
                     `_`, not starting with a digit",
                    s.value
                ),
            );
            None
        }
    }
}

pub(crate) fn http(f: &mut Fields<'_>, d: &mut Diagnostics) -> Option<HttpOptions> {
    let before = d.error_count();
    let (schema, required_input_fields) = common(f, d, true);
    let url = f.req_str("url", d);
    let method = f
        .opt_choice("method", &["GET", "POST", "PUT", "PATCH", "DELETE"], d)
        .map(|m| match m.value {
            "POST" => HttpMethod::Post,
            "PUT" => HttpMethod::Put,
            "PATCH" => HttpMethod::Patch,
            "DELETE" => HttpMethod::Delete,
            _ => HttpMethod::Get,
        })
        .unwrap_or(HttpMethod::Get);
    let headers = f
        .get("headers")
        .and_then(|n| string_map(n, "`headers`", d))
        .unwrap_or_default();
    let body_template = f.opt_str("body_template", d).map(|b| b.value);
    let mut response_fields = Vec::new();
    if let Some(n) = f.get("response_fields") {
        for (field, pointer) in string_map(n, "`response_fields`", d).unwrap_or_default() {
            if !is_identifier(&field.value) {
                d.error(
                    field.loc,
                    format!(
                        "response field `{}` is not an identifier; expected letters, digits and `_`",
                        field.value
                    ),
                );
            }
            if !(pointer.value.is_empty() || pointer.value.starts_with('/')) {
                d.error(
                    pointer.loc,
                    format!(
                        "`{}` is not a JSON Pointer; expected \"\" (the whole body) or a path such \
                         as \"/data/0/name\"",
                        pointer.value
                    ),
                );
            }
            response_fields.push((field.value, pointer.value));
        }
    }
    let response_field = response_field(f, "http_response", d);
    let timeout_seconds = positive_seconds(f, "timeout_seconds", 30.0, d);
    if d.error_count() > before {
        return None;
    }
    Some(HttpOptions {
        schema: schema?,
        required_input_fields,
        url: url?.value,
        method,
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.value, v.value))
            .collect(),
        body_template,
        response_fields,
        response_field: response_field?,
        timeout_seconds: timeout_seconds?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_quantifiers() {
        assert!(has_nested_quantifier("(a+)+"));
        assert!(has_nested_quantifier("(a*)*b"));
        assert!(has_nested_quantifier("(\\w+\\s?){2,}"));
        assert!(has_nested_quantifier("((a+)b)*"));
        assert!(!has_nested_quantifier("(ab)+"));
        assert!(!has_nested_quantifier("a+b*"));
        assert!(!has_nested_quantifier("(a+)?"));
        assert!(!has_nested_quantifier("[(a+)]+"));
        assert!(!has_nested_quantifier("\\(a+\\)+"));
    }
}
