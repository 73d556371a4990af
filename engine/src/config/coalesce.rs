//! `coalesce:` (ELSPETH-CONFIG §6): join the fork branches of one row.

use std::collections::HashSet;

use super::decode::{located_str, string_keyed, Fields};
use super::error::{Diagnostics, Loc, Located};
use super::graph::CoalesceW;
use super::names::{connection_name, node_name};
use super::plugins::positive_seconds;
use super::yaml::{Kind, Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoalescePolicy {
    RequireAll,
    Quorum,
    BestEffort,
    First,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeStrategy {
    Union,
    Nested,
    Select,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CoalesceBranch {
    /// The fork branch name.
    pub name: Located<String>,
    /// The connection it arrives on: the branch itself when the fork copy comes straight
    /// here, else the output of the chain of nodes the branch runs through.
    pub input: Located<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CoalesceConfig {
    pub name: Located<String>,
    /// In file order (the order of union and nested merges).
    pub branches: Vec<CoalesceBranch>,
    /// Default `require_all`.
    pub policy: CoalescePolicy,
    /// Default `union`.
    pub merge: MergeStrategy,
    /// > 0; required for best_effort.
    pub timeout_seconds: Option<f64>,
    /// 1..=#branches; required for quorum.
    pub quorum_count: Option<u64>,
    /// A branch; required for merge `select`.
    pub select_branch: Option<String>,
    /// A sink; when not given, merged rows go on the connection named after the coalesce.
    pub on_success: Option<Located<String>>,
    pub loc: Loc,
}

pub(crate) fn parse_coalesce(
    node: &Node,
    incomplete: &mut bool,
    d: &mut Diagnostics,
) -> (Option<CoalesceConfig>, Option<CoalesceW>) {
    let Some(mut f) = Fields::settings(node, node.loc, "coalesce", d) else {
        *incomplete = true;
        return (None, None);
    };
    let before = d.error_count();
    let raw_name = f.req_str("name", d);
    let name = raw_name.as_ref().and_then(|n| node_name(n, d));
    // The graph gets whatever branches could be read, even when the list as a whole is
    // wrong, so that the forks feeding them are not reported as well.
    let (branch_list, branches_ok) = match f.required("branches", d) {
        Some(n) => branches(n, d),
        None => (Vec::new(), false),
    };
    let branches = branches_ok.then(|| branch_list.clone());
    let policy = f
        .opt_choice(
            "policy",
            &["require_all", "quorum", "best_effort", "first"],
            d,
        )
        .map(|p| match p.value {
            "quorum" => CoalescePolicy::Quorum,
            "best_effort" => CoalescePolicy::BestEffort,
            "first" => CoalescePolicy::First,
            _ => CoalescePolicy::RequireAll,
        })
        .unwrap_or(CoalescePolicy::RequireAll);
    let merge = f
        .opt_choice("merge", &["union", "nested", "select"], d)
        .map(|m| match m.value {
            "nested" => MergeStrategy::Nested,
            "select" => MergeStrategy::Select,
            _ => MergeStrategy::Union,
        })
        .unwrap_or(MergeStrategy::Union);
    let timeout_seconds = if f.get("timeout_seconds").is_some() {
        positive_seconds(&mut f, "timeout_seconds", 0.0, d)
    } else {
        f.allow("timeout_seconds");
        None
    };
    let quorum_count = f.opt_int("quorum_count", d);
    let select_branch = f.opt_str("select_branch", d);
    let on_success = f
        .opt_str("on_success", d)
        .map(|s| connection_name(&s, "on_success", d).unwrap_or(s));
    let owner = f.owner();
    let policy_loc = f.key_loc("policy").unwrap_or(owner);
    let merge_loc = f.key_loc("merge").unwrap_or(owner);
    let timeout_given = f.get("timeout_seconds").is_some();
    f.finish(d);

    if policy == CoalescePolicy::BestEffort && !timeout_given {
        d.error(
            policy_loc,
            "policy best_effort needs `timeout_seconds`; expected a number of seconds above 0",
        );
    }
    let quorum = match (policy, &quorum_count) {
        (CoalescePolicy::Quorum, None) => {
            d.error(
                policy_loc,
                "policy quorum needs `quorum_count`; expected how many branches must arrive",
            );
            None
        }
        (_, Some(q)) => match &branches {
            Some(b) if q.value < 1 || q.value as usize > b.len() => {
                d.error(
                    q.loc,
                    format!(
                        "`quorum_count` is {}; expected 1 to {} (the number of branches)",
                        q.value,
                        b.len()
                    ),
                );
                None
            }
            _ => Some(q.value.max(0) as u64),
        },
        _ => None,
    };
    match (merge, &select_branch) {
        (MergeStrategy::Select, None) => d.error(
            merge_loc,
            "merge select needs `select_branch`; expected the branch whose row is kept",
        ),
        (_, Some(s)) => {
            if let Some(b) = &branches {
                if !b.iter().any(|br| br.name.value == s.value) {
                    d.error(
                        s.loc,
                        format!(
                            "`select_branch` is `{}`, which is not a branch; expected one of: {}",
                            s.value,
                            b.iter()
                                .map(|br| br.name.value.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
        }
        _ => {}
    }

    if raw_name.is_none() || branch_list.is_empty() {
        *incomplete = true;
    }
    let graph_name = raw_name
        .map(|n| Located::new(n.value.trim().to_string(), n.loc))
        .unwrap_or_else(|| Located::new(format!("#{}", node.loc.line), node.loc));
    let wiring = CoalesceW {
        name: graph_name,
        branches: branch_list
            .iter()
            .map(|b| (b.name.clone(), b.input.clone()))
            .collect(),
        on_success: on_success.clone(),
    };
    if d.error_count() > before {
        return (None, Some(wiring));
    }
    let config = match (name, branches) {
        (Some(name), Some(branches)) => Some(CoalesceConfig {
            name,
            branches,
            policy,
            merge,
            timeout_seconds,
            quorum_count: quorum,
            select_branch: select_branch.map(|s| s.value),
            on_success,
            loc: node.loc,
        }),
        _ => None,
    };
    (config, Some(wiring))
}

/// `[a, b]` (each branch arrives on its own name) or `{a: conn_a, b: conn_b}`.
fn branches(node: &Node, d: &mut Diagnostics) -> (Vec<CoalesceBranch>, bool) {
    let before = d.error_count();
    let mut out: Vec<CoalesceBranch> = Vec::new();
    match &node.kind {
        Kind::Seq(items) => {
            for item in items {
                let Some(name) = located_str(item, "a coalesce branch", d) else {
                    continue;
                };
                let name = connection_name(&name, "coalesce branch", d).unwrap_or(name);
                out.push(CoalesceBranch {
                    input: name.clone(),
                    name,
                });
            }
        }
        Kind::Map(_) => {
            let Some(pairs) = string_keyed(node, "`branches`", d) else {
                return (out, false);
            };
            for (name, value) in pairs {
                let name = connection_name(&name, "coalesce branch", d).unwrap_or(name);
                let Some(input) = located_str(value, "a branch's input connection", d) else {
                    continue;
                };
                let input = connection_name(&input, "branch input", d).unwrap_or(input);
                out.push(CoalesceBranch { name, input });
            }
        }
        _ => {
            d.error(
                node.loc,
                format!(
                    "`branches` must be a list of fork branches or a mapping branch → input; \
                     found {}",
                    node.describe()
                ),
            );
            return (out, false);
        }
    }
    let mut seen = HashSet::new();
    out.retain(|b| {
        let first = seen.insert(b.name.value.clone());
        if !first {
            d.error(
                b.name.loc,
                format!(
                    "branch `{}` is listed twice; expected each branch once",
                    b.name.value
                ),
            );
        }
        first
    });
    if out.len() < 2 {
        d.error(
            node.loc,
            format!(
                "`branches` has {} entries; expected at least 2 branches to join",
                out.len()
            ),
        );
    }
    let ok = d.error_count() == before;
    (out, ok)
}
