//! The integrity rules: the one `apply` function that folds an event into a run's
//! projections, refusing any event that breaks a rule.
//!
//! It runs on every live append (inside the writer, before anything is written) and again,
//! unchanged, when verification rebuilds projections from the log. It only reads and writes
//! through [`Proj`], so the same code works over storage, a transaction overlay or memory.
//!
//! Records are read by reference and changed in place (`get` / `get_mut`) rather than
//! copied out and put back: `apply` runs once per event on every append and a million times
//! in a verification, and copying a token's record (its states, routes, strings) for every
//! event used to cost more than everything else the rules do.

use crate::error::{violation, LedgerError, Result, Rule};
use crate::event::{BatchOutputs, Event, NodeKind, Outcome};
use crate::ids::{BatchId, Hash32, NodeId, RunId, StateId, Subject, TokenId};
use crate::projection::*;
use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

/// Read/write access to one run's projections.
///
/// A record changed through `get_mut` counts as written, exactly as if it had been `put`.
pub trait Proj {
    fn get(&mut self, key: PKeyRef<'_>) -> Result<Option<&PVal>>;
    fn get_mut(&mut self, key: PKeyRef<'_>) -> Result<Option<&mut PVal>>;
    fn put(&mut self, key: PKey, val: PVal);
}

/// Projections held in memory: verification rebuilds into one, and tests use it.
#[derive(Default, Debug, Clone)]
pub struct MemProj {
    pub map: HashMap<PKey, PVal>,
}

impl MemProj {
    /// Room for `records` records without rehashing (verification knows roughly how many
    /// a run has from its stored record).
    pub fn with_capacity(records: usize) -> MemProj {
        MemProj {
            map: HashMap::with_capacity(records),
        }
    }
}

impl Proj for MemProj {
    fn get(&mut self, key: PKeyRef<'_>) -> Result<Option<&PVal>> {
        Ok(self.map.get(&key))
    }
    fn get_mut(&mut self, key: PKeyRef<'_>) -> Result<Option<&mut PVal>> {
        Ok(self.map.get_mut(&key))
    }
    fn put(&mut self, key: PKey, val: PVal) {
        self.map.insert(key, val);
    }
}

/// A transaction over another `Proj`: reads see its own writes first; nothing reaches the
/// base until [`TxProj::commit`], so a rejected event leaves no trace.
///
/// A record is copied from the base the first time the transaction changes it, and changed
/// in place from then on: one copy per record per transaction, not one per event.
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
    /// As [`TxProj::new`], keeping its changes in `spare` (emptied first) with room for
    /// about `records` of them: a caller that commits many transactions hands back the
    /// map [`TxProj::commit`] returns, so a large commit neither allocates a table nor
    /// rehashes it as its changes grow.
    pub fn reusing(base: &'a mut dyn Proj, mut spare: HashMap<PKey, PVal>, records: usize) -> Self {
        spare.clear();
        spare.reserve(records);
        TxProj {
            base,
            changes: spare,
        }
    }
    /// Writes the changes to the base; returns the emptied map for [`TxProj::reusing`].
    pub fn commit(mut self) -> HashMap<PKey, PVal> {
        for (k, v) in self.changes.drain() {
            self.base.put(k, v);
        }
        self.changes
    }
}

impl Proj for TxProj<'_> {
    // One hash of the key per lookup (`entry_ref`, and a vacant entry inserted through
    // with the hash it already has): the rules look records up several times per event,
    // and hashing keys twice per lookup was a tenth of the writer's instructions.
    fn get(&mut self, key: PKeyRef<'_>) -> Result<Option<&PVal>> {
        match self.changes.entry_ref(&key) {
            EntryRef::Occupied(o) => Ok(Some(&*o.into_mut())),
            EntryRef::Vacant(_) => self.base.get(key),
        }
    }
    fn get_mut(&mut self, key: PKeyRef<'_>) -> Result<Option<&mut PVal>> {
        match self.changes.entry_ref(&key) {
            EntryRef::Occupied(o) => Ok(Some(o.into_mut())),
            EntryRef::Vacant(slot) => {
                let Some(v) = self.base.get(key)? else {
                    return Ok(None);
                };
                Ok(Some(slot.insert_with_key(key.to_owned(), v.clone())))
            }
        }
    }
    fn put(&mut self, key: PKey, val: PVal) {
        self.changes.insert(key, val);
    }
}

fn corrupt(key: PKeyRef<'_>) -> LedgerError {
    LedgerError::Corrupt(format!(
        "projection {key:?} holds a value of the wrong kind"
    ))
}

/// A record that a check has just found, fetched again to change it: its absence means the
/// projections changed under the rules, which cannot happen.
fn vanished(key: PKeyRef<'_>) -> LedgerError {
    LedgerError::Corrupt(format!(
        "projection {key:?} vanished while an event applied"
    ))
}

macro_rules! typed_get {
    ($get:ident, $get_mut:ident, $variant:ident, $ty:ty, $key:ident : $kty:ty => $pkey:expr) => {
        // The lifetime is needed when the key borrows, and merely explicit when it does not.
        #[allow(dead_code, clippy::needless_lifetimes)]
        fn $get<'p>(p: &'p mut dyn Proj, $key: $kty) -> Result<Option<&'p $ty>> {
            let k = $pkey;
            match p.get(k)? {
                None => Ok(None),
                Some(PVal::$variant(v)) => Ok(Some(v)),
                Some(_) => Err(corrupt(k)),
            }
        }
        #[allow(dead_code, clippy::needless_lifetimes)]
        fn $get_mut<'p>(p: &'p mut dyn Proj, $key: $kty) -> Result<Option<&'p mut $ty>> {
            let k = $pkey;
            match p.get_mut(k)? {
                None => Ok(None),
                Some(PVal::$variant(v)) => Ok(Some(v)),
                Some(_) => Err(corrupt(k)),
            }
        }
    };
}

typed_get!(get_node, get_node_mut, Node, NodeRec, id: &NodeId => PKeyRef::Node(id));
typed_get!(get_row, get_row_mut, Row, RowRec, row: u64 => PKeyRef::Row(row));
typed_get!(get_token, get_token_mut, Token, TokenRec, id: &TokenId => PKeyRef::Token(id));
typed_get!(get_batch, get_batch_mut, Batch, BatchRec, id: &BatchId => PKeyRef::Batch(id));
typed_get!(get_call, get_call_mut, Call, CallRec, key: (&StateId, u32) => PKeyRef::Call(key.0, key.1));
typed_get!(get_member, get_member_mut, Member, TokenId, key: (&BatchId, u32) => PKeyRef::Member(key.0, key.1));
typed_get!(get_chunk, get_chunk_mut, SinkChunk, Vec<TokenId>, key: (&NodeId, u64) => PKeyRef::SinkChunk(key.0, key.1));
typed_get!(run_ref, run_mut, Run, RunRec, _unit: () => PKeyRef::Run);
typed_get!(get_pool, get_pool_mut, Pool, PoolRec, state: &StateId => PKeyRef::Pool(state));

/// The run record, if the run has started.
pub fn get_run(p: &mut dyn Proj) -> Result<Option<RunRec>> {
    Ok(run_ref(p, ())?.cloned())
}

/// The run's next seq and head hash (`0` and zeros before the genesis event).
pub fn run_head(p: &mut dyn Proj) -> Result<(u64, Hash32)> {
    Ok(match run_ref(p, ())? {
        Some(rr) => (rr.next_seq, rr.head),
        None => (0, Hash32::ZERO),
    })
}

/// The rule for a node reference: it is registered, and of `kind` when one is required.
fn node_rule(node: Option<&NodeRec>, id: &NodeId, kind: Option<NodeKind>) -> Result<()> {
    let Some(node) = node else {
        return Err(violation(
            Rule::References,
            "DANGLING_NODE",
            format!("node {id} is not registered"),
        ));
    };
    match kind {
        Some(kind) if node.kind != kind => Err(violation(
            Rule::References,
            "WRONG_NODE_KIND",
            format!("node {id} is a {:?}, not a {kind:?}", node.kind),
        )),
        _ => Ok(()),
    }
}

/// A node reference that the event goes on to change.
fn need_node<'p>(
    p: &'p mut dyn Proj,
    id: &NodeId,
    kind: Option<NodeKind>,
) -> Result<&'p mut NodeRec> {
    let node = get_node_mut(p, id)?;
    node_rule(node.as_deref(), id, kind)?;
    node.ok_or_else(|| LedgerError::Corrupt(format!("node {id} vanished while checked")))
}

/// As [`need_node`], for a check that changes nothing.
fn check_node(p: &mut dyn Proj, id: &NodeId, kind: Option<NodeKind>) -> Result<()> {
    node_rule(get_node(p, id)?, id, kind)
}

fn dangling_token(id: &TokenId) -> LedgerError {
    violation(
        Rule::References,
        "DANGLING_TOKEN",
        format!("token {id} does not exist"),
    )
}

fn need_token<'p>(p: &'p mut dyn Proj, id: &TokenId) -> Result<&'p TokenRec> {
    get_token(p, id)?.ok_or_else(|| dangling_token(id))
}

/// A token that may still act: it has no terminal outcome.
fn check_live(t: &TokenRec, id: &TokenId) -> Result<()> {
    if let Some((term, seq)) = &t.terminal {
        return Err(violation(
            Rule::TerminalOutcome,
            "TOKEN_TERMINAL",
            format!("token {id} already ended {} at seq {seq}", term.name()),
        ));
    }
    Ok(())
}

/// A live token that is not waiting in a batch.
fn check_free(t: &TokenRec, id: &TokenId) -> Result<()> {
    check_live(t, id)?;
    if let Some(b) = &t.buffered_in {
        return Err(violation(
            Rule::BatchMembership,
            "TOKEN_BUFFERED",
            format!("token {id} is buffered in batch {b} until it flushes"),
        ));
    }
    Ok(())
}

/// A token that exists and has no terminal outcome.
fn need_live_token<'p>(p: &'p mut dyn Proj, id: &TokenId) -> Result<&'p TokenRec> {
    let t = need_token(p, id)?;
    check_live(t, id)?;
    Ok(t)
}

fn need_live_token_mut<'p>(p: &'p mut dyn Proj, id: &TokenId) -> Result<&'p mut TokenRec> {
    let t = get_token_mut(p, id)?.ok_or_else(|| dangling_token(id))?;
    check_live(t, id)?;
    Ok(t)
}

/// A live token that is not waiting in a batch.
fn need_free_token<'p>(p: &'p mut dyn Proj, id: &TokenId) -> Result<&'p TokenRec> {
    let t = need_token(p, id)?;
    check_free(t, id)?;
    Ok(t)
}

fn need_free_token_mut<'p>(p: &'p mut dyn Proj, id: &TokenId) -> Result<&'p mut TokenRec> {
    let t = get_token_mut(p, id)?.ok_or_else(|| dangling_token(id))?;
    check_free(t, id)?;
    Ok(t)
}

/// A new id that could not be a storage key part (empty, NUL, too long) breaks the
/// well-formedness rule like any other malformed event.
fn well_formed_id(r: std::result::Result<(), crate::ids::InvalidId>) -> Result<()> {
    r.map_err(|e| violation(Rule::WellFormed, "INVALID_ID", e.to_string()))
}

fn need_new_token(p: &mut dyn Proj, id: &TokenId) -> Result<()> {
    well_formed_id(id.validate())?;
    if get_token(p, id)?.is_some() {
        return Err(violation(
            Rule::WellFormed,
            "DUPLICATE_TOKEN",
            format!("token {id} already exists"),
        ));
    }
    Ok(())
}

fn dangling_batch(b: &BatchId) -> LedgerError {
    violation(
        Rule::References,
        "DANGLING_BATCH",
        format!("batch {b} does not exist"),
    )
}

/// The states of the token or batch a state id names: a missing owner is a dangling
/// reference.
fn owner_states<'p>(p: &'p mut dyn Proj, subject: &Subject) -> Result<&'p [StateRec]> {
    match subject {
        Subject::Token(t) => Ok(&need_token(p, t)?.states),
        Subject::Batch(b) => Ok(&get_batch(p, b)?.ok_or_else(|| dangling_batch(b))?.states),
    }
}

fn owner_states_mut<'p>(p: &'p mut dyn Proj, subject: &Subject) -> Result<&'p mut Vec<StateRec>> {
    match subject {
        Subject::Token(t) => Ok(&mut get_token_mut(p, t)?
            .ok_or_else(|| dangling_token(t))?
            .states),
        Subject::Batch(b) => Ok(&mut get_batch_mut(p, b)?
            .ok_or_else(|| dangling_batch(b))?
            .states),
    }
}

/// Finds the state `id` among its owner's states; a state that was never opened is a
/// dangling reference.
fn state_index(states: &[StateRec], id: &StateId) -> Result<usize> {
    states
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
    let sink = need_node(p, &write.sink, Some(NodeKind::Sink))?;
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
    sink.next_ordinal += 1;
    let chunk_no = write.ordinal / SINK_CHUNK;
    match get_chunk_mut(p, (&write.sink, chunk_no))? {
        Some(chunk) => chunk.push(token.clone()),
        None => p.put(
            PKey::SinkChunk(write.sink.clone(), chunk_no),
            PVal::SinkChunk(vec![token.clone()]),
        ),
    }
    Ok(())
}

/// The parts of a run's record that events change, copied out for the length of one event
/// so the rules can consult other records meanwhile (the record itself holds strings, and
/// copying it for every event was a measurable cost). Written back when the event is
/// accepted; the field names are the record's.
#[derive(Clone, Copy)]
struct RunCounters {
    status: RunStatus,
    rows: u64,
    tokens: u64,
    live_tokens: u64,
    open_states: u64,
    states: u64,
    calls: u64,
    resumes: u32,
    last_checkpoint_rows: Option<u64>,
}

impl RunCounters {
    fn of(r: &RunRec) -> RunCounters {
        RunCounters {
            status: r.status,
            rows: r.rows,
            tokens: r.tokens,
            live_tokens: r.live_tokens,
            open_states: r.open_states,
            states: r.states,
            calls: r.calls,
            resumes: r.resumes,
            last_checkpoint_rows: r.last_checkpoint_rows,
        }
    }

    fn store(self, r: &mut RunRec) {
        r.status = self.status;
        r.rows = self.rows;
        r.tokens = self.tokens;
        r.live_tokens = self.live_tokens;
        r.open_states = self.open_states;
        r.states = self.states;
        r.calls = self.calls;
        r.resumes = self.resumes;
        r.last_checkpoint_rows = self.last_checkpoint_rows;
    }
}

/// Applies one event at `seq` (whose record hashes to `hash`) to `run`'s projections.
/// On error nothing must be kept: callers apply through a [`TxProj`] and drop it.
pub fn apply(p: &mut dyn Proj, run: &RunId, seq: u64, hash: Hash32, event: &Event) -> Result<()> {
    let Some((next_seq, mut rr)) = run_ref(p, ())?.map(|r| (r.next_seq, RunCounters::of(r))) else {
        return start_run(p, run, seq, hash, event);
    };
    if seq != next_seq {
        return Err(violation(
            Rule::WellFormed,
            "SEQ",
            format!("event at seq {seq}, but the run's next seq is {next_seq}"),
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
    let rec = run_mut(p, ())?.ok_or_else(|| vanished(PKeyRef::Run))?;
    rr.store(rec);
    rec.next_seq = seq + 1;
    rec.head = hash;
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

fn apply_to_running(p: &mut dyn Proj, rr: &mut RunCounters, seq: u64, event: &Event) -> Result<()> {
    match event {
        Event::RunStarted { .. } => unreachable_started(),
        Event::NodeRegistered {
            node,
            kind,
            plugin,
            config_hash,
        } => {
            well_formed_id(node.validate())?;
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
            check_node(p, from, None)?;
            check_node(p, to, None)?;
            if p.get(PKeyRef::Edge(from, to, label))?.is_some() {
                return Err(violation(
                    Rule::WellFormed,
                    "DUPLICATE_EDGE",
                    format!("edge {from} -> {to} ({label}) exists"),
                ));
            }
            p.put(
                PKey::Edge(from.clone(), to.clone(), label.clone()),
                PVal::Edge,
            );
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
            check_node(p, source, Some(NodeKind::Source))?;
            let token = TokenId::for_row(*row);
            // While every token of the run is a source row's (no fork, expansion, coalesce
            // or batch has made one), the tokens are exactly those of rows 0..rows, and
            // this row's token cannot exist yet. Only then is the lookup skipped: it is a
            // storage read that misses, for every row of a live run.
            if rr.tokens != rr.rows {
                need_new_token(p, &token)?;
            }
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
            let rec = get_row(p, *row)?.ok_or_else(|| {
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
            let rec = get_row_mut(p, *row)?.ok_or_else(|| vanished(PKeyRef::Row(*row)))?;
            rec.validation_error = Some(error.clone());
        }
        Event::RowDetail { row, .. } => {
            if get_row(p, *row)?.is_none() {
                return Err(violation(
                    Rule::References,
                    "DANGLING_ROW",
                    format!("row {row} was never ingested"),
                ));
            }
        }
        Event::StateOpened { state, input } => {
            check_node(p, &state.node, None)?;
            let states: &[StateRec] = match &state.subject {
                Subject::Token(t) => &need_free_token(p, t)?.states,
                Subject::Batch(b) => {
                    let batch = get_batch(p, b)?.ok_or_else(|| dangling_batch(b))?;
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
                    &batch.states
                }
            };
            let mut expected = 1u32;
            let mut last_open = false;
            for s in states.iter().filter(|s| s.node == state.node) {
                expected += 1;
                last_open = s.status == StateStatus::Open;
            }
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
            if last_open {
                return Err(violation(
                    Rule::StateLifecycle,
                    "PREVIOUS_ATTEMPT_OPEN",
                    format!("{}: attempt {} is still open", state.subject, expected - 1),
                ));
            }
            owner_states_mut(p, &state.subject)?.push(StateRec {
                node: state.node.clone(),
                attempt: state.attempt,
                input: *input,
                opened_seq: seq,
                status: StateStatus::Open,
                closed_seq: None,
                duration_us: 0,
                calls: 0,
            });
            rr.open_states += 1;
            rr.states += 1;
        }
        Event::StateClosed {
            state,
            result,
            duration_us,
        } => {
            let states = owner_states_mut(p, &state.subject)?;
            let i = state_index(states, state)?;
            let rec = &mut states[i];
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
            rr.open_states = rr.open_states.saturating_sub(1);
        }
        Event::CallAllocated {
            state,
            index,
            kind,
            request,
            served,
        } => {
            let states = owner_states(p, &state.subject)?;
            let rec = &states[state_index(states, state)?];
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
            if let Some(t) = served {
                check_served(p, state, t)?;
            }
            let states = owner_states_mut(p, &state.subject)?;
            let i = state_index(states, state)?;
            states[i].calls += 1;
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
            let call = get_call(p, (state, *index))?.ok_or_else(|| {
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
            let states = owner_states(p, &state.subject)?;
            need_open(
                &states[state_index(states, state)?],
                state,
                Rule::CallIndices,
                "CALL_ON_CLOSED_STATE",
            )?;
            let call = get_call_mut(p, (state, *index))?
                .ok_or_else(|| vanished(PKeyRef::Call(state, *index)))?;
            call.completion = Some(CallCompletion {
                outcome: outcome.clone(),
                response: *response,
                latency_us: *latency_us,
                seq,
            });
        }
        Event::RouteDecided {
            state,
            token,
            label,
            to,
        } => {
            if !matches!(&state.subject, Subject::Token(t) if t == token) {
                return Err(violation(
                    Rule::References,
                    "ROUTE_SUBJECT",
                    format!("state {state} does not process token {token}"),
                ));
            }
            let t = need_live_token(p, token)?;
            state_index(&t.states, state)?;
            for n in to {
                check_node(p, n, None)?;
            }
            let t = get_token_mut(p, token)?.ok_or_else(|| dangling_token(token))?;
            t.routes.push(RouteRec {
                node: state.node.clone(),
                attempt: state.attempt,
                label: label.clone(),
                to: to.clone(),
                seq,
            });
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
            spawn_children(p, rr, seq, parent, kids, Terminal::Forked)?;
        }
        Event::TokenExpanded { parent, children } => {
            let kids = children
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), Origin::Expand { index: i as u64 }))
                .collect();
            spawn_children(p, rr, seq, parent, kids, Terminal::Expanded)?;
        }
        Event::TokensCoalesced {
            node,
            parents,
            merged,
        } => {
            check_node(p, node, Some(NodeKind::Coalesce))?;
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
                let t = need_free_token_mut(p, parent)?;
                no_open_state(t, parent)?;
                rows.push(t.row);
                t.terminal = Some((
                    Terminal::Coalesced {
                        into: merged.clone(),
                    },
                    seq,
                ));
                t.children.push(merged.clone());
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
            well_formed_id(batch.validate())?;
            check_node(p, node, Some(NodeKind::Aggregation))?;
            if get_batch(p, batch)?.is_some() {
                return Err(violation(
                    Rule::WellFormed,
                    "DUPLICATE_BATCH",
                    format!("batch {batch} already exists"),
                ));
            }
            p.put(
                PKey::Batch(batch.clone()),
                PVal::Batch(BatchRec {
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
            let b = get_batch(p, batch)?.ok_or_else(|| dangling_batch(batch))?;
            if b.completion.is_some() {
                return Err(violation(
                    Rule::BatchMembership,
                    "BATCH_COMPLETED",
                    format!("batch {batch} has completed; its membership is fixed"),
                ));
            }
            // The state that processes a batch processes the members it had when it
            // opened: joining later would let a completion claim rows it never saw.
            if !b.states.is_empty() {
                return Err(violation(
                    Rule::BatchMembership,
                    "BATCH_PROCESSING",
                    format!("batch {batch} is already being processed; its membership is fixed"),
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
            let t = need_free_token_mut(p, token)?;
            t.buffered_in = Some(batch.clone());
            t.batches.push(batch.clone());
            p.put(
                PKey::Member(batch.clone(), *ordinal),
                PVal::Member(token.clone()),
            );
            let b = get_batch_mut(p, batch)?.ok_or_else(|| dangling_batch(batch))?;
            b.members += 1;
        }
        Event::BatchCompleted {
            batch,
            trigger,
            state,
            outputs,
        } => complete_batch(p, rr, seq, batch, trigger, state, outputs)?,
        Event::TokenOutcome { token, outcome } => {
            let t = need_live_token(p, token)?;
            no_open_state(t, token)?;
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
                let source_row = match t.row {
                    Some(r) if t.origin == Origin::Source => Some(r),
                    _ => None,
                };
                let failed = match source_row {
                    Some(r) => get_row(p, r)?.is_some_and(|row| row.validation_error.is_some()),
                    None => false,
                };
                if !failed {
                    return Err(violation(
                        Rule::TerminalOutcome,
                        "QUARANTINE_WITHOUT_VALIDATION_ERROR",
                        format!("token {token} is quarantined but no validation error was recorded for its row"),
                    ));
                }
            }
            record_sink_write(p, token, outcome)?;
            let t = get_token_mut(p, token)?.ok_or_else(|| dangling_token(token))?;
            t.terminal = Some((Terminal::Outcome(outcome.clone()), seq));
            rr.live_tokens = rr.live_tokens.saturating_sub(1);
        }
        Event::ArtifactWritten {
            sink,
            path,
            content_hash,
            size,
            rows,
        } => {
            let node = need_node(p, sink, Some(NodeKind::Sink))?;
            let ordinal = node.artifacts;
            node.artifacts += 1;
            p.put(
                PKey::Artifact(sink.clone(), ordinal),
                PVal::Artifact(ArtifactRec {
                    path: path.clone(),
                    content_hash: *content_hash,
                    size: *size,
                    rows: *rows,
                    seq,
                }),
            );
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
        Event::PoolStats {
            state,
            capacity_retries,
            peak_delay_us,
            throttled_us,
        } => {
            // The state exists and is still open: the figures describe its calls, which
            // all happen while it is open, and nothing is added to a closed state.
            let states = owner_states(p, &state.subject)?;
            need_open(
                &states[state_index(states, state)?],
                state,
                Rule::StateLifecycle,
                "POOL_STATS_ON_CLOSED_STATE",
            )?;
            if get_pool(p, state)?.is_some() {
                return Err(violation(
                    Rule::WellFormed,
                    "POOL_STATS_TWICE",
                    format!("state {state} already has its pool statistics"),
                ));
            }
            p.put(
                PKey::Pool(state.clone()),
                PVal::Pool(PoolRec {
                    capacity_retries: *capacity_retries,
                    peak_delay_us: *peak_delay_us,
                    throttled_us: *throttled_us,
                    seq,
                }),
            );
        }
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

/// A token ends only after every state it opened has closed (a state left open could
/// still take calls for a token that has already ended).
fn no_open_state(t: &TokenRec, token: &TokenId) -> Result<()> {
    match t.states.iter().find(|s| s.status == StateStatus::Open) {
        None => Ok(()),
        Some(s) => Err(violation(
            Rule::StateLifecycle,
            "STATE_OPEN_AT_OUTCOME",
            format!(
                "token {token} cannot end while its state at {} (attempt {}) is open",
                s.node, s.attempt
            ),
        )),
    }
}

fn spawn_children(
    p: &mut dyn Proj,
    rr: &mut RunCounters,
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
    let parent_rec = need_free_token(p, parent)?;
    no_open_state(parent_rec, parent)?;
    let row = parent_rec.row;
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
                row,
                origin.clone(),
                vec![parent.clone()],
                seq,
            )),
        );
    }
    let count = children.len() as u64;
    let t = get_token_mut(p, parent)?.ok_or_else(|| dangling_token(parent))?;
    t.children.extend(children.into_iter().map(|(c, _)| c));
    t.terminal = Some((terminal, seq));
    rr.tokens += count;
    rr.live_tokens = rr.live_tokens + count - 1;
    Ok(())
}

fn complete_batch(
    p: &mut dyn Proj,
    rr: &mut RunCounters,
    seq: u64,
    batch: &BatchId,
    trigger: &str,
    state: &StateId,
    outputs: &BatchOutputs,
) -> Result<()> {
    let b = get_batch(p, batch)?.ok_or_else(|| dangling_batch(batch))?;
    if b.completion.is_some() {
        return Err(violation(
            Rule::BatchMembership,
            "BATCH_COMPLETED",
            format!("batch {batch} already completed"),
        ));
    }
    if !matches!(&state.subject, Subject::Batch(s) if s == batch) {
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
    let member_count = b.members;
    if member_count == 0 {
        return Err(violation(
            Rule::WellFormed,
            "EMPTY_BATCH",
            format!("batch {batch} has no members"),
        ));
    }
    let mut members = Vec::with_capacity(member_count as usize);
    for i in 0..member_count {
        let id = get_member(p, (batch, i))?
            .ok_or_else(|| LedgerError::Corrupt(format!("batch {batch} lacks member {i}")))?;
        members.push(id.clone());
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
    let transform = matches!(outputs, BatchOutputs::Transform { .. });
    let mut rows = Vec::with_capacity(members.len());
    for m in &members {
        let t = need_live_token_mut(p, m)?;
        rows.push(t.row);
        t.buffered_in = None;
        if transform {
            t.terminal = Some((
                Terminal::ConsumedInBatch {
                    batch: batch.clone(),
                },
                seq,
            ));
            t.children.extend(new_outputs.iter().cloned());
        }
    }
    if transform {
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
    let b = get_batch_mut(p, batch)?.ok_or_else(|| dangling_batch(batch))?;
    b.completion = Some(BatchCompletion {
        trigger: trigger.to_string(),
        state: state.clone(),
        outputs: outputs.clone(),
        seq,
    });
    Ok(())
}
