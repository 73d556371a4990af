//! The integrity rules: the one `apply` function that folds an event into a run's
//! projections, refusing any event that breaks a rule.
//!
//! It runs on every live append (inside the writer, before anything is written) and again,
//! unchanged, when verification rebuilds projections from the log. It only reads and writes
//! through [`Proj`], so the same code works over storage, a transaction overlay or memory.

use crate::error::{violation, LedgerError, Result, Rule};
use crate::event::{BatchOutputs, Event, NodeKind, Outcome};
use crate::ids::{Hash32, NodeId, RunId, StateId, Subject, TokenId};
use crate::projection::*;
use std::collections::HashMap;

/// Read/write access to one run's projections.
pub trait Proj {
    fn get(&mut self, key: &PKey) -> Result<Option<PVal>>;
    fn put(&mut self, key: PKey, val: PVal);
}

/// Projections held in memory: verification rebuilds into one, and tests use it.
#[derive(Default, Debug, Clone)]
pub struct MemProj {
    pub map: HashMap<PKey, PVal>,
}

impl Proj for MemProj {
    fn get(&mut self, key: &PKey) -> Result<Option<PVal>> {
        Ok(self.map.get(key).cloned())
    }
    fn put(&mut self, key: PKey, val: PVal) {
        self.map.insert(key, val);
    }
}

/// A transaction over another `Proj`: reads see its own writes first; nothing reaches the
/// base until [`TxProj::commit`], so a rejected event leaves no trace.
pub struct TxProj<'a> {
    base: &'a mut dyn Proj,
    changes: HashMap<PKey, PVal>,
}

impl<'a> TxProj<'a> {
    pub fn new(base: &'a mut dyn Proj) -> Self {
        TxProj {
            base,
            changes: HashMap::new(),
        }
    }
    pub fn commit(self) {
        for (k, v) in self.changes {
            self.base.put(k, v);
        }
    }
}

impl Proj for TxProj<'_> {
    fn get(&mut self, key: &PKey) -> Result<Option<PVal>> {
        match self.changes.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None => self.base.get(key),
        }
    }
    fn put(&mut self, key: PKey, val: PVal) {
        self.changes.insert(key, val);
    }
}

fn corrupt(key: &PKey) -> LedgerError {
    LedgerError::Corrupt(format!(
        "projection {key:?} holds a value of the wrong kind"
    ))
}

macro_rules! typed_get {
    ($fn:ident, $variant:ident, $ty:ty, $key:ident : $kty:ty => $pkey:expr) => {
        fn $fn(p: &mut dyn Proj, $key: $kty) -> Result<Option<$ty>> {
            let k = $pkey;
            match p.get(&k)? {
                None => Ok(None),
                Some(PVal::$variant(v)) => Ok(Some(v)),
                Some(_) => Err(corrupt(&k)),
            }
        }
    };
}

typed_get!(get_node, Node, NodeRec, id: &NodeId => PKey::Node(id.clone()));
typed_get!(get_row, Row, RowRec, row: u64 => PKey::Row(row));
typed_get!(get_token, Token, TokenRec, id: &TokenId => PKey::Token(id.clone()));
typed_get!(get_batch, Batch, crate::projection::BatchRec, id: &crate::ids::BatchId => PKey::Batch(id.clone()));
typed_get!(get_call, Call, CallRec, key: (&StateId, u32) => PKey::Call(key.0.clone(), key.1));
typed_get!(get_member, Member, TokenId, key: (&crate::ids::BatchId, u32) => PKey::Member(key.0.clone(), key.1));
typed_get!(get_chunk, SinkChunk, Vec<TokenId>, key: (&NodeId, u64) => PKey::SinkChunk(key.0.clone(), key.1));

/// The run record, if the run has started.
pub fn get_run(p: &mut dyn Proj) -> Result<Option<RunRec>> {
    match p.get(&PKey::Run)? {
        None => Ok(None),
        Some(PVal::Run(r)) => Ok(Some(r)),
        Some(_) => Err(corrupt(&PKey::Run)),
    }
}

fn need_node(p: &mut dyn Proj, id: &NodeId, kind: Option<NodeKind>) -> Result<NodeRec> {
    let node = get_node(p, id)?.ok_or_else(|| {
        violation(
            Rule::References,
            "DANGLING_NODE",
            format!("node {id} is not registered"),
        )
    })?;
    if let Some(kind) = kind {
        if node.kind != kind {
            return Err(violation(
                Rule::References,
                "WRONG_NODE_KIND",
                format!("node {id} is a {:?}, not a {kind:?}", node.kind),
            ));
        }
    }
    Ok(node)
}

fn need_token(p: &mut dyn Proj, id: &TokenId) -> Result<TokenRec> {
    get_token(p, id)?.ok_or_else(|| {
        violation(
            Rule::References,
            "DANGLING_TOKEN",
            format!("token {id} does not exist"),
        )
    })
}

/// A token that may still act: it exists and has no terminal outcome.
fn need_live_token(p: &mut dyn Proj, id: &TokenId) -> Result<TokenRec> {
    let t = need_token(p, id)?;
    if let Some((term, seq)) = &t.terminal {
        return Err(violation(
            Rule::TerminalOutcome,
            "TOKEN_TERMINAL",
            format!("token {id} already ended {} at seq {seq}", term.name()),
        ));
    }
    Ok(t)
}

/// A live token that is not waiting in a batch.
fn need_free_token(p: &mut dyn Proj, id: &TokenId) -> Result<TokenRec> {
    let t = need_live_token(p, id)?;
    if let Some(b) = &t.buffered_in {
        return Err(violation(
            Rule::BatchMembership,
            "TOKEN_BUFFERED",
            format!("token {id} is buffered in batch {b} until it flushes"),
        ));
    }
    Ok(t)
}

fn need_new_token(p: &mut dyn Proj, id: &TokenId) -> Result<()> {
    id.validate()?;
    if get_token(p, id)?.is_some() {
        return Err(violation(
            Rule::WellFormed,
            "DUPLICATE_TOKEN",
            format!("token {id} already exists"),
        ));
    }
    Ok(())
}

/// The states list a state id lives in, and the record that owns the list.
enum StateOwner {
    Token(TokenRec),
    Batch(crate::projection::BatchRec),
}

impl StateOwner {
    fn states(&mut self) -> &mut Vec<StateRec> {
        match self {
            StateOwner::Token(t) => &mut t.states,
            StateOwner::Batch(b) => &mut b.states,
        }
    }
    fn put(self, p: &mut dyn Proj, subject: &Subject) {
        match (self, subject) {
            (StateOwner::Token(t), Subject::Token(id)) => {
                p.put(PKey::Token(id.clone()), PVal::Token(t))
            }
            (StateOwner::Batch(b), Subject::Batch(id)) => {
                p.put(PKey::Batch(id.clone()), PVal::Batch(b))
            }
            // load_owner builds the owner from the subject, so the two always agree.
            _ => {}
        }
    }
}

fn load_owner(p: &mut dyn Proj, subject: &Subject) -> Result<StateOwner> {
    match subject {
        Subject::Token(t) => Ok(StateOwner::Token(need_token(p, t)?)),
        Subject::Batch(b) => get_batch(p, b)?.map(StateOwner::Batch).ok_or_else(|| {
            violation(
                Rule::References,
                "DANGLING_BATCH",
                format!("batch {b} does not exist"),
            )
        }),
    }
}

/// Finds the state `id` in its owner; a state that was never opened is a dangling reference.
fn state_index(owner: &mut StateOwner, id: &StateId) -> Result<usize> {
    owner
        .states()
        .iter()
        .position(|s| s.node == id.node && s.attempt == id.attempt)
        .ok_or_else(|| {
            violation(
                Rule::References,
                "DANGLING_STATE",
                format!("state {id} was never opened"),
            )
        })
}

fn need_open(state: &StateRec, id: &StateId, rule: Rule, code: &'static str) -> Result<()> {
    if state.status != StateStatus::Open {
        return Err(violation(
            rule,
            code,
            format!("state {id} is already closed"),
        ));
    }
    Ok(())
}

fn record_sink_write(p: &mut dyn Proj, token: &TokenId, outcome: &Outcome) -> Result<()> {
    let Some(write) = outcome.write() else {
        return Ok(());
    };
    let mut sink = need_node(p, &write.sink, Some(NodeKind::Sink))?;
    if write.ordinal != sink.next_ordinal {
        return Err(violation(
            Rule::TerminalOutcome,
            "SINK_ORDINAL",
            format!(
                "sink {} expects its row {} next, the outcome for {token} claims row {}",
                write.sink, sink.next_ordinal, write.ordinal
            ),
        ));
    }
    let chunk_no = write.ordinal / SINK_CHUNK;
    let mut chunk = get_chunk(p, (&write.sink, chunk_no))?.unwrap_or_default();
    chunk.push(token.clone());
    p.put(
        PKey::SinkChunk(write.sink.clone(), chunk_no),
        PVal::SinkChunk(chunk),
    );
    sink.next_ordinal += 1;
    p.put(PKey::Node(write.sink.clone()), PVal::Node(sink));
    Ok(())
}

/// Applies one event at `seq` (whose record hashes to `hash`) to `run`'s projections.
/// On error nothing must be kept: callers apply through a [`TxProj`] and drop it.
pub fn apply(p: &mut dyn Proj, run: &RunId, seq: u64, hash: Hash32, event: &Event) -> Result<()> {
    let Some(mut rr) = get_run(p)? else {
        return start_run(p, run, seq, hash, event);
    };
    if seq != rr.next_seq {
        return Err(violation(
            Rule::WellFormed,
            "SEQ",
            format!(
                "event at seq {seq}, but the run's next seq is {}",
                rr.next_seq
            ),
        ));
    }
    match (rr.status, event) {
        (RunStatus::Completed | RunStatus::Failed, _) => {
            return Err(violation(
                Rule::RunLifecycle,
                "RUN_ENDED",
                format!(
                    "run {run} already ended {}; no {} can follow",
                    rr.status.name(),
                    event.name()
                ),
            ))
        }
        (_, Event::RunStarted { .. }) => {
            return Err(violation(
                Rule::RunLifecycle,
                "RUN_RESTARTED",
                format!("run {run} has already started"),
            ))
        }
        (RunStatus::Interrupted, Event::RunResumed { .. }) | (RunStatus::Running, _) => {}
        (RunStatus::Interrupted, _) => {
            return Err(violation(
                Rule::RunLifecycle,
                "RUN_INTERRUPTED",
                format!(
                    "run {run} is interrupted; only run_resumed may follow, not {}",
                    event.name()
                ),
            ))
        }
    }
    apply_to_running(p, &mut rr, seq, event)?;
    rr.next_seq = seq + 1;
    rr.head = hash;
    p.put(PKey::Run, PVal::Run(rr));
    Ok(())
}

fn start_run(p: &mut dyn Proj, run: &RunId, seq: u64, hash: Hash32, event: &Event) -> Result<()> {
    let Event::RunStarted {
        run: named,
        config_hash,
        engine_version,
        started_at_ms,
    } = event
    else {
        return Err(violation(
            Rule::RunLifecycle,
            "RUN_NOT_STARTED",
            format!(
                "run {run} has not started; its first event must be run_started, not {}",
                event.name()
            ),
        ));
    };
    if named != run || seq != 0 {
        return Err(violation(
            Rule::WellFormed,
            "GENESIS",
            format!(
                "the genesis event must be seq 0 and name run {run}; got seq {seq} naming {named}"
            ),
        ));
    }
    p.put(
        PKey::Run,
        PVal::Run(RunRec {
            run: run.clone(),
            status: RunStatus::Running,
            config_hash: *config_hash,
            engine_version: engine_version.clone(),
            started_at_ms: *started_at_ms,
            next_seq: 1,
            head: hash,
            rows: 0,
            tokens: 0,
            live_tokens: 0,
            open_states: 0,
            states: 0,
            calls: 0,
            resumes: 0,
            last_checkpoint_rows: None,
        }),
    );
    Ok(())
}

fn apply_to_running(p: &mut dyn Proj, rr: &mut RunRec, seq: u64, event: &Event) -> Result<()> {
    match event {
        Event::RunStarted { .. } => unreachable_started(),
        Event::NodeRegistered {
            node,
            kind,
            plugin,
            config_hash,
        } => {
            node.validate()?;
            if get_node(p, node)?.is_some() {
                return Err(violation(
                    Rule::WellFormed,
                    "DUPLICATE_NODE",
                    format!("node {node} is already registered"),
                ));
            }
            p.put(
                PKey::Node(node.clone()),
                PVal::Node(NodeRec {
                    kind: *kind,
                    plugin: plugin.clone(),
                    config_hash: *config_hash,
                    next_ordinal: 0,
                    artifacts: 0,
                }),
            );
        }
        Event::EdgeRegistered { from, to, label } => {
            need_node(p, from, None)?;
            need_node(p, to, None)?;
            let key = PKey::Edge(from.clone(), to.clone(), label.clone());
            if p.get(&key)?.is_some() {
                return Err(violation(
                    Rule::WellFormed,
                    "DUPLICATE_EDGE",
                    format!("edge {from} -> {to} ({label}) exists"),
                ));
            }
            p.put(key, PVal::Edge);
        }
        Event::RowIngested {
            row,
            source,
            payload,
        } => {
            if *row != rr.rows {
                return Err(violation(
                    Rule::WellFormed,
                    "ROW_INDEX",
                    format!(
                        "source rows are numbered contiguously: expected row {}, got {row}",
                        rr.rows
                    ),
                ));
            }
            need_node(p, source, Some(NodeKind::Source))?;
            let token = TokenId::for_row(*row);
            need_new_token(p, &token)?;
            p.put(
                PKey::Row(*row),
                PVal::Row(RowRec {
                    source: source.clone(),
                    payload: *payload,
                    seq,
                    validation_error: None,
                }),
            );
            p.put(
                PKey::Token(token),
                PVal::Token(TokenRec::new(Some(*row), Origin::Source, vec![], seq)),
            );
            rr.rows += 1;
            rr.tokens += 1;
            rr.live_tokens += 1;
        }
        Event::ValidationFailed { row, error } => {
            let mut rec = get_row(p, *row)?.ok_or_else(|| {
                violation(
                    Rule::References,
                    "DANGLING_ROW",
                    format!("row {row} was never ingested"),
                )
            })?;
            if rec.validation_error.is_some() {
                return Err(violation(
                    Rule::WellFormed,
                    "DUPLICATE_VALIDATION",
                    format!("row {row} already failed validation"),
                ));
            }
            need_live_token(p, &TokenId::for_row(*row))?;
            rec.validation_error = Some(error.clone());
            p.put(PKey::Row(*row), PVal::Row(rec));
        }
        Event::StateOpened { state, input } => {
            need_node(p, &state.node, None)?;
            let mut owner = match &state.subject {
                Subject::Token(t) => StateOwner::Token(need_free_token(p, t)?),
                Subject::Batch(b) => {
                    let batch = get_batch(p, b)?.ok_or_else(|| {
                        violation(
                            Rule::References,
                            "DANGLING_BATCH",
                            format!("batch {b} does not exist"),
                        )
                    })?;
                    if batch.node != state.node {
                        return Err(violation(
                            Rule::BatchMembership,
                            "BATCH_NODE",
                            format!(
                                "batch {b} belongs to node {}, not {}",
                                batch.node, state.node
                            ),
                        ));
                    }
                    if batch.completion.is_some() {
                        return Err(violation(
                            Rule::BatchMembership,
                            "BATCH_COMPLETED",
                            format!("batch {b} has completed"),
                        ));
                    }
                    StateOwner::Batch(batch)
                }
            };
            let previous: Vec<&StateRec> = owner
                .states()
                .iter()
                .filter(|s| s.node == state.node)
                .collect();
            let expected = previous.len() as u32 + 1;
            if state.attempt != expected {
                return Err(violation(
                    Rule::StateLifecycle,
                    "ATTEMPT",
                    format!(
                        "{} at node {}: expected attempt {expected}, got {}",
                        state.subject, state.node, state.attempt
                    ),
                ));
            }
            if previous
                .last()
                .is_some_and(|s| s.status == StateStatus::Open)
            {
                return Err(violation(
                    Rule::StateLifecycle,
                    "PREVIOUS_ATTEMPT_OPEN",
                    format!("{}: attempt {} is still open", state.subject, expected - 1),
                ));
            }
            owner.states().push(StateRec {
                node: state.node.clone(),
                attempt: state.attempt,
                input: *input,
                opened_seq: seq,
                status: StateStatus::Open,
                closed_seq: None,
                duration_us: 0,
                calls: 0,
            });
            owner.put(p, &state.subject);
            rr.open_states += 1;
            rr.states += 1;
        }
        Event::StateClosed {
            state,
            result,
            duration_us,
        } => {
            let mut owner = load_owner(p, &state.subject)?;
            let i = state_index(&mut owner, state)?;
            let rec = &mut owner.states()[i];
            need_open(rec, state, Rule::StateLifecycle, "STATE_CLOSED_TWICE")?;
            rec.status = match result {
                crate::event::StateResult::Completed { output } => {
                    StateStatus::Completed { output: *output }
                }
                crate::event::StateResult::Failed { error, retryable } => StateStatus::Failed {
                    error: error.clone(),
                    retryable: *retryable,
                },
            };
            rec.closed_seq = Some(seq);
            rec.duration_us = *duration_us;
            owner.put(p, &state.subject);
            rr.open_states = rr.open_states.saturating_sub(1);
        }
        Event::CallAllocated {
            state,
            index,
            kind,
            request,
            served,
        } => {
            let mut owner = load_owner(p, &state.subject)?;
            let i = state_index(&mut owner, state)?;
            let rec = &mut owner.states()[i];
            need_open(rec, state, Rule::CallIndices, "CALL_ON_CLOSED_STATE")?;
            if *index != rec.calls {
                return Err(violation(
                    Rule::CallIndices,
                    "CALL_INDEX",
                    format!(
                        "state {state}: the next call index is {}, not {index}",
                        rec.calls
                    ),
                ));
            }
            rec.calls += 1;
            if let Some(t) = served {
                check_served(p, state, t)?;
            }
            owner.put(p, &state.subject);
            p.put(
                PKey::Call(state.clone(), *index),
                PVal::Call(CallRec {
                    kind: kind.clone(),
                    request: *request,
                    served: served.clone(),
                    allocated_seq: seq,
                    completion: None,
                }),
            );
            rr.calls += 1;
        }
        Event::CallCompleted {
            state,
            index,
            outcome,
            response,
            latency_us,
        } => {
            let mut call = get_call(p, (state, *index))?.ok_or_else(|| {
                violation(
                    Rule::References,
                    "DANGLING_CALL",
                    format!("call {index} of state {state} was never allocated"),
                )
            })?;
            if call.completion.is_some() {
                return Err(violation(
                    Rule::CallIndices,
                    "CALL_COMPLETED_TWICE",
                    format!("call {index} of state {state} already completed"),
                ));
            }
            let mut owner = load_owner(p, &state.subject)?;
            let i = state_index(&mut owner, state)?;
            need_open(
                &owner.states()[i],
                state,
                Rule::CallIndices,
                "CALL_ON_CLOSED_STATE",
            )?;
            call.completion = Some(CallCompletion {
                outcome: outcome.clone(),
                response: *response,
                latency_us: *latency_us,
                seq,
            });
            p.put(PKey::Call(state.clone(), *index), PVal::Call(call));
        }
        Event::RouteDecided {
            state,
            token,
            label,
            to,
        } => {
            if state.subject != Subject::Token(token.clone()) {
                return Err(violation(
                    Rule::References,
                    "ROUTE_SUBJECT",
                    format!("state {state} does not process token {token}"),
                ));
            }
            let mut t = need_live_token(p, token)?;
            let mut owner = StateOwner::Token(t.clone());
            state_index(&mut owner, state)?;
            for n in to {
                need_node(p, n, None)?;
            }
            t.routes.push(RouteRec {
                node: state.node.clone(),
                attempt: state.attempt,
                label: label.clone(),
                to: to.clone(),
                seq,
            });
            p.put(PKey::Token(token.clone()), PVal::Token(t));
        }
        Event::TokenForked { parent, children } => {
            let kids: Vec<(TokenId, Origin)> = children
                .iter()
                .map(|c| {
                    (
                        c.token.clone(),
                        Origin::Fork {
                            branch: c.branch.clone(),
                        },
                    )
                })
                .collect();
            spawn_children(
                p,
                rr,
                seq,
                parent,
                kids,
                crate::projection::Terminal::Forked,
            )?;
        }
        Event::TokenExpanded { parent, children } => {
            let kids = children
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), Origin::Expand { index: i as u64 }))
                .collect();
            spawn_children(
                p,
                rr,
                seq,
                parent,
                kids,
                crate::projection::Terminal::Expanded,
            )?;
        }
        Event::TokensCoalesced {
            node,
            parents,
            merged,
        } => {
            need_node(p, node, Some(NodeKind::Coalesce))?;
            if parents.is_empty() {
                return Err(violation(
                    Rule::WellFormed,
                    "EMPTY_COALESCE",
                    "a coalesce needs at least one parent",
                ));
            }
            need_new_token(p, merged)?;
            let mut rows = Vec::new();
            for (i, parent) in parents.iter().enumerate() {
                if parents[..i].contains(parent) {
                    return Err(violation(
                        Rule::WellFormed,
                        "DUPLICATE_PARENT",
                        format!("token {parent} listed twice"),
                    ));
                }
                let mut t = need_free_token(p, parent)?;
                rows.push(t.row);
                t.terminal = Some((
                    Terminal::Coalesced {
                        into: merged.clone(),
                    },
                    seq,
                ));
                t.children.push(merged.clone());
                p.put(PKey::Token(parent.clone()), PVal::Token(t));
            }
            let row = common_row(&rows);
            p.put(
                PKey::Token(merged.clone()),
                PVal::Token(TokenRec::new(
                    row,
                    Origin::Coalesce { node: node.clone() },
                    parents.clone(),
                    seq,
                )),
            );
            rr.tokens += 1;
            rr.live_tokens = rr.live_tokens + 1 - parents.len() as u64;
        }
        Event::BatchOpened { batch, node } => {
            batch.validate()?;
            need_node(p, node, Some(NodeKind::Aggregation))?;
            if get_batch(p, batch)?.is_some() {
                return Err(violation(
                    Rule::WellFormed,
                    "DUPLICATE_BATCH",
                    format!("batch {batch} already exists"),
                ));
            }
            p.put(
                PKey::Batch(batch.clone()),
                PVal::Batch(crate::projection::BatchRec {
                    node: node.clone(),
                    opened_seq: seq,
                    members: 0,
                    states: Vec::new(),
                    completion: None,
                }),
            );
        }
        Event::BatchMemberAdded {
            batch,
            token,
            ordinal,
        } => {
            let mut b = get_batch(p, batch)?.ok_or_else(|| {
                violation(
                    Rule::References,
                    "DANGLING_BATCH",
                    format!("batch {batch} does not exist"),
                )
            })?;
            if b.completion.is_some() {
                return Err(violation(
                    Rule::BatchMembership,
                    "BATCH_COMPLETED",
                    format!("batch {batch} has completed; its membership is fixed"),
                ));
            }
            if *ordinal != b.members {
                return Err(violation(
                    Rule::BatchMembership,
                    "MEMBER_ORDINAL",
                    format!(
                        "batch {batch}: next member ordinal is {}, not {ordinal}",
                        b.members
                    ),
                ));
            }
            let mut t = need_free_token(p, token)?;
            t.buffered_in = Some(batch.clone());
            t.batches.push(batch.clone());
            b.members += 1;
            p.put(PKey::Token(token.clone()), PVal::Token(t));
            p.put(
                PKey::Member(batch.clone(), *ordinal),
                PVal::Member(token.clone()),
            );
            p.put(PKey::Batch(batch.clone()), PVal::Batch(b));
        }
        Event::BatchCompleted {
            batch,
            trigger,
            state,
            outputs,
        } => complete_batch(p, rr, seq, batch, trigger, state, outputs)?,
        Event::TokenOutcome { token, outcome } => {
            let mut t = need_live_token(p, token)?;
            if let Some(b) = &t.buffered_in {
                return Err(violation(
                    Rule::BatchMembership,
                    "TOKEN_BUFFERED",
                    format!(
                        "token {token} is buffered in batch {b}; the batch decides its outcome"
                    ),
                ));
            }
            if let Outcome::Quarantined { .. } = outcome {
                let failed = match t.row {
                    Some(r) if t.origin == Origin::Source => {
                        get_row(p, r)?.and_then(|row| row.validation_error)
                    }
                    _ => None,
                };
                if failed.is_none() {
                    return Err(violation(
                        Rule::TerminalOutcome,
                        "QUARANTINE_WITHOUT_VALIDATION_ERROR",
                        format!("token {token} is quarantined but no validation error was recorded for its row"),
                    ));
                }
            }
            record_sink_write(p, token, outcome)?;
            t.terminal = Some((Terminal::Outcome(outcome.clone()), seq));
            p.put(PKey::Token(token.clone()), PVal::Token(t));
            rr.live_tokens = rr.live_tokens.saturating_sub(1);
        }
        Event::ArtifactWritten {
            sink,
            path,
            content_hash,
            size,
            rows,
        } => {
            let mut node = need_node(p, sink, Some(NodeKind::Sink))?;
            p.put(
                PKey::Artifact(sink.clone(), node.artifacts),
                PVal::Artifact(ArtifactRec {
                    path: path.clone(),
                    content_hash: *content_hash,
                    size: *size,
                    rows: *rows,
                    seq,
                }),
            );
            node.artifacts += 1;
            p.put(PKey::Node(sink.clone()), PVal::Node(node));
        }
        Event::Checkpoint { rows_ingested, .. } => {
            if *rows_ingested > rr.rows {
                return Err(violation(
                    Rule::WellFormed,
                    "CHECKPOINT_AHEAD",
                    format!(
                        "checkpoint claims {rows_ingested} rows ingested, the ledger has {}",
                        rr.rows
                    ),
                ));
            }
            rr.last_checkpoint_rows = Some(*rows_ingested);
        }
        Event::RunInterrupted { .. } => rr.status = RunStatus::Interrupted,
        Event::RunResumed { .. } => {
            rr.status = RunStatus::Running;
            rr.resumes += 1;
        }
        Event::RunFinished { status } => match status {
            crate::event::FinalStatus::Completed => {
                if rr.live_tokens > 0 {
                    return Err(violation(
                        Rule::RunLifecycle,
                        "LIVE_TOKENS",
                        format!(
                            "run cannot complete: {} token(s) have no terminal outcome",
                            rr.live_tokens
                        ),
                    ));
                }
                if rr.open_states > 0 {
                    return Err(violation(
                        Rule::StateLifecycle,
                        "OPEN_STATES",
                        format!(
                            "run cannot complete: {} state(s) are still open",
                            rr.open_states
                        ),
                    ));
                }
                rr.status = RunStatus::Completed;
            }
            crate::event::FinalStatus::Failed => rr.status = RunStatus::Failed,
        },
    }
    Ok(())
}

fn unreachable_started() {
    // `apply` answers run_started before dispatching here; nothing to do.
}

/// A batch state may record a call on behalf of one of its members; a token state only for
/// its own token.
fn check_served(p: &mut dyn Proj, state: &StateId, served: &TokenId) -> Result<()> {
    match &state.subject {
        Subject::Token(t) if t == served => Ok(()),
        Subject::Token(t) => Err(violation(
            Rule::References,
            "SERVED_TOKEN",
            format!("state {state} processes token {t}; a call on it cannot serve {served}"),
        )),
        Subject::Batch(b) => {
            let tok = need_token(p, served)?;
            if tok.buffered_in.as_ref() == Some(b) {
                Ok(())
            } else {
                Err(violation(
                    Rule::References,
                    "SERVED_TOKEN",
                    format!("token {served} is not a member of batch {b}"),
                ))
            }
        }
    }
}

fn common_row(rows: &[Option<u64>]) -> Option<u64> {
    let first = *rows.first()?;
    rows.iter().all(|r| *r == first).then_some(first).flatten()
}

fn spawn_children(
    p: &mut dyn Proj,
    rr: &mut RunRec,
    seq: u64,
    parent: &TokenId,
    children: Vec<(TokenId, Origin)>,
    terminal: Terminal,
) -> Result<()> {
    if children.is_empty() {
        return Err(violation(
            Rule::WellFormed,
            "NO_CHILDREN",
            format!("{} of {parent} with no children", terminal.name()),
        ));
    }
    let mut t = need_free_token(p, parent)?;
    for (i, (child, origin)) in children.iter().enumerate() {
        if children[..i].iter().any(|(c, _)| c == child) {
            return Err(violation(
                Rule::WellFormed,
                "DUPLICATE_TOKEN",
                format!("child {child} listed twice"),
            ));
        }
        need_new_token(p, child)?;
        p.put(
            PKey::Token(child.clone()),
            PVal::Token(TokenRec::new(
                t.row,
                origin.clone(),
                vec![parent.clone()],
                seq,
            )),
        );
        t.children.push(child.clone());
    }
    t.terminal = Some((terminal, seq));
    p.put(PKey::Token(parent.clone()), PVal::Token(t));
    rr.tokens += children.len() as u64;
    rr.live_tokens = rr.live_tokens + children.len() as u64 - 1;
    Ok(())
}

fn complete_batch(
    p: &mut dyn Proj,
    rr: &mut RunRec,
    seq: u64,
    batch: &crate::ids::BatchId,
    trigger: &str,
    state: &StateId,
    outputs: &BatchOutputs,
) -> Result<()> {
    let mut b = get_batch(p, batch)?.ok_or_else(|| {
        violation(
            Rule::References,
            "DANGLING_BATCH",
            format!("batch {batch} does not exist"),
        )
    })?;
    if b.completion.is_some() {
        return Err(violation(
            Rule::BatchMembership,
            "BATCH_COMPLETED",
            format!("batch {batch} already completed"),
        ));
    }
    if state.subject != Subject::Batch(batch.clone()) {
        return Err(violation(
            Rule::BatchMembership,
            "BATCH_STATE",
            format!("batch {batch}'s completion must name a state of the batch, not {state}"),
        ));
    }
    let st = b
        .states
        .iter()
        .find(|s| s.node == state.node && s.attempt == state.attempt)
        .ok_or_else(|| {
            violation(
                Rule::References,
                "DANGLING_STATE",
                format!("state {state} was never opened"),
            )
        })?;
    let state_ok = matches!(
        (&st.status, outputs),
        (
            StateStatus::Completed { .. },
            BatchOutputs::Transform { .. } | BatchOutputs::Passthrough
        ) | (StateStatus::Failed { .. }, BatchOutputs::Failed { .. })
    );
    if !state_ok {
        return Err(violation(
            Rule::BatchMembership,
            "BATCH_STATE_STATUS",
            format!(
                "batch {batch}: state {state} is {:?}, which does not fit the completion",
                st.status
            ),
        ));
    }
    if b.members == 0 {
        return Err(violation(
            Rule::WellFormed,
            "EMPTY_BATCH",
            format!("batch {batch} has no members"),
        ));
    }
    let mut members = Vec::with_capacity(b.members as usize);
    for i in 0..b.members {
        let id = get_member(p, (batch, i))?
            .ok_or_else(|| LedgerError::Corrupt(format!("batch {batch} lacks member {i}")))?;
        members.push(id);
    }
    let new_outputs: &[TokenId] = match outputs {
        BatchOutputs::Transform { outputs } => outputs,
        _ => &[],
    };
    for (i, out) in new_outputs.iter().enumerate() {
        if new_outputs[..i].contains(out) {
            return Err(violation(
                Rule::WellFormed,
                "DUPLICATE_TOKEN",
                format!("output {out} listed twice"),
            ));
        }
        need_new_token(p, out)?;
    }
    let mut rows = Vec::with_capacity(members.len());
    for m in &members {
        let mut t = need_live_token(p, m)?;
        rows.push(t.row);
        t.buffered_in = None;
        if let BatchOutputs::Transform { .. } = outputs {
            t.terminal = Some((
                Terminal::ConsumedInBatch {
                    batch: batch.clone(),
                },
                seq,
            ));
            t.children.extend(new_outputs.iter().cloned());
        }
        p.put(PKey::Token(m.clone()), PVal::Token(t));
    }
    if let BatchOutputs::Transform { .. } = outputs {
        let row = common_row(&rows);
        for out in new_outputs {
            p.put(
                PKey::Token(out.clone()),
                PVal::Token(TokenRec::new(
                    row,
                    Origin::Batch {
                        batch: batch.clone(),
                    },
                    members.clone(),
                    seq,
                )),
            );
        }
        rr.tokens += new_outputs.len() as u64;
        rr.live_tokens = rr.live_tokens + new_outputs.len() as u64 - members.len() as u64;
    }
    b.completion = Some(BatchCompletion {
        trigger: trigger.to_string(),
        state: state.clone(),
        outputs: outputs.clone(),
        seq,
    });
    p.put(PKey::Batch(batch.clone()), PVal::Batch(b));
    Ok(())
}
