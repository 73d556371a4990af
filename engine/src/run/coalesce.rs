//! Coalesce nodes (ELSPETH-CONFIG §6): join the branches of one fork into a merged token.
//!
//! The sequencer owns this table and feeds it in source order, so merges happen in a
//! deterministic order whatever order workers finish in. A group is keyed by the coalesce
//! node and the forked token; it resolves once (merge or fail) and is forgotten when every
//! branch is accounted for (arrived or lost), so memory is bounded by the open groups.

use super::worker::{ForkCtx, Token, Walker};
use super::EngineError;
use crate::plan::{CoalescePolicy, MergeStrategy, NodeExec, Plan};
use crate::value::{Row, Value};
use attest_ledger::{Event, Outcome, TokenId};
use std::collections::HashMap;
use std::time::Instant;

struct Group {
    /// Per branch, in configuration order.
    arrived: Vec<Option<Token>>,
    lost: Vec<bool>,
    first_at: Instant,
    resolved: bool,
    /// The forks the merged token is a branch of (the parent's own).
    outer: Vec<ForkCtx>,
    /// Creation order: end-of-source resolution runs in it.
    created: u64,
}

impl Group {
    fn accounted(&self) -> usize {
        self.arrived.iter().filter(|a| a.is_some()).count()
            + self.lost.iter().filter(|l| **l).count()
    }
}

/// Settings of one coalesce node, borrowed from the plan.
struct Spec<'p> {
    name: &'p attest_ledger::NodeId,
    branches: &'p [String],
    policy: CoalescePolicy,
    merge: MergeStrategy,
    timeout: Option<std::time::Duration>,
    on_success: &'p crate::plan::Target,
}

fn spec(plan: &Plan, node: usize) -> Result<Spec<'_>, EngineError> {
    let n = plan
        .nodes
        .get(node)
        .ok_or_else(|| EngineError::Internal(format!("plan has no node {node}")))?;
    match &n.exec {
        NodeExec::Coalesce {
            branches,
            policy,
            merge,
            timeout,
            on_success,
        } => Ok(Spec {
            name: &n.id,
            branches,
            policy: *policy,
            merge: *merge,
            timeout: *timeout,
            on_success,
        }),
        _ => Err(EngineError::Internal(format!(
            "node {} is not a coalesce",
            n.id
        ))),
    }
}

/// What a group's state calls for.
enum Decision {
    Wait,
    Merge,
    Fail(String),
}

fn decide(g: &Group, s: &Spec, closing: bool) -> Decision {
    let n = s.branches.len();
    let arrived = g.arrived.iter().filter(|a| a.is_some()).count();
    let lost = g.lost.iter().filter(|l| **l).count();
    let lost_names = || {
        s.branches
            .iter()
            .zip(&g.lost)
            .filter(|(_, l)| **l)
            .map(|(b, _)| b.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let why = if closing {
        "timed out or the source ended"
    } else {
        ""
    };
    let d = match s.policy {
        CoalescePolicy::RequireAll if arrived == n => Decision::Merge,
        CoalescePolicy::RequireAll if lost > 0 => Decision::Fail(format!(
            "require_all: branch(es) {} did not arrive",
            lost_names()
        )),
        CoalescePolicy::First if arrived > 0 => Decision::Merge,
        CoalescePolicy::First if lost == n => Decision::Fail("first: every branch was lost".into()),
        CoalescePolicy::Quorum(q) if arrived >= q => Decision::Merge,
        CoalescePolicy::Quorum(q) if n - lost < q => Decision::Fail(format!(
            "quorum of {q} unreachable: branch(es) {} did not arrive",
            lost_names()
        )),
        CoalescePolicy::BestEffort if arrived + lost == n || (closing && arrived > 0) => {
            if arrived > 0 {
                Decision::Merge
            } else {
                Decision::Fail("best_effort: no branch arrived".into())
            }
        }
        _ if closing => Decision::Fail(format!(
            "{:?}: {arrived} of {n} branch(es) arrived before the coalesce {why}",
            s.policy
        )),
        _ => Decision::Wait,
    };
    match (d, s.merge) {
        (Decision::Merge, MergeStrategy::Select(i))
            if g.arrived.get(i).is_none_or(|a| a.is_none()) =>
        {
            Decision::Fail(format!(
                "select_branch `{}` had not arrived when the merge triggered",
                s.branches.get(i).map(String::as_str).unwrap_or("?")
            ))
        }
        (d, _) => d,
    }
}

/// The merged row (ELSPETH-CONFIG §6).
fn merged_row(g: &Group, s: &Spec) -> Row {
    match s.merge {
        // Branches in configuration order; a key keeps its first position and takes the
        // value of the last branch that has it.
        MergeStrategy::Union => {
            let mut out = Row::new();
            for t in g.arrived.iter().flatten() {
                for (k, v) in &t.row {
                    out.insert(k.clone(), v.clone());
                }
            }
            out
        }
        MergeStrategy::Nested => {
            let mut out = Row::new();
            for (b, t) in s.branches.iter().zip(&g.arrived) {
                if let Some(t) = t {
                    out.insert(b.clone(), Value::Object(t.row.clone()));
                }
            }
            out
        }
        MergeStrategy::Select(i) => g
            .arrived
            .get(i)
            .and_then(|t| t.as_ref())
            .map(|t| t.row.clone())
            .unwrap_or_default(),
    }
}

#[derive(Default)]
pub struct Coalescer {
    groups: HashMap<(usize, TokenId), Group>,
    created: u64,
}

impl Coalescer {
    /// A token reached coalesce `node`.
    pub fn arrive(
        &mut self,
        plan: &Plan,
        node: usize,
        token: Token,
        w: &mut Walker,
    ) -> Result<(), EngineError> {
        let s = spec(plan, node)?;
        let fork = token.forks.last().cloned();
        let Some(ForkCtx {
            parent,
            branch,
            coalesce: Some(c),
        }) = fork.filter(|f| f.coalesce == Some(node))
        else {
            w.end(
                &token,
                Outcome::Failed {
                    error: format!(
                        "coalesce {}: the token is not a branch of a fork this coalesce joins",
                        s.name
                    ),
                },
            );
            return Ok(());
        };
        debug_assert_eq!(c, node);
        let Some(bi) = s.branches.iter().position(|b| *b == branch) else {
            w.end(
                &token,
                Outcome::Failed {
                    error: format!("coalesce {}: `{branch}` is not one of its branches", s.name),
                },
            );
            return Ok(());
        };
        let outer = token.forks[..token.forks.len() - 1].to_vec();
        let g = self.group(node, &parent, s.branches.len(), outer);
        if g.resolved || g.arrived[bi].is_some() || g.lost[bi] {
            // ELSPETH drops late arrivals; attest records why. The branch is accounted
            // for here, so the token ends without reporting itself lost again.
            if g.arrived[bi].is_none() {
                g.lost[bi] = true;
            }
            let late = Token {
                id: token.id,
                row: Row::new(),
                forks: Vec::new(),
            };
            w.end(
                &late,
                Outcome::Failed {
                    error: format!(
                        "coalesce {}: branch `{branch}` of {parent} arrived after the group was resolved",
                        s.name
                    ),
                },
            );
        } else {
            g.arrived[bi] = Some(token);
        }
        self.settle(plan, node, &parent, false, w)
    }

    /// A branch bound for coalesce `node` ended elsewhere.
    pub fn lose(
        &mut self,
        plan: &Plan,
        node: usize,
        parent: TokenId,
        branch: &str,
        outer: Vec<ForkCtx>,
        w: &mut Walker,
    ) -> Result<(), EngineError> {
        let s = spec(plan, node)?;
        let Some(bi) = s.branches.iter().position(|b| b == branch) else {
            return Ok(());
        };
        let g = self.group(node, &parent, s.branches.len(), outer);
        g.lost[bi] = true;
        self.settle(plan, node, &parent, false, w)
    }

    fn group(
        &mut self,
        node: usize,
        parent: &TokenId,
        n: usize,
        outer: Vec<ForkCtx>,
    ) -> &mut Group {
        let created = &mut self.created;
        self.groups
            .entry((node, parent.clone()))
            .or_insert_with(|| {
                *created += 1;
                Group {
                    arrived: (0..n).map(|_| None).collect(),
                    lost: vec![false; n],
                    first_at: Instant::now(),
                    resolved: false,
                    outer,
                    created: *created,
                }
            })
    }

    /// Applies the policy to one group; `closing` when its time is up (timeout or end of
    /// source).
    fn settle(
        &mut self,
        plan: &Plan,
        node: usize,
        parent: &TokenId,
        closing: bool,
        w: &mut Walker,
    ) -> Result<(), EngineError> {
        let s = spec(plan, node)?;
        let key = (node, parent.clone());
        let Some(g) = self.groups.get_mut(&key) else {
            return Ok(());
        };
        if !g.resolved {
            match decide(g, &s, closing) {
                Decision::Wait => {}
                Decision::Merge => {
                    g.resolved = true;
                    let row = merged_row(g, &s);
                    let merged = TokenId::coalesced(parent, s.name);
                    let parents: Vec<TokenId> =
                        g.arrived.iter().flatten().map(|t| t.id.clone()).collect();
                    w.commit.push(Event::TokensCoalesced {
                        node: s.name.clone(),
                        parents,
                        merged: merged.clone(),
                    });
                    // The merge is the merged token's first state: its input is every
                    // arrived branch's row (by branch), its output the merged row.
                    let mut inputs = Row::new();
                    for (b, t) in s.branches.iter().zip(&g.arrived) {
                        if let Some(t) = t {
                            inputs.insert(b.clone(), Value::Object(t.row.clone()));
                        }
                    }
                    w.completed_state(&merged, s.name, &Value::Object(inputs), &row)?;
                    // The consumed tokens' rows are no longer needed.
                    for a in g.arrived.iter_mut() {
                        if let Some(t) = a.as_mut() {
                            t.row = Row::new();
                        }
                    }
                    let token = Token {
                        id: merged,
                        row,
                        forks: g.outer.clone(),
                    };
                    w.run(token, s.on_success.clone())?;
                }
                Decision::Fail(error) => {
                    g.resolved = true;
                    let error = format!("coalesce {}: {error}", s.name);
                    for t in g.arrived.iter().flatten() {
                        // `end` reports each as lost to an outer coalesce; report once, below.
                        let bare = Token {
                            id: t.id.clone(),
                            row: Row::new(),
                            forks: Vec::new(),
                        };
                        w.end(
                            &bare,
                            Outcome::Failed {
                                error: error.clone(),
                            },
                        );
                    }
                    let outer = g.outer.clone();
                    w.lost(&outer);
                }
            }
        }
        if let Some(g) = self.groups.get(&key) {
            if g.resolved && g.accounted() >= g.arrived.len() {
                self.groups.remove(&key);
            }
        }
        Ok(())
    }

    /// The earliest moment an open group times out.
    pub fn deadline(&self, plan: &Plan) -> Option<Instant> {
        self.groups
            .iter()
            .filter(|(_, g)| !g.resolved)
            .filter_map(|((node, _), g)| Some(g.first_at + spec(plan, *node).ok()?.timeout?))
            .min()
    }

    /// Resolves the groups whose timeout has passed.
    pub fn expire(&mut self, plan: &Plan, now: Instant, w: &mut Walker) -> Result<(), EngineError> {
        let mut due: Vec<(u64, usize, TokenId)> = Vec::new();
        for ((node, parent), g) in &self.groups {
            if g.resolved {
                continue;
            }
            if let Some(t) = spec(plan, *node)?.timeout {
                if g.first_at + t <= now {
                    due.push((g.created, *node, parent.clone()));
                }
            }
        }
        due.sort();
        for (_, node, parent) in due {
            self.settle(plan, node, &parent, true, w)?;
        }
        Ok(())
    }

    /// End of source: every group still waiting resolves now, oldest first.
    pub fn close_all(&mut self, plan: &Plan, w: &mut Walker) -> Result<(), EngineError> {
        let mut open: Vec<(u64, usize, TokenId)> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.resolved)
            .map(|((n, p), g)| (g.created, *n, p.clone()))
            .collect();
        open.sort();
        for (_, node, parent) in open {
            self.settle(plan, node, &parent, true, w)?;
        }
        Ok(())
    }

    /// Groups still waiting for a decision.
    pub fn waiting(&self) -> bool {
        self.groups.values().any(|g| !g.resolved)
    }
}
