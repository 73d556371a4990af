//! From a loaded configuration to an executable [`Plan`]: resolves every connection to a
//! target, instantiates plugins, compiles gate conditions. Every problem found is reported
//! with the file, line and column it comes from.

use crate::calls::Redactor;
use crate::config::{
    AggregationOptions, ConfigError, Loc, OutputMode, PipelineConfig, TransformOptions,
};
use crate::config::{CoalescePolicy as CPolicy, MergeStrategy as CMerge};
use crate::config::{EdgeLabel, Graph, GraphNode, NodeKind as GKind};
use crate::expr::Expr;
use crate::plan::*;
use crate::transforms;
use crate::value::Row;
use attest_ledger::{Hash32, NodeId, NodeKind};
use std::path::Path;
use std::time::Duration;

/// Plugins this build runs, by kind (`attest plugins`).
pub const PLUGINS: &[(&str, &[&str])] = &[
    ("source", &["csv", "json"]),
    (
        "transform",
        &[
            "passthrough",
            "field_mapper",
            "truncate",
            "keyword_filter",
            "json_explode",
            "llm (openrouter | openai | azure; single query or multi-query)",
            "http",
        ],
    ),
    (
        "gate",
        &["condition (expression language), with fork routes"],
    ),
    (
        "aggregation",
        &["batch_stats", "batch_replicate", "llm_batch"],
    ),
    ("coalesce", &["require_all | first | quorum | best_effort"]),
    ("sink", &["csv", "json"]),
];

/// A configuration that loaded, with the bytes it was read from, literal credentials
/// removed (what the ledger records), and its warnings.
pub struct Loaded {
    pub config: PipelineConfig,
    /// The settings file's text with every literal secret replaced (`config::secrets`):
    /// recorded and hashed as the run's configuration.
    pub text: Vec<u8>,
    pub warnings: Vec<String>,
}

/// Loads and fully checks a pipeline: configuration, wiring, conditions, and the plugins
/// this build supports. Returns every error found.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, Vec<String>> {
    let config = crate::config::load_with_env(path, env)
        .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    check(&config)?;
    let text =
        std::fs::read(path).map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    // The loader has already refused a file that is not UTF-8.
    let text = crate::config::secrets::redact_text(
        &String::from_utf8_lossy(&text),
        &crate::config::secrets::secrets(&config),
    )
    .into_bytes();
    let warnings = config.warnings.iter().map(|w| w.to_string()).collect();
    Ok(Loaded {
        config,
        text,
        warnings,
    })
}

/// As [`load`], from the text of a settings file (a run's recorded configuration, which
/// re-execution loads); `file` names it in messages.
pub fn load_text(
    text: Vec<u8>,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Vec<String>> {
    let utf8 = std::str::from_utf8(&text)
        .map_err(|e| vec![format!("{}: not valid UTF-8: {e}", file.display())])?;
    let config = crate::config::parse_str(utf8, file, env)
        .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    check(&config)?;
    let warnings = config.warnings.iter().map(|w| w.to_string()).collect();
    Ok(Loaded {
        config,
        text,
        warnings,
    })
}

/// The checks beyond the configuration format: conditions parse, and this build runs
/// every plugin named.
fn check(config: &PipelineConfig) -> Result<(), Vec<String>> {
    let mut errors: Vec<String> = Vec::new();
    if let Err(e) = config.validate_conditions(|src| {
        Expr::parse(src)
            .map(|_| ())
            .map_err(|e| (e.position.offset, e.message))
    }) {
        errors.extend(e.iter().map(|e| e.to_string()));
    }
    errors.extend(check_supported(config));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn err_at(config: &PipelineConfig, loc: Loc, message: String) -> String {
    ConfigError {
        file: config.file.clone(),
        line: loc.line,
        column: loc.column,
        message,
    }
    .to_string()
}

/// Plugins and shapes that the configuration format knows but this build cannot run yet.
fn check_supported(config: &PipelineConfig) -> Vec<String> {
    let mut errors = Vec::new();
    for t in &config.transforms {
        // The calling plugins compile their templates here, so that a template error is a
        // load error with its place, not a failure of every row.
        let built = match &t.options {
            TransformOptions::Llm(o) => transforms::Llm::new(o).map(|_| ()),
            TransformOptions::Http(o) => transforms::Http::new(o).map(|_| ()),
            _ => Ok(()),
        };
        if let Err(e) = built {
            errors.push(err_at(
                config,
                t.loc,
                format!(
                    "transform `{}`: plugin `{}`: {e}",
                    t.name.value,
                    t.options.plugin()
                ),
            ));
        }
    }
    for t in &config.transforms {
        if let TransformOptions::KeywordFilter(o) = &t.options {
            for p in &o.blocked_patterns {
                if let Err(e) = regex::Regex::new(&p.value) {
                    errors.push(err_at(
                        config,
                        p.loc,
                        format!(
                            "transform `{}`: blocked pattern {:?} is not supported: {e}",
                            t.name.value, p.value
                        ),
                    ));
                }
            }
        }
    }
    for a in &config.aggregations {
        // As for the calling transforms: templates and pool options are checked at load.
        if let AggregationOptions::LlmBatch(o) = &a.options {
            if let Err(e) = transforms::LlmBatch::new(o) {
                errors.push(err_at(
                    config,
                    a.loc,
                    format!("aggregation `{}`: plugin `llm_batch`: {e}", a.name.value),
                ));
            }
        }
    }
    for g in &config.gates {
        // ELSPETH: a statically boolean condition routes by exactly 'true' and 'false'.
        if let Ok(expr) = Expr::parse(&g.condition.source) {
            let mut labels: Vec<&str> = g.routes.iter().map(|r| r.label.value.as_str()).collect();
            labels.sort_unstable();
            if expr.is_statically_boolean() && labels != ["false", "true"] {
                errors.push(err_at(
                    config,
                    g.loc,
                    format!(
                        "gate `{}`: the condition is boolean, so routes must be exactly 'true' and 'false' (quoted), not {}",
                        g.name.value,
                        labels.join(", ")
                    ),
                ));
            }
        }
    }
    errors
}

/// An aggregation's trigger condition compiled from the expression language.
struct ExprPredicate(Expr);

impl Predicate for ExprPredicate {
    fn holds(&self, row: &Row) -> Result<bool, String> {
        self.0.eval_truthy(row).map_err(|e| e.to_string())
    }
}

/// A gate condition compiled from the expression language.
struct ExprCondition(Expr);

impl Condition for ExprCondition {
    fn route_label(&self, row: &Row) -> Result<String, String> {
        self.0.eval_route_label(row).map_err(|e| e.to_string())
    }
}

fn config_hash(debug: &impl std::fmt::Debug, secrets: &Redactor) -> Hash32 {
    // The parsed configuration's debug form: stable for one build of attest, which is what
    // resume compares against. Secrets are taken out before it is hashed.
    Hash32::of(secrets.text(&format!("{debug:?}")).as_bytes())
}

fn node_id(name: &str) -> Result<NodeId, String> {
    NodeId::new(name).map_err(|e| e.to_string())
}

/// The source's node id: `source`, unless a node already has that name.
fn source_id(config: &PipelineConfig) -> String {
    let taken = config
        .graph
        .nodes
        .iter()
        .any(|n| n.kind != GKind::Source && n.name == "source");
    if taken {
        "__source".into()
    } else {
        "source".into()
    }
}

/// Builds the executable plan. Sources and sinks are opened separately (`open.rs`).
pub fn plan(config: &PipelineConfig) -> Result<Plan, String> {
    let g = &config.graph;
    let secrets = crate::config::secrets::secrets(config);
    // Plan node index of each graph node that is processed by the executor.
    let mut index = vec![None; g.nodes.len()];
    let mut n = 0;
    for (i, node) in g.nodes.iter().enumerate() {
        if matches!(
            node.kind,
            GKind::Transform | GKind::Gate | GKind::Aggregation | GKind::Coalesce
        ) {
            index[i] = Some(n);
            n += 1;
        }
    }
    let target = |to: usize, routed: bool| -> Result<Target, String> {
        let node = g
            .nodes
            .get(to)
            .ok_or_else(|| format!("graph has no node {to}"))?;
        match node.kind {
            GKind::Sink => Ok(Target::Sink {
                sink: node.index,
                routed,
            }),
            _ => index[to]
                .map(Target::Node)
                .ok_or_else(|| format!("node `{}` cannot be run by this build", node.name)),
        }
    };
    let edge = |node: &GraphNode, want: &dyn Fn(&EdgeLabel) -> bool| {
        node.edges.iter().find(|e| want(&e.label)).map(|e| e.to.0)
    };
    let success = |node: &GraphNode, what: &str| match edge(node, &|l| *l == EdgeLabel::Success) {
        Some(to) => target(to, false),
        None => Err(format!("{what} `{}` has no on_success", node.name)),
    };
    // The coalesce (plan index) that joins each fork branch.
    let coalesce_of = |branch: &str| -> Option<usize> {
        config.coalesce.iter().find_map(|c| {
            c.branches
                .iter()
                .any(|b| b.name.value == branch)
                .then(|| {
                    g.nodes
                        .iter()
                        .position(|n| n.kind == GKind::Coalesce && n.name == c.name.value)
                        .and_then(|i| index[i])
                })
                .flatten()
        })
    };

    let src_node = g.source().ok_or("the pipeline has no source")?;
    let source = SourcePlan {
        id: node_id(&source_id(config))?,
        plugin: match config.source.plugin {
            crate::config::SourcePlugin::Csv => "csv".into(),
            crate::config::SourcePlugin::Json => "json".into(),
        },
        config_hash: config_hash(&config.source, &secrets),
        path: config.source.options.path.value.clone(),
        on_success: success(src_node, "the source")?,
        on_validation_failure: edge(src_node, &|l| *l == EdgeLabel::ValidationFailure)
            .and_then(|to| g.nodes.get(to).map(|n| n.index)),
    };

    let mut nodes = Vec::new();
    for node in &g.nodes {
        match node.kind {
            GKind::Transform => {
                let t = config
                    .transforms
                    .get(node.index)
                    .ok_or("transform index out of range")?;
                let on_success = success(node, "transform")?;
                let on_error = match edge(node, &|l| *l == EdgeLabel::Error) {
                    Some(to) => target(to, true)?,
                    None => Target::Discard {
                        reason: format!("{}: on_error is discard", node.name),
                    },
                };
                let exec = match &t.options {
                    TransformOptions::JsonExplode(o) => NodeExec::Expand {
                        plugin: Box::new(transforms::JsonExplode {
                            array_field: o.array_field.clone(),
                            output_field: o.output_field.clone(),
                            include_index: o.include_index,
                        }),
                        on_success,
                        on_error,
                    },
                    other => NodeExec::Transform {
                        plugin: transform(other)?,
                        on_success,
                        on_error,
                    },
                };
                nodes.push(NodePlan {
                    id: node_id(&node.name)?,
                    kind: NodeKind::Transform,
                    plugin: t.options.plugin().into(),
                    config_hash: config_hash(t, &secrets),
                    exec,
                });
            }
            GKind::Gate => {
                let gc = config
                    .gates
                    .get(node.index)
                    .ok_or("gate index out of range")?;
                let expr = Expr::parse(&gc.condition.source)
                    .map_err(|e| format!("gate `{}`: {e}", node.name))?;
                let mut branches = Vec::new();
                for e in &node.edges {
                    if let EdgeLabel::Fork(b) = &e.label {
                        branches.push(ForkBranch {
                            name: b.clone(),
                            // A branch named after a sink completes there.
                            target: target(e.to.0, false)?,
                            coalesce: coalesce_of(b),
                        });
                    }
                }
                let mut routes = Vec::new();
                for r in &gc.routes {
                    let label = r.label.value.clone();
                    if r.is_fork() {
                        routes.push((label, Target::Fork(branches.clone())));
                        continue;
                    }
                    let to = node
                        .edges
                        .iter()
                        .find(|e| e.label == EdgeLabel::Route(label.clone()))
                        .ok_or_else(|| {
                            format!("gate `{}`: route `{label}` is not wired", node.name)
                        })?;
                    routes.push((label, target(to.to.0, true)?));
                }
                nodes.push(NodePlan {
                    id: node_id(&node.name)?,
                    kind: NodeKind::Gate,
                    plugin: "gate".into(),
                    config_hash: config_hash(gc, &secrets),
                    exec: NodeExec::Gate {
                        condition: Box::new(ExprCondition(expr)),
                        routes,
                    },
                });
            }
            GKind::Aggregation => {
                let a = config
                    .aggregations
                    .get(node.index)
                    .ok_or("aggregation index out of range")?;
                let plugin: Box<dyn BatchTransform> = match &a.options {
                    AggregationOptions::BatchStats(o) => Box::new(transforms::BatchStats {
                        value_field: o.value_field.clone(),
                        group_by: o.group_by.clone(),
                        compute_mean: o.compute_mean,
                    }),
                    AggregationOptions::BatchReplicate(o) => Box::new(transforms::BatchReplicate {
                        copies_field: o.copies_field.clone(),
                        default_copies: o.default_copies,
                        max_copies: o.max_copies,
                        include_copy_index: o.include_copy_index,
                    }),
                    AggregationOptions::LlmBatch(o) => Box::new(
                        transforms::LlmBatch::new(o)
                            .map_err(|e| format!("aggregation `{}`: {e}", node.name))?,
                    ),
                };
                let condition = match &a.trigger.condition {
                    Some(c) => {
                        Some(Box::new(ExprPredicate(Expr::parse(&c.source).map_err(|e| {
                            format!("aggregation `{}`: trigger condition: {e}", node.name)
                        })?)) as Box<dyn Predicate>)
                    }
                    None => None,
                };
                nodes.push(NodePlan {
                    id: node_id(&node.name)?,
                    kind: NodeKind::Aggregation,
                    plugin: a.options.plugin().into(),
                    config_hash: config_hash(a, &secrets),
                    exec: NodeExec::Aggregation {
                        plugin,
                        trigger: BatchTrigger {
                            count: a.trigger.count,
                            timeout: a.trigger.timeout_seconds.map(Duration::from_secs_f64),
                            condition,
                        },
                        mode: match a.output_mode {
                            OutputMode::Transform => BatchMode::Transform,
                            OutputMode::Passthrough => BatchMode::Passthrough,
                        },
                        expected_output_count: a.expected_output_count,
                        on_success: success(node, "aggregation")?,
                    },
                });
            }
            GKind::Coalesce => {
                let c = config
                    .coalesce
                    .get(node.index)
                    .ok_or("coalesce index out of range")?;
                let branches: Vec<String> =
                    c.branches.iter().map(|b| b.name.value.clone()).collect();
                let select = || {
                    c.select_branch
                        .as_ref()
                        .and_then(|s| branches.iter().position(|b| b == s))
                        .ok_or_else(|| {
                            format!("coalesce `{}`: select_branch is not a branch", node.name)
                        })
                };
                nodes.push(NodePlan {
                    id: node_id(&node.name)?,
                    kind: NodeKind::Coalesce,
                    plugin: "coalesce".into(),
                    config_hash: config_hash(c, &secrets),
                    exec: NodeExec::Coalesce {
                        policy: match c.policy {
                            CPolicy::RequireAll => CoalescePolicy::RequireAll,
                            CPolicy::First => CoalescePolicy::First,
                            CPolicy::BestEffort => CoalescePolicy::BestEffort,
                            CPolicy::Quorum => CoalescePolicy::Quorum(
                                c.quorum_count.unwrap_or(branches.len() as u64) as usize,
                            ),
                        },
                        merge: match c.merge {
                            CMerge::Union => MergeStrategy::Union,
                            CMerge::Nested => MergeStrategy::Nested,
                            CMerge::Select => MergeStrategy::Select(select()?),
                        },
                        timeout: c.timeout_seconds.map(Duration::from_secs_f64),
                        on_success: success(node, "coalesce")?,
                        branches,
                    },
                });
            }
            _ => {}
        }
    }
    let mut sinks = Vec::new();
    for s in &config.sinks {
        let graph_node = g.find(GKind::Sink, &s.name.value);
        let on_write_failure = match (&s.on_write_failure, graph_node) {
            (None, _) => None,
            (Some(w), _) if w.value == crate::config::DISCARD => Some(WriteFailure::Discard),
            (Some(w), Some(gn)) => {
                let to = edge(gn, &|l| *l == EdgeLabel::WriteFailure)
                    .and_then(|to| g.nodes.get(to))
                    .filter(|n| n.kind == GKind::Sink)
                    .ok_or_else(|| {
                        format!(
                            "sink `{}`: failsink `{}` is not a sink",
                            s.name.value, w.value
                        )
                    })?;
                Some(WriteFailure::Sink(to.index))
            }
            (Some(_), None) => None,
        };
        sinks.push(SinkPlan {
            id: node_id(&s.name.value)?,
            plugin: format!("{:?}", s.plugin).to_lowercase(),
            config_hash: config_hash(s, &secrets),
            path: s.options.path.value.clone(),
            on_write_failure,
        });
    }
    let edges = ledger_edges(g, &source.id)?;
    let r = &config.retry;
    Ok(Plan {
        source,
        nodes,
        sinks,
        edges,
        retry: RetryPolicy {
            max_attempts: r.max_attempts.clamp(1, u64::from(u32::MAX)) as u32,
            // ELSPETH's runtime floors.
            initial_delay: r.initial_delay_seconds.max(0.01),
            max_delay: r.max_delay_seconds.max(0.1),
            exponential_base: r.exponential_base,
        },
    })
}

fn ledger_edges(g: &Graph, source: &NodeId) -> Result<Vec<(NodeId, NodeId, String)>, String> {
    let name = |n: &GraphNode| {
        if n.kind == GKind::Source {
            Ok(source.clone())
        } else {
            node_id(&n.name)
        }
    };
    let mut out = Vec::new();
    for n in &g.nodes {
        for e in &n.edges {
            let to = g.nodes.get(e.to.0).ok_or("dangling edge")?;
            let label = match &e.label {
                EdgeLabel::Success => "on_success".to_string(),
                EdgeLabel::Error => "on_error".to_string(),
                EdgeLabel::ValidationFailure => "on_validation_failure".to_string(),
                EdgeLabel::WriteFailure => "on_write_failure".to_string(),
                EdgeLabel::Route(l) => format!("route:{l}"),
                EdgeLabel::Fork(b) => format!("fork:{b}"),
            };
            let edge = (name(n)?, name(to)?, label);
            if !out.contains(&edge) {
                out.push(edge);
            }
        }
    }
    Ok(out)
}

fn transform(options: &TransformOptions) -> Result<Box<dyn Transform>, String> {
    Ok(match options {
        TransformOptions::Passthrough(_) => Box::new(transforms::Passthrough),
        TransformOptions::FieldMapper(o) => Box::new(transforms::FieldMapper {
            mapping: o.mapping.clone(),
            select_only: o.select_only,
            strict: o.strict,
        }),
        TransformOptions::Truncate(o) => Box::new(transforms::Truncate {
            fields: o.fields.clone(),
            suffix: o.suffix.clone(),
            strict: o.strict,
        }),
        TransformOptions::KeywordFilter(o) => Box::new(transforms::KeywordFilter::new(
            match &o.fields {
                crate::config::KeywordFields::All => transforms::KeywordFields::All,
                crate::config::KeywordFields::Named(n) => {
                    transforms::KeywordFields::Named(n.clone())
                }
            },
            &o.blocked_patterns
                .iter()
                .map(|p| p.value.clone())
                .collect::<Vec<_>>(),
        )?),
        TransformOptions::Llm(o) => Box::new(transforms::Llm::new(o)?),
        TransformOptions::Http(o) => Box::new(transforms::Http::new(o)?),
        other => {
            return Err(format!(
                "plugin `{}` is not supported by this build yet",
                other.plugin()
            ))
        }
    })
}
