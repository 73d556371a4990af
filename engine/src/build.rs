//! From a loaded configuration to an executable [`Plan`]: resolves every connection to a
//! target, instantiates plugins, compiles gate conditions. Every problem found is reported
//! with the file, line and column it comes from.

use crate::config::{ConfigError, Loc, PipelineConfig, TransformOptions};
use crate::config::{EdgeLabel, Graph, GraphNode, NodeKind as GKind};
use crate::expr::Expr;
use crate::plan::*;
use crate::transforms;
use crate::value::Row;
use attest_ledger::{Hash32, NodeId, NodeKind};
use std::path::Path;

/// Plugins this build runs, by kind (`attest plugins`).
pub const PLUGINS: &[(&str, &[&str])] = &[
    ("source", &["csv", "json"]),
    (
        "transform",
        &["passthrough", "field_mapper", "truncate", "keyword_filter"],
    ),
    ("gate", &["condition (expression language)"]),
    ("sink", &["csv", "json"]),
];

/// A configuration that loaded, with the exact bytes it was read from (recorded in the
/// ledger) and its warnings.
pub struct Loaded {
    pub config: PipelineConfig,
    pub text: Vec<u8>,
    pub warnings: Vec<String>,
}

/// Loads and fully checks a pipeline: configuration, wiring, conditions, and the plugins
/// this build supports. Returns every error found.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, Vec<String>> {
    let config = crate::config::load_with_env(path, env)
        .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    let mut errors: Vec<String> = Vec::new();
    if let Err(e) = config.validate_conditions(|src| {
        Expr::parse(src)
            .map(|_| ())
            .map_err(|e| (e.position.offset, e.message))
    }) {
        errors.extend(e.iter().map(|e| e.to_string()));
    }
    errors.extend(check_supported(&config));
    if !errors.is_empty() {
        return Err(errors);
    }
    let text =
        std::fs::read(path).map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    let warnings = config.warnings.iter().map(|w| w.to_string()).collect();
    Ok(Loaded {
        config,
        text,
        warnings,
    })
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
        if matches!(
            t.options,
            TransformOptions::JsonExplode(_) | TransformOptions::Llm(_) | TransformOptions::Http(_)
        ) {
            errors.push(err_at(
                config,
                t.loc,
                format!(
                    "transform `{}`: plugin `{}` is not supported by this build yet",
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
        errors.push(err_at(
            config,
            a.name.loc,
            format!(
                "aggregation `{}`: aggregations are not supported by this build yet",
                a.name.value
            ),
        ));
    }
    for c in &config.coalesce {
        errors.push(err_at(
            config,
            c.name.loc,
            format!(
                "coalesce `{}`: coalesce is not supported by this build yet",
                c.name.value
            ),
        ));
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
        if let Some(r) = g.routes.iter().find(|r| r.is_fork()) {
            errors.push(err_at(
                config,
                r.destination.loc,
                format!(
                    "gate `{}`: fork routes are not supported by this build yet",
                    g.name.value
                ),
            ));
        }
    }
    errors
}

/// A gate condition compiled from the expression language.
struct ExprCondition(Expr);

impl Condition for ExprCondition {
    fn route_label(&self, row: &Row) -> Result<String, String> {
        self.0.eval_route_label(row).map_err(|e| e.to_string())
    }
}

fn config_hash(debug: &impl std::fmt::Debug) -> Hash32 {
    // The parsed configuration's debug form: stable for one build of attest, which is what
    // resume compares against.
    Hash32::of(format!("{debug:?}").as_bytes())
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
    // Plan node index of each graph node that is a transform or gate.
    let mut index = vec![None; g.nodes.len()];
    let mut n = 0;
    for (i, node) in g.nodes.iter().enumerate() {
        if matches!(node.kind, GKind::Transform | GKind::Gate) {
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

    let src_node = g.source().ok_or("the pipeline has no source")?;
    let source = SourcePlan {
        id: node_id(&source_id(config))?,
        plugin: match config.source.plugin {
            crate::config::SourcePlugin::Csv => "csv".into(),
            crate::config::SourcePlugin::Json => "json".into(),
        },
        config_hash: config_hash(&config.source),
        path: config.source.options.path.value.clone(),
        on_success: match edge(src_node, &|l| *l == EdgeLabel::Success) {
            Some(to) => target(to, false)?,
            None => return Err("the source has no on_success".into()),
        },
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
                let on_success = match edge(node, &|l| *l == EdgeLabel::Success) {
                    Some(to) => target(to, false)?,
                    None => return Err(format!("transform `{}` has no on_success", node.name)),
                };
                let on_error = match edge(node, &|l| *l == EdgeLabel::Error) {
                    Some(to) => target(to, true)?,
                    None => Target::Discard {
                        reason: format!("{}: on_error is discard", node.name),
                    },
                };
                nodes.push(NodePlan {
                    id: node_id(&node.name)?,
                    kind: NodeKind::Transform,
                    plugin: t.options.plugin().into(),
                    config_hash: config_hash(t),
                    exec: NodeExec::Transform {
                        plugin: transform(&t.options)?,
                        on_success,
                        on_error,
                    },
                });
            }
            GKind::Gate => {
                let gc = config
                    .gates
                    .get(node.index)
                    .ok_or("gate index out of range")?;
                let expr = Expr::parse(&gc.condition.source)
                    .map_err(|e| format!("gate `{}`: {e}", node.name))?;
                let mut routes = Vec::new();
                for e in &node.edges {
                    if let EdgeLabel::Route(label) = &e.label {
                        routes.push((label.clone(), target(e.to.0, true)?));
                    }
                }
                nodes.push(NodePlan {
                    id: node_id(&node.name)?,
                    kind: NodeKind::Gate,
                    plugin: "gate".into(),
                    config_hash: config_hash(gc),
                    exec: NodeExec::Gate {
                        condition: Box::new(ExprCondition(expr)),
                        routes,
                    },
                });
            }
            _ => {}
        }
    }
    let sinks = config
        .sinks
        .iter()
        .map(|s| {
            Ok(SinkPlan {
                id: node_id(&s.name.value)?,
                plugin: format!("{:?}", s.plugin).to_lowercase(),
                config_hash: config_hash(s),
                path: s.options.path.value.clone(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let edges = ledger_edges(g, &source.id)?;
    Ok(Plan {
        source,
        nodes,
        sinks,
        edges,
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
        other => {
            return Err(format!(
                "plugin `{}` is not supported by this build yet",
                other.plugin()
            ))
        }
    })
}
