//! The settings file as a whole (ELSPETH-CONFIG §1.2): its top-level sections, the
//! run-wide settings (`retry`, `concurrency`, `ledger`), ELSPETH-only sections, and the
//! checks that span sections (unique names, the graph).

use std::collections::HashMap;
use std::path::Path;

use super::aggregation::{parse_aggregation, AggregationConfig};
use super::coalesce::{parse_coalesce, CoalesceConfig};
use super::condition::Condition;
use super::decode::{choice_of, Fields};
use super::error::{ConfigError, ConfigErrors, ConfigWarning, Diagnostics, Loc, Located};
use super::gate::{parse_gate, GateConfig};
use super::graph::{build, Graph, SourceW, Wiring};
use super::names::{sink_name, DISCARD};
use super::plugins::positive_seconds;
use super::sink::{parse_sink, SinkConfig};
use super::source::{parse_source, SourceConfig};
use super::transform::{parse_transform, TransformConfig};
use super::yaml::{Kind, Node};

/// A validated pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// The settings file, as named when loading (used in messages).
    pub file: String,
    pub source: SourceConfig,
    pub transforms: Vec<TransformConfig>,
    pub gates: Vec<GateConfig>,
    pub aggregations: Vec<AggregationConfig>,
    pub coalesce: Vec<CoalesceConfig>,
    /// In file order (ELSPETH's sink write order).
    pub sinks: Vec<SinkConfig>,
    pub retry: RetryConfig,
    pub concurrency: ConcurrencyConfig,
    pub ledger: LedgerConfig,
    /// The wiring, resolved and checked.
    pub graph: Graph,
    /// Each node's configuration hashed in canonical form, as the ledger records it.
    pub node_hashes: super::NodeHashes,
    /// Settings accepted but without effect in attest.
    pub warnings: Vec<ConfigWarning>,
}

/// Retries of row transforms after retryable failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Total tries, default 3 (> 0).
    pub max_attempts: u64,
    /// Default 1.0 (> 0).
    pub initial_delay_seconds: f64,
    /// Default 60.0 (> 0).
    pub max_delay_seconds: f64,
    /// Default 2.0 (> 1).
    pub exponential_base: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            initial_delay_seconds: 1.0,
            max_delay_seconds: 60.0,
            exponential_base: 2.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConcurrencyConfig {
    /// Worker threads; `None` means the number of cores.
    pub max_workers: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerConfig {
    /// Ledger directory; `None` leaves it to the command line (`--ledger`) or its default.
    pub path: Option<String>,
}

/// Where a condition lives, for messages and for the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionOwner<'a> {
    Gate(&'a str),
    AggregationTrigger(&'a str),
}

impl PipelineConfig {
    pub fn sink(&self, name: &str) -> Option<&SinkConfig> {
        self.sinks.iter().find(|s| s.name.value == name)
    }

    /// Every condition in the file: gate conditions, then aggregation trigger conditions.
    pub fn conditions(&self) -> Vec<(ConditionOwner<'_>, &Condition)> {
        let gates = self
            .gates
            .iter()
            .map(|g| (ConditionOwner::Gate(&g.name.value), &g.condition));
        let triggers = self.aggregations.iter().filter_map(|a| {
            a.trigger
                .condition
                .as_ref()
                .map(|c| (ConditionOwner::AggregationTrigger(&a.name.value), c))
        });
        gates.chain(triggers).collect()
    }

    /// The hook for the expression compiler: `check` receives each condition's text and
    /// returns the byte offset and message of the first problem it finds. Every failing
    /// condition is reported, at the file position of that offset where it can be mapped
    /// exactly (see `Condition::location_of`).
    pub fn validate_conditions<F>(&self, check: F) -> Result<(), ConfigErrors>
    where
        F: Fn(&str) -> Result<(), (usize, String)>,
    {
        let mut errors = Vec::new();
        for (owner, condition) in self.conditions() {
            if let Err((offset, message)) = check(&condition.source) {
                let at = condition.location_of(offset);
                let whose = match owner {
                    ConditionOwner::Gate(name) => format!("condition of gate `{name}`"),
                    ConditionOwner::AggregationTrigger(name) => {
                        format!("trigger condition of aggregation `{name}`")
                    }
                };
                errors.push(ConfigError {
                    file: self.file.clone(),
                    line: at.line,
                    column: at.column,
                    message: format!("invalid {whose}: {message}"),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// ELSPETH sections with no counterpart in attest: accepted (so pipelines move across
/// unchanged) and reported as warnings.
const ELSPETH_ONLY: [(&str, &str); 9] = [
    (
        "checkpoint",
        "attest records every row durably in its ledger and resumes with `attest resume`",
    ),
    (
        "payload_store",
        "attest keeps payloads in the ledger's content-addressed store",
    ),
    ("telemetry", "attest has no telemetry exporters"),
    (
        "rate_limit",
        "attest throttles external calls per plugin (pool options) instead",
    ),
    ("depends_on", "attest runs one pipeline per invocation"),
    (
        "commencement_gates",
        "attest runs one pipeline per invocation",
    ),
    ("collection_probes", "attest has no collection probes"),
    (
        "secrets",
        "attest reads secrets from the environment through ${VAR}",
    ),
    (
        "replay_from",
        "attest replays recorded runs with `attest replay`",
    ),
];

const MAX_SINKS: usize = 50;

pub(crate) fn parse_pipeline(
    root: &Node,
    text: &str,
    base_dir: Option<&Path>,
    d: &mut Diagnostics,
) -> Option<PipelineConfig> {
    if root.is_null() {
        d.error(
            root.loc,
            "the settings file is empty; expected a mapping with at least `source` and `sinks`",
        );
        return None;
    }
    let mut f = Fields::settings(root, root.loc, "the settings file", d)?;
    let mut incomplete = false;

    let source = match f.entry("source") {
        Some((loc, n)) => parse_source(n, loc, d),
        None => {
            d.error(
                root.loc,
                "the settings file is missing required section `source`",
            );
            incomplete = true;
            (
                None,
                SourceW {
                    loc: root.loc,
                    on_success: None,
                    on_validation_failure: None,
                },
            )
        }
    };
    let (source, source_w) = source;
    if source_w.on_success.is_none() {
        incomplete = true;
    }

    let mut transforms = Vec::new();
    let mut transforms_w = Vec::new();
    for item in list(&mut f, "transforms", 500, d) {
        let (config, w) = parse_transform(item, base_dir, &mut incomplete, d);
        transforms.extend(config);
        transforms_w.extend(w);
    }
    let mut gates = Vec::new();
    let mut gates_w = Vec::new();
    for item in list(&mut f, "gates", 100, d) {
        let (config, w) = parse_gate(item, text, &mut incomplete, d);
        gates.extend(config);
        gates_w.extend(w);
    }
    let mut aggregations = Vec::new();
    let mut aggregations_w = Vec::new();
    for item in list(&mut f, "aggregations", 100, d) {
        let (config, w) = parse_aggregation(item, text, base_dir, &mut incomplete, d);
        aggregations.extend(config);
        aggregations_w.extend(w);
    }
    let mut coalesce = Vec::new();
    let mut coalesce_w = Vec::new();
    for item in list(&mut f, "coalesce", 100, d) {
        let (config, w) = parse_coalesce(item, &mut incomplete, d);
        coalesce.extend(config);
        coalesce_w.extend(w);
    }

    let mut sinks = Vec::new();
    let mut sinks_w = Vec::new();
    match f.entry("sinks") {
        Some((loc, n)) => match &n.kind {
            Kind::Map(pairs) if !pairs.is_empty() => {
                if pairs.len() > MAX_SINKS {
                    d.error(
                        loc,
                        format!(
                            "{} sinks are defined; expected at most {MAX_SINKS}",
                            pairs.len()
                        ),
                    );
                }
                let mut seen: HashMap<String, Loc> = HashMap::new();
                for (k, v) in pairs {
                    let Some(raw) = super::decode::located_str(k, "a sink name", d) else {
                        continue;
                    };
                    let name = sink_name(&raw, d);
                    let graph_name = name.clone().unwrap_or_else(|| raw.clone());
                    if let Some(first) = seen.get(&graph_name.value) {
                        d.error(
                            raw.loc,
                            format!(
                                "sink `{}` is defined twice (first on line {}); expected unique \
                                 sink names",
                                graph_name.value, first.line
                            ),
                        );
                        continue;
                    }
                    seen.insert(graph_name.value.clone(), raw.loc);
                    if graph_name.value == DISCARD {
                        d.error(
                            raw.loc,
                            "a sink may not be named `discard`: that word means \"drop the row\" \
                             in on_error, on_validation_failure and on_write_failure",
                        );
                    }
                    let (config, w) = parse_sink(graph_name, v, d);
                    if name.is_some() {
                        sinks.extend(config);
                    }
                    sinks_w.push(w);
                }
            }
            Kind::Map(_) | Kind::Null => d.error(
                loc,
                "`sinks` is empty; expected at least one sink (name → plugin and options)",
            ),
            _ => d.error(
                n.loc,
                format!(
                    "`sinks` must be a mapping of sink name → sink; found {}",
                    n.describe()
                ),
            ),
        },
        None => d.error(
            root.loc,
            "the settings file is missing required section `sinks`",
        ),
    }

    let retry = f
        .entry("retry")
        .map(|(loc, n)| retry(n, loc, d))
        .unwrap_or_else(|| Some(RetryConfig::default()));
    let concurrency = f
        .entry("concurrency")
        .map(|(loc, n)| concurrency(n, loc, d))
        .unwrap_or_else(|| Some(ConcurrencyConfig::default()));
    let ledger = f
        .entry("ledger")
        .map(|(loc, n)| ledger(n, loc, d))
        .unwrap_or_else(|| Some(LedgerConfig::default()));
    // ELSPETH's audit database: attest's audit trail is its ledger, so there is nothing to
    // map and nothing to warn about.
    f.allow("landscape");
    if let Some(n) = f.get("run_mode") {
        if let Some(mode) = choice_of(n, "`run_mode`", &["live", "replay", "verify"], d) {
            if mode != "live" {
                d.warn(
                    n.loc,
                    format!(
                        "run_mode `{mode}` is ignored: attest runs pipelines live and replays \
                         recorded runs with `attest replay`"
                    ),
                );
            }
        }
    }
    for (key, why) in ELSPETH_ONLY {
        if let Some(loc) = f.entry(key).map(|(loc, _)| loc) {
            d.warn(
                loc,
                format!("`{key}` is an ELSPETH setting with no effect here: {why}"),
            );
        }
    }
    f.finish(d);

    check_unique_names(
        &transforms_w,
        &gates_w,
        &aggregations_w,
        &coalesce_w,
        &sinks_w,
        d,
    );

    let wiring = Wiring {
        source: source_w,
        transforms: transforms_w,
        gates: gates_w,
        aggregations: aggregations_w,
        coalesces: coalesce_w,
        sinks: sinks_w,
        incomplete,
    };
    // Without sinks every connection would be reported as dangling: one error is enough.
    let graph = if wiring.sinks.is_empty() {
        None
    } else {
        build(&wiring, d)
    };
    // Warnings are attached by the caller once every file involved has been read.
    Some(PipelineConfig {
        file: d.file().to_string(),
        source: source?,
        transforms,
        gates,
        aggregations,
        coalesce,
        sinks,
        retry: retry?,
        concurrency: concurrency?,
        ledger: ledger?,
        graph: graph?,
        // Filled in by the loader, which still has the unexpanded tree.
        node_hashes: super::NodeHashes::default(),
        warnings: Vec::new(),
    })
}

/// A list section (`transforms`, `gates`, ...); absent or null means empty.
fn list<'n>(
    f: &mut Fields<'n>,
    key: &'static str,
    max: usize,
    d: &mut Diagnostics,
) -> Vec<&'n Node> {
    let Some((loc, node)) = f.entry(key) else {
        return Vec::new();
    };
    match &node.kind {
        Kind::Null => Vec::new(),
        Kind::Seq(items) => {
            if items.len() > max {
                d.error(
                    loc,
                    format!(
                        "`{key}` has {} entries; expected at most {max}",
                        items.len()
                    ),
                );
            }
            items.iter().collect()
        }
        _ => {
            d.error(
                node.loc,
                format!("`{key}` must be a list; found {}", node.describe()),
            );
            Vec::new()
        }
    }
}

/// Node names are unique across transforms, gates, aggregations, coalesce and sinks.
fn check_unique_names(
    transforms: &[super::graph::StepW],
    gates: &[super::graph::GateW],
    aggregations: &[super::graph::StepW],
    coalesce: &[super::graph::CoalesceW],
    sinks: &[super::graph::SinkW],
    d: &mut Diagnostics,
) {
    let mut seen: HashMap<&str, (&str, Loc)> = HashMap::new();
    let all = sinks
        .iter()
        .map(|s| ("sink", &s.name))
        .chain(transforms.iter().map(|t| ("transform", &t.name)))
        .chain(gates.iter().map(|g| ("gate", &g.name)))
        .chain(aggregations.iter().map(|a| ("aggregation", &a.name)))
        .chain(coalesce.iter().map(|c| ("coalesce", &c.name)));
    let mut named: Vec<(&str, &Located<String>)> = all.collect();
    // Report at the later of the two in the file, whatever their kinds.
    named.sort_by_key(|(_, n)| n.loc);
    for (kind, name) in named {
        if name.value.starts_with('#') {
            continue; // an entry without a name, already reported
        }
        match seen.get(name.value.as_str()) {
            Some((other_kind, other_loc)) => d.error(
                name.loc,
                format!(
                    "the name `{}` is already used by {other_kind} `{}` on line {}; expected \
                     names unique across transforms, gates, aggregations, coalesce and sinks",
                    name.value, name.value, other_loc.line
                ),
            ),
            None => {
                seen.insert(name.value.as_str(), (kind, name.loc));
            }
        }
    }
}

fn retry(node: &Node, loc: Loc, d: &mut Diagnostics) -> Option<RetryConfig> {
    if node.is_null() {
        return Some(RetryConfig::default());
    }
    let mut f = Fields::settings(node, loc, "`retry`", d)?;
    let before = d.error_count();
    let defaults = RetryConfig::default();
    let max_attempts = match f.opt_int("max_attempts", d) {
        None => defaults.max_attempts,
        Some(v) if v.value > 0 => v.value as u64,
        Some(v) => {
            d.error(
                v.loc,
                format!(
                    "`max_attempts` is {}; expected 1 or more (total tries)",
                    v.value
                ),
            );
            defaults.max_attempts
        }
    };
    let initial = positive_seconds(
        &mut f,
        "initial_delay_seconds",
        defaults.initial_delay_seconds,
        d,
    );
    let max_delay = positive_seconds(&mut f, "max_delay_seconds", defaults.max_delay_seconds, d);
    let base = match f.opt_float("exponential_base", d) {
        None => Some(defaults.exponential_base),
        Some(b) if b.value > 1.0 => Some(b.value),
        Some(b) => {
            d.error(
                b.loc,
                format!("`exponential_base` is {}; expected more than 1", b.value),
            );
            None
        }
    };
    f.finish(d);
    if d.error_count() > before {
        return None;
    }
    Some(RetryConfig {
        max_attempts,
        initial_delay_seconds: initial?,
        max_delay_seconds: max_delay?,
        exponential_base: base?,
    })
}

fn concurrency(node: &Node, loc: Loc, d: &mut Diagnostics) -> Option<ConcurrencyConfig> {
    if node.is_null() {
        return Some(ConcurrencyConfig::default());
    }
    let mut f = Fields::settings(node, loc, "`concurrency`", d)?;
    let max_workers = f.opt_int("max_workers", d);
    f.finish(d);
    match max_workers {
        Some(v) if v.value < 1 => {
            d.error(
                v.loc,
                format!("`max_workers` is {}; expected 1 or more", v.value),
            );
            None
        }
        Some(v) => Some(ConcurrencyConfig {
            max_workers: Some(v.value as u64),
        }),
        None => Some(ConcurrencyConfig::default()),
    }
}

fn ledger(node: &Node, loc: Loc, d: &mut Diagnostics) -> Option<LedgerConfig> {
    if node.is_null() {
        return Some(LedgerConfig::default());
    }
    let mut f = Fields::settings(node, loc, "`ledger`", d)?;
    let path = f.opt_str("path", d).map(|p| p.value);
    f.finish(d);
    Some(LedgerConfig { path })
}
