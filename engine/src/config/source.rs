//! `source:` (ELSPETH-CONFIG §3): where rows come from and how they are validated.

use std::collections::HashSet;

use super::decode::{string_map, Fields};
use super::error::{Diagnostics, Loc, Located};
use super::graph::SourceW;
use super::names::{is_identifier, PYTHON_KEYWORDS};
use super::schema::{identifier_list, parse_schema, Schema};
use super::yaml::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePlugin {
    Csv,
    Json,
}

/// JSON array or JSON Lines, shared by sources and sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonFormat {
    Json,
    Jsonl,
}

impl JsonFormat {
    /// ELSPETH's default: JSON Lines exactly when the path ends in `.jsonl`.
    pub(crate) fn from_path(path: &str) -> JsonFormat {
        if path.ends_with(".jsonl") {
            JsonFormat::Jsonl
        } else {
            JsonFormat::Json
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub plugin: SourcePlugin,
    /// A connection (or, with no processing nodes, a sink).
    pub on_success: Located<String>,
    pub options: SourceOptions,
    /// Where `source:` is written.
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceOptions {
    /// Relative paths resolve against the working directory, as in ELSPETH.
    pub path: Located<String>,
    pub schema: Schema,
    /// `discard` or a sink name.
    pub on_validation_failure: Located<String>,
    /// Default `utf-8`.
    pub encoding: String,
    pub format: SourceFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceFormat {
    Csv(CsvSourceOptions),
    Json(JsonSourceOptions),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CsvSourceOptions {
    /// Default `,`.
    pub delimiter: char,
    /// Parsed records skipped before the header; default 0.
    pub skip_rows: u64,
    /// Column names for a headerless file; `None` means the first record is the header.
    pub columns: Option<Vec<String>>,
    /// Effective column name → new name, applied after header normalization.
    pub field_mapping: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JsonSourceOptions {
    /// Default: `jsonl` iff the path ends in `.jsonl`.
    pub format: JsonFormat,
    /// Read the array under this key of the root object (JSON array format only).
    pub data_key: Option<String>,
}

pub(crate) fn parse_source(
    node: &Node,
    key_loc: Loc,
    d: &mut Diagnostics,
) -> (Option<SourceConfig>, SourceW) {
    let mut wiring = SourceW {
        loc: key_loc,
        on_success: None,
        on_validation_failure: None,
    };
    let Some(mut f) = Fields::settings(node, key_loc, "`source`", d) else {
        return (None, wiring);
    };
    let plugin = f
        .required("plugin", d)
        .and_then(|n| super::decode::choice_of(n, "source `plugin`", &["csv", "json"], d))
        .map(|p| {
            if p == "csv" {
                SourcePlugin::Csv
            } else {
                SourcePlugin::Json
            }
        });
    let on_success = f
        .req_str("on_success", d)
        .and_then(|s| super::names::connection_name(&s, "the source's on_success", d));
    wiring.on_success = on_success.clone();
    let options = match f.entry("options") {
        Some((opt_loc, opt_node)) => {
            plugin.and_then(|p| parse_options(p, opt_node, opt_loc, d, &mut wiring))
        }
        None => {
            d.error(key_loc, "`source` is missing required key `options` (with path, schema and on_validation_failure)");
            None
        }
    };
    f.finish(d);
    let config = match (plugin, on_success, options) {
        (Some(plugin), Some(on_success), Some(options)) => Some(SourceConfig {
            plugin,
            on_success,
            options,
            loc: key_loc,
        }),
        _ => None,
    };
    (config, wiring)
}

fn parse_options(
    plugin: SourcePlugin,
    node: &Node,
    key_loc: Loc,
    d: &mut Diagnostics,
    wiring: &mut SourceW,
) -> Option<SourceOptions> {
    let what = match plugin {
        SourcePlugin::Csv => "csv source options",
        SourcePlugin::Json => "json source options",
    };
    let mut f = Fields::options(node, key_loc, what, d)?;
    let before = d.error_count();
    let path = f.req_str("path", d);
    let schema = match f.entry("schema") {
        Some((loc, n)) if !n.is_null() => parse_schema(n, loc, d),
        _ => {
            d.error(
                key_loc,
                format!("{what} are missing required key `schema` (e.g. {{mode: observed}})"),
            );
            None
        }
    };
    let on_validation_failure = f.req_str("on_validation_failure", d);
    wiring.on_validation_failure = on_validation_failure.clone();
    let encoding = f.str_or("encoding", "utf-8", d);
    let format = match plugin {
        SourcePlugin::Csv => csv_options(&mut f, d).map(SourceFormat::Csv),
        SourcePlugin::Json => json_options(&mut f, path.as_ref(), d).map(SourceFormat::Json),
    };
    f.finish(d);
    if d.error_count() > before {
        return None;
    }
    Some(SourceOptions {
        path: path?,
        schema: schema?,
        on_validation_failure: on_validation_failure?,
        encoding,
        format: format?,
    })
}

/// One character, as the `delimiter` of CSV sources and sinks must be.
pub(crate) fn delimiter(f: &mut Fields<'_>, d: &mut Diagnostics) -> Option<char> {
    let Some(text) = f.opt_str("delimiter", d) else {
        return Some(',');
    };
    let mut chars = text.value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => {
            d.error(
                text.loc,
                format!(
                    "`delimiter` is \"{}\"; expected exactly one character",
                    text.value
                ),
            );
            None
        }
    }
}

fn csv_options(f: &mut Fields<'_>, d: &mut Diagnostics) -> Option<CsvSourceOptions> {
    let before = d.error_count();
    let delimiter = delimiter(f, d);
    let skip_rows = match f.opt_int("skip_rows", d) {
        None => 0,
        Some(v) if v.value >= 0 => v.value as u64,
        Some(v) => {
            d.error(
                v.loc,
                format!("`skip_rows` is {}; expected 0 or more", v.value),
            );
            0
        }
    };
    let columns = f
        .get("columns")
        .and_then(|n| identifier_list(n, "`columns`", d));
    if let Some(cols) = &columns {
        for c in cols {
            if PYTHON_KEYWORDS.contains(&c.value.as_str()) {
                d.error(
                    c.loc,
                    format!(
                        "column `{}` is a Python keyword; expected a name ELSPETH's rows can use \
                         (e.g. `{}_`)",
                        c.value, c.value
                    ),
                );
            }
        }
    }
    let mut field_mapping = Vec::new();
    if let Some(n) = f.get("field_mapping") {
        if let Some(pairs) = string_map(n, "`field_mapping`", d) {
            let mut targets = HashSet::new();
            for (from, to) in pairs {
                if let Some(cols) = &columns {
                    if !cols.iter().any(|c| c.value == from.value) {
                        d.error(
                            from.loc,
                            format!(
                                "`field_mapping` renames `{}`, which is not in `columns`; \
                                 expected one of: {}",
                                from.value,
                                cols.iter()
                                    .map(|c| c.value.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                    }
                }
                if !is_identifier(&to.value) {
                    d.error(
                        to.loc,
                        format!(
                            "`field_mapping` target `{}` is not an identifier; expected letters, \
                             digits and `_`, not starting with a digit",
                            to.value
                        ),
                    );
                } else if !targets.insert(to.value.clone()) {
                    d.error(
                        to.loc,
                        format!(
                            "`field_mapping` maps two columns to `{}`; expected distinct targets",
                            to.value
                        ),
                    );
                }
                field_mapping.push((from.value, to.value));
            }
        }
    }
    if d.error_count() > before {
        return None;
    }
    Some(CsvSourceOptions {
        delimiter: delimiter?,
        skip_rows,
        columns: columns.map(|c| c.into_iter().map(|l| l.value).collect()),
        field_mapping,
    })
}

pub(crate) fn json_format(
    f: &mut Fields<'_>,
    path: Option<&Located<String>>,
    d: &mut Diagnostics,
) -> Option<JsonFormat> {
    match f.opt_choice("format", &["json", "jsonl"], d) {
        Some(c) if c.value == "jsonl" => Some(JsonFormat::Jsonl),
        Some(_) => Some(JsonFormat::Json),
        None if f.get("format").is_some() => None,
        None => Some(path.map_or(JsonFormat::Json, |p| JsonFormat::from_path(&p.value))),
    }
}

fn json_options(
    f: &mut Fields<'_>,
    path: Option<&Located<String>>,
    d: &mut Diagnostics,
) -> Option<JsonSourceOptions> {
    let format = json_format(f, path, d)?;
    let data_key = f.opt_str("data_key", d);
    if let Some(key) = &data_key {
        if format == JsonFormat::Jsonl {
            d.error(
                key.loc,
                "`data_key` applies to JSON array files; expected no data_key with format jsonl",
            );
            return None;
        }
    }
    Some(JsonSourceOptions {
        format,
        data_key: data_key.map(|k| k.value),
    })
}
