//! `aggregations:` (ELSPETH-CONFIG §7): batch rows and process each batch once.

use std::path::Path;

use super::condition::Condition;
use super::decode::{choice_of, Fields};
use super::error::{Diagnostics, Loc, Located};
use super::graph::StepW;
use super::llm::{llm, LlmOptions};
use super::plugins::{common, positive_seconds};
use super::schema::Schema;
use super::transform::wiring;
use super::yaml::{Kind, Node, Style};

#[derive(Debug, Clone, PartialEq)]
pub struct AggregationConfig {
    pub name: Located<String>,
    pub input: Located<String>,
    /// A sink or a connection; when not given, the aggregation's own name (a connection).
    pub on_success: Located<String>,
    /// `discard` or a sink. Required, but a failed batch's rows end FAILED, not here.
    pub on_error: Located<String>,
    pub trigger: Trigger,
    /// Default `transform`.
    pub output_mode: OutputMode,
    pub expected_output_count: Option<u64>,
    pub options: AggregationOptions,
    pub loc: Loc,
}

/// When a batch is flushed: any of these (OR), and always at the end of the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// Flush when the buffer reaches this many rows (> 0).
    pub count: Option<u64>,
    /// Flush when the oldest buffered row is this old (> 0).
    pub timeout_seconds: Option<f64>,
    /// Over `row['batch_count']` and `row['batch_age_seconds']`.
    pub condition: Option<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// The plugin's output rows continue; members end consumed.
    Transform,
    /// One output per member; the members continue.
    Passthrough,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AggregationOptions {
    BatchStats(BatchStatsOptions),
    BatchReplicate(BatchReplicateOptions),
    LlmBatch(Box<LlmOptions>),
}

impl AggregationOptions {
    pub fn plugin(&self) -> &'static str {
        match self {
            AggregationOptions::BatchStats(_) => "batch_stats",
            AggregationOptions::BatchReplicate(_) => "batch_replicate",
            AggregationOptions::LlmBatch(_) => "llm_batch",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatsOptions {
    pub schema: Schema,
    pub required_input_fields: Option<Vec<String>>,
    pub value_field: String,
    pub group_by: Option<String>,
    /// Default true.
    pub compute_mean: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchReplicateOptions {
    pub schema: Schema,
    pub required_input_fields: Option<Vec<String>>,
    /// Default `copies`.
    pub copies_field: String,
    /// Default 1; 1..=10000 and ≤ max_copies.
    pub default_copies: u64,
    /// Default 10000; 1..=10000.
    pub max_copies: u64,
    /// Default true.
    pub include_copy_index: bool,
}

const PLUGINS: [&str; 3] = ["batch_stats", "batch_replicate", "llm_batch"];

pub(crate) fn parse_aggregation(
    node: &Node,
    text: &str,
    base_dir: Option<&Path>,
    incomplete: &mut bool,
    d: &mut Diagnostics,
) -> (Option<AggregationConfig>, Option<StepW>) {
    let Some(mut f) = Fields::settings(node, node.loc, "aggregation", d) else {
        *incomplete = true;
        return (None, None);
    };
    let before = d.error_count();
    let (name, w) = wiring(&mut f, false, incomplete, d);
    let plugin = f
        .required("plugin", d)
        .and_then(|n| choice_of(n, "aggregation `plugin`", &PLUGINS, d));
    let trigger = match f.entry("trigger") {
        Some((loc, n)) => trigger(n, loc, text, d),
        None => {
            d.error(
                f.owner(),
                "aggregation is missing required key `trigger` (count, timeout_seconds and/or \
                 condition)",
            );
            None
        }
    };
    let output_mode = match f.opt_choice("output_mode", &["transform", "passthrough"], d) {
        Some(m) if m.value == "passthrough" => OutputMode::Passthrough,
        _ => OutputMode::Transform,
    };
    let expected_output_count = f.opt_int("expected_output_count", d).and_then(|v| {
        if v.value < 0 {
            d.error(
                v.loc,
                format!("`expected_output_count` is {}; expected 0 or more", v.value),
            );
            None
        } else {
            Some(v.value as u64)
        }
    });
    let options = match plugin {
        None => {
            f.allow("options");
            None
        }
        Some(p) => {
            let (loc, opts) = match f.entry("options") {
                Some((loc, n)) => (loc, Some(n)),
                None => (f.owner(), None),
            };
            plugin_options(p, opts, loc, &w.name.value, base_dir, d)
        }
    };
    f.finish(d);
    if d.error_count() > before {
        return (None, Some(w));
    }
    let on_success = w.on_success.clone().or_else(|| name.clone());
    let config = match (
        name,
        w.input.clone(),
        on_success,
        w.on_error.clone(),
        trigger,
        options,
    ) {
        (
            Some(name),
            Some(input),
            Some(on_success),
            Some(on_error),
            Some(trigger),
            Some(options),
        ) => Some(AggregationConfig {
            name,
            input,
            on_success,
            on_error,
            trigger,
            output_mode,
            expected_output_count,
            options,
            loc: node.loc,
        }),
        _ => None,
    };
    (config, Some(w))
}

fn trigger(node: &Node, key_loc: Loc, text: &str, d: &mut Diagnostics) -> Option<Trigger> {
    let mut f = Fields::settings(node, key_loc, "`trigger`", d)?;
    let before = d.error_count();
    let count = f.opt_int("count", d).and_then(|c| {
        if c.value > 0 {
            Some(c.value as u64)
        } else {
            d.error(
                c.loc,
                format!("trigger `count` is {}; expected more than 0", c.value),
            );
            None
        }
    });
    let timeout_seconds = if f.get("timeout_seconds").is_some() {
        positive_seconds(&mut f, "timeout_seconds", 0.0, d)
    } else {
        f.allow("timeout_seconds");
        None
    };
    let condition = f.get("condition").and_then(|n| match &n.kind {
        Kind::Str(s) => Some(Condition::from_node(s.clone(), n, text)),
        _ => {
            d.error(
                n.loc,
                format!(
                    "trigger `condition` must be an expression written as a string, e.g. \
                     \"row['batch_count'] >= 10\"; found {}",
                    n.describe()
                ),
            );
            None
        }
    });
    f.finish(d);
    if d.error_count() > before {
        return None;
    }
    if count.is_none() && timeout_seconds.is_none() && condition.is_none() {
        d.error(
            key_loc,
            "`trigger` sets nothing; expected at least one of count, timeout_seconds, condition",
        );
        return None;
    }
    Some(Trigger {
        count,
        timeout_seconds,
        condition,
    })
}

fn plugin_options(
    plugin: &str,
    node: Option<&Node>,
    loc: Loc,
    name: &str,
    base_dir: Option<&Path>,
    d: &mut Diagnostics,
) -> Option<AggregationOptions> {
    let empty = Node {
        kind: Kind::Map(Vec::new()),
        loc,
        end: loc,
        style: Style::Other,
        expanded: false,
        reported: false,
    };
    let node = node.filter(|n| !n.is_null()).unwrap_or(&empty);
    let what = format!("{plugin} options of aggregation `{name}`");
    let mut f = Fields::options(node, loc, what, d)?;
    let options = match plugin {
        "batch_stats" => batch_stats(&mut f, d).map(AggregationOptions::BatchStats),
        "batch_replicate" => batch_replicate(&mut f, d).map(AggregationOptions::BatchReplicate),
        _ => llm(&mut f, base_dir, d).map(|o| AggregationOptions::LlmBatch(Box::new(o))),
    };
    f.finish(d);
    options
}

fn batch_stats(f: &mut Fields<'_>, d: &mut Diagnostics) -> Option<BatchStatsOptions> {
    let (schema, required_input_fields) = common(f, d, true);
    let value_field = f.req_str("value_field", d);
    let group_by = f.opt_str("group_by", d).map(|g| g.value);
    let compute_mean = f.bool_or("compute_mean", true, d);
    Some(BatchStatsOptions {
        schema: schema?,
        required_input_fields,
        value_field: value_field?.value,
        group_by,
        compute_mean,
    })
}

fn copies(
    f: &mut Fields<'_>,
    key: &'static str,
    default: u64,
    d: &mut Diagnostics,
) -> Option<(u64, Loc)> {
    let Some(v) = f.opt_int(key, d) else {
        return f.get(key).is_none().then_some((default, f.owner()));
    };
    if (1..=10_000).contains(&v.value) {
        Some((v.value as u64, v.loc))
    } else {
        d.error(
            v.loc,
            format!("`{key}` is {}; expected 1 to 10000", v.value),
        );
        None
    }
}

fn batch_replicate(f: &mut Fields<'_>, d: &mut Diagnostics) -> Option<BatchReplicateOptions> {
    let (schema, required_input_fields) = common(f, d, true);
    let copies_field = f.str_or("copies_field", "copies", d);
    let default_copies = copies(f, "default_copies", 1, d);
    let max_copies = copies(f, "max_copies", 10_000, d);
    let include_copy_index = f.bool_or("include_copy_index", true, d);
    let (default_copies, default_loc) = default_copies?;
    let (max_copies, max_loc) = max_copies?;
    if default_copies > max_copies {
        let at = if f.has("default_copies") {
            default_loc
        } else {
            max_loc
        };
        d.error(
            at,
            format!(
                "`default_copies` ({default_copies}) is greater than `max_copies` ({max_copies}); \
                 expected default <= max"
            ),
        );
        return None;
    }
    Some(BatchReplicateOptions {
        schema: schema?,
        required_input_fields,
        copies_field,
        default_copies,
        max_copies,
        include_copy_index,
    })
}
