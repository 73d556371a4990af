//! Comparing a re-execution with the record, id for id.
//!
//! Every event that states a result is reduced to a [`Key`] (what it is about: a state, a
//! route, a token's end, a batch, an artifact, ...) and a [`Val`] (what it says, without
//! timings). Identifiers are derived from the run's structure, so the re-execution's events
//! have the same keys as the record's. The record's are loaded first, each with its seq;
//! the re-execution's are then matched as the scratch ledger accepts them, in whatever
//! order the workers produce them. What differs, what the re-execution never produced and
//! what it produced beyond the record are divergences; the one reported is the first in
//! the record's order.

use attest_ledger::{
    BatchId, BatchOutputs, CallOutcome, Event, FinalStatus, ForkChild, Hash32, NodeId, Outcome,
    StateId, StateResult, TokenId,
};
use hashbrown::HashMap;
use serde::Serialize;
use std::collections::HashSet;
use std::fmt;

/// Stable divergence codes: part of the command-line contract (`docs/replay.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DivergenceCode {
    /// A source row the run accepted is now refused, or the reverse, or its error differs.
    ValidationDiverged,
    /// A state received another input than the recorded one.
    InputDiverged,
    /// A state's result differs (output hash, or failed / completed, or the error), or the
    /// state was not re-executed, or re-execution made a state the record does not have.
    OutputDiverged,
    /// A routing decision differs (label or destinations), or is missing or extra.
    RouteDiverged,
    /// A token ended otherwise (outcome, sink and ordinal, fork, expansion, coalesce).
    OutcomeDiverged,
    /// A batch was formed, filled or completed otherwise.
    BatchDiverged,
    /// A sink's artifact has another content hash, size or row count.
    ArtifactDiverged,
    /// Re-execution made a call the record does not have, or did not make a recorded one.
    CallMissing,
    /// A call's request (or its recorded answer) differs.
    CallDiverged,
    /// The run ended otherwise (completed / failed), or re-execution itself failed.
    RunDiverged,
}

impl DivergenceCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DivergenceCode::ValidationDiverged => "VALIDATION_DIVERGED",
            DivergenceCode::InputDiverged => "INPUT_DIVERGED",
            DivergenceCode::OutputDiverged => "OUTPUT_DIVERGED",
            DivergenceCode::RouteDiverged => "ROUTE_DIVERGED",
            DivergenceCode::OutcomeDiverged => "OUTCOME_DIVERGED",
            DivergenceCode::BatchDiverged => "BATCH_DIVERGED",
            DivergenceCode::ArtifactDiverged => "ARTIFACT_DIVERGED",
            DivergenceCode::CallMissing => "CALL_MISSING",
            DivergenceCode::CallDiverged => "CALL_DIVERGED",
            DivergenceCode::RunDiverged => "RUN_DIVERGED",
        }
    }
}

impl fmt::Display for DivergenceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One divergence: where in the record (seq, node, token), what the record says and what
/// re-execution found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub code: DivergenceCode,
    /// The record's event that differs; `None` for what only the re-execution has.
    pub seq: Option<u64>,
    pub node: Option<String>,
    pub token: Option<String>,
    pub expected: String,
    pub found: String,
    pub message: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(seq) = self.seq {
            write!(f, " at seq {seq}")?;
        }
        if let Some(node) = &self.node {
            write!(f, ", node {node}")?;
        }
        if let Some(token) = &self.token {
            write!(f, ", token {token}")?;
        }
        write!(
            f,
            ": {} (expected {}, found {})",
            self.message, self.expected, self.found
        )
    }
}

/// What an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Validation(u64),
    Opened(StateId),
    Closed(StateId),
    Call(StateId, u32),
    CallDone(StateId, u32),
    Route(StateId, TokenId),
    /// A token's end: its outcome, or the fork or expansion it ended in.
    Terminal(TokenId),
    /// The coalesce that made a merged token.
    Coalesced(TokenId),
    BatchOpened(BatchId),
    Member(BatchId, u32),
    BatchDone(BatchId),
    /// The n-th artifact (from 0) of a sink.
    Artifact(NodeId, u64),
    Finished,
}

/// What an event says, without timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Val {
    Error(String),
    Input(Hash32),
    Result(StateResult),
    Call {
        kind: String,
        request: Hash32,
        served: Option<TokenId>,
    },
    CallDone {
        outcome: CallOutcome,
        response: Option<Hash32>,
    },
    Route {
        label: String,
        to: Vec<NodeId>,
    },
    Outcome(Outcome),
    Forked(Vec<ForkChild>),
    Expanded(Vec<TokenId>),
    Coalesced {
        node: NodeId,
        parents: Vec<TokenId>,
    },
    Node(NodeId),
    Member(TokenId),
    BatchDone {
        trigger: String,
        state: StateId,
        outputs: BatchOutputs,
    },
    Artifact {
        content_hash: Hash32,
        size: u64,
        rows: u64,
    },
    Finished(FinalStatus),
}

/// Turns events into keys and values; counts artifacts per sink to key them.
#[derive(Default)]
pub(crate) struct Keyer {
    artifacts: HashMap<NodeId, u64>,
}

impl Keyer {
    /// The key and value of an event that states a result; `None` for the others (run
    /// start, topology, ingestion, checkpoints, interruptions).
    pub(crate) fn key_val(&mut self, event: &Event) -> Option<(Key, Val)> {
        Some(match event {
            Event::ValidationFailed { row, error } => {
                (Key::Validation(*row), Val::Error(error.clone()))
            }
            Event::StateOpened { state, input } => (Key::Opened(state.clone()), Val::Input(*input)),
            Event::StateClosed { state, result, .. } => {
                (Key::Closed(state.clone()), Val::Result(result.clone()))
            }
            Event::CallAllocated {
                state,
                index,
                kind,
                request,
                served,
            } => (
                Key::Call(state.clone(), *index),
                Val::Call {
                    kind: kind.clone(),
                    request: *request,
                    served: served.clone(),
                },
            ),
            Event::CallCompleted {
                state,
                index,
                outcome,
                response,
                ..
            } => (
                Key::CallDone(state.clone(), *index),
                Val::CallDone {
                    outcome: outcome.clone(),
                    response: *response,
                },
            ),
            Event::RouteDecided {
                state,
                token,
                label,
                to,
            } => (
                Key::Route(state.clone(), token.clone()),
                Val::Route {
                    label: label.clone(),
                    to: to.clone(),
                },
            ),
            Event::TokenOutcome { token, outcome } => {
                (Key::Terminal(token.clone()), Val::Outcome(outcome.clone()))
            }
            Event::TokenForked { parent, children } => {
                (Key::Terminal(parent.clone()), Val::Forked(children.clone()))
            }
            Event::TokenExpanded { parent, children } => (
                Key::Terminal(parent.clone()),
                Val::Expanded(children.clone()),
            ),
            Event::TokensCoalesced {
                node,
                parents,
                merged,
            } => (
                Key::Coalesced(merged.clone()),
                Val::Coalesced {
                    node: node.clone(),
                    parents: parents.clone(),
                },
            ),
            Event::BatchOpened { batch, node } => {
                (Key::BatchOpened(batch.clone()), Val::Node(node.clone()))
            }
            Event::BatchMemberAdded {
                batch,
                token,
                ordinal,
            } => (
                Key::Member(batch.clone(), *ordinal),
                Val::Member(token.clone()),
            ),
            Event::BatchCompleted {
                batch,
                trigger,
                state,
                outputs,
            } => (
                Key::BatchDone(batch.clone()),
                Val::BatchDone {
                    trigger: trigger.clone(),
                    state: state.clone(),
                    outputs: outputs.clone(),
                },
            ),
            Event::ArtifactWritten {
                sink,
                content_hash,
                size,
                rows,
                ..
            } => {
                let n = self.artifacts.entry(sink.clone()).or_default();
                let key = Key::Artifact(sink.clone(), *n);
                *n += 1;
                (
                    key,
                    Val::Artifact {
                        content_hash: *content_hash,
                        size: *size,
                        rows: *rows,
                    },
                )
            }
            Event::RunFinished { status } => (Key::Finished, Val::Finished(*status)),
            Event::RunStarted { .. }
            | Event::NodeRegistered { .. }
            | Event::EdgeRegistered { .. }
            | Event::RowIngested { .. }
            | Event::RowDetail { .. }
            | Event::Checkpoint { .. }
            | Event::RunInterrupted { .. }
            | Event::RunResumed { .. } => return None,
        })
    }
}

/// How the comparison treats what it cannot compare in full.
#[derive(Clone, Debug, Default)]
pub(crate) struct Leniency {
    /// The record stops early (the run failed or was interrupted): what re-execution did
    /// beyond it is not a divergence.
    pub ignore_extras: bool,
    /// Sinks whose file bytes re-execution cannot reproduce (append mode: the file held
    /// content from before the run; `headers: original`: the source's header text is not
    /// in the record): only their row counts are compared.
    pub rows_only: HashSet<NodeId>,
    /// (re-execution's path, the record's path) of each sink's file, longest first: the
    /// errors of rows a sink refused name its file.
    pub sink_paths: Vec<(String, String)>,
}

/// The record's events by key, then matched against the re-execution's.
pub(crate) struct Comparator {
    expected: HashMap<Key, (u64, Val)>,
    keyer: Keyer,
    leniency: Leniency,
    /// The divergence earliest in the record (or, failing any, the first extra).
    first: Option<Divergence>,
    first_extra: Option<Divergence>,
    /// The seq of each row's `RowIngested`: where a validation failure only re-execution
    /// has belongs in the record's order.
    row_seq: Vec<u64>,
    divergences: u64,
    compared: u64,
    states: u64,
    events: u64,
}

/// What a comparison found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// The first divergence in the record's order, or the first thing only re-execution
    /// has when the record has no divergence.
    pub first: Option<Divergence>,
    pub divergences: u64,
    /// Record events matched with a re-executed one.
    pub compared: u64,
    /// States the re-execution closed.
    pub states: u64,
    /// Events the re-execution produced.
    pub events: u64,
}

impl Comparator {
    pub(crate) fn new(leniency: Leniency) -> Comparator {
        Comparator {
            expected: HashMap::new(),
            keyer: Keyer::default(),
            leniency,
            first: None,
            first_extra: None,
            row_seq: Vec::new(),
            divergences: 0,
            compared: 0,
            states: 0,
            events: 0,
        }
    }

    /// The same comparator, treating what it cannot compare in full as `leniency` says.
    pub(crate) fn with_leniency(mut self, leniency: Leniency) -> Comparator {
        self.leniency = leniency;
        self
    }

    /// Loads a record event (in seq order).
    pub(crate) fn expect(&mut self, seq: u64, event: &Event) {
        if let Event::RowIngested { .. } = event {
            self.row_seq.push(seq);
        }
        if let Some((key, val)) = self.keyer.key_val(event) {
            self.expected.insert(key, (seq, val));
        }
    }

    /// Record events that will be compared.
    pub(crate) fn expected_len(&self) -> usize {
        self.expected.len()
    }

    /// Resets the artifact count: the re-execution's events are keyed from scratch.
    pub(crate) fn start_observing(&mut self) {
        self.keyer = Keyer::default();
    }

    /// Matches one re-executed event (in the re-execution's order).
    pub(crate) fn observe(&mut self, event: &Event) {
        self.events += 1;
        if let Event::StateClosed { .. } = event {
            self.states += 1;
        }
        let Some((key, mut found)) = self.keyer.key_val(event) else {
            return;
        };
        if let Val::Outcome(o) = &mut found {
            self.record_paths(o);
        }
        match self.expected.remove(&key) {
            Some((seq, expected)) => {
                self.compared += 1;
                if !self.same(&key, &expected, &found) {
                    let d = differs(seq, &key, &expected, &found);
                    self.diverged(d);
                }
            }
            None if self.leniency.ignore_extras => {}
            None => {
                let mut d = extra(&key, &found);
                if let Key::Validation(row) = key {
                    d.seq = self.row_seq.get(row as usize).copied();
                }
                if d.seq.is_some() {
                    self.diverged(d);
                } else {
                    self.divergences += 1;
                    if self.first_extra.is_none() {
                        self.first_extra = Some(d);
                    }
                }
            }
        }
    }

    /// Names the configured sink files, not the scratch ones, in an outcome's error.
    fn record_paths(&self, o: &mut Outcome) {
        let text = match o {
            Outcome::Diverted { error, .. } | Outcome::Failed { error } => error,
            Outcome::Discarded { reason } => reason,
            _ => return,
        };
        for (scratch, recorded) in &self.leniency.sink_paths {
            if text.contains(scratch.as_str()) {
                *text = text.replace(scratch.as_str(), recorded);
            }
        }
    }

    fn same(&self, key: &Key, expected: &Val, found: &Val) -> bool {
        match (key, expected, found) {
            (
                Key::Artifact(sink, _),
                Val::Artifact { rows: a, .. },
                Val::Artifact { rows: b, .. },
            ) if self.leniency.rows_only.contains(sink) => a == b,
            _ => expected == found,
        }
    }

    fn diverged(&mut self, d: Divergence) {
        self.divergences += 1;
        if self.first.as_ref().is_none_or(|f| d.seq < f.seq) {
            self.first = Some(d);
        }
    }

    /// Ends the comparison: what the record has and the re-execution never produced is a
    /// divergence too.
    pub(crate) fn finish(mut self) -> Comparison {
        for (key, (seq, expected)) in std::mem::take(&mut self.expected) {
            let d = missing(seq, &key, &expected);
            self.diverged(d);
        }
        Comparison {
            first: self.first.or(self.first_extra),
            divergences: self.divergences,
            compared: self.compared,
            states: self.states,
            events: self.events,
        }
    }
}

/// The node and token a key is about.
fn place(key: &Key, val: &Val) -> (Option<String>, Option<String>) {
    let state = |s: &StateId| (Some(s.node.to_string()), Some(s.subject.to_string()));
    match key {
        Key::Validation(row) => (None, Some(TokenId::for_row(*row).to_string())),
        Key::Opened(s) | Key::Closed(s) | Key::Call(s, _) | Key::CallDone(s, _) => state(s),
        Key::Route(s, t) => (Some(s.node.to_string()), Some(t.to_string())),
        Key::Terminal(t) => {
            let node = match val {
                Val::Outcome(o) => o.write().map(|w| w.sink.to_string()),
                _ => None,
            };
            (node, Some(t.to_string()))
        }
        Key::Coalesced(t) => {
            let node = match val {
                Val::Coalesced { node, .. } => Some(node.to_string()),
                _ => None,
            };
            (node, Some(t.to_string()))
        }
        Key::BatchOpened(b) | Key::BatchDone(b) => (batch_node(b), Some(b.to_string())),
        Key::Member(b, _) => {
            let token = match val {
                Val::Member(t) => t.to_string(),
                _ => b.to_string(),
            };
            (batch_node(b), Some(token))
        }
        Key::Artifact(sink, _) => (Some(sink.to_string()), None),
        Key::Finished => (None, None),
    }
}

/// A batch id is `{node}#b{n}`.
fn batch_node(b: &BatchId) -> Option<String> {
    b.as_str()
        .rsplit_once("#b")
        .map(|(node, _)| node.to_string())
}

fn code(key: &Key) -> DivergenceCode {
    match key {
        Key::Validation(_) => DivergenceCode::ValidationDiverged,
        Key::Opened(_) => DivergenceCode::InputDiverged,
        Key::Closed(_) => DivergenceCode::OutputDiverged,
        Key::Call(..) | Key::CallDone(..) => DivergenceCode::CallDiverged,
        Key::Route(..) => DivergenceCode::RouteDiverged,
        Key::Terminal(_) | Key::Coalesced(_) => DivergenceCode::OutcomeDiverged,
        Key::BatchOpened(_) | Key::Member(..) | Key::BatchDone(_) => DivergenceCode::BatchDiverged,
        Key::Artifact(..) => DivergenceCode::ArtifactDiverged,
        Key::Finished => DivergenceCode::RunDiverged,
    }
}

/// The code of something present on one side only: a missing or extra state is a state
/// whose result differs, a missing or extra call a call missing.
fn one_sided_code(key: &Key) -> DivergenceCode {
    match key {
        Key::Opened(_) => DivergenceCode::OutputDiverged,
        Key::Call(..) | Key::CallDone(..) => DivergenceCode::CallMissing,
        k => code(k),
    }
}

fn what(key: &Key) -> &'static str {
    match key {
        Key::Validation(_) => "the source row's validation",
        Key::Opened(_) => "the state's input",
        Key::Closed(_) => "the state's result",
        Key::Call(..) => "the call's request",
        Key::CallDone(..) => "the call's answer",
        Key::Route(..) => "the routing decision",
        Key::Terminal(_) => "how the token ended",
        Key::Coalesced(_) => "the coalesce that made the token",
        Key::BatchOpened(_) => "the batch's node",
        Key::Member(..) => "the batch member",
        Key::BatchDone(_) => "the batch's completion",
        Key::Artifact(..) => "the sink's artifact",
        Key::Finished => "how the run ended",
    }
}

fn differs(seq: u64, key: &Key, expected: &Val, found: &Val) -> Divergence {
    let (node, token) = place(key, expected);
    Divergence {
        code: code(key),
        seq: Some(seq),
        node,
        token,
        expected: describe(expected),
        found: describe(found),
        message: format!("{} differs from the record", what(key)),
    }
}

fn missing(seq: u64, key: &Key, expected: &Val) -> Divergence {
    let (node, token) = place(key, expected);
    Divergence {
        code: one_sided_code(key),
        seq: Some(seq),
        node,
        token,
        expected: describe(expected),
        found: "nothing".into(),
        message: format!("re-execution did not produce {}", what(key)),
    }
}

fn extra(key: &Key, found: &Val) -> Divergence {
    let (node, token) = place(key, found);
    Divergence {
        code: one_sided_code(key),
        seq: None,
        node,
        token,
        expected: "nothing".into(),
        found: describe(found),
        message: format!(
            "re-execution produced {} that the record does not have",
            what(key)
        ),
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(v: &Val) -> String {
    match v {
        Val::Error(e) => format!("error {e:?}"),
        Val::Input(h) => format!("input {h}"),
        Val::Result(StateResult::Completed { output }) => format!("output {output}"),
        Val::Result(StateResult::Failed { error, retryable }) => {
            let kind = if *retryable {
                "retryable"
            } else {
                "not retryable"
            };
            format!("failed ({kind}): {error}")
        }
        Val::Call {
            kind,
            request,
            served,
        } => match served {
            Some(t) => format!("{kind} call with request {request} for {t}"),
            None => format!("{kind} call with request {request}"),
        },
        Val::CallDone { outcome, response } => match (outcome, response) {
            (CallOutcome::Responded { status }, r) => format!(
                "response{} {}",
                status.map(|s| format!(" {s}")).unwrap_or_default(),
                r.map(|h| h.to_string()).unwrap_or_else(|| "(none)".into())
            ),
            (CallOutcome::Errored { error, .. }, _) => format!("call error: {error}"),
        },
        Val::Route { label, to } if to.is_empty() => format!("route {label:?} to nothing"),
        Val::Route { label, to } => format!("route {label:?} to {}", list(to)),
        Val::Outcome(o) => match o {
            Outcome::Completed { write } => {
                format!("completed at {} #{}", write.sink, write.ordinal)
            }
            Outcome::Routed { write } => format!("routed to {} #{}", write.sink, write.ordinal),
            Outcome::Quarantined { write: Some(w) } => {
                format!("quarantined at {} #{}", w.sink, w.ordinal)
            }
            Outcome::Quarantined { write: None } => "quarantined (discarded)".into(),
            Outcome::Diverted { write, error } => {
                format!("diverted to {} #{} ({error})", write.sink, write.ordinal)
            }
            Outcome::Discarded { reason } => format!("discarded: {reason}"),
            Outcome::Failed { error } => format!("failed: {error}"),
        },
        Val::Forked(children) => format!(
            "forked into {}",
            list(&children.iter().map(|c| &c.token).collect::<Vec<_>>())
        ),
        Val::Expanded(children) => format!("expanded into {}", list(children)),
        Val::Coalesced { node, parents } => {
            format!("coalesced by {node} from {}", list(parents))
        }
        Val::Node(n) => format!("node {n}"),
        Val::Member(t) => format!("member {t}"),
        Val::BatchDone {
            trigger,
            state,
            outputs,
        } => {
            let out = match outputs {
                BatchOutputs::Transform { outputs } => format!("outputs {}", list(outputs)),
                BatchOutputs::Passthrough => "passthrough".into(),
                BatchOutputs::Failed { error } => format!("failed: {error}"),
            };
            format!("completed by {trigger} in {state}, {out}")
        }
        Val::Artifact {
            content_hash,
            size,
            rows,
        } => format!("{rows} rows, {size} bytes, content {content_hash}"),
        Val::Finished(FinalStatus::Completed) => "completed".into(),
        Val::Finished(FinalStatus::Failed) => "failed".into(),
    }
}

#[cfg(test)]
mod tests;
