//! `gates:` (ELSPETH-CONFIG §5): route rows by a condition, or fork them.

use super::condition::Condition;
use super::decode::{located_str, str_list_of, string_keyed, Fields};
use super::error::{Diagnostics, Loc, Located};
use super::graph::GateW;
use super::names::{connection_name, node_name};
use super::yaml::{Kind, Node};

const MAX_ROUTES: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The value the condition must produce (`"true"`, `"false"`, or any other label).
    pub label: Located<String>,
    /// A sink, a connection, or `fork`.
    pub destination: Located<String>,
}

impl Route {
    pub fn is_fork(&self) -> bool {
        self.destination.value == "fork"
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GateConfig {
    pub name: Located<String>,
    pub input: Located<String>,
    /// Not parsed here: see `PipelineConfig::validate_conditions`.
    pub condition: Condition,
    /// In file order.
    pub routes: Vec<Route>,
    /// Branches a `fork` route copies the row into, in order; empty when no route forks.
    pub fork_to: Vec<Located<String>>,
    pub loc: Loc,
}

pub(crate) fn parse_gate(
    node: &Node,
    text: &str,
    incomplete: &mut bool,
    d: &mut Diagnostics,
) -> (Option<GateConfig>, Option<GateW>) {
    let Some(mut f) = Fields::settings(node, node.loc, "gate", d) else {
        *incomplete = true;
        return (None, None);
    };
    let before = d.error_count();
    let raw_name = f.req_str("name", d);
    let name = raw_name.as_ref().and_then(|n| node_name(n, d));
    let input = f
        .req_str("input", d)
        .map(|i| connection_name(&i, "input", d).unwrap_or(i));
    let condition = match f.required("condition", d) {
        Some(n) => match &n.kind {
            Kind::Str(s) => Some(Condition::from_node(s.clone(), n, text)),
            _ => {
                d.error(
                    n.loc,
                    format!(
                        "`condition` must be an expression written as a string, e.g. \
                         \"row['amount'] > 1000\"; found {}",
                        n.describe()
                    ),
                );
                None
            }
        },
        None => None,
    };
    let routes = f.required("routes", d).and_then(|n| routes(n, d));
    let routes_loc = f.key_loc("routes");
    let forks = routes
        .as_ref()
        .is_some_and(|r| r.iter().any(Route::is_fork));
    let fork_to = match f.entry("fork_to") {
        Some((loc, n)) => {
            let list = if n.is_null() {
                Some(Vec::new())
            } else {
                str_list_of(n, "`fork_to`", d)
            };
            let list: Vec<Located<String>> = list
                .unwrap_or_default()
                .into_iter()
                .map(|b| connection_name(&b, "fork branch", d).unwrap_or(b))
                .collect();
            if routes.is_some() && !forks && !list.is_empty() {
                d.error(
                    loc,
                    "`fork_to` is given but no route is `fork`; expected fork_to only with a \
                     route whose destination is `fork`",
                );
            }
            if list.len() > MAX_ROUTES {
                d.error(
                    n.loc,
                    format!(
                        "`fork_to` has {} branches; expected at most {MAX_ROUTES}",
                        list.len()
                    ),
                );
            }
            list
        }
        None => Vec::new(),
    };
    if forks && fork_to.is_empty() {
        d.error(
            routes_loc.unwrap_or(node.loc),
            "a route is `fork` but `fork_to` is missing or empty; expected the list of branches \
             to copy the row into",
        );
    }
    f.finish(d);
    if raw_name.is_none() || input.is_none() || routes.is_none() {
        *incomplete = true;
    }
    let graph_name = raw_name
        .map(|n| Located::new(n.value.trim().to_string(), n.loc))
        .unwrap_or_else(|| Located::new(format!("#{}", node.loc.line), node.loc));
    let wiring = GateW {
        name: graph_name,
        input: input.clone(),
        routes: routes
            .iter()
            .flatten()
            .map(|r| (r.label.clone(), r.destination.clone()))
            .collect(),
        // Branches of a gate that never forks would only produce follow-on errors.
        fork_to: if forks { fork_to.clone() } else { Vec::new() },
    };
    if d.error_count() > before {
        return (None, Some(wiring));
    }
    let config = match (name, input, condition, routes) {
        (Some(name), Some(input), Some(condition), Some(routes)) => Some(GateConfig {
            name,
            input,
            condition,
            routes,
            fork_to,
            loc: node.loc,
        }),
        _ => None,
    };
    (config, Some(wiring))
}

fn routes(node: &Node, d: &mut Diagnostics) -> Option<Vec<Route>> {
    let pairs = string_keyed(node, "`routes`", d)?;
    if pairs.is_empty() || pairs.len() > MAX_ROUTES {
        d.error(
            node.loc,
            format!(
                "`routes` has {} entries; expected 1 to {MAX_ROUTES} (label → sink, connection or \
                 fork)",
                pairs.len()
            ),
        );
        return None;
    }
    let mut out = Vec::with_capacity(pairs.len());
    let mut ok = true;
    for (label, value) in pairs {
        let label = connection_name(&label, "route label", d);
        let dest = located_str(value, "a route destination", d);
        let dest = dest.and_then(|dest| {
            if dest.value == "fork" {
                Some(dest)
            } else {
                connection_name(&dest, "route destination", d)
            }
        });
        match (label, dest) {
            (Some(label), Some(destination)) => out.push(Route { label, destination }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}
