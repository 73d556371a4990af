//! `transforms:` entries: wiring plus the plugin's typed options.

use std::path::Path;

use super::decode::{choice_of, Fields};
use super::error::{Diagnostics, Loc, Located};
use super::graph::StepW;
use super::llm::{llm, LlmOptions};
use super::names::{connection_name, node_name};
use super::plugins::{
    field_mapper, http, json_explode, keyword_filter, passthrough, truncate, FieldMapperOptions,
    HttpOptions, JsonExplodeOptions, KeywordFilterOptions, PassthroughOptions, TruncateOptions,
};
use super::yaml::Node;

#[derive(Debug, Clone, PartialEq)]
pub struct TransformConfig {
    pub name: Located<String>,
    /// The connection this transform consumes.
    pub input: Located<String>,
    /// A sink or a connection.
    pub on_success: Located<String>,
    /// `discard` or a sink: where rows the plugin rejects go, unchanged.
    pub on_error: Located<String>,
    pub options: TransformOptions,
    /// Where the entry starts (its first key).
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransformOptions {
    Passthrough(PassthroughOptions),
    FieldMapper(FieldMapperOptions),
    Truncate(TruncateOptions),
    KeywordFilter(KeywordFilterOptions),
    JsonExplode(JsonExplodeOptions),
    Llm(Box<LlmOptions>),
    Http(HttpOptions),
}

impl TransformOptions {
    /// The plugin name as written in the file.
    pub fn plugin(&self) -> &'static str {
        match self {
            TransformOptions::Passthrough(_) => "passthrough",
            TransformOptions::FieldMapper(_) => "field_mapper",
            TransformOptions::Truncate(_) => "truncate",
            TransformOptions::KeywordFilter(_) => "keyword_filter",
            TransformOptions::JsonExplode(_) => "json_explode",
            TransformOptions::Llm(_) => "llm",
            TransformOptions::Http(_) => "http",
        }
    }
}

pub(crate) const TRANSFORM_PLUGINS: [&str; 7] = [
    "passthrough",
    "field_mapper",
    "truncate",
    "keyword_filter",
    "json_explode",
    "llm",
    "http",
];

/// Reads the wiring keys shared by transforms and aggregations: `name`, `input`,
/// `on_success`, `on_error`.
pub(crate) fn wiring(
    f: &mut Fields<'_>,
    success_required: bool,
    incomplete: &mut bool,
    d: &mut Diagnostics,
) -> (Option<Located<String>>, StepW) {
    let raw_name = f.req_str("name", d);
    let valid_name = raw_name.as_ref().and_then(|n| node_name(n, d));
    let input = f.req_str("input", d);
    let input = input.map(|i| connection_name(&i, "input", d).unwrap_or(i));
    let on_success = if success_required {
        f.req_str("on_success", d)
    } else {
        f.opt_str("on_success", d)
    };
    let on_success = on_success.map(|s| connection_name(&s, "on_success", d).unwrap_or(s));
    let on_error = f.req_str("on_error", d);
    if raw_name.is_none()
        || input.is_none()
        || on_error.is_none()
        || (success_required && on_success.is_none())
    {
        *incomplete = true;
    }
    // The graph still gets a node for an entry without a valid name, so wiring errors
    // around it are reported; it is named by its position.
    let graph_name = raw_name
        .map(|n| Located::new(n.value.trim().to_string(), n.loc))
        .unwrap_or_else(|| Located::new(format!("#{}", f.owner().line), f.owner()));
    (
        valid_name,
        StepW {
            name: graph_name,
            input,
            on_success,
            on_error,
        },
    )
}

pub(crate) fn parse_transform(
    node: &Node,
    base_dir: Option<&Path>,
    incomplete: &mut bool,
    d: &mut Diagnostics,
) -> (Option<TransformConfig>, Option<StepW>) {
    let Some(mut f) = Fields::settings(node, node.loc, "transform", d) else {
        *incomplete = true;
        return (None, None);
    };
    let before = d.error_count();
    let (name, w) = wiring(&mut f, true, incomplete, d);
    let plugin = f
        .required("plugin", d)
        .and_then(|n| choice_of(n, "transform `plugin`", &TRANSFORM_PLUGINS, d));
    let options = match (f.entry("options"), plugin) {
        (_, None) => {
            f.allow("options");
            None
        }
        (None, Some(p)) => plugin_options(p, None, f.owner(), &w.name.value, base_dir, d),
        (Some((loc, n)), Some(p)) => plugin_options(p, Some(n), loc, &w.name.value, base_dir, d),
    };
    f.finish(d);
    if d.error_count() > before {
        return (None, Some(w));
    }
    let config = match (
        name,
        options,
        w.input.clone(),
        w.on_success.clone(),
        w.on_error.clone(),
    ) {
        (Some(name), Some(options), Some(input), Some(on_success), Some(on_error)) => {
            Some(TransformConfig {
                name,
                input,
                on_success,
                on_error,
                options,
                loc: node.loc,
            })
        }
        _ => None,
    };
    (config, Some(w))
}

/// An empty mapping stands in for absent options, so defaults and required keys are
/// handled in one place.
fn plugin_options(
    plugin: &str,
    node: Option<&Node>,
    loc: Loc,
    name: &str,
    base_dir: Option<&Path>,
    d: &mut Diagnostics,
) -> Option<TransformOptions> {
    let empty = Node {
        kind: super::yaml::Kind::Map(Vec::new()),
        loc,
        end: loc,
        style: super::yaml::Style::Other,
        expanded: false,
        reported: false,
    };
    let node = node.filter(|n| !n.is_null()).unwrap_or(&empty);
    let what = format!("{plugin} options of transform `{name}`");
    let mut f = Fields::options(node, loc, what, d)?;
    let options = match plugin {
        "passthrough" => passthrough(&mut f, d).map(TransformOptions::Passthrough),
        "field_mapper" => field_mapper(&mut f, d).map(TransformOptions::FieldMapper),
        "truncate" => truncate(&mut f, d).map(TransformOptions::Truncate),
        "keyword_filter" => keyword_filter(&mut f, d).map(TransformOptions::KeywordFilter),
        "json_explode" => json_explode(&mut f, d).map(TransformOptions::JsonExplode),
        "llm" => llm(&mut f, base_dir, d).map(|o| TransformOptions::Llm(Box::new(o))),
        _ => http(&mut f, d).map(TransformOptions::Http),
    };
    f.finish(d);
    options
}
