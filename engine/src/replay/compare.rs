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
//!
//! The record is held as digests (128 bits of blake3 over each key's and value's
//! encoding), not copies: a run has hundreds of thousands of results, and copying each
//! one's ids cost more memory and time than re-executing it. Only the first divergence is
//! described in words, its recorded side read back from the log by its seq.

use attest_ledger::{
    BatchId, BatchOutputs, CallOutcome, Event, FinalStatus, ForkChild, Hash32, NodeId, Outcome,
    StateId, StateResult, TokenId,
};
use hashbrown::HashMap;
use serde::Serialize;
use std::borrow::Cow;
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
    /// A call asks something else than the recorded call at its (state, index): another
    /// prompt, URL or body. Re-execution stops there: it cannot be answered.
    CallRequestChanged,
    /// The recorded call has no answer to give.
    CallIncomplete,
    /// The recorded answer cannot be read (purged, or not a call record).
    CallUnreadable,
    /// A call's completion differs: the plugin judged the recorded answer otherwise.
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
            DivergenceCode::CallRequestChanged => "CALL_REQUEST_CHANGED",
            DivergenceCode::CallIncomplete => "CALL_INCOMPLETE",
            DivergenceCode::CallUnreadable => "CALL_UNREADABLE",
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

/// What an event is about. Borrowed from the event: keys are only ever digested, or
/// described for a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Key<'a> {
    Validation(u64),
    Opened(&'a StateId),
    Closed(&'a StateId),
    Call(&'a StateId, u32),
    CallDone(&'a StateId, u32),
    Route(&'a StateId, &'a TokenId),
    /// A token's end: its outcome, or the fork or expansion it ended in.
    Terminal(&'a TokenId),
    /// The coalesce that made a merged token.
    Coalesced(&'a TokenId),
    BatchOpened(&'a BatchId),
    Member(&'a BatchId, u32),
    BatchDone(&'a BatchId),
    /// The n-th artifact (from 0) of a sink.
    Artifact(&'a NodeId, u64),
    Finished,
}

/// What an event says, without timings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Val<'a> {
    Error(&'a str),
    Input(&'a Hash32),
    Result(&'a StateResult),
    Call {
        kind: &'a str,
        request: &'a Hash32,
        served: Option<&'a TokenId>,
    },
    CallDone {
        outcome: &'a CallOutcome,
        response: Option<&'a Hash32>,
    },
    Route {
        label: &'a str,
        to: &'a [NodeId],
    },
    /// Owned when a sink's error had its scratch path put back to the recorded one.
    Outcome(Cow<'a, Outcome>),
    Forked(&'a [ForkChild]),
    Expanded(&'a [TokenId]),
    Coalesced {
        node: &'a NodeId,
        parents: &'a [TokenId],
    },
    Node(&'a NodeId),
    Member(&'a TokenId),
    BatchDone {
        trigger: &'a str,
        state: &'a StateId,
        outputs: &'a BatchOutputs,
    },
    Artifact {
        content_hash: &'a Hash32,
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
    pub(crate) fn key_val<'a>(&mut self, event: &'a Event) -> Option<(Key<'a>, Val<'a>)> {
        Some(match event {
            Event::ValidationFailed { row, error } => (Key::Validation(*row), Val::Error(error)),
            Event::StateOpened { state, input } => (Key::Opened(state), Val::Input(input)),
            Event::StateClosed { state, result, .. } => (Key::Closed(state), Val::Result(result)),
            Event::CallAllocated {
                state,
                index,
                kind,
                request,
                served,
            } => (
                Key::Call(state, *index),
                Val::Call {
                    kind,
                    request,
                    served: served.as_ref(),
                },
            ),
            Event::CallCompleted {
                state,
                index,
                outcome,
                response,
                ..
            } => (
                Key::CallDone(state, *index),
                Val::CallDone {
                    outcome,
                    response: response.as_ref(),
                },
            ),
            Event::RouteDecided {
                state,
                token,
                label,
                to,
            } => (Key::Route(state, token), Val::Route { label, to }),
            Event::TokenOutcome { token, outcome } => {
                (Key::Terminal(token), Val::Outcome(Cow::Borrowed(outcome)))
            }
            Event::TokenForked { parent, children } => {
                (Key::Terminal(parent), Val::Forked(children))
            }
            Event::TokenExpanded { parent, children } => {
                (Key::Terminal(parent), Val::Expanded(children))
            }
            Event::TokensCoalesced {
                node,
                parents,
                merged,
            } => (Key::Coalesced(merged), Val::Coalesced { node, parents }),
            Event::BatchOpened { batch, node } => (Key::BatchOpened(batch), Val::Node(node)),
            Event::BatchMemberAdded {
                batch,
                token,
                ordinal,
            } => (Key::Member(batch, *ordinal), Val::Member(token)),
            Event::BatchCompleted {
                batch,
                trigger,
                state,
                outputs,
            } => (
                Key::BatchDone(batch),
                Val::BatchDone {
                    trigger,
                    state,
                    outputs,
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
                let key = Key::Artifact(sink, *n);
                *n += 1;
                (
                    key,
                    Val::Artifact {
                        content_hash,
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
            | Event::RunResumed { .. }
            // A pool's statistics are timings the re-execution cannot reproduce; the
            // decisions they stand for (retries) are compared as calls.
            | Event::PoolStats { .. } => return None,
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

/// 128 bits of blake3 over a key's or value's encoding: the record's hundreds of
/// thousands of results are held and matched as digests, not copies. Equal values have
/// equal encodings; two different ones sharing a digest is as unlikely as a blake3
/// collision.
type Digest = u128;

/// A recorded result: where it is, and the digest of what it says.
#[derive(Clone, Copy)]
struct Recorded {
    seq: u64,
    val: Digest,
}

/// A recorded artifact, compared field by field (there are few, and which fields count
/// is only known once the configuration is).
struct RecordedArtifact {
    seq: u64,
    content_hash: Hash32,
    size: u64,
    rows: u64,
}

/// The first divergence found in the record's order, before the record's side of it is
/// described.
struct Candidate {
    seq: u64,
    /// What re-execution had; `None` when it had nothing.
    found: Option<String>,
}

/// The record's events by key, then matched against the re-execution's.
pub(crate) struct Comparator {
    expected: HashMap<Digest, Recorded>,
    artifacts: HashMap<(NodeId, u64), RecordedArtifact>,
    keyer: Keyer,
    leniency: Leniency,
    /// Encoding buffer for digests.
    buf: Vec<u8>,
    /// The divergence earliest in the record so far, among values that differ.
    first: Option<Candidate>,
    /// The first thing only re-execution has, reported when the record has no divergence.
    first_extra: Option<Divergence>,
    /// A validation failure only re-execution has, when it is the first candidate: the
    /// record has no event to describe it from.
    validation_extra: Option<Divergence>,
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
            artifacts: HashMap::new(),
            keyer: Keyer::default(),
            leniency,
            buf: Vec::with_capacity(256),
            first: None,
            first_extra: None,
            validation_extra: None,
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

    fn digest<T: Serialize>(buf: &mut Vec<u8>, value: &T) -> Digest {
        buf.clear();
        // Encoding in memory only fails for values serde cannot represent, which these
        // plain event fields never are; an empty encoding would still compare equal only
        // to another value that failed the same way.
        let _ = attest_ledger::codec::encode_into(value, buf);
        let h = blake3::hash(buf);
        let mut d = [0u8; 16];
        d.copy_from_slice(&h.as_bytes()[..16]);
        u128::from_le_bytes(d)
    }

    /// Loads a record event (in seq order).
    pub(crate) fn expect(&mut self, seq: u64, event: &Event) {
        if let Event::RowIngested { .. } = event {
            self.row_seq.push(seq);
        }
        let Some((key, val)) = self.keyer.key_val(event) else {
            return;
        };
        if let (
            Key::Artifact(sink, n),
            Val::Artifact {
                content_hash,
                size,
                rows,
            },
        ) = (key, &val)
        {
            let recorded = RecordedArtifact {
                seq,
                content_hash: **content_hash,
                size: *size,
                rows: *rows,
            };
            self.artifacts.insert((sink.clone(), n), recorded);
            return;
        }
        let k = Self::digest(&mut self.buf, &key);
        let v = Self::digest(&mut self.buf, &val);
        self.expected.insert(k, Recorded { seq, val: v });
    }

    /// Record events that will be compared.
    pub(crate) fn expected_len(&self) -> usize {
        self.expected.len() + self.artifacts.len()
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
        let mut keyer = std::mem::take(&mut self.keyer);
        let keyed = keyer.key_val(event);
        self.keyer = keyer;
        let Some((key, mut found)) = keyed else {
            return;
        };
        if let Val::Outcome(o) = &mut found {
            self.record_paths(o);
        }
        let recorded = match (key, &found) {
            (Key::Artifact(sink, n), Val::Artifact { .. }) => {
                self.observe_artifact(sink, n, key, &found);
                return;
            }
            _ => self.expected.remove(&Self::digest(&mut self.buf, &key)),
        };
        match recorded {
            Some(r) => {
                self.compared += 1;
                if r.val != Self::digest(&mut self.buf, &found) {
                    self.differs(r.seq, &found);
                }
            }
            None => self.extra(key, &found),
        }
    }

    fn observe_artifact(&mut self, sink: &NodeId, n: u64, key: Key<'_>, found: &Val<'_>) {
        let Val::Artifact {
            content_hash,
            size,
            rows,
        } = found
        else {
            return;
        };
        let Some(r) = self.artifacts.remove(&(sink.clone(), n)) else {
            self.extra(key, found);
            return;
        };
        self.compared += 1;
        let same = if self.leniency.rows_only.contains(sink) {
            r.rows == *rows
        } else {
            (r.content_hash, r.size, r.rows) == (**content_hash, *size, *rows)
        };
        if !same {
            self.differs(r.seq, found);
        }
    }

    /// Names the configured sink files, not the scratch ones, in an outcome's error.
    fn record_paths(&self, o: &mut Cow<'_, Outcome>) {
        let text = match o.as_ref() {
            Outcome::Diverted { error, .. } | Outcome::Failed { error } => error,
            Outcome::Discarded { reason } => reason,
            _ => return,
        };
        if !self
            .leniency
            .sink_paths
            .iter()
            .any(|(scratch, _)| text.contains(scratch.as_str()))
        {
            return;
        }
        let text = match o.to_mut() {
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

    /// A recorded result that re-execution stated otherwise.
    fn differs(&mut self, seq: u64, found: &Val<'_>) {
        self.divergences += 1;
        if self.first.as_ref().is_none_or(|f| seq < f.seq) {
            self.first = Some(Candidate {
                seq,
                found: Some(describe(found)),
            });
        }
    }

    /// A result only re-execution has.
    fn extra(&mut self, key: Key<'_>, found: &Val<'_>) {
        if self.leniency.ignore_extras {
            return;
        }
        self.divergences += 1;
        // A row the run accepted and re-execution refuses belongs at the row's ingestion.
        if let Key::Validation(row) = key {
            if let Some(&seq) = self.row_seq.get(row as usize) {
                if self.first.as_ref().is_none_or(|f| seq < f.seq) {
                    self.first_extra = None;
                    self.first = Some(Candidate {
                        seq,
                        found: Some(describe(found)),
                    });
                    // Described in full now: the record has no event for it to read.
                    self.validation_extra = Some(extra_divergence(key, found, Some(seq)));
                }
                return;
            }
        }
        if self.first_extra.is_none() {
            self.first_extra = Some(extra_divergence(key, found, None));
        }
    }

    /// Ends the comparison. What the record has and the re-execution never produced is a
    /// divergence too. `record` reads the record's event at a seq, to describe the side of
    /// the first divergence that the comparison kept only as a digest.
    pub(crate) fn finish(mut self, record: &mut dyn FnMut(u64) -> Option<Event>) -> Comparison {
        let mut first_missing: Option<u64> = None;
        for r in self.expected.values() {
            self.divergences += 1;
            first_missing = Some(first_missing.map_or(r.seq, |m| m.min(r.seq)));
        }
        for r in self.artifacts.values() {
            self.divergences += 1;
            first_missing = Some(first_missing.map_or(r.seq, |m| m.min(r.seq)));
        }
        let first = match (self.first.take(), first_missing) {
            (Some(c), Some(m)) if m < c.seq => Some(Candidate {
                seq: m,
                found: None,
            }),
            (None, Some(m)) => Some(Candidate {
                seq: m,
                found: None,
            }),
            (c, _) => c,
        };
        let first = first.map(|c| self.resolve(c, record));
        Comparison {
            first: first.or(self.first_extra),
            divergences: self.divergences,
            compared: self.compared,
            states: self.states,
            events: self.events,
        }
    }

    /// The divergence at the candidate's seq, with the record's side described.
    fn resolve(
        &mut self,
        c: Candidate,
        record: &mut dyn FnMut(u64) -> Option<Event>,
    ) -> Divergence {
        if let Some(d) = self
            .validation_extra
            .take()
            .filter(|d| d.seq == Some(c.seq))
        {
            return d;
        }
        let event = record(c.seq);
        let keyed = event.as_ref().and_then(|e| Keyer::default().key_val(e));
        let Some((key, expected)) = keyed else {
            // The record changed under the comparison, which verification rules out.
            return Divergence {
                code: DivergenceCode::RunDiverged,
                seq: Some(c.seq),
                node: None,
                token: None,
                expected: "the recorded event".into(),
                found: c.found.unwrap_or_else(|| "nothing".into()),
                message: "the record's event at this seq could not be read back".into(),
            };
        };
        match c.found {
            Some(found) => differs_divergence(c.seq, key, &expected, found),
            None => missing_divergence(c.seq, key, &expected),
        }
    }
}

/// The node and token a key is about.
fn place(key: Key<'_>, val: &Val<'_>) -> (Option<String>, Option<String>) {
    let state = |s: &StateId| (Some(s.node.to_string()), Some(s.subject.to_string()));
    match key {
        Key::Validation(row) => (None, Some(TokenId::for_row(row).to_string())),
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

fn code(key: Key<'_>) -> DivergenceCode {
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
fn one_sided_code(key: Key<'_>) -> DivergenceCode {
    match key {
        Key::Opened(_) => DivergenceCode::OutputDiverged,
        Key::Call(..) | Key::CallDone(..) => DivergenceCode::CallMissing,
        k => code(k),
    }
}

fn what(key: Key<'_>) -> &'static str {
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

fn differs_divergence(seq: u64, key: Key<'_>, expected: &Val<'_>, found: String) -> Divergence {
    let (node, token) = place(key, expected);
    Divergence {
        code: code(key),
        seq: Some(seq),
        node,
        token,
        expected: describe(expected),
        found,
        message: format!("{} differs from the record", what(key)),
    }
}

fn missing_divergence(seq: u64, key: Key<'_>, expected: &Val<'_>) -> Divergence {
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

fn extra_divergence(key: Key<'_>, found: &Val<'_>, seq: Option<u64>) -> Divergence {
    let (node, token) = place(key, found);
    Divergence {
        code: one_sided_code(key),
        seq,
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

fn describe(v: &Val<'_>) -> String {
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
        Val::Route { label, to: [] } => format!("route {label:?} to nothing"),
        Val::Route { label, to } => format!("route {label:?} to {}", list(to)),
        Val::Outcome(o) => match o.as_ref() {
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
