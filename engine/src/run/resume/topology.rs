//! Is the pipeline the one the run started with? Compares the plan's nodes (id, kind,
//! plugin, canonical configuration hash) and connections with what the run registered,
//! and names every difference.

use super::ResumeError;
use crate::plan::Plan;
use attest_ledger::{Event, Hash32, Ledger, NodeId, NodeKind, RunId};
use std::collections::{BTreeMap, BTreeSet};

/// A node as registered: kind, plugin, configuration hash.
type NodeSig = (NodeKind, String, Hash32);
type EdgeSig = (NodeId, NodeId, String);

/// What the plan would register.
fn planned(plan: &Plan) -> (BTreeMap<NodeId, NodeSig>, BTreeSet<EdgeSig>) {
    let mut nodes = BTreeMap::new();
    nodes.insert(
        plan.source.id.clone(),
        (
            NodeKind::Source,
            plan.source.plugin.clone(),
            plan.source.config_hash,
        ),
    );
    for n in &plan.nodes {
        nodes.insert(n.id.clone(), (n.kind, n.plugin.clone(), n.config_hash));
    }
    for s in &plan.sinks {
        nodes.insert(
            s.id.clone(),
            (NodeKind::Sink, s.plugin.clone(), s.config_hash),
        );
    }
    (nodes, plan.edges.iter().cloned().collect())
}

/// What the run registered: the events right after its genesis (one commit).
fn recorded(
    ledger: &Ledger,
    run: &RunId,
) -> Result<(BTreeMap<NodeId, NodeSig>, BTreeSet<EdgeSig>), ResumeError> {
    let mut nodes = BTreeMap::new();
    let mut edges = BTreeSet::new();
    ledger.scan_events(run, |seq, e| {
        match e {
            Event::NodeRegistered {
                node,
                kind,
                plugin,
                config_hash,
            } => {
                nodes.insert(node.clone(), (*kind, plugin.clone(), *config_hash));
            }
            Event::EdgeRegistered { from, to, label } => {
                edges.insert((from.clone(), to.clone(), label.clone()));
            }
            _ if seq == 0 => {}
            // The registration is over.
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((nodes, edges))
}

/// Checks the plan against the run's registration. `Ok(false)`: they match. `Ok(true)`:
/// the run registered nothing (it stopped before its registration reached the disk), so
/// the resume registers the plan. Otherwise every difference is listed.
pub fn check(plan: &Plan, ledger: &Ledger, run: &RunId) -> Result<bool, ResumeError> {
    let (rec_nodes, rec_edges) = recorded(ledger, run)?;
    if rec_nodes.is_empty() && rec_edges.is_empty() {
        return Ok(true);
    }
    let (plan_nodes, plan_edges) = planned(plan);
    let mut diffs = Vec::new();
    for (id, (kind, plugin, hash)) in &rec_nodes {
        match plan_nodes.get(id) {
            None => diffs.push(format!(
                "{} `{id}` is no longer in the pipeline",
                kind_name(*kind)
            )),
            Some((k, _, _)) if k != kind => diffs.push(format!(
                "`{id}` was a {}, the pipeline now makes it a {}",
                kind_name(*kind),
                kind_name(*k)
            )),
            Some((_, p, _)) if p != plugin => diffs.push(format!(
                "{} `{id}` used plugin `{plugin}`, the pipeline now says `{p}`",
                kind_name(*kind)
            )),
            Some((_, _, h)) if h != hash => diffs.push(format!(
                "the configuration of {} `{id}` changed",
                kind_name(*kind)
            )),
            Some(_) => {}
        }
    }
    for (id, (kind, _, _)) in &plan_nodes {
        if !rec_nodes.contains_key(id) {
            diffs.push(format!(
                "{} `{id}` was added to the pipeline",
                kind_name(*kind)
            ));
        }
    }
    for (from, to, label) in rec_edges.difference(&plan_edges) {
        diffs.push(format!(
            "the connection {from} -> {to} ({label}) was removed"
        ));
    }
    for (from, to, label) in plan_edges.difference(&rec_edges) {
        diffs.push(format!("the connection {from} -> {to} ({label}) was added"));
    }
    if diffs.is_empty() {
        return Ok(false);
    }
    Err(ResumeError::Refused(format!(
        "the pipeline is not the one run {run} started with: {}; resuming would mix two \
         pipelines in one run (start a new run with `attest run` instead)",
        diffs.join("; ")
    )))
}

fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::Source => "source",
        NodeKind::Transform => "transform",
        NodeKind::Gate => "gate",
        NodeKind::Aggregation => "aggregation",
        NodeKind::Coalesce => "coalesce",
        NodeKind::Sink => "sink",
    }
}
