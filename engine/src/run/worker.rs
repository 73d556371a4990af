//! Processing one source record: everything a row does between the source and the sinks.
//!
//! A worker owns the row it processes and everything it records about it; the only shared
//! things are the immutable plan, the ledger handle and the call backend. The row's events
//! are gathered into one commit, and the rows bound for sinks are handed back for the
//! sequencer to write in source order.
//!
//! A plugin that makes external calls needs its state in the ledger before the first call
//! is allocated on it, so before such a plugin runs the events gathered so far (the
//! state's opening included) are sent as a commit of their own, and each call's completion
//! is sent as the plugin gets its answer; the rest of the row follows in its final commit.
//! The writer applies commits in the order they are sent, so none of these is waited for
//! on the way: the worker hands them to the sequencer with the row's final commit, and the
//! sequencer checks them all before it records anything that follows from the row. A row
//! that meets no calling plugin is recorded in exactly one commit, as before.

use super::interrupted::Interrupted;
use super::io::{Quarantine, SourceRecord};
use super::resume::applied::{Place, Record};
use super::EngineError;
use crate::calls::{CallBackend, CallContext, CallScope, Journal, ReusingBackend};
use crate::plan::{
    CallSpec, Condition, Expand, ForkBranch, NodeExec, NodePlan, Plan, Target, Transform,
    TransformError,
};
use crate::value::{Row, Value};
use attest_ledger::{
    Commit, Durability, Event, ForkChild, Hash32, Outcome, RunHandle, StateId, StateResult,
    Subject, TokenId,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// How a delivered row counts at its sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    Completed,
    Routed,
    Quarantined,
}

/// A token's row bound for a sink.
#[derive(Debug)]
pub struct Delivery {
    pub token: TokenId,
    pub sink: usize,
    pub kind: DeliveryKind,
    pub row: Row,
}

/// The fork a token descends from: its branch, and the coalesce that waits for it.
#[derive(Clone, Debug, PartialEq)]
pub struct ForkCtx {
    pub parent: TokenId,
    pub branch: String,
    /// Index into [`Plan::nodes`].
    pub coalesce: Option<usize>,
}

/// A token on its way: its id, its row, and the forks it is a branch of (innermost last).
#[derive(Clone, Debug)]
pub struct Token {
    pub id: TokenId,
    pub row: Row,
    pub forks: Vec<ForkCtx>,
}

impl Token {
    pub fn new(id: TokenId, row: Row) -> Token {
        Token {
            id,
            row,
            forks: Vec::new(),
        }
    }
}

/// What a walk leaves for the sequencer, which owns every node that holds tokens across
/// rows (aggregations, coalesces) and sees rows in source order.
#[derive(Debug)]
pub enum Held {
    /// A token reached an aggregation or coalesce node (index into [`Plan::nodes`]).
    Arrived { node: usize, token: Token },
    /// A branch bound for `coalesce` ended before it got there.
    Lost {
        coalesce: usize,
        parent: TokenId,
        branch: String,
        /// The forks the parent itself is a branch of.
        outer: Vec<ForkCtx>,
    },
}

/// Rows that ended `failed` because a calling plugin got no usable answer before its
/// retries ran out (a dead, hanging or overloaded endpoint), and the first such error in
/// row order. `attest run` exits 1 for these: the rows are recorded as ELSPETH records
/// them, but the run did not do its work.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unanswered {
    pub rows: u64,
    pub first: Option<String>,
}

impl Unanswered {
    pub fn add(&mut self, other: Unanswered) {
        self.rows += other.rows;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// What one source record came to.
#[derive(Default)]
pub struct RowResult {
    pub row_index: u64,
    /// The row's commit, sent but not awaited: the writer applies commits in the order
    /// they were sent, and the sequencer only records this row's outcomes after it has
    /// received this result, so they always follow the row's own events. The sequencer
    /// checks the result before it records anything more.
    pub commit: Option<attest_ledger::Pending>,
    /// Commits the row sent before `commit` (a calling plugin's state, its calls'
    /// completions), unconfirmed. The sequencer checks them with `commit`, before it
    /// records anything that follows from the row: checking them here would hold the
    /// worker for a writer round trip after every call, while its next row could already
    /// be waiting on its own.
    pub earlier: Vec<attest_ledger::Pending>,
    pub deliveries: Vec<Delivery>,
    /// In the order the walk met them.
    pub held: Vec<Held>,
    pub failed: u64,
    pub discarded: u64,
    pub quarantined: u64,
    pub unanswered: Unanswered,
}

/// Adds a row's canonical bytes to the commit being built, unless they are the value
/// added last.
///
/// Payloads travel inside the commit that references them and the ledger stores them in
/// the same atomic write, a commit group's payloads together (`attest_ledger::packs`):
/// a worker writes nothing to storage itself.
#[derive(Default)]
pub(crate) struct Payloads {
    last: Option<Hash32>,
}

impl Payloads {
    /// Adds any value (a batch's rows, an expansion's outputs).
    pub(crate) fn store_value(
        &mut self,
        commit: &mut Commit,
        value: &Value,
    ) -> Result<Hash32, EngineError> {
        Ok(commit.value(value)?)
    }

    pub(crate) fn store_row(
        &mut self,
        commit: &mut Commit,
        row: &Row,
    ) -> Result<Hash32, EngineError> {
        let bytes = attest_ledger::canonical::object_to_canonical_bytes(row)
            .map_err(|e| EngineError::Ledger(e.into()))?;
        let hash = Hash32::of(&bytes);
        if self.last != Some(hash) {
            commit.payload(bytes);
            self.last = Some(hash);
        }
        Ok(hash)
    }
}

/// Adds the ingestion of a source record, and its payload, to `commit`. The source reader
/// records rows itself, in source order, so row indices in the ledger are contiguous and a
/// gap would mean a lost row.
pub fn ingest(
    plan: &Plan,
    commit: &mut Commit,
    row_index: u64,
    record: &SourceRecord,
) -> Result<(), EngineError> {
    let bytes = attest_ledger::canonical::to_canonical_bytes(&record.raw)
        .map_err(|e| EngineError::Ledger(e.into()))?;
    let payload = commit.payload(bytes);
    commit.push(Event::RowIngested {
        row: row_index,
        source: plan.source.id.clone(),
        payload,
    });
    Ok(())
}

/// How a walk records what it does.
#[derive(Clone, Copy)]
pub enum Recording<'a> {
    /// Every commit is sent as it is made: a row walked for the first time, and the
    /// sequencer's own walks.
    Send,
    /// Work a stopped run may have recorded already (`attest resume`): a row it had read,
    /// or the sequencer's work since its last checkpoint. Each commit is first compared
    /// with the record, and only what is not recorded is sent; a calling plugin whose
    /// state is recorded gets its answers from the record instead of calling out
    /// (`resume::applied`).
    Resumed { record: &'a Record, place: Place },
    /// Nothing is sent: the walk gathers its events for the caller to compare with the
    /// record (resume rebuilding an open batch). Every calling state it meets must be
    /// recorded; its calls are answered from the record.
    Gather(&'a Record),
}

/// Runs one ingested record through the plan and commits what happened. `interrupted`:
/// attempts to walk as the record has them (re-execution of a resumed run; none in a run).
pub fn process_record(
    plan: &Plan,
    run: &RunHandle,
    calls: &Arc<dyn CallBackend>,
    interrupted: &Interrupted,
    row_index: u64,
    record: SourceRecord,
) -> Result<RowResult, EngineError> {
    let w = Walker::new(plan, run, calls).interrupted(interrupted);
    let (w, quarantined) = walk_source_row(w, row_index, record)?;
    finish_row(w, row_index, quarantined)
}

/// Runs a record a stopped run had already read (`attest resume`): what the record holds
/// of it is checked, not recorded again (see [`Recording::Resumed`]).
pub(crate) fn reprocess_record(
    plan: &Plan,
    run: &RunHandle,
    calls: &Arc<dyn CallBackend>,
    record_check: &Record,
    row_index: u64,
    record: SourceRecord,
) -> Result<RowResult, EngineError> {
    let w = Walker::new(plan, run, calls)
        .recording(Recording::Resumed {
            record: record_check,
            place: Place::Row(row_index),
        })
        .reusing_answers();
    let (w, quarantined) = walk_source_row(w, row_index, record)?;
    finish_row(w, row_index, quarantined)
}

/// Runs one ingested record through the plan without sending anything: the row's events,
/// and what it hands the sequencer (`commit` left empty). Resume uses it to rebuild an
/// open batch from its members' rows and checks the events against the record.
pub fn walk_record(
    plan: &Plan,
    run: &RunHandle,
    row_index: u64,
    record: SourceRecord,
) -> Result<(Commit, RowResult), EngineError> {
    let check = Record::new(run.ledger().clone(), run.id().clone());
    // Calls are answered from the record (`Recording::Gather`), never by this backend.
    let calls: Arc<dyn CallBackend> = check.answers();
    let w = Walker::new(plan, run, &calls).recording(Recording::Gather(&check));
    let (mut w, quarantined) = walk_source_row(w, row_index, record)?;
    // A gathering walk sends nothing: its events are all in its commit.
    let commit = std::mem::take(&mut w.commit);
    Ok((commit, w.into_row_result(row_index, quarantined, None)))
}

/// Walks a source record from the source: a row that failed validation is quarantined,
/// any other follows the source's `on_success`. Returns the walker and the rows
/// quarantined.
fn walk_source_row<'a>(
    mut w: Walker<'a>,
    row_index: u64,
    record: SourceRecord,
) -> Result<(Walker<'a>, u64), EngineError> {
    let plan = w.plan;
    let mut quarantined = 0;
    let token = TokenId::for_row(row_index);
    match record.parsed {
        Err(Quarantine { row, error }) => {
            w.commit.push(Event::ValidationFailed {
                row: row_index,
                error,
            });
            quarantined += 1;
            match plan.source.on_validation_failure {
                Some(sink) => w.deliveries.push(Delivery {
                    token,
                    sink,
                    kind: DeliveryKind::Quarantined,
                    row,
                }),
                None => w.commit.push(Event::TokenOutcome {
                    token,
                    outcome: Outcome::Quarantined { write: None },
                }),
            }
        }
        Ok(row) => w.run(Token::new(token, row), plan.source.on_success.clone())?,
    }
    Ok((w, quarantined))
}

/// Sends a row's last commit; the ones it sent before go to the sequencer with it.
fn finish_row(
    mut w: Walker<'_>,
    row_index: u64,
    quarantined: u64,
) -> Result<RowResult, EngineError> {
    let rest = std::mem::take(&mut w.commit);
    // A row that went straight to an aggregation or coalesce recorded nothing yet.
    let commit = w.send(rest)?;
    Ok(w.into_row_result(row_index, quarantined, commit))
}

/// Follows tokens through the row-local nodes (transforms, expansions, gates, forks),
/// gathering their events into one commit. Used by workers for source rows and by the
/// sequencer for the tokens that aggregations and coalesces release.
pub struct Walker<'a> {
    plan: &'a Plan,
    run: &'a RunHandle,
    calls: &'a Arc<dyn CallBackend>,
    recording: Recording<'a>,
    /// Attempts the record closed as interrupted, for a walk that sends (re-execution of a
    /// resumed run); a walk that repeats recorded work asks the record itself.
    interrupted: &'a Interrupted,
    /// A resumed run: a new attempt after interrupted ones takes their recorded answers.
    reuse_answers: bool,
    /// Events not yet sent. Before a calling plugin runs they are sent on their own.
    pub commit: Commit,
    /// Commits sent before `commit` (a calling plugin's state, its calls' completions),
    /// not yet confirmed: whoever sends `commit` checks them after it.
    pub unconfirmed: Vec<attest_ledger::Pending>,
    payloads: Payloads,
    pub deliveries: Vec<Delivery>,
    pub held: Vec<Held>,
    pub failed: u64,
    pub discarded: u64,
    pub unanswered: Unanswered,
}

impl<'a> Walker<'a> {
    pub fn new(plan: &'a Plan, run: &'a RunHandle, calls: &'a Arc<dyn CallBackend>) -> Walker<'a> {
        Walker {
            plan,
            run,
            calls,
            recording: Recording::Send,
            interrupted: Interrupted::none(),
            reuse_answers: false,
            commit: Commit::new(),
            unconfirmed: Vec::new(),
            payloads: Payloads::default(),
            deliveries: Vec::new(),
            held: Vec::new(),
            failed: 0,
            discarded: 0,
            unanswered: Unanswered::default(),
        }
    }

    /// The same walker, recording as `recording` says.
    pub fn recording(mut self, recording: Recording<'a>) -> Walker<'a> {
        self.recording = recording;
        self
    }

    /// The same walker, walking the attempts in `interrupted` as the record has them.
    pub fn interrupted(mut self, interrupted: &'a Interrupted) -> Walker<'a> {
        self.interrupted = interrupted;
        self
    }

    /// The same walker, in a resumed run: see [`Walker::with_calls`].
    pub fn reusing_answers(mut self) -> Walker<'a> {
        self.reuse_answers = true;
        self
    }

    /// What the sequencer is handed of a finished walk of source row `row_index`: its
    /// last commit as sent (`commit`), the ones sent before it, and what it delivered,
    /// held and counted.
    fn into_row_result(
        self,
        row_index: u64,
        quarantined: u64,
        commit: Option<attest_ledger::Pending>,
    ) -> RowResult {
        RowResult {
            row_index,
            earlier: self.unconfirmed,
            commit,
            deliveries: self.deliveries,
            held: self.held,
            failed: self.failed,
            discarded: self.discarded,
            quarantined,
            unanswered: self.unanswered,
        }
    }

    /// Adds a value's canonical form to the walk's commit; returns its hash.
    pub(crate) fn store_value(&mut self, value: &Value) -> Result<Hash32, EngineError> {
        self.payloads.store_value(&mut self.commit, value)
    }

    /// Sends `commit` as the walk's recording says; `None` when nothing was sent. A
    /// resumed walk drops the part of it the record already holds (a row's events are
    /// recorded as a prefix of its walk: commits apply in order, all or nothing), and once
    /// it meets an event the record lacks, it has caught up: everything after is new.
    fn send(&mut self, mut commit: Commit) -> Result<Option<attest_ledger::Pending>, EngineError> {
        if commit.items.is_empty() {
            return Ok(None);
        }
        match self.recording {
            Recording::Send => {}
            Recording::Resumed { record, place } => {
                let recorded = record.recorded_prefix(place, &commit.items)?;
                if recorded == commit.items.len() {
                    return Ok(None);
                }
                commit.items.drain(..recorded);
                self.recording = Recording::Send;
            }
            Recording::Gather(_) => {
                return Err(EngineError::Internal(
                    "a gathering walk cannot send its events".into(),
                ))
            }
        }
        Ok(Some(self.run.submit_nowait(commit, Durability::Buffered)?))
    }

    /// Whether this walk repeats recorded work still (it has not met an event the record
    /// lacks).
    pub(crate) fn repeating(&self) -> bool {
        !matches!(self.recording, Recording::Send)
    }

    /// Walks `token` from `target`, and every token it spawns, breadth-first: children are
    /// queued in branch (or element) order and each runs until it reaches a sink, is held,
    /// spawns or ends. This order is what decides the order of rows within a sink.
    pub fn run(&mut self, token: Token, target: Target) -> Result<(), EngineError> {
        let mut queue = VecDeque::from([(token, target, None)]);
        while let Some((token, target, input)) = queue.pop_front() {
            self.step(token, target, input, &mut queue)?;
        }
        Ok(())
    }

    /// Ends `token` with `outcome` (not a sink write: those are recorded by the sequencer
    /// once durable).
    pub fn end(&mut self, token: &Token, outcome: Outcome) {
        match &outcome {
            Outcome::Failed { .. } => self.failed += 1,
            Outcome::Discarded { .. } => self.discarded += 1,
            _ => {}
        }
        self.commit.push(Event::TokenOutcome {
            token: token.id.clone(),
            outcome,
        });
        self.lost(&token.forks);
    }

    /// A token of a branch ended somewhere other than its coalesce: tell the coalesce.
    pub fn lost(&mut self, forks: &[ForkCtx]) {
        if let Some(ForkCtx {
            parent,
            branch,
            coalesce: Some(c),
        }) = forks.last()
        {
            self.held.push(Held::Lost {
                coalesce: *c,
                parent: parent.clone(),
                branch: branch.clone(),
                outer: forks[..forks.len() - 1].to_vec(),
            });
        }
    }

    fn step(
        &mut self,
        mut token: Token,
        mut target: Target,
        mut input: Option<Hash32>,
        queue: &mut VecDeque<(Token, Target, Option<Hash32>)>,
    ) -> Result<(), EngineError> {
        let plan = self.plan;
        loop {
            let i = match target {
                Target::Sink { sink, routed } => {
                    self.lost(&token.forks);
                    self.deliveries.push(Delivery {
                        token: token.id,
                        sink,
                        kind: if routed {
                            DeliveryKind::Routed
                        } else {
                            DeliveryKind::Completed
                        },
                        row: token.row,
                    });
                    return Ok(());
                }
                Target::Discard { reason } => {
                    self.end(&token, Outcome::Discarded { reason });
                    return Ok(());
                }
                Target::Fork(branches) => {
                    self.fork(token, &branches, queue);
                    return Ok(());
                }
                Target::Node(i) => i,
            };
            let node = plan
                .nodes
                .get(i)
                .ok_or_else(|| EngineError::Internal(format!("plan has no node {i}")))?;
            if matches!(
                node.exec,
                NodeExec::Aggregation { .. } | NodeExec::Coalesce { .. }
            ) {
                self.held.push(Held::Arrived { node: i, token });
                return Ok(());
            }
            let in_hash = match input {
                Some(h) => h,
                None => self.payloads.store_row(&mut self.commit, &token.row)?,
            };
            let flow = match &node.exec {
                NodeExec::Transform {
                    plugin,
                    on_success,
                    on_error,
                } => self.transform(
                    node,
                    &mut token,
                    in_hash,
                    plugin.as_ref(),
                    on_success,
                    on_error,
                )?,
                NodeExec::Expand {
                    plugin,
                    on_success,
                    on_error,
                } => {
                    return self.expand(
                        node,
                        token,
                        in_hash,
                        plugin.as_ref(),
                        on_success,
                        on_error,
                        queue,
                    );
                }
                NodeExec::Gate { condition, routes } => {
                    self.gate(node, &token, in_hash, condition.as_ref(), routes)
                }
                NodeExec::Aggregation { .. } | NodeExec::Coalesce { .. } => {
                    return Err(EngineError::Internal(format!(
                        "node {} holds tokens and cannot be walked through",
                        node.id
                    )))
                }
            };
            match flow {
                Flow::Next(t, h) => {
                    target = t;
                    input = Some(h);
                }
                Flow::End(outcome) => {
                    self.end(&token, outcome);
                    return Ok(());
                }
            }
        }
    }

    /// Records a state that a node completed in one step (a coalesce's merge): opened and
    /// closed with its input and output.
    pub(crate) fn completed_state(
        &mut self,
        token: &TokenId,
        node: &attest_ledger::NodeId,
        input: &Value,
        output: &Row,
    ) -> Result<(), EngineError> {
        let started = Instant::now();
        let input = self.payloads.store_value(&mut self.commit, input)?;
        let output = self.payloads.store_row(&mut self.commit, output)?;
        let state = StateId {
            subject: Subject::Token(token.clone()),
            node: node.clone(),
            attempt: 1,
        };
        self.commit.push(Event::StateOpened {
            state: state.clone(),
            input,
        });
        self.close(&state, StateResult::Completed { output }, started);
        Ok(())
    }

    /// Opens the state of `token`'s attempt at `node`.
    fn open(&mut self, token: &TokenId, node: &NodePlan, attempt: u32, input: Hash32) -> StateId {
        let state = StateId {
            subject: Subject::Token(token.clone()),
            node: node.id.clone(),
            attempt,
        };
        self.commit.push(Event::StateOpened {
            state: state.clone(),
            input,
        });
        state
    }

    fn close(&mut self, state: &StateId, result: StateResult, started: Instant) {
        self.commit.push(Event::StateClosed {
            state: state.clone(),
            result,
            duration_us: elapsed_us(started),
        });
    }

    /// A row-level error: the unchanged input row goes to `on_error`, the decision recorded
    /// on the failed state.
    fn route_error(
        &mut self,
        state: StateId,
        token: &TokenId,
        on_error: &Target,
        input: Hash32,
    ) -> Flow {
        let to = target_nodes(self.plan, on_error);
        if !to.is_empty() {
            self.commit.push(Event::RouteDecided {
                state,
                token: token.clone(),
                label: "on_error".into(),
                to,
            });
        }
        Flow::Next(on_error.clone(), input)
    }

    /// Runs a row transform, retrying retryable failures under the pipeline's policy: each
    /// attempt is its own state, numbered 1, 2, 3, ...
    fn transform(
        &mut self,
        node: &NodePlan,
        token: &mut Token,
        in_hash: Hash32,
        plugin: &dyn Transform,
        on_success: &Target,
        on_error: &Target,
    ) -> Result<Flow, EngineError> {
        let policy = self.plan.retry;
        let mut attempt = 1u32;
        // Attempts the record closed as interrupted: walked as recorded, not counted
        // against the retry policy (they did not fail; their run stopped).
        let mut interrupted: Vec<StateId> = Vec::new();
        loop {
            let state = self.open(&token.id, node, attempt, in_hash);
            if self.skip_interrupted(&state)? {
                interrupted.push(state);
                attempt += 1;
                continue;
            }
            let started = Instant::now();
            let result = match plugin.calls() {
                None => plugin.process(&token.row, CallContext::none()),
                Some(spec) => self.with_calls(spec, &state, &interrupted, |ctx| {
                    plugin.process(&token.row, ctx)
                })?,
            };
            match result {
                Ok(out) => {
                    let out_hash = self.payloads.store_row(&mut self.commit, &out)?;
                    self.close(&state, StateResult::Completed { output: out_hash }, started);
                    token.row = out;
                    return Ok(Flow::Next(on_success.clone(), out_hash));
                }
                Err(e) => {
                    self.close(
                        &state,
                        StateResult::Failed {
                            error: e.message(),
                            retryable: e.retryable,
                        },
                        started,
                    );
                    if !e.retryable {
                        return Ok(self.route_error(state, &token.id, on_error, in_hash));
                    }
                    let tried = attempt.saturating_sub(interrupted.len() as u32);
                    if tried >= policy.max_attempts {
                        // ELSPETH: an exhausted retry fails the row; it does not go to
                        // on_error.
                        let error = format!(
                            "{}: gave up after {tried} attempt(s): {}",
                            node.id,
                            e.message()
                        );
                        if plugin.calls().is_some() {
                            self.unanswered.add(Unanswered {
                                rows: 1,
                                first: Some(error.clone()),
                            });
                        }
                        return Ok(Flow::End(Outcome::Failed { error }));
                    }
                    // An attempt repeated from the record is not waited for again.
                    if matches!(self.recording, Recording::Send) {
                        std::thread::sleep(policy.delay(tried, jitter(&token.id, attempt)));
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Whether the record closed `state`, just opened, as interrupted (its run stopped
    /// while it was calling out; `attest resume` closed it). If so, its close is walked as
    /// recorded, and the caller goes on with the next attempt: a resumed run records
    /// nothing new for it, and re-execution reproduces the record id for id.
    pub(crate) fn skip_interrupted(&mut self, state: &StateId) -> Result<bool, EngineError> {
        let interrupted = match self.recording {
            Recording::Resumed { record, .. } | Recording::Gather(record) => {
                record.is_interrupted(state)?
            }
            Recording::Send => self.interrupted.contains(state),
        };
        if interrupted {
            self.close(state, StateResult::interrupted(), Instant::now());
        }
        Ok(interrupted)
    }

    /// Runs `f` with a context bound to `state` for external calls: sends the events so
    /// far (so the state exists in the ledger), opens the state for calls, runs `f`, then
    /// closes the state for calls and records its pool statistics (if a pool served it),
    /// before anything else is recorded on it. A call that could not be recorded or
    /// (re-execution) answered stops the run, whatever the plugin made of it.
    ///
    /// A walk that repeats recorded work ([`Recording::Resumed`], [`Recording::Gather`])
    /// runs a state the record already holds with its calls answered from the record:
    /// nothing is sent out and nothing is recorded again. `interrupted` are the earlier
    /// attempts of this node and subject that were interrupted: in a resumed run, this
    /// attempt answers the calls they got answers for from the record
    /// ([`crate::calls::ReusingBackend`]) and sends only the others.
    pub(crate) fn with_calls<R>(
        &mut self,
        spec: &CallSpec,
        state: &StateId,
        interrupted: &[StateId],
        f: impl FnOnce(CallContext) -> R,
    ) -> Result<R, EngineError> {
        let (journal, backend) = match self.recording {
            Recording::Gather(record) => (Journal::detached(state.clone()), record.answers()),
            Recording::Send | Recording::Resumed { .. } => {
                let before = std::mem::take(&mut self.commit);
                match self.send(before)? {
                    Some(p) => {
                        self.unconfirmed.push(p);
                        let live = if self.reuse_answers && !interrupted.is_empty() {
                            Arc::new(ReusingBackend::new(
                                self.run.ledger().clone(),
                                self.run.id().clone(),
                                interrupted.to_vec(),
                                self.calls.clone(),
                            ))
                        } else {
                            self.calls.clone()
                        };
                        (Journal::Ledger(self.run.state_handle(state.clone())), live)
                    }
                    // A resumed walk's state already recorded, and closed (the resume
                    // closed every open one): answered again from the record.
                    None => match self.recording {
                        Recording::Resumed { record, .. } => {
                            (Journal::detached(state.clone()), record.answers())
                        }
                        _ => {
                            return Err(EngineError::Internal(format!(
                                "state {state} was opened in an empty commit"
                            )))
                        }
                    },
                }
            }
        };
        let (scope, ctx) = CallScope::open(journal, backend, spec.redactor.clone());
        let result = f(ctx);
        let pool = scope.pool_stats();
        // Every call has sent its completion; they are checked with the row's commit.
        self.unconfirmed.extend(scope.close_unconfirmed()?);
        if let Some(p) = pool {
            self.commit.push(Event::PoolStats {
                state: state.clone(),
                capacity_retries: p.capacity_retries,
                peak_delay_us: micros(p.peak_delay),
                throttled_us: micros(p.throttled),
            });
        }
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)]
    fn expand(
        &mut self,
        node: &NodePlan,
        token: Token,
        in_hash: Hash32,
        plugin: &dyn Expand,
        on_success: &Target,
        on_error: &Target,
        queue: &mut VecDeque<(Token, Target, Option<Hash32>)>,
    ) -> Result<(), EngineError> {
        let state = self.open(&token.id, node, 1, in_hash);
        let started = Instant::now();
        let rows = plugin.expand(&token.row).and_then(|rows| {
            if rows.is_empty() {
                Err(TransformError::new(
                    serde_json::json!({"reason": "invalid_input", "error": "no rows"}),
                ))
            } else {
                Ok(rows)
            }
        });
        match rows {
            Ok(rows) => {
                let out = Value::Array(rows.iter().cloned().map(Value::Object).collect());
                let out_hash = self.payloads.store_value(&mut self.commit, &out)?;
                self.close(&state, StateResult::Completed { output: out_hash }, started);
                let children: Vec<TokenId> = (0..rows.len() as u64)
                    .map(|i| TokenId::expanded(&token.id, i))
                    .collect();
                self.commit.push(Event::TokenExpanded {
                    parent: token.id.clone(),
                    children: children.clone(),
                });
                for (id, row) in children.into_iter().zip(rows) {
                    let child = Token {
                        id,
                        row,
                        forks: token.forks.clone(),
                    };
                    queue.push_back((child, on_success.clone(), None));
                }
                Ok(())
            }
            Err(e) => {
                self.close(
                    &state,
                    StateResult::Failed {
                        error: e.message(),
                        retryable: false,
                    },
                    started,
                );
                let Flow::Next(target, input) =
                    self.route_error(state, &token.id, on_error, in_hash)
                else {
                    return Ok(());
                };
                queue.push_front((token, target, Some(input)));
                Ok(())
            }
        }
    }

    fn gate(
        &mut self,
        node: &NodePlan,
        token: &Token,
        in_hash: Hash32,
        condition: &dyn Condition,
        routes: &[(String, Target)],
    ) -> Flow {
        let state = self.open(&token.id, node, 1, in_hash);
        let started = Instant::now();
        let label = condition.route_label(&token.row);
        let chosen = label.as_ref().map_err(|e| e.clone()).and_then(|l| {
            routes
                .iter()
                .find(|(name, _)| name == l)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| {
                    format!("no route for label {l:?} (routes: {})", route_names(routes))
                })
        });
        match chosen {
            Ok(next) => {
                self.close(&state, StateResult::Completed { output: in_hash }, started);
                self.commit.push(Event::RouteDecided {
                    state,
                    token: token.id.clone(),
                    label: label.unwrap_or_default(),
                    to: target_nodes(self.plan, &next),
                });
                Flow::Next(next, in_hash)
            }
            Err(error) => {
                let error = format!("gate {}: {error}", node.id);
                self.close(
                    &state,
                    StateResult::Failed {
                        error: error.clone(),
                        retryable: false,
                    },
                    started,
                );
                Flow::End(Outcome::Failed { error })
            }
        }
    }

    /// Copies `token` into one child per branch (one atomic event with the parent's
    /// `forked` outcome) and queues the children in branch order.
    fn fork(
        &mut self,
        token: Token,
        branches: &[ForkBranch],
        queue: &mut VecDeque<(Token, Target, Option<Hash32>)>,
    ) {
        let children: Vec<ForkChild> = branches
            .iter()
            .map(|b| ForkChild {
                token: TokenId::fork_child(&token.id, &b.name),
                branch: b.name.clone(),
            })
            .collect();
        self.commit.push(Event::TokenForked {
            parent: token.id.clone(),
            children: children.clone(),
        });
        for (child, b) in children.into_iter().zip(branches) {
            let mut forks = token.forks.clone();
            forks.push(ForkCtx {
                parent: token.id.clone(),
                branch: b.name.clone(),
                coalesce: b.coalesce,
            });
            let t = Token {
                id: child.token,
                row: token.row.clone(),
                forks,
            };
            queue.push_back((t, b.target.clone(), None));
        }
    }
}

/// What happens to a token after a node.
enum Flow {
    Next(Target, Hash32),
    End(Outcome),
}

/// A retry's jitter in 0..1 s: derived from the token, attempt and clock, so concurrent
/// rows do not retry in lock-step. It decides only when the next attempt starts.
fn jitter(token: &TokenId, attempt: u32) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(token.as_str().as_bytes());
    h.update(&attempt.to_le_bytes());
    h.update(&nanos.to_le_bytes());
    let b = h.finalize();
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&b.as_bytes()[..8]);
    (u64::from_le_bytes(eight) >> 11) as f64 / (1u64 << 53) as f64
}

/// The ledger nodes a target names (sinks are nodes too); none for discard.
pub(crate) fn target_nodes(plan: &Plan, target: &Target) -> Vec<attest_ledger::NodeId> {
    match target {
        Target::Node(i) => plan
            .nodes
            .get(*i)
            .map(|n| n.id.clone())
            .into_iter()
            .collect(),
        Target::Sink { sink, .. } => plan
            .sinks
            .get(*sink)
            .map(|s| s.id.clone())
            .into_iter()
            .collect(),
        Target::Discard { .. } => Vec::new(),
        Target::Fork(branches) => branches
            .iter()
            .flat_map(|b| target_nodes(plan, &b.target))
            .collect(),
    }
}

fn route_names(routes: &[(String, Target)]) -> String {
    routes
        .iter()
        .map(|(l, _)| l.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

pub(crate) fn elapsed_us(since: Instant) -> u64 {
    since.elapsed().as_micros().min(u128::from(u64::MAX)) as u64
}
