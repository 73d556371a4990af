//! `sinks:` (ELSPETH-CONFIG §8): named outputs.

use std::collections::HashSet;

use super::decode::{string_map, Fields};
use super::error::{Diagnostics, Loc, Located};
use super::graph::SinkW;
use super::schema::{parse_schema, Schema};
use super::source::{delimiter, json_format, JsonFormat};
use super::yaml::{Kind, Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkPlugin {
    Csv,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// The key under `sinks:` (an all-upper-case name is lower-cased, as in ELSPETH).
    pub name: Located<String>,
    pub plugin: SinkPlugin,
    /// `discard`, or another sink that receives rows this one cannot write. `None` (not
    /// given; ELSPETH requires it) means a write failure fails the run.
    pub on_write_failure: Option<Located<String>>,
    pub options: SinkOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Headers {
    /// Field names as they are in the row (default).
    Normalized,
    /// The source's original header text where known.
    Original,
    /// field → header for the listed fields; others keep their name.
    Custom(Vec<(String, String)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Write,
    Append,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkOptions {
    pub path: Located<String>,
    /// Optional in attest (default `{mode: observed}`); ELSPETH requires it.
    pub schema: Schema,
    pub headers: Headers,
    /// Default `utf-8`.
    pub encoding: String,
    /// Default false.
    pub validate_input: bool,
    /// Default `write`.
    pub mode: WriteMode,
    pub format: SinkFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkFormat {
    Csv {
        /// Default `,`.
        delimiter: char,
    },
    Json {
        /// Default: `jsonl` iff the path ends in `.jsonl`.
        format: JsonFormat,
        /// `None`: compact. Some(n): n spaces per level (n ≤ 0: newlines only).
        indent: Option<i64>,
    },
}

pub(crate) fn parse_sink(
    name: Located<String>,
    node: &Node,
    d: &mut Diagnostics,
) -> (Option<SinkConfig>, SinkW) {
    let mut wiring = SinkW {
        name: name.clone(),
        on_write_failure: None,
    };
    let what = format!("sink `{}`", name.value);
    let Some(mut f) = Fields::settings(node, name.loc, what.clone(), d) else {
        return (None, wiring);
    };
    let plugin = f
        .required("plugin", d)
        .and_then(|n| super::decode::choice_of(n, "sink `plugin`", &["csv", "json"], d))
        .map(|p| {
            if p == "csv" {
                SinkPlugin::Csv
            } else {
                SinkPlugin::Json
            }
        });
    let on_write_failure = f.opt_str("on_write_failure", d);
    wiring.on_write_failure = on_write_failure.clone();
    let options = match f.entry("options") {
        Some((loc, n)) => plugin.and_then(|p| parse_options(p, n, loc, &what, d)),
        None => {
            d.error(
                name.loc,
                format!("{what} is missing required key `options` (with at least `path`)"),
            );
            None
        }
    };
    f.finish(d);
    let config = match (plugin, options) {
        (Some(plugin), Some(options)) => Some(SinkConfig {
            name,
            plugin,
            on_write_failure,
            options,
        }),
        _ => None,
    };
    (config, wiring)
}

fn parse_options(
    plugin: SinkPlugin,
    node: &Node,
    key_loc: Loc,
    owner: &str,
    d: &mut Diagnostics,
) -> Option<SinkOptions> {
    let what = format!("options of {owner}");
    let mut f = Fields::options(node, key_loc, what, d)?;
    let before = d.error_count();
    let path = f.req_str("path", d);
    let schema = match f.entry("schema") {
        Some((loc, n)) if !n.is_null() => parse_schema(n, loc, d),
        _ => Some(Schema::observed(key_loc)),
    };
    let headers = match f.get("headers") {
        None => Some(Headers::Normalized),
        Some(n) => headers(n, d),
    };
    let encoding = f.str_or("encoding", "utf-8", d);
    let validate_input = f.bool_or("validate_input", false, d);
    let mode = match f.opt_choice("mode", &["write", "append"], d) {
        Some(m) if m.value == "append" => Some(Located::new(WriteMode::Append, m.loc)),
        Some(m) => Some(Located::new(WriteMode::Write, m.loc)),
        None if f.get("mode").is_some() => None,
        None => Some(Located::new(WriteMode::Write, key_loc)),
    };
    let format = match plugin {
        SinkPlugin::Csv => delimiter(&mut f, d).map(|delimiter| SinkFormat::Csv { delimiter }),
        SinkPlugin::Json => {
            let format = json_format(&mut f, path.as_ref(), d);
            let indent = f.opt_int("indent", d).map(|i| i.value);
            if let (Some(JsonFormat::Json), Some(m)) = (format, &mode) {
                if m.value == WriteMode::Append {
                    d.error(
                        m.loc,
                        "`mode: append` needs JSON Lines; expected format jsonl (or a .jsonl path) \
                         or mode write",
                    );
                }
            }
            format.map(|format| SinkFormat::Json { format, indent })
        }
    };
    f.finish(d);
    if d.error_count() > before {
        return None;
    }
    Some(SinkOptions {
        path: path?,
        schema: schema?,
        headers: headers?,
        encoding,
        validate_input,
        mode: mode?.value,
        format: format?,
    })
}

fn headers(node: &Node, d: &mut Diagnostics) -> Option<Headers> {
    match &node.kind {
        Kind::Str(s) if s == "normalized" => Some(Headers::Normalized),
        Kind::Str(s) if s == "original" => Some(Headers::Original),
        Kind::Map(_) => {
            let pairs = string_map(node, "`headers`", d)?;
            let mut targets = HashSet::new();
            let mut ok = true;
            for (_, header) in &pairs {
                if !targets.insert(header.value.as_str()) {
                    d.error(
                        header.loc,
                        format!(
                            "header `{}` is given to two fields; expected distinct headers",
                            header.value
                        ),
                    );
                    ok = false;
                }
            }
            ok.then(|| {
                Headers::Custom(pairs.into_iter().map(|(k, v)| (k.value, v.value)).collect())
            })
        }
        _ => {
            d.error(
                node.loc,
                format!(
                    "`headers` must be `normalized`, `original` or a mapping field → header; found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}
