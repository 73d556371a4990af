//! The pipeline as a DAG (ELSPETH-CONFIG §1.4): nodes are wired by name through
//! connections, each with exactly one producer and one consumer, and the loader refuses any
//! wiring that would leave a row with nowhere to go or a node that no row can reach.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

use super::error::{Diagnostics, Loc, Located};
use super::names::DISCARD;

type L = Located<String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    Source,
    Transform,
    Gate,
    Aggregation,
    Coalesce,
    Sink,
}

impl NodeKind {
    fn noun(self) -> &'static str {
        match self {
            NodeKind::Source => "source",
            NodeKind::Transform => "transform",
            NodeKind::Gate => "gate",
            NodeKind::Aggregation => "aggregation",
            NodeKind::Coalesce => "coalesce",
            NodeKind::Sink => "sink",
        }
    }
}

/// Position of a node in `Graph::nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// Why a row travels along an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeLabel {
    /// `on_success` (source, transform, aggregation, coalesce).
    Success,
    /// `on_error` of a transform or aggregation.
    Error,
    /// The source's `on_validation_failure`.
    ValidationFailure,
    /// A sink's `on_write_failure`.
    WriteFailure,
    /// A gate route, by label.
    Route(String),
    /// A gate's `fork_to` branch.
    Fork(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub label: EdgeLabel,
    pub to: NodeId,
    /// The named connection the edge runs through; `None` when it names a sink directly or
    /// is a fork branch delivered straight to a sink or coalesce.
    pub connection: Option<String>,
    /// For an edge that enters a coalesce: the branch it delivers.
    pub branch: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphNode {
    pub id: NodeId,
    pub kind: NodeKind,
    /// The node's name; `source` for the source (which has no name in the file).
    pub name: String,
    /// Index into the configuration's list for this kind (`transforms`, `gates`, ...,
    /// `sinks`); 0 for the source.
    pub index: usize,
    /// The connection this node consumes (`input`); `None` for the source, coalesces
    /// (which receive branches) and sinks.
    pub input: Option<String>,
    /// Outgoing edges: `on_success` first, then routes in file order, fork branches in
    /// `fork_to` order, then error/validation/write-failure edges.
    pub edges: Vec<Edge>,
}

/// The resolved DAG. `nodes` are in a deterministic topological order: every node comes
/// after all nodes with an edge into it; ties are broken by the order of declaration
/// (source, transforms, gates, aggregations, coalesce, sinks, each in file order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
}

impl Graph {
    pub fn node(&self, id: NodeId) -> Option<&GraphNode> {
        self.nodes.get(id.0)
    }

    pub fn source(&self) -> Option<&GraphNode> {
        self.nodes.iter().find(|n| n.kind == NodeKind::Source)
    }

    pub fn find(&self, kind: NodeKind, name: &str) -> Option<&GraphNode> {
        self.nodes.iter().find(|n| n.kind == kind && n.name == name)
    }
}

// ---- what the section decoders hand over ----

pub(crate) struct SourceW {
    pub loc: Loc,
    pub on_success: Option<L>,
    pub on_validation_failure: Option<L>,
}

/// A transform or aggregation.
pub(crate) struct StepW {
    pub name: L,
    pub input: Option<L>,
    pub on_success: Option<L>,
    pub on_error: Option<L>,
}

pub(crate) struct GateW {
    pub name: L,
    pub input: Option<L>,
    /// label → destination (a sink, a connection, or `fork`).
    pub routes: Vec<(L, L)>,
    pub fork_to: Vec<L>,
}

pub(crate) struct CoalesceW {
    pub name: L,
    /// branch → the connection it arrives on (the branch itself when it comes straight
    /// from the fork).
    pub branches: Vec<(L, L)>,
    pub on_success: Option<L>,
}

pub(crate) struct SinkW {
    pub name: L,
    pub on_write_failure: Option<L>,
}

pub(crate) struct Wiring {
    pub source: SourceW,
    pub transforms: Vec<StepW>,
    pub gates: Vec<GateW>,
    pub aggregations: Vec<StepW>,
    pub coalesces: Vec<CoalesceW>,
    pub sinks: Vec<SinkW>,
    /// Set when some node lacked a wiring key (already reported): reachability would then
    /// only repeat that error in other words, so it is not checked.
    pub incomplete: bool,
}

struct Decl {
    kind: NodeKind,
    name: String,
    index: usize,
    input: Option<String>,
    /// Where "this node is unreachable / in a cycle" is reported.
    loc: Loc,
}

struct PendingEdge {
    from: usize,
    label: EdgeLabel,

    to: usize,
    connection: Option<String>,
    branch: Option<String>,
}

/// A node that puts rows on a connection.
struct Producer {
    node: usize,
    label: EdgeLabel,
    loc: Loc,
    what: String,
}

/// Builds and checks the graph; `None` when any wiring error was recorded.
pub(crate) fn build(w: &Wiring, d: &mut Diagnostics) -> Option<Graph> {
    let errors_before = d.error_count();
    let mut decls: Vec<Decl> = vec![Decl {
        kind: NodeKind::Source,
        name: "source".to_string(),
        index: 0,
        input: None,
        loc: w.source.loc,
    }];
    let transform_ids = step_ids(&mut decls, NodeKind::Transform, &w.transforms);
    let gate_ids: Vec<usize> = w
        .gates
        .iter()
        .enumerate()
        .map(|(i, g)| {
            decls.push(Decl {
                kind: NodeKind::Gate,
                name: g.name.value.clone(),
                index: i,
                input: g.input.as_ref().map(|x| x.value.clone()),
                loc: g.name.loc,
            });
            decls.len() - 1
        })
        .collect();
    let aggregation_ids = step_ids(&mut decls, NodeKind::Aggregation, &w.aggregations);
    let coalesce_ids: Vec<usize> = w
        .coalesces
        .iter()
        .enumerate()
        .map(|(i, c)| {
            decls.push(Decl {
                kind: NodeKind::Coalesce,
                name: c.name.value.clone(),
                index: i,
                input: None,
                loc: c.name.loc,
            });
            decls.len() - 1
        })
        .collect();
    let mut sink_ids: HashMap<&str, usize> = HashMap::new();
    for (i, s) in w.sinks.iter().enumerate() {
        decls.push(Decl {
            kind: NodeKind::Sink,
            name: s.name.value.clone(),
            index: i,
            input: None,
            loc: s.name.loc,
        });
        sink_ids
            .entry(s.name.value.as_str())
            .or_insert(decls.len() - 1);
    }
    let sink_list = || {
        w.sinks
            .iter()
            .map(|s| s.name.value.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };

    let mut edges: Vec<PendingEdge> = Vec::new();

    // Consumers: every `input`, and every coalesce branch that arrives on a connection.
    let mut consumers: HashMap<String, (usize, Loc)> = HashMap::new();
    let mut add_consumer = |conn: &L, node: usize, d: &mut Diagnostics, decls: &[Decl]| {
        if sink_ids.contains_key(conn.value.as_str()) {
            d.error(
                conn.loc,
                format!(
                    "`{}` is a sink, so no node can take it as input; expected a connection name \
                     that is not a sink",
                    conn.value
                ),
            );
            return;
        }
        if let Some((other, _)) = consumers.get(&conn.value) {
            let other = &decls[*other];
            d.error(
                conn.loc,
                format!(
                    "connection `{}` is already consumed by {} `{}`; expected exactly one consumer \
                     per connection (fan-out needs a gate with fork_to)",
                    conn.value,
                    other.kind.noun(),
                    other.name
                ),
            );
            return;
        }
        consumers.insert(conn.value.clone(), (node, conn.loc));
    };
    for (s, &id) in w.transforms.iter().zip(&transform_ids) {
        if let Some(input) = &s.input {
            add_consumer(input, id, d, &decls);
        }
    }
    for (g, &id) in w.gates.iter().zip(&gate_ids) {
        if let Some(input) = &g.input {
            add_consumer(input, id, d, &decls);
        }
    }
    for (s, &id) in w.aggregations.iter().zip(&aggregation_ids) {
        if let Some(input) = &s.input {
            add_consumer(input, id, d, &decls);
        }
    }
    for (c, &id) in w.coalesces.iter().zip(&coalesce_ids) {
        for (branch, input) in &c.branches {
            if branch.value != input.value {
                add_consumer(input, id, d, &decls);
            }
        }
    }

    // Producers, and edges that go straight to sinks.
    let mut producers: HashMap<String, Producer> = HashMap::new();
    let mut produced_order: Vec<String> = Vec::new();
    let mut produce = |conn: &L,
                       node: usize,
                       label: EdgeLabel,
                       what: String,
                       d: &mut Diagnostics,
                       decls: &[Decl]| {
        if let Some(first) = producers.get(&conn.value) {
            let other = &decls[first.node];
            d.error(
                conn.loc,
                format!(
                    "connection `{}` is already produced by {} `{}`; expected exactly one producer \
                     per connection (fan-in needs a coalesce)",
                    conn.value,
                    other.kind.noun(),
                    other.name
                ),
            );
            return;
        }
        produced_order.push(conn.value.clone());
        producers.insert(
            conn.value.clone(),
            Producer {
                node,
                label,
                loc: conn.loc,
                what,
            },
        );
    };
    // `on_success`-like targets: a sink (terminal edge) or a connection.
    let mut success = |target: &L,
                       node: usize,
                       what: String,
                       edges: &mut Vec<PendingEdge>,
                       d: &mut Diagnostics| {
        if let Some(&sink) = sink_ids.get(target.value.as_str()) {
            edges.push(PendingEdge {
                from: node,
                label: EdgeLabel::Success,
                to: sink,
                connection: None,
                branch: None,
            });
        } else {
            produce(target, node, EdgeLabel::Success, what, d, &decls);
        }
    };

    let processing = !(w.transforms.is_empty()
        && w.gates.is_empty()
        && w.aggregations.is_empty()
        && w.coalesces.is_empty());
    if let Some(target) = &w.source.on_success {
        if processing && sink_ids.contains_key(target.value.as_str()) {
            d.error(
                target.loc,
                format!(
                    "the source's on_success names the sink `{}`, but the pipeline has processing \
                     nodes; expected a connection that the first node takes as input",
                    target.value
                ),
            );
        }
        success(target, 0, "source's on_success".to_string(), &mut edges, d);
    }
    for (s, &id) in w.transforms.iter().zip(&transform_ids) {
        if let Some(target) = &s.on_success {
            let what = format!("on_success of transform `{}`", s.name.value);
            success(target, id, what, &mut edges, d);
        }
    }
    for (s, &id) in w.aggregations.iter().zip(&aggregation_ids) {
        // An aggregation without on_success puts its output on a connection named after it.
        let target = s.on_success.clone().unwrap_or_else(|| s.name.clone());
        let what = format!("output of aggregation `{}`", s.name.value);
        success(&target, id, what, &mut edges, d);
    }
    for (c, &id) in w.coalesces.iter().zip(&coalesce_ids) {
        match &c.on_success {
            Some(target) => match sink_ids.get(target.value.as_str()) {
                Some(&sink) => edges.push(PendingEdge {
                    from: id,
                    label: EdgeLabel::Success,
                    to: sink,
                    connection: None,
                    branch: None,
                }),
                None => d.error(
                    target.loc,
                    format!(
                        "on_success of coalesce `{}` is `{}`, which is not a sink; expected one of: \
                         {} (or omit on_success to send merged rows on the connection `{}`)",
                        c.name.value,
                        target.value,
                        sink_list(),
                        c.name.value
                    ),
                ),
            },
            None => {
                let what = format!("output of coalesce `{}`", c.name.value);
                produce(&c.name, id, EdgeLabel::Success, what, d, &decls);
            }
        }
    }

    // Gate routes. Labels of one gate may share a destination connection.
    let mut shared_routes: Vec<(usize, String, String)> = Vec::new();
    for (g, &id) in w.gates.iter().zip(&gate_ids) {
        let mut own: HashSet<&str> = HashSet::new();
        for (label, dest) in &g.routes {
            if dest.value == "fork" {
                continue;
            }
            if let Some(&sink) = sink_ids.get(dest.value.as_str()) {
                edges.push(PendingEdge {
                    from: id,
                    label: EdgeLabel::Route(label.value.clone()),
                    to: sink,
                    connection: None,
                    branch: None,
                });
            } else if own.insert(dest.value.as_str()) {
                let what = format!(
                    "route `{}` of gate `{}` (a destination must be a sink or a connection that a \
                     node takes as input)",
                    label.value, g.name.value
                );
                produce(
                    dest,
                    id,
                    EdgeLabel::Route(label.value.clone()),
                    what,
                    d,
                    &decls,
                );
            } else {
                // Another label to a connection this gate already produces: one producer,
                // but the label still needs its own edge.
                shared_routes.push((id, label.value.clone(), dest.value.clone()));
            }
        }
    }

    // Forks and coalesce branches.
    let mut fork_branches: HashMap<&str, (usize, Loc)> = HashMap::new();
    for (g, &id) in w.gates.iter().zip(&gate_ids) {
        for branch in &g.fork_to {
            if let Some((other, _)) = fork_branches.get(branch.value.as_str()) {
                d.error(
                    branch.loc,
                    format!(
                        "fork branch `{}` is already a branch of gate `{}`; expected branch names \
                         unique across all gates",
                        branch.value, decls[*other].name
                    ),
                );
                continue;
            }
            fork_branches.insert(branch.value.as_str(), (id, branch.loc));
        }
    }
    let mut branch_owner: HashMap<&str, (usize, &L)> = HashMap::new();
    for (c, &id) in w.coalesces.iter().zip(&coalesce_ids) {
        for (branch, input) in &c.branches {
            if let Some((other, _)) = branch_owner.get(branch.value.as_str()) {
                d.error(
                    branch.loc,
                    format!(
                        "branch `{}` already belongs to coalesce `{}`; expected each branch in one \
                         coalesce",
                        branch.value, decls[*other].name
                    ),
                );
                continue;
            }
            if sink_ids.contains_key(branch.value.as_str()) {
                d.error(
                    branch.loc,
                    format!(
                        "coalesce branch `{}` is also a sink name; expected branch and sink names \
                         to differ",
                        branch.value
                    ),
                );
                continue;
            }
            if !fork_branches.contains_key(branch.value.as_str()) {
                d.error(
                    branch.loc,
                    format!(
                        "coalesce branch `{}` is not in any gate's fork_to; expected a fork branch \
                         name",
                        branch.value
                    ),
                );
            }
            branch_owner.insert(branch.value.as_str(), (id, input));
        }
    }
    for (g, &id) in w.gates.iter().zip(&gate_ids) {
        for branch in &g.fork_to {
            if fork_branches.get(branch.value.as_str()).map(|(o, _)| *o) != Some(id) {
                continue; // a duplicate, reported above
            }
            if let Some(&sink) = sink_ids.get(branch.value.as_str()) {
                edges.push(PendingEdge {
                    from: id,
                    label: EdgeLabel::Fork(branch.value.clone()),
                    to: sink,
                    connection: None,
                    branch: None,
                });
            } else if let Some((coalesce, input)) = branch_owner.get(branch.value.as_str()) {
                if input.value == branch.value {
                    edges.push(PendingEdge {
                        from: id,
                        label: EdgeLabel::Fork(branch.value.clone()),
                        to: *coalesce,
                        connection: None,
                        branch: Some(branch.value.clone()),
                    });
                } else {
                    // The branch runs through a chain of nodes before reaching the coalesce.
                    let what = format!(
                        "fork branch `{}` of gate `{}` (it feeds coalesce `{}` through `{}`)",
                        branch.value, g.name.value, decls[*coalesce].name, input.value
                    );
                    produce(
                        branch,
                        id,
                        EdgeLabel::Fork(branch.value.clone()),
                        what,
                        d,
                        &decls,
                    );
                }
            } else {
                d.error(
                    branch.loc,
                    format!(
                        "fork branch `{}` is neither a coalesce branch nor a sink; expected the \
                         name of a sink or of a branch in a coalesce",
                        branch.value
                    ),
                );
            }
        }
    }

    // Connect producers to consumers.
    let branch_of_input: HashMap<&str, &str> = w
        .coalesces
        .iter()
        .flat_map(|c| c.branches.iter())
        .filter(|(b, i)| b.value != i.value)
        .map(|(b, i)| (i.value.as_str(), b.value.as_str()))
        .collect();
    for conn in &produced_order {
        let Some(p) = producers.get(conn) else {
            continue;
        };
        match consumers.get(conn) {
            Some((consumer, _)) => edges.push(PendingEdge {
                from: p.node,
                label: p.label.clone(),
                to: *consumer,
                connection: Some(conn.clone()),
                branch: (decls[*consumer].kind == NodeKind::Coalesce)
                    .then(|| branch_of_input.get(conn.as_str()).map(|b| b.to_string()))
                    .flatten(),
            }),
            None => d.error(
                p.loc,
                format!(
                    "nothing consumes `{conn}`, the {}; expected a sink named `{conn}` or a node \
                     with `input: {conn}` (sinks: {})",
                    p.what,
                    sink_list()
                ),
            ),
        }
    }
    for (gate, label, conn) in shared_routes {
        if let Some((consumer, _)) = consumers.get(&conn) {
            edges.push(PendingEdge {
                from: gate,
                label: EdgeLabel::Route(label),
                to: *consumer,
                connection: Some(conn),
                branch: None,
            });
        }
    }
    let mut unproduced: Vec<(&String, &(usize, Loc))> = consumers
        .iter()
        .filter(|(conn, _)| !producers.contains_key(*conn))
        .collect();
    unproduced.sort_by_key(|(_, (_, loc))| *loc);
    for (conn, (node, loc)) in unproduced {
        let n = &decls[*node];
        d.error(
            *loc,
            format!(
                "no node produces `{conn}`, the input of {} `{}`; expected an on_success, route \
                 or fork branch named `{conn}`",
                n.kind.noun(),
                n.name
            ),
        );
    }

    // Error paths: `discard` or a sink.
    let failure_target = |target: &Option<L>,
                          from: usize,
                          label: EdgeLabel,
                          key: &str,
                          edges: &mut Vec<PendingEdge>,
                          d: &mut Diagnostics| {
        let Some(target) = target else { return };
        if target.value == DISCARD {
            return;
        }
        match sink_ids.get(target.value.as_str()) {
            Some(&sink) => edges.push(PendingEdge {
                from,
                label,
                to: sink,
                connection: None,
                branch: None,
            }),
            None => d.error(
                target.loc,
                format!(
                    "{key} names `{}`, which is not a sink; expected `discard` or one of: {}",
                    target.value,
                    sink_list()
                ),
            ),
        }
    };
    failure_target(
        &w.source.on_validation_failure,
        0,
        EdgeLabel::ValidationFailure,
        "on_validation_failure",
        &mut edges,
        d,
    );
    for (s, &id) in w.transforms.iter().zip(&transform_ids) {
        failure_target(&s.on_error, id, EdgeLabel::Error, "on_error", &mut edges, d);
    }
    for (s, &id) in w.aggregations.iter().zip(&aggregation_ids) {
        failure_target(&s.on_error, id, EdgeLabel::Error, "on_error", &mut edges, d);
    }
    let failsink_of: HashMap<&str, &L> = w
        .sinks
        .iter()
        .filter_map(|s| {
            s.on_write_failure
                .as_ref()
                .map(|t| (s.name.value.as_str(), t))
        })
        .collect();
    for s in &w.sinks {
        let Some(&id) = sink_ids.get(s.name.value.as_str()) else {
            continue;
        };
        if let Some(target) = &s.on_write_failure {
            if target.value == s.name.value {
                d.error(
                    target.loc,
                    format!(
                        "sink `{}` names itself in on_write_failure; expected `discard` or another \
                         sink",
                        s.name.value
                    ),
                );
                continue;
            }
            if let Some(next) = failsink_of.get(target.value.as_str()) {
                if next.value != DISCARD {
                    d.error(
                        target.loc,
                        format!(
                            "`{}` is a failsink but has its own on_write_failure `{}`; expected a \
                             failsink's on_write_failure to be `discard`",
                            target.value, next.value
                        ),
                    );
                    continue;
                }
            }
        }
        failure_target(
            &s.on_write_failure,
            id,
            EdgeLabel::WriteFailure,
            "on_write_failure",
            &mut edges,
            d,
        );
    }

    let wiring_ok = d.error_count() == errors_before;

    // Adjacency in declaration order of edges.
    let n = decls.len();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, e) in edges.iter().enumerate() {
        out[e.from].push(i);
    }
    let order = topological(n, &edges, &out);
    if order.len() < n {
        report_cycles(&decls, &edges, &out, &order, d);
    } else if wiring_ok && !w.incomplete {
        report_unreachable(&decls, &edges, &out, d);
    }
    if d.error_count() > errors_before || w.incomplete {
        return None;
    }

    let mut new_id = vec![0usize; n];
    for (pos, &old) in order.iter().enumerate() {
        new_id[old] = pos;
    }
    let nodes = order
        .iter()
        .enumerate()
        .map(|(pos, &old)| {
            let decl = &decls[old];
            let mut node_edges: Vec<&PendingEdge> = out[old].iter().map(|&i| &edges[i]).collect();
            // Routes in file order and forks in fork_to order, whatever order they were
            // resolved in.
            let gate = (decl.kind == NodeKind::Gate)
                .then(|| w.gates.get(decl.index))
                .flatten();
            node_edges.sort_by_key(|e| {
                let position = match (&e.label, gate) {
                    (EdgeLabel::Route(label), Some(g)) => {
                        g.routes.iter().position(|(l, _)| &l.value == label)
                    }
                    (EdgeLabel::Fork(branch), Some(g)) => {
                        g.fork_to.iter().position(|b| &b.value == branch)
                    }
                    _ => None,
                };
                (edge_rank(&e.label), position.unwrap_or(0))
            });
            GraphNode {
                id: NodeId(pos),
                kind: decl.kind,
                name: decl.name.clone(),
                index: decl.index,
                input: decl.input.clone(),
                edges: node_edges
                    .into_iter()
                    .map(|e| Edge {
                        label: e.label.clone(),
                        to: NodeId(new_id[e.to]),
                        connection: e.connection.clone(),
                        branch: e.branch.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    Some(Graph { nodes })
}

/// Success first, then routes and forks (kept in file order by the stable sort), then the
/// failure paths.
fn edge_rank(label: &EdgeLabel) -> u8 {
    match label {
        EdgeLabel::Success => 0,
        EdgeLabel::Route(_) => 1,
        EdgeLabel::Fork(_) => 2,
        EdgeLabel::Error => 3,
        EdgeLabel::ValidationFailure => 4,
        EdgeLabel::WriteFailure => 5,
    }
}

/// Kahn's algorithm, always taking the ready node declared first. Returns fewer than `n`
/// nodes when there is a cycle.
fn topological(n: usize, edges: &[PendingEdge], out: &[Vec<usize>]) -> Vec<usize> {
    let mut indegree = vec![0usize; n];
    for e in edges {
        indegree[e.to] += 1;
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(v)) = ready.pop() {
        order.push(v);
        for &ei in &out[v] {
            let t = edges[ei].to;
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push(Reverse(t));
            }
        }
    }
    order
}

fn reach_from(
    start: usize,
    edges: &[PendingEdge],
    out: &[Vec<usize>],
    allowed: &dyn Fn(&PendingEdge) -> bool,
) -> Vec<bool> {
    let mut seen = vec![false; out.len()];
    let mut queue = VecDeque::from([start]);
    seen[start] = true;
    while let Some(v) = queue.pop_front() {
        for &ei in &out[v] {
            let e = &edges[ei];
            if allowed(e) && !seen[e.to] {
                seen[e.to] = true;
                queue.push_back(e.to);
            }
        }
    }
    seen
}

/// One error per strongly connected group of nodes, at the first-declared member.
fn report_cycles(
    decls: &[Decl],
    edges: &[PendingEdge],
    out: &[Vec<usize>],
    order: &[usize],
    d: &mut Diagnostics,
) {
    let sorted: HashSet<usize> = order.iter().copied().collect();
    let rest: Vec<usize> = (0..decls.len()).filter(|i| !sorted.contains(i)).collect();
    let any = |_: &PendingEdge| true;
    let reach: HashMap<usize, Vec<bool>> = rest
        .iter()
        .map(|&v| {
            // Reachability in one or more steps, so a node is on a cycle iff it reaches itself.
            let mut r = vec![false; decls.len()];
            for &ei in &out[v] {
                let from_next = reach_from(edges[ei].to, edges, out, &any);
                for (i, hit) in from_next.into_iter().enumerate() {
                    r[i] |= hit;
                }
            }
            (v, r)
        })
        .collect();
    let mut reported: HashSet<usize> = HashSet::new();
    for &v in &rest {
        if reported.contains(&v) || !reach[&v][v] {
            continue;
        }
        let members: Vec<usize> = rest
            .iter()
            .copied()
            .filter(|&u| reach[&v][u] && reach[&u][v])
            .collect();
        reported.extend(members.iter().copied());
        let names: Vec<String> = members
            .iter()
            .map(|&u| format!("{} `{}`", decls[u].kind.noun(), decls[u].name))
            .collect();
        d.error(
            decls[v].loc,
            format!(
                "cycle: {} feed each other; expected connections to lead from the source to the \
                 sinks without coming back",
                names.join(", ")
            ),
        );
    }
}

fn step_ids(decls: &mut Vec<Decl>, kind: NodeKind, steps: &[StepW]) -> Vec<usize> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            decls.push(Decl {
                kind,
                name: s.name.value.clone(),
                index: i,
                input: s.input.as_ref().map(|x| x.value.clone()),
                loc: s.name.loc,
            });
            decls.len() - 1
        })
        .collect()
}

fn report_unreachable(
    decls: &[Decl],
    edges: &[PendingEdge],
    out: &[Vec<usize>],
    d: &mut Diagnostics,
) {
    // As in ELSPETH, an aggregation's on_error does not make a sink reachable: that path is
    // never taken (a failed batch's rows end FAILED).
    let allowed = |e: &PendingEdge| {
        !(e.label == EdgeLabel::Error && decls[e.from].kind == NodeKind::Aggregation)
    };
    let seen = reach_from(0, edges, out, &allowed);
    for (i, decl) in decls.iter().enumerate() {
        if !seen[i] {
            d.error(
                decl.loc,
                format!(
                    "{} `{}` is unreachable from the source; expected some on_success, route, fork \
                     branch or error path to lead to it",
                    decl.kind.noun(),
                    decl.name
                ),
            );
        }
    }
}
