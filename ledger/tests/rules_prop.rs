//! Property tests of the integrity rules (DESIGN.md, "The ledger", rules 1-6).
//!
//! A small model of a run drives a generator of random *valid* event sequences: rows
//! ingested, token states opened and closed with attempts and retries, calls allocated
//! (through `StateHandle::allocate_call`, `Item::AllocateCall` and ready-made events) and
//! completed, routes, forks, expansions, coalesces, batches with members and completion in
//! transform / passthrough / failed modes, outcomes with contiguous sink ordinals,
//! validation failures and quarantine, interruptions, and the run's end. Every one must be
//! accepted and the run must verify.
//!
//! Invalid sequences are a valid prefix plus one bad event. Each must be refused at append
//! with the expected rule and code, and leave the ledger exactly as it was: the same run
//! record, the same bytes in the whole store, a run that still verifies and that accepts
//! valid appends afterwards.

mod common;

use attest_ledger::projection::{self, PKey, PVal, RunStatus, StateStatus};
use attest_ledger::verify::VerifyOptions;
use attest_ledger::*;
use common::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------------------
// The pipeline every generated run uses.

const TOKEN_NODES: [&str; 3] = ["map", "llm", "gate"];
const SINKS: [&str; 2] = ["out", "review"];
const QUARANTINE: &str = "quarantine";
const AGG: &str = "agg";
const MERGE: &str = "merge";
const POOL: usize = 6;

fn pipeline() -> Vec<(&'static str, NodeKind)> {
    vec![
        ("src", NodeKind::Source),
        ("map", NodeKind::Transform),
        ("llm", NodeKind::Transform),
        ("gate", NodeKind::Gate),
        (AGG, NodeKind::Aggregation),
        (MERGE, NodeKind::Coalesce),
        ("out", NodeKind::Sink),
        ("review", NodeKind::Sink),
        (QUARANTINE, NodeKind::Sink),
    ]
}

fn pick<T: Clone>(items: &[T], a: u32) -> Option<T> {
    (!items.is_empty()).then(|| items[a as usize % items.len()].clone())
}

fn common_row(rows: &[Option<u64>]) -> Option<u64> {
    let first = *rows.first()?;
    rows.iter().all(|r| *r == first).then_some(first).flatten()
}

// ---------------------------------------------------------------------------------------
// The model: what the run looks like after the events accepted so far. It mirrors the
// effects of events, not the rules; the generator uses it to only ever produce events
// that keep every rule.

#[derive(Clone, Debug, Default)]
struct Tok {
    row: Option<u64>,
    from_source: bool,
    live: bool,
    buffered: Option<BatchId>,
    states: Vec<StateId>,
}

#[derive(Clone, Debug, Default)]
struct St {
    open: bool,
    /// How it closed: completed (true) or failed (false).
    ok: Option<bool>,
    calls: u32,
    pending: Vec<u32>,
    completed: Vec<u32>,
    /// Its pool statistics are recorded.
    pool: bool,
}

#[derive(Clone, Debug, Default)]
struct Bat {
    members: Vec<TokenId>,
    completed: bool,
    states: Vec<StateId>,
}

#[derive(Debug, Default)]
struct Model {
    rows: u64,
    failed_rows: BTreeSet<u64>,
    tokens: BTreeMap<TokenId, Tok>,
    states: BTreeMap<StateId, St>,
    batches: BTreeMap<BatchId, Bat>,
    next_batch: u64,
    ordinals: BTreeMap<NodeId, u64>,
    /// Fork parents, their children, and whether they were coalesced already.
    forks: Vec<(TokenId, Vec<TokenId>, bool)>,
    interrupted: bool,
    ended: bool,
    calls: u64,
}

impl Model {
    fn new_token(&mut self, id: &TokenId, row: Option<u64>, from_source: bool) {
        self.tokens.insert(
            id.clone(),
            Tok {
                row,
                from_source,
                live: true,
                ..Tok::default()
            },
        );
    }

    fn end_token(&mut self, id: &TokenId) {
        self.tokens.get_mut(id).expect("modelled token").live = false;
    }

    fn owner_states(&self, subject: &Subject) -> &[StateId] {
        match subject {
            Subject::Token(t) => &self.tokens[t].states,
            Subject::Batch(b) => &self.batches[b].states,
        }
    }

    fn next_attempt(&self, subject: &Subject, node: &NodeId) -> u32 {
        self.owner_states(subject)
            .iter()
            .filter(|s| &s.node == node)
            .count() as u32
            + 1
    }

    fn has_open_state(&self, t: &TokenId) -> bool {
        self.tokens[t].states.iter().any(|s| self.states[s].open)
    }

    fn live(&self) -> Vec<TokenId> {
        self.tokens
            .iter()
            .filter(|(_, t)| t.live)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Live, not waiting in a batch.
    fn free(&self) -> Vec<TokenId> {
        self.tokens
            .iter()
            .filter(|(_, t)| t.live && t.buffered.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Free and with no open state: may end, fork, join a batch or open a state.
    fn idle(&self) -> Vec<TokenId> {
        self.free()
            .into_iter()
            .filter(|t| !self.has_open_state(t))
            .collect()
    }

    fn terminal(&self) -> Vec<TokenId> {
        self.tokens
            .iter()
            .filter(|(_, t)| !t.live)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn open_states(&self) -> Vec<StateId> {
        self.states
            .iter()
            .filter(|(_, s)| s.open)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn closed_states(&self) -> Vec<StateId> {
        self.states
            .iter()
            .filter(|(_, s)| !s.open)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn open_batches(&self) -> Vec<BatchId> {
        self.batches
            .iter()
            .filter(|(_, b)| !b.completed)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn last_batch_state(&self, b: &BatchId) -> Option<(StateId, St)> {
        let id = self.batches[b].states.last()?;
        Some((id.clone(), self.states[id].clone()))
    }

    fn apply(&mut self, e: &Event) {
        match e {
            Event::RowIngested { row, .. } => {
                self.rows = row + 1;
                self.new_token(&TokenId::for_row(*row), Some(*row), true);
            }
            Event::ValidationFailed { row, .. } => {
                self.failed_rows.insert(*row);
            }
            Event::StateOpened { state, .. } => {
                match &state.subject {
                    Subject::Token(t) => self.tokens.get_mut(t).unwrap().states.push(state.clone()),
                    Subject::Batch(b) => {
                        self.batches.get_mut(b).unwrap().states.push(state.clone())
                    }
                }
                self.states.insert(
                    state.clone(),
                    St {
                        open: true,
                        ..St::default()
                    },
                );
            }
            Event::StateClosed { state, result, .. } => {
                let s = self.states.get_mut(state).unwrap();
                s.open = false;
                s.ok = Some(matches!(result, StateResult::Completed { .. }));
            }
            Event::CallAllocated { state, index, .. } => {
                let s = self.states.get_mut(state).unwrap();
                assert_eq!(*index, s.calls, "the model only allocates the next index");
                s.calls += 1;
                s.pending.push(*index);
                self.calls += 1;
            }
            Event::CallCompleted { state, index, .. } => {
                let s = self.states.get_mut(state).unwrap();
                s.pending.retain(|i| i != index);
                s.completed.push(*index);
            }
            Event::TokenForked { parent, children } => {
                let row = self.tokens[parent].row;
                self.end_token(parent);
                let kids: Vec<TokenId> = children.iter().map(|c| c.token.clone()).collect();
                for c in &kids {
                    self.new_token(c, row, false);
                }
                self.forks.push((parent.clone(), kids, false));
            }
            Event::TokenExpanded { parent, children } => {
                let row = self.tokens[parent].row;
                self.end_token(parent);
                for c in children {
                    self.new_token(c, row, false);
                }
            }
            Event::TokensCoalesced {
                parents, merged, ..
            } => {
                let rows: Vec<Option<u64>> = parents.iter().map(|p| self.tokens[p].row).collect();
                for p in parents {
                    self.end_token(p);
                }
                self.new_token(merged, common_row(&rows), false);
                for f in &mut self.forks {
                    if f.1.contains(&parents[0]) {
                        f.2 = true;
                    }
                }
            }
            Event::BatchOpened { batch, .. } => {
                self.batches.insert(batch.clone(), Bat::default());
                self.next_batch += 1;
            }
            Event::BatchMemberAdded { batch, token, .. } => {
                self.batches
                    .get_mut(batch)
                    .unwrap()
                    .members
                    .push(token.clone());
                self.tokens.get_mut(token).unwrap().buffered = Some(batch.clone());
            }
            Event::BatchCompleted { batch, outputs, .. } => {
                let b = self.batches.get_mut(batch).unwrap();
                b.completed = true;
                let members = b.members.clone();
                let mut rows = Vec::new();
                for m in &members {
                    let t = self.tokens.get_mut(m).unwrap();
                    t.buffered = None;
                    rows.push(t.row);
                    if let BatchOutputs::Transform { .. } = outputs {
                        t.live = false;
                    }
                }
                if let BatchOutputs::Transform { outputs } = outputs {
                    for o in outputs {
                        self.new_token(o, common_row(&rows), false);
                    }
                }
            }
            Event::TokenOutcome { token, outcome } => {
                self.end_token(token);
                if let Some(w) = outcome.write() {
                    *self.ordinals.entry(w.sink.clone()).or_default() += 1;
                }
            }
            Event::RunInterrupted { .. } => self.interrupted = true,
            Event::RunResumed { .. } => self.interrupted = false,
            Event::RunFinished { .. } => self.ended = true,
            Event::PoolStats { state, .. } => self.states.get_mut(state).unwrap().pool = true,
            Event::RunStarted { .. }
            | Event::NodeRegistered { .. }
            | Event::EdgeRegistered { .. }
            | Event::RouteDecided { .. }
            | Event::ArtifactWritten { .. }
            | Event::Checkpoint { .. }
            | Event::RowDetail { .. } => {}
        }
    }

    fn next_write(&self, sink: &str) -> SinkWrite {
        SinkWrite {
            sink: n(sink),
            ordinal: self.ordinals.get(&n(sink)).copied().unwrap_or(0),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Steps: one commit each, sent through the API path they name.

/// How a step reaches the ledger.
enum Via {
    /// `RunHandle::submit` of the commit.
    Submit(Durability),
    /// `RunHandle::submit_nowait`, then `Pending::wait`.
    Nowait,
    /// `RunHandle::open_state`.
    OpenState,
    /// `StateHandle::allocate_call` with these request bytes.
    Allocate(Vec<u8>),
    /// `StateHandle::complete_call` with these response bytes.
    Complete(Option<Vec<u8>>),
    /// `StateHandle::close`.
    Close,
}

/// One valid step: what to send, and the events it must turn into.
struct Step {
    commit: Commit,
    /// The events as the ledger must record them (allocations resolved).
    events: Vec<Event>,
    /// What the ledger must allocate, in order (attempts and call indices).
    allocated: Vec<u32>,
    via: Via,
}

impl Step {
    fn events(events: Vec<Event>) -> Step {
        Step {
            commit: {
                let mut c = Commit::new();
                c.items = events.iter().cloned().map(Item::Event).collect();
                c
            },
            events,
            allocated: Vec::new(),
            via: Via::Submit(Durability::Buffered),
        }
    }
    fn via(mut self, via: Via) -> Step {
        self.via = via;
        self
    }
}

struct Sim {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    run: RunHandle,
    m: Model,
    /// Payloads stored at the start, usable as any state's input or output.
    pool: Vec<Hash32>,
    /// A counter for unique names and bytes.
    uniq: u64,
}

impl Sim {
    fn new() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let run = start(&ledger, "prop");
        let mut commit = Commit::new();
        for (name, kind) in pipeline() {
            commit.push(Event::NodeRegistered {
                node: n(name),
                kind,
                plugin: format!("{kind:?}").to_lowercase(),
                config_hash: Hash32::of(name.as_bytes()),
            });
        }
        for (from, to) in [
            ("src", "map"),
            ("map", "llm"),
            ("llm", "gate"),
            ("gate", "out"),
        ] {
            commit.push(Event::EdgeRegistered {
                from: n(from),
                to: n(to),
                label: "continue".into(),
            });
        }
        let pool: Vec<Hash32> = (0..POOL)
            .map(|i| commit.payload(format!("pool value {i}").into_bytes()))
            .collect();
        run.submit(commit, Durability::Buffered).unwrap();
        Sim {
            _dir: dir,
            ledger,
            run,
            m: Model::default(),
            pool,
            uniq: 0,
        }
    }

    fn uniq(&mut self) -> u64 {
        self.uniq += 1;
        self.uniq
    }

    fn pool(&self, a: u32) -> Hash32 {
        self.pool[a as usize % POOL]
    }

    /// Sends a valid step; it must be accepted exactly as the model predicts.
    fn exec(&mut self, step: Step) {
        let what = format!("{:?}", step.events);
        let before = self.ledger.run_record(self.run.id()).unwrap().unwrap();
        let result: Result<(u64, Vec<u32>)> = (|| {
            let receipt_of = |r: Receipt| (r.last_seq + 1 - r.first_seq, r.allocated);
            let state = || match step.events.first() {
                Some(Event::CallAllocated { state, .. })
                | Some(Event::CallCompleted { state, .. })
                | Some(Event::StateClosed { state, .. }) => self.run.state_handle(state.clone()),
                other => panic!("no state in {other:?}"),
            };
            Ok(match step.via {
                Via::Submit(d) => receipt_of(self.run.submit(step.commit, d)?),
                Via::Nowait => receipt_of(
                    self.run
                        .submit_nowait(step.commit, Durability::Buffered)?
                        .wait()?,
                ),
                Via::OpenState => {
                    let Some(Event::StateOpened { state, input }) = step.events.first() else {
                        panic!("open_state step without a state_opened event")
                    };
                    let h =
                        self.run
                            .open_state(state.subject.clone(), state.node.clone(), *input)?;
                    (1, vec![h.attempt()])
                }
                Via::Allocate(request) => {
                    let Some(Event::CallAllocated { kind, served, .. }) = step.events.first()
                    else {
                        panic!("allocate step without a call_allocated event")
                    };
                    let call = state().allocate_call(kind, request, served.clone())?;
                    (1, vec![call.index])
                }
                Via::Complete(response) => {
                    let Some(Event::CallCompleted {
                        state: s,
                        index,
                        outcome,
                        latency_us,
                        ..
                    }) = step.events.first()
                    else {
                        panic!("complete step without a call_completed event")
                    };
                    let call = CallHandle {
                        state: s.clone(),
                        index: *index,
                    };
                    receipt_of(state().complete_call(
                        &call,
                        outcome.clone(),
                        response,
                        *latency_us,
                    )?)
                }
                Via::Close => {
                    let Some(Event::StateClosed {
                        result,
                        duration_us,
                        ..
                    }) = step.events.first()
                    else {
                        panic!("close step without a state_closed event")
                    };
                    receipt_of(state().close(result.clone(), *duration_us)?)
                }
            })
        })();
        let (count, allocated) =
            result.unwrap_or_else(|e| panic!("valid step refused: {e}\nstep: {what}"));
        assert_eq!(count, step.events.len() as u64, "{what}");
        assert_eq!(allocated, step.allocated, "allocations of {what}");
        // The log holds exactly the predicted events.
        let log = read_log(&self.ledger, self.run.id());
        let written: Vec<&Event> = log[before.next_seq as usize..]
            .iter()
            .map(|e| &e.event)
            .collect();
        assert_eq!(written, step.events.iter().collect::<Vec<_>>());
        for e in &step.events {
            self.m.apply(e);
        }
    }

    // -- valid steps --------------------------------------------------------------------

    fn ingest(&mut self, a: u32) -> Step {
        let mut events = Vec::new();
        let mut commit = Commit::new();
        for i in 0..=(a % 3) as u64 {
            let row = self.m.rows + i;
            let payload = commit.payload(format!("{{\"row\":{row},\"a\":{a}}}").into_bytes());
            events.push(Event::RowIngested {
                row,
                source: n("src"),
                payload,
            });
            // Some rows carry what re-execution needs beyond their payload.
            if (a + i as u32).is_multiple_of(4) {
                let detail = commit.payload(format!("{{\"order\":{a}}}").into_bytes());
                events.push(Event::RowDetail { row, detail });
            }
        }
        commit.items = events.iter().cloned().map(Item::Event).collect();
        // Durable commits cost an fsync: keep them rare.
        let via = match a % 32 {
            0 => Via::Submit(Durability::Flushed),
            1..=8 => Via::Nowait,
            _ => Via::Submit(Durability::Buffered),
        };
        Step {
            commit,
            events,
            allocated: Vec::new(),
            via,
        }
    }

    /// A row that fails validation and is quarantined, in one commit.
    fn ingest_invalid(&mut self, a: u32) -> Step {
        let row = self.m.rows;
        let mut commit = Commit::new();
        let payload = commit.payload(format!("{{\"row\":{row},\"bad\":true}}").into_bytes());
        let write = a.is_multiple_of(2).then(|| self.m.next_write(QUARANTINE));
        let events = vec![
            Event::RowIngested {
                row,
                source: n("src"),
                payload,
            },
            Event::ValidationFailed {
                row,
                error: "id: not an int".into(),
            },
            Event::TokenOutcome {
                token: TokenId::for_row(row),
                outcome: Outcome::Quarantined { write },
            },
        ];
        commit.items = events.iter().cloned().map(Item::Event).collect();
        Step {
            commit,
            events,
            allocated: Vec::new(),
            via: Via::Submit(Durability::Buffered),
        }
    }

    /// Opens the next attempt of a node on a subject, through one of three paths.
    fn open(&self, subject: Subject, node: NodeId, input: Hash32, how: u32) -> Step {
        let attempt = self.m.next_attempt(&subject, &node);
        let event = Event::StateOpened {
            state: StateId {
                subject: subject.clone(),
                node: node.clone(),
                attempt,
            },
            input,
        };
        match how % 3 {
            0 => Step {
                allocated: vec![attempt],
                ..Step::events(vec![event]).via(Via::OpenState)
            },
            1 => Step {
                commit: Commit::of(vec![Item::OpenState {
                    subject,
                    node,
                    input,
                }]),
                events: vec![event],
                allocated: vec![attempt],
                via: Via::Submit(Durability::Buffered),
            },
            _ => Step::events(vec![event]),
        }
    }

    fn open_token_state(&self, a: u32, b: u32) -> Option<Step> {
        // Half the time, retry a node whose last attempt on an idle token failed.
        let idle: BTreeSet<TokenId> = self.m.idle().into_iter().collect();
        let retries: Vec<(TokenId, NodeId)> = self
            .m
            .states
            .iter()
            .filter(|(id, s)| {
                s.ok == Some(false) && matches!(&id.subject, Subject::Token(t) if idle.contains(t))
            })
            .filter_map(|(id, _)| match &id.subject {
                Subject::Token(t) => Some((t.clone(), id.node.clone())),
                Subject::Batch(_) => None,
            })
            .collect();
        let (t, node) = match pick(&retries, a) {
            Some(retry) if b.is_multiple_of(2) => retry,
            _ => (
                pick(&self.m.idle(), a)?,
                n(TOKEN_NODES[b as usize % TOKEN_NODES.len()]),
            ),
        };
        Some(self.open(Subject::Token(t), node, self.pool(a), b / 3))
    }

    /// Allocates one or two calls on an open state.
    fn allocate(&mut self, a: u32, b: u32) -> Option<Step> {
        let state = pick(&self.m.open_states(), a)?;
        let first = self.m.states[&state].calls;
        let members = match &state.subject {
            Subject::Token(_) => Vec::new(),
            Subject::Batch(bid) => self.m.batches[bid].members.clone(),
        };
        let served = |i: u32| match &state.subject {
            Subject::Token(t) => i.is_multiple_of(2).then(|| t.clone()),
            Subject::Batch(_) => pick(&members, i),
        };
        let kind = ["http", "llm", "sql"][b as usize % 3].to_string();
        let how = (b / 3) % 4;
        let count = if how == 3 { 2 } else { 1 };
        let mut commit = Commit::new();
        let mut events = Vec::new();
        let mut request_bytes = Vec::new();
        for i in 0..count {
            let bytes = format!("request {} {state} {}", self.uniq(), first + i).into_bytes();
            let request = commit.payload(bytes.clone());
            request_bytes = bytes;
            events.push(Event::CallAllocated {
                state: state.clone(),
                index: first + i,
                kind: kind.clone(),
                request,
                served: served(a.wrapping_add(i)),
            });
        }
        let allocated: Vec<u32> = (first..first + count).collect();
        Some(match how {
            0 => Step {
                commit,
                events,
                allocated,
                via: Via::Allocate(request_bytes),
            },
            // Ready-made events with the right index: accepted as well.
            1 => Step {
                commit: {
                    let mut c = commit;
                    c.items = events.iter().cloned().map(Item::Event).collect();
                    c
                },
                events,
                allocated: Vec::new(),
                via: Via::Submit(Durability::Buffered),
            },
            _ => {
                let items = events
                    .iter()
                    .map(|e| match e {
                        Event::CallAllocated {
                            state,
                            kind,
                            request,
                            served,
                            ..
                        } => Item::AllocateCall {
                            state: state.clone(),
                            kind: kind.clone(),
                            request: *request,
                            served: served.clone(),
                        },
                        _ => unreachable!("only allocations here"),
                    })
                    .collect();
                Step {
                    commit: {
                        let mut c = commit;
                        c.items = items;
                        c
                    },
                    events,
                    allocated,
                    via: Via::Nowait,
                }
            }
        })
    }

    fn complete_call(&mut self, a: u32, b: u32) -> Option<Step> {
        let pending: Vec<(StateId, u32)> = self
            .m
            .states
            .iter()
            .filter(|(_, s)| s.open)
            .flat_map(|(id, s)| s.pending.iter().map(move |i| (id.clone(), *i)))
            .collect();
        let (state, index) = pick(&pending, a)?;
        let (outcome, response) = match b % 3 {
            0 => (
                CallOutcome::Responded { status: Some(200) },
                Some(format!("200 {}", self.uniq())),
            ),
            1 => (
                CallOutcome::Responded { status: None },
                Some(format!("{{\"label\":{}}}", self.uniq())),
            ),
            _ => (
                CallOutcome::Errored {
                    error: "timeout".into(),
                    retryable: b.is_multiple_of(2),
                },
                None,
            ),
        };
        let response = response.map(String::into_bytes);
        let mut commit = Commit::new();
        let hash = response.clone().map(|r| commit.payload(r));
        let event = Event::CallCompleted {
            state,
            index,
            outcome,
            response: hash,
            latency_us: u64::from(b % 1000),
        };
        commit.push(event.clone());
        Some(if b.is_multiple_of(2) {
            Step {
                commit,
                events: vec![event],
                allocated: Vec::new(),
                via: Via::Complete(response),
            }
        } else {
            Step {
                commit,
                events: vec![event],
                allocated: Vec::new(),
                via: Via::Submit(Durability::Buffered),
            }
        })
    }

    /// Records the pool statistics of an open state that has none yet.
    fn pool_stats(&self, a: u32, b: u32) -> Option<Step> {
        let states: Vec<StateId> = self
            .m
            .open_states()
            .into_iter()
            .filter(|s| !self.m.states[s].pool)
            .collect();
        let state = pick(&states, a)?;
        Some(Step::events(vec![Event::PoolStats {
            state,
            capacity_retries: u64::from(b % 5),
            peak_delay_us: u64::from(b),
            throttled_us: u64::from(b / 3),
        }]))
    }

    fn close_state(&self, a: u32, b: u32) -> Option<Step> {
        let state = pick(&self.m.open_states(), a)?;
        let result = if b.is_multiple_of(3) {
            StateResult::Failed {
                error: "boom".into(),
                retryable: b.is_multiple_of(2),
            }
        } else {
            StateResult::Completed {
                output: self.pool(b),
            }
        };
        let step = Step::events(vec![Event::StateClosed {
            state,
            result,
            duration_us: u64::from(a % 100),
        }]);
        Some(if a.is_multiple_of(2) {
            step.via(Via::Close)
        } else {
            step
        })
    }

    fn route(&self, a: u32, b: u32) -> Option<Step> {
        let candidates: Vec<TokenId> = self
            .m
            .live()
            .into_iter()
            .filter(|t| !self.m.tokens[t].states.is_empty())
            .collect();
        let token = pick(&candidates, a)?;
        let state = pick(&self.m.tokens[&token].states, b)?;
        let to = match b % 3 {
            0 => vec![n("out")],
            1 => vec![n("review")],
            _ => vec![n("map"), n("llm")],
        };
        Some(Step::events(vec![Event::RouteDecided {
            state,
            token,
            label: ["flagged", "clean", "both"][b as usize % 3].into(),
            to,
        }]))
    }

    fn outcome_for(&self, token: &TokenId, b: u32) -> Outcome {
        let t = &self.m.tokens[token];
        let quarantinable = t.from_source && t.row.is_some_and(|r| self.m.failed_rows.contains(&r));
        match b % 6 {
            0 => Outcome::Completed {
                write: self.m.next_write("out"),
            },
            1 => Outcome::Routed {
                write: self.m.next_write("review"),
            },
            2 => Outcome::Diverted {
                write: self.m.next_write(SINKS[b as usize / 6 % 2]),
                error: "disk full".into(),
            },
            3 => Outcome::Discarded {
                reason: "filtered".into(),
            },
            4 => Outcome::Failed {
                error: "retries exhausted".into(),
            },
            _ if quarantinable => Outcome::Quarantined {
                write: b.is_multiple_of(2).then(|| self.m.next_write(QUARANTINE)),
            },
            _ => Outcome::Completed {
                write: self.m.next_write("out"),
            },
        }
    }

    fn outcome(&self, a: u32, b: u32) -> Option<Step> {
        let token = pick(&self.m.idle(), a)?;
        let outcome = self.outcome_for(&token, b);
        Some(Step::events(vec![Event::TokenOutcome { token, outcome }]))
    }

    fn fork(&self, a: u32, b: u32) -> Option<Step> {
        let parent = pick(&self.m.idle(), a)?;
        let children = ["a", "b", "c"][..2 + (b as usize % 2)]
            .iter()
            .map(|br| ForkChild {
                token: TokenId::fork_child(&parent, br),
                branch: br.to_string(),
            })
            .collect();
        Some(Step::events(vec![Event::TokenForked { parent, children }]))
    }

    fn expand(&self, a: u32, b: u32) -> Option<Step> {
        let parent = pick(&self.m.idle(), a)?;
        let children = (0..=u64::from(b % 3))
            .map(|i| TokenId::expanded(&parent, i))
            .collect();
        Some(Step::events(vec![Event::TokenExpanded {
            parent,
            children,
        }]))
    }

    fn coalesce(&self, a: u32, b: u32) -> Option<Step> {
        let idle: BTreeSet<TokenId> = self.m.idle().into_iter().collect();
        let candidates: Vec<(TokenId, Vec<TokenId>)> = self
            .m
            .forks
            .iter()
            .filter(|(_, _, done)| !done)
            .map(|(p, kids, _)| {
                (
                    p.clone(),
                    kids.iter().filter(|k| idle.contains(*k)).cloned().collect(),
                )
            })
            .filter(|(_, kids): &(TokenId, Vec<TokenId>)| !kids.is_empty())
            .collect();
        let (parent, kids) = pick(&candidates, a)?;
        let take = 1 + b as usize % kids.len();
        Some(Step::events(vec![Event::TokensCoalesced {
            node: n(MERGE),
            parents: kids[..take].to_vec(),
            merged: TokenId::coalesced(&parent, &n(MERGE)),
        }]))
    }

    fn batch_open(&self) -> Step {
        Step::events(vec![Event::BatchOpened {
            batch: BatchId::for_node(&n(AGG), self.m.next_batch),
            node: n(AGG),
        }])
    }

    /// Adds an idle token to a batch that has no state yet.
    fn batch_add(&self, a: u32, b: u32) -> Option<Step> {
        let batches: Vec<BatchId> = self
            .m
            .open_batches()
            .into_iter()
            .filter(|id| self.m.batches[id].states.is_empty())
            .collect();
        let batch = pick(&batches, b)?;
        let token = pick(&self.m.idle(), a)?;
        let ordinal = self.m.batches[&batch].members.len() as u32;
        Some(Step::events(vec![Event::BatchMemberAdded {
            batch,
            token,
            ordinal,
        }]))
    }

    /// Opens a state on a batch with members: its first attempt, or a retry after a failure.
    fn batch_process(&self, a: u32, b: u32) -> Option<Step> {
        let batches: Vec<BatchId> = self
            .m
            .open_batches()
            .into_iter()
            .filter(|id| {
                !self.m.batches[id].members.is_empty()
                    && self
                        .m
                        .last_batch_state(id)
                        .is_none_or(|(_, s)| s.ok == Some(false))
            })
            .collect();
        let batch = pick(&batches, a)?;
        Some(self.open(Subject::Batch(batch), n(AGG), self.pool(b), b))
    }

    /// Completes a batch whose last state closed (or closes it in the same commit).
    fn batch_complete(&self, a: u32, b: u32) -> Option<Step> {
        let batches: Vec<(BatchId, StateId, St)> = self
            .m
            .open_batches()
            .into_iter()
            .filter_map(|id| {
                let (sid, st) = self.m.last_batch_state(&id)?;
                Some((id, sid, st))
            })
            .collect();
        let (batch, state, st) = pick(&batches, a)?;
        let mut events = Vec::new();
        let ok = match st.ok {
            Some(ok) => ok,
            None => {
                let ok = !b.is_multiple_of(4);
                events.push(Event::StateClosed {
                    state: state.clone(),
                    result: if ok {
                        StateResult::Completed {
                            output: self.pool(b),
                        }
                    } else {
                        StateResult::Failed {
                            error: "batch failed".into(),
                            retryable: false,
                        }
                    },
                    duration_us: 7,
                });
                ok
            }
        };
        let outputs = match (ok, b % 3) {
            (false, _) => BatchOutputs::Failed {
                error: "batch failed".into(),
            },
            (true, 0) => BatchOutputs::Passthrough,
            (true, k) => BatchOutputs::Transform {
                // One output or none (an aggregation may emit nothing).
                outputs: (0..u64::from(k - 1) + (b as u64 / 3 % 2))
                    .map(|i| TokenId::batch_output(&batch, i))
                    .collect(),
            },
        };
        events.push(Event::BatchCompleted {
            batch,
            trigger: ["count", "timeout", "end_of_source"][b as usize % 3].into(),
            state,
            outputs,
        });
        Some(Step::events(events))
    }

    fn validation_failed(&self, a: u32) -> Option<Step> {
        let rows: Vec<u64> = self
            .m
            .tokens
            .iter()
            .filter(|(_, t)| t.live && t.from_source)
            .filter_map(|(_, t)| t.row)
            .filter(|r| !self.m.failed_rows.contains(r))
            .collect();
        let row = pick(&rows, a)?;
        Some(Step::events(vec![Event::ValidationFailed {
            row,
            error: "schema: missing field".into(),
        }]))
    }

    fn bookkeeping(&self, a: u32) -> Step {
        Step::events(vec![match a % 2 {
            0 => Event::Checkpoint {
                rows_ingested: self.m.rows - u64::from(a) % (self.m.rows + 1),
                note: "periodic".into(),
            },
            _ => Event::ArtifactWritten {
                sink: n(SINKS[a as usize / 2 % 2]),
                path: format!("out-{a}.csv"),
                content_hash: Hash32::of(&a.to_le_bytes()),
                size: u64::from(a),
                rows: self.m.ordinals.values().sum(),
            },
        }])
    }

    /// One random valid operation. When it does not apply (nothing to act on), the step
    /// that would make it apply next time is taken instead, down to ingesting a row.
    fn op(&mut self, kind: u8, a: u32, b: u32) {
        let step = match kind % 24 {
            0 | 1 => None,
            2 => self.pool_stats(a, b),
            3 => Some(self.ingest_invalid(a)),
            4 | 5 => self.open_token_state(a, b),
            6..=8 => self.allocate(a, b).or_else(|| self.open_token_state(a, b)),
            9 | 10 => self
                .complete_call(a, b)
                .or_else(|| self.allocate(a, b))
                .or_else(|| self.open_token_state(a, b)),
            11 | 12 => self
                .close_state(a, b)
                .or_else(|| self.open_token_state(a, b)),
            13 => self.route(a, b),
            14 => self.outcome(a, b),
            15 => self.fork(a, b),
            16 => self.expand(a, b),
            17 => self.coalesce(a, b).or_else(|| self.fork(a, b)),
            18 => (self.m.open_batches().len() < 3).then(|| self.batch_open()),
            19 => self.batch_add(a, b).or_else(|| self.batch_open_if_few()),
            20 => self
                .batch_process(a, b)
                .or_else(|| self.batch_add(a, b))
                .or_else(|| self.batch_open_if_few()),
            21 => self
                .batch_complete(a, b)
                .or_else(|| self.batch_process(a, b))
                .or_else(|| self.batch_add(a, b)),
            22 => self.validation_failed(a),
            _ if a.is_multiple_of(5) => {
                self.exec(Step::events(vec![Event::RunInterrupted {
                    reason: "ctrl-c".into(),
                }]));
                Some(Step::events(vec![Event::RunResumed {
                    reason: "attest resume".into(),
                }]))
            }
            _ => Some(self.bookkeeping(a)),
        };
        let step = step.unwrap_or_else(|| self.ingest(a));
        self.exec(step);
    }

    fn batch_open_if_few(&self) -> Option<Step> {
        (self.m.open_batches().len() < 3).then(|| self.batch_open())
    }

    /// Brings every open state, batch and token to an end, then completes the run.
    fn finish(&mut self, a: u32) {
        self.drain(a);
        self.exec(Step::events(vec![Event::RunFinished {
            status: FinalStatus::Completed,
        }]));
    }

    /// Brings every open state, batch (with members) and live token to an end.
    fn drain(&mut self, a: u32) {
        for (i, state) in self.m.open_states().into_iter().enumerate() {
            let pending = self.m.states[&state].pending.clone();
            for index in pending.into_iter().filter(|ix| ix % 2 == 0) {
                self.exec(Step::events(vec![Event::CallCompleted {
                    state: state.clone(),
                    index,
                    outcome: CallOutcome::Errored {
                        error: "cancelled".into(),
                        retryable: false,
                    },
                    response: None,
                    latency_us: 0,
                }]));
            }
            let step = self.close_state_completed(state);
            self.exec(if i % 2 == 0 {
                step.via(Via::Close)
            } else {
                step
            });
        }
        for batch in self.m.open_batches() {
            if self.m.batches[&batch].members.is_empty() {
                continue; // an empty batch may stay open; it holds no token.
            }
            if self
                .m
                .last_batch_state(&batch)
                .is_none_or(|(_, s)| s.ok != Some(true))
            {
                let open = self.open(Subject::Batch(batch.clone()), n(AGG), self.pool(a), a);
                self.exec(open);
                let (state, _) = self.m.last_batch_state(&batch).unwrap();
                let close = self.close_state_completed(state);
                self.exec(close);
            }
            let (state, _) = self.m.last_batch_state(&batch).unwrap();
            self.exec(Step::events(vec![Event::BatchCompleted {
                batch,
                trigger: "end_of_source".into(),
                state,
                outputs: BatchOutputs::Passthrough,
            }]));
        }
        // Outcomes for whatever is live, several per commit.
        let live = self.m.live();
        for chunk in live.chunks(3) {
            let mut events = Vec::new();
            let mut written: BTreeMap<NodeId, u64> = BTreeMap::new();
            for (i, t) in chunk.iter().enumerate() {
                let mut outcome = self.outcome_for(t, a.wrapping_add(i as u32));
                // Within one commit, ordinals continue from the ones before in it.
                if let Some(w) = outcome_write_mut(&mut outcome) {
                    let k = written.entry(w.sink.clone()).or_default();
                    w.ordinal += *k;
                    *k += 1;
                }
                events.push(Event::TokenOutcome {
                    token: t.clone(),
                    outcome,
                });
            }
            self.exec(Step::events(events));
        }
    }

    fn close_state_completed(&self, state: StateId) -> Step {
        Step::events(vec![Event::StateClosed {
            state,
            result: StateResult::Completed {
                output: self.pool(0),
            },
            duration_us: 1,
        }])
    }

    /// The ledger's projections agree with the model.
    fn check_against_model(&self) {
        let run = self.run.id();
        let rr = self.ledger.run_record(run).unwrap().unwrap();
        assert_eq!(rr.rows, self.m.rows);
        assert_eq!(rr.tokens, self.m.tokens.len() as u64);
        assert_eq!(rr.live_tokens, self.m.live().len() as u64);
        assert_eq!(rr.states, self.m.states.len() as u64);
        assert_eq!(rr.open_states, self.m.open_states().len() as u64);
        assert_eq!(rr.calls, self.m.calls);
        for (id, t) in &self.m.tokens {
            let rec = token(&self.ledger, run, id).expect("token stored");
            assert_eq!(rec.terminal.is_none(), t.live, "token {id}");
            assert_eq!(rec.buffered_in, t.buffered, "token {id}");
            assert_eq!(rec.row, t.row, "token {id}");
        }
        for (id, s) in &self.m.states {
            let states = match &id.subject {
                Subject::Token(t) => token(&self.ledger, run, t).unwrap().states,
                Subject::Batch(b) => match proj(&self.ledger, run, &PKey::Batch(b.clone())) {
                    Some(PVal::Batch(rec)) => rec.states,
                    other => panic!("batch {b}: {other:?}"),
                },
            };
            let rec = states
                .iter()
                .find(|r| r.node == id.node && r.attempt == id.attempt)
                .expect("state stored");
            assert_eq!(rec.calls, s.calls, "state {id}");
            assert_eq!(rec.status == StateStatus::Open, s.open, "state {id}");
            let pool = proj(&self.ledger, run, &PKey::Pool(id.clone()));
            assert!(
                matches!(&pool, Some(PVal::Pool(_))) == s.pool && (s.pool || pool.is_none()),
                "state {id}: {pool:?}"
            );
            for i in 0..s.calls {
                match proj(&self.ledger, run, &PKey::Call(id.clone(), i)) {
                    Some(PVal::Call(c)) => {
                        assert_eq!(c.completion.is_some(), s.completed.contains(&i))
                    }
                    other => panic!("call {i} of {id}: {other:?}"),
                }
            }
        }
    }
}

fn pool_stats(state: StateId, a: u32) -> Event {
    Event::PoolStats {
        state,
        capacity_retries: u64::from(a % 4),
        peak_delay_us: u64::from(a),
        throttled_us: u64::from(a) * 2,
    }
}

fn outcome_write_mut(o: &mut Outcome) -> Option<&mut SinkWrite> {
    match o {
        Outcome::Completed { write } | Outcome::Routed { write } => Some(write),
        Outcome::Diverted { write, .. } => Some(write),
        Outcome::Quarantined { write } => write.as_mut(),
        Outcome::Discarded { .. } | Outcome::Failed { .. } => None,
    }
}

fn ops() -> impl Strategy<Value = Vec<(u8, u32, u32)>> {
    prop::collection::vec((any::<u8>(), any::<u32>(), any::<u32>()), 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random valid runs are accepted event for event and verify.
    #[test]
    fn valid_sequences_are_accepted_and_verify(ops in ops(), end in any::<u32>()) {
        let mut sim = Sim::new();
        for (kind, a, b) in ops {
            sim.op(kind, a, b);
        }
        sim.check_against_model();
        sim.finish(end);
        sim.check_against_model();
        let rr = sim.ledger.run_record(sim.run.id()).unwrap().unwrap();
        prop_assert_eq!(rr.status, RunStatus::Completed);
        let report = sim.ledger.verify(sim.run.id(), &VerifyOptions::default()).unwrap();
        prop_assert!(report.ok(), "{:?}", report.failure);
        prop_assert_eq!(report.events, rr.next_seq);
    }
}

// ---------------------------------------------------------------------------------------
// Invalid events: a valid prefix, whatever valid set-up the bad event needs, then the bad
// event itself.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bad {
    GhostToken,
    NeverOpenedState,
    NeverOpenedStateApi,
    NeverAllocatedCall,
    GhostNode,
    WrongNodeKind,
    GhostBatch,
    CallOnClosedState,
    CallOnClosedStateApi,
    CallCompletedOnClosedState,
    DuplicateCallIndex,
    SkippedCallIndex,
    CallCompletedTwice,
    ServedByAnotherState,
    SecondOutcome,
    EventAfterRunEnd,
    StateReopened,
    StateClosedTwice,
    WrongAttempt,
    PreviousAttemptOpen,
    MemberAfterCompletion,
    WrongMemberOrdinal,
    CompletionNamesOtherState,
    CompletionWithOpenState,
    SkippedSinkOrdinal,
    RepeatedSinkOrdinal,
    RunCompletesWithLiveTokens,
    RunCompletesWithOpenStates,
    EventWhileInterrupted,
    SkippedRowIndex,
    QuarantineWithoutValidationError,
    TokenBuffered,
    SecondRunStarted,
    DuplicateToken,
    DetailOfMissingRow,
    PoolStatsOnClosedState,
    PoolStatsTwice,
    PoolStatsOnGhostState,
    RowTokenTaken,
}

const ALL_BAD: &[Bad] = &[
    Bad::GhostToken,
    Bad::NeverOpenedState,
    Bad::NeverOpenedStateApi,
    Bad::NeverAllocatedCall,
    Bad::GhostNode,
    Bad::WrongNodeKind,
    Bad::GhostBatch,
    Bad::CallOnClosedState,
    Bad::CallOnClosedStateApi,
    Bad::CallCompletedOnClosedState,
    Bad::DuplicateCallIndex,
    Bad::SkippedCallIndex,
    Bad::CallCompletedTwice,
    Bad::ServedByAnotherState,
    Bad::SecondOutcome,
    Bad::EventAfterRunEnd,
    Bad::StateReopened,
    Bad::StateClosedTwice,
    Bad::WrongAttempt,
    Bad::PreviousAttemptOpen,
    Bad::MemberAfterCompletion,
    Bad::WrongMemberOrdinal,
    Bad::CompletionNamesOtherState,
    Bad::CompletionWithOpenState,
    Bad::SkippedSinkOrdinal,
    Bad::RepeatedSinkOrdinal,
    Bad::RunCompletesWithLiveTokens,
    Bad::RunCompletesWithOpenStates,
    Bad::EventWhileInterrupted,
    Bad::SkippedRowIndex,
    Bad::QuarantineWithoutValidationError,
    Bad::TokenBuffered,
    Bad::SecondRunStarted,
    Bad::DuplicateToken,
    Bad::DetailOfMissingRow,
    Bad::PoolStatsOnClosedState,
    Bad::PoolStatsTwice,
    Bad::PoolStatsOnGhostState,
    Bad::RowTokenTaken,
];

/// How the bad event is sent.
enum Action {
    /// A commit holding the bad event (as a ready-made event).
    Events(Vec<Event>),
    /// `StateHandle::allocate_call` on a state, serving a token.
    Allocate(StateId, Option<TokenId>),
}

/// The bad event, the (rule, code) it must be refused with, and whether the run must be
/// resumed afterwards.
struct Injection {
    action: Action,
    rule: Rule,
    code: &'static str,
    resume_after: bool,
}

fn refuse(rule: Rule, code: &'static str, events: Vec<Event>) -> Injection {
    Injection {
        action: Action::Events(events),
        rule,
        code,
        resume_after: false,
    }
}

impl Sim {
    fn ghost_token(&mut self) -> TokenId {
        TokenId::new(format!("ghost-{}", self.uniq())).unwrap()
    }

    fn ensure_idle(&mut self, a: u32) -> TokenId {
        if self.m.idle().is_empty() {
            let step = self.ingest(a);
            self.exec(step);
        }
        pick(&self.m.idle(), a).unwrap()
    }

    fn ensure_token(&mut self, a: u32) -> TokenId {
        if self.m.tokens.is_empty() {
            let step = self.ingest(a);
            self.exec(step);
        }
        let all: Vec<TokenId> = self.m.tokens.keys().cloned().collect();
        pick(&all, a).unwrap()
    }

    fn ensure_terminal(&mut self, a: u32) -> TokenId {
        let terminal = self.m.terminal();
        if let Some(t) = pick(&terminal, a) {
            return t;
        }
        let t = self.ensure_idle(a);
        self.exec(Step::events(vec![Event::TokenOutcome {
            token: t.clone(),
            outcome: Outcome::Discarded {
                reason: "set-up".into(),
            },
        }]));
        t
    }

    /// The last state of `subject` (just opened by the caller).
    fn last_state(&self, subject: &Subject) -> StateId {
        self.m.owner_states(subject).last().unwrap().clone()
    }

    /// An open state of a free token with at least `min_calls` calls.
    fn ensure_open_token_state(&mut self, a: u32, min_calls: u32) -> StateId {
        let free: BTreeSet<TokenId> = self.m.free().into_iter().collect();
        let candidates: Vec<StateId> = self
            .m
            .open_states()
            .into_iter()
            .filter(|s| matches!(&s.subject, Subject::Token(t) if free.contains(t)))
            .collect();
        let state = match pick(&candidates, a) {
            Some(s) => s,
            None => {
                let t = self.ensure_idle(a);
                let subject = Subject::Token(t);
                let step = self.open(subject.clone(), n("map"), self.pool(a), a);
                self.exec(step);
                self.last_state(&subject)
            }
        };
        while self.m.states[&state].calls < min_calls {
            self.alloc_on(&state);
        }
        state
    }

    fn alloc_on(&mut self, state: &StateId) {
        let index = self.m.states[state].calls;
        self.exec(Step::events(vec![Event::CallAllocated {
            state: state.clone(),
            index,
            kind: "http".into(),
            request: self.pool(index),
            served: None,
        }]));
    }

    fn close(&mut self, state: &StateId, ok: bool) {
        let result = if ok {
            StateResult::Completed {
                output: self.pool(1),
            }
        } else {
            StateResult::Failed {
                error: "set-up".into(),
                retryable: true,
            }
        };
        self.exec(Step::events(vec![Event::StateClosed {
            state: state.clone(),
            result,
            duration_us: 1,
        }]));
    }

    fn ensure_closed_state(&mut self, a: u32) -> StateId {
        if let Some(s) = pick(&self.m.closed_states(), a) {
            return s;
        }
        let s = self.ensure_open_token_state(a, a % 3);
        self.close(&s, a.is_multiple_of(2));
        s
    }

    /// An unfinished batch without states (so members may still join).
    fn ensure_joinable_batch(&mut self, a: u32) -> BatchId {
        let joinable: Vec<BatchId> = self
            .m
            .open_batches()
            .into_iter()
            .filter(|b| self.m.batches[b].states.is_empty())
            .collect();
        if let Some(b) = pick(&joinable, a) {
            return b;
        }
        let step = self.batch_open();
        self.exec(step);
        BatchId::for_node(&n(AGG), self.m.next_batch - 1)
    }

    fn ensure_buffered(&mut self, a: u32) -> (TokenId, BatchId) {
        let buffered: Vec<(TokenId, BatchId)> = self
            .m
            .tokens
            .iter()
            .filter_map(|(id, t)| Some((id.clone(), t.buffered.clone()?)))
            .collect();
        if let Some(tb) = pick(&buffered, a) {
            return tb;
        }
        let batch = self.ensure_joinable_batch(a);
        let token = self.ensure_idle(a);
        let ordinal = self.m.batches[&batch].members.len() as u32;
        self.exec(Step::events(vec![Event::BatchMemberAdded {
            batch: batch.clone(),
            token: token.clone(),
            ordinal,
        }]));
        (token, batch)
    }

    fn ensure_open_batch_state(&mut self, a: u32) -> StateId {
        let open: Vec<StateId> = self
            .m
            .open_states()
            .into_iter()
            .filter(|s| matches!(s.subject, Subject::Batch(_)))
            .collect();
        if let Some(s) = pick(&open, a) {
            return s;
        }
        let (_, batch) = self.ensure_buffered(a);
        let subject = Subject::Batch(batch);
        if let Some(last) = self.m.owner_states(&subject).last() {
            if self.m.states[last].open {
                return last.clone();
            }
        }
        let step = self.open(subject.clone(), n(AGG), self.pool(a), a);
        self.exec(step);
        self.last_state(&subject)
    }

    fn ensure_completed_batch(&mut self, a: u32) -> BatchId {
        let done: Vec<BatchId> = self
            .m
            .batches
            .iter()
            .filter(|(_, b)| b.completed)
            .map(|(id, _)| id.clone())
            .collect();
        if let Some(b) = pick(&done, a) {
            return b;
        }
        let state = self.ensure_open_batch_state(a);
        self.close(&state, true);
        let Subject::Batch(batch) = state.subject.clone() else {
            unreachable!("a batch state")
        };
        self.exec(Step::events(vec![Event::BatchCompleted {
            batch: batch.clone(),
            trigger: "count".into(),
            state,
            outputs: BatchOutputs::Passthrough,
        }]));
        batch
    }

    /// Prepares (with valid steps) and describes one bad event of kind `bad`.
    fn prepare(&mut self, bad: Bad, a: u32) -> Injection {
        use Rule::*;
        let v = a % 7;
        match bad {
            Bad::GhostToken => {
                let ghost = self.ghost_token();
                let event = match v % 6 {
                    0 => Event::TokenOutcome {
                        token: ghost,
                        outcome: Outcome::Discarded { reason: "x".into() },
                    },
                    1 => Event::StateOpened {
                        state: StateId {
                            subject: Subject::Token(ghost),
                            node: n("map"),
                            attempt: 1,
                        },
                        input: self.pool(a),
                    },
                    2 => Event::TokenForked {
                        children: vec![ForkChild {
                            token: TokenId::fork_child(&ghost, "a"),
                            branch: "a".into(),
                        }],
                        parent: ghost,
                    },
                    3 => {
                        let batch = self.ensure_joinable_batch(a);
                        let ordinal = self.m.batches[&batch].members.len() as u32;
                        Event::BatchMemberAdded {
                            batch,
                            token: ghost,
                            ordinal,
                        }
                    }
                    4 => Event::TokensCoalesced {
                        node: n(MERGE),
                        merged: TokenId::coalesced(&ghost, &n(MERGE)),
                        parents: vec![ghost],
                    },
                    _ => Event::RouteDecided {
                        state: StateId {
                            subject: Subject::Token(ghost.clone()),
                            node: n("gate"),
                            attempt: 1,
                        },
                        token: ghost,
                        label: "x".into(),
                        to: vec![n("out")],
                    },
                };
                refuse(References, "DANGLING_TOKEN", vec![event])
            }
            Bad::NeverOpenedState | Bad::NeverOpenedStateApi => {
                // A state id naming a real subject but an attempt that was never opened.
                let subject = match self.m.batches.keys().next() {
                    Some(b) if a.is_multiple_of(3) => Subject::Batch(b.clone()),
                    _ => Subject::Token(self.ensure_token(a)),
                };
                let node = match subject {
                    Subject::Batch(_) => n(AGG),
                    Subject::Token(_) => n("map"),
                };
                let attempt = self.m.next_attempt(&subject, &node) + a % 2;
                let state = StateId {
                    subject,
                    node,
                    attempt,
                };
                let action = if bad == Bad::NeverOpenedStateApi {
                    Action::Allocate(state, None)
                } else if v.is_multiple_of(2) {
                    Action::Events(vec![Event::StateClosed {
                        state,
                        result: StateResult::Completed {
                            output: self.pool(a),
                        },
                        duration_us: 1,
                    }])
                } else {
                    Action::Events(vec![Event::CallAllocated {
                        state,
                        index: 0,
                        kind: "http".into(),
                        request: self.pool(a),
                        served: None,
                    }])
                };
                Injection {
                    action,
                    rule: References,
                    code: "DANGLING_STATE",
                    resume_after: false,
                }
            }
            Bad::NeverAllocatedCall => {
                let state = self.ensure_open_token_state(a, 0);
                let index = self.m.states[&state].calls + a % 2;
                refuse(
                    References,
                    "DANGLING_CALL",
                    vec![Event::CallCompleted {
                        state,
                        index,
                        outcome: CallOutcome::Responded { status: Some(200) },
                        response: None,
                        latency_us: 1,
                    }],
                )
            }
            Bad::GhostNode => {
                let ghost = n(&format!("ghost-node-{}", self.uniq()));
                let event = match v {
                    0 => {
                        let t = self.ensure_idle(a);
                        Event::StateOpened {
                            state: StateId {
                                subject: Subject::Token(t),
                                node: ghost,
                                attempt: 1,
                            },
                            input: self.pool(a),
                        }
                    }
                    1 => Event::TokenOutcome {
                        token: self.ensure_idle(a),
                        outcome: Outcome::Completed {
                            write: SinkWrite {
                                sink: ghost,
                                ordinal: 0,
                            },
                        },
                    },
                    2 => Event::RowIngested {
                        row: self.m.rows,
                        source: ghost,
                        payload: self.pool(a),
                    },
                    3 => {
                        let state = self.ensure_open_token_state(a, 0);
                        let Subject::Token(token) = state.subject.clone() else {
                            unreachable!("a token state")
                        };
                        Event::RouteDecided {
                            state,
                            token,
                            label: "x".into(),
                            to: vec![n("out"), ghost],
                        }
                    }
                    4 => Event::EdgeRegistered {
                        from: n("map"),
                        to: ghost,
                        label: "x".into(),
                    },
                    5 => Event::ArtifactWritten {
                        sink: ghost,
                        path: "x.csv".into(),
                        content_hash: Hash32::ZERO,
                        size: 0,
                        rows: 0,
                    },
                    _ => Event::BatchOpened {
                        batch: BatchId::for_node(&ghost, 0),
                        node: ghost,
                    },
                };
                refuse(References, "DANGLING_NODE", vec![event])
            }
            Bad::WrongNodeKind => {
                let event = match v % 4 {
                    0 => Event::TokenOutcome {
                        token: self.ensure_idle(a),
                        outcome: Outcome::Routed {
                            write: SinkWrite {
                                sink: n("map"),
                                ordinal: 0,
                            },
                        },
                    },
                    1 => Event::RowIngested {
                        row: self.m.rows,
                        source: n("gate"),
                        payload: self.pool(a),
                    },
                    2 => Event::BatchOpened {
                        batch: BatchId::for_node(&n("map"), 0),
                        node: n("map"),
                    },
                    _ => {
                        let t = self.ensure_idle(a);
                        Event::TokensCoalesced {
                            node: n(AGG),
                            merged: TokenId::coalesced(&t, &n(AGG)),
                            parents: vec![t],
                        }
                    }
                };
                refuse(References, "WRONG_NODE_KIND", vec![event])
            }
            Bad::GhostBatch => {
                let ghost = BatchId::for_node(&n(AGG), 1_000 + self.uniq());
                let state = StateId {
                    subject: Subject::Batch(ghost.clone()),
                    node: n(AGG),
                    attempt: 1,
                };
                let event = match v % 4 {
                    0 => Event::BatchMemberAdded {
                        batch: ghost,
                        token: self.ensure_idle(a),
                        ordinal: 0,
                    },
                    1 => Event::StateOpened {
                        state,
                        input: self.pool(a),
                    },
                    2 => Event::BatchCompleted {
                        batch: ghost,
                        trigger: "count".into(),
                        state,
                        outputs: BatchOutputs::Passthrough,
                    },
                    _ => Event::CallAllocated {
                        state,
                        index: 0,
                        kind: "llm".into(),
                        request: self.pool(a),
                        served: None,
                    },
                };
                refuse(References, "DANGLING_BATCH", vec![event])
            }
            Bad::CallOnClosedState => {
                let state = self.ensure_closed_state(a);
                let index = self.m.states[&state].calls;
                refuse(
                    CallIndices,
                    "CALL_ON_CLOSED_STATE",
                    vec![Event::CallAllocated {
                        state,
                        index,
                        kind: "http".into(),
                        request: self.pool(a),
                        served: None,
                    }],
                )
            }
            Bad::CallOnClosedStateApi => {
                let state = self.ensure_closed_state(a);
                Injection {
                    action: Action::Allocate(state, None),
                    rule: CallIndices,
                    code: "CALL_ON_CLOSED_STATE",
                    resume_after: false,
                }
            }
            Bad::CallCompletedOnClosedState => {
                let pending: Vec<(StateId, u32)> = self
                    .m
                    .states
                    .iter()
                    .filter(|(_, s)| !s.open)
                    .flat_map(|(id, s)| s.pending.iter().map(move |i| (id.clone(), *i)))
                    .collect();
                let (state, index) = match pick(&pending, a) {
                    Some(p) => p,
                    None => {
                        let state = self.ensure_open_token_state(a, 0);
                        self.alloc_on(&state);
                        self.close(&state, a.is_multiple_of(2));
                        let index = *self.m.states[&state].pending.last().unwrap();
                        (state, index)
                    }
                };
                refuse(
                    CallIndices,
                    "CALL_ON_CLOSED_STATE",
                    vec![Event::CallCompleted {
                        state,
                        index,
                        outcome: CallOutcome::Responded { status: Some(200) },
                        response: None,
                        latency_us: 1,
                    }],
                )
            }
            Bad::DuplicateCallIndex | Bad::SkippedCallIndex => {
                let state = if a.is_multiple_of(4) {
                    let s = self.ensure_open_batch_state(a);
                    if self.m.states[&s].calls == 0 {
                        self.alloc_on(&s);
                    }
                    s
                } else {
                    self.ensure_open_token_state(a, 1)
                };
                let calls = self.m.states[&state].calls;
                let index = if bad == Bad::DuplicateCallIndex {
                    a % calls
                } else {
                    calls + 1 + a % 3
                };
                refuse(
                    CallIndices,
                    "CALL_INDEX",
                    vec![Event::CallAllocated {
                        state,
                        index,
                        kind: "http".into(),
                        request: self.pool(a),
                        served: None,
                    }],
                )
            }
            Bad::CallCompletedTwice => {
                let state = self.ensure_open_token_state(a, 1);
                if self.m.states[&state].completed.is_empty() {
                    let index = self.m.states[&state].pending[0];
                    self.exec(Step::events(vec![Event::CallCompleted {
                        state: state.clone(),
                        index,
                        outcome: CallOutcome::Responded { status: Some(200) },
                        response: None,
                        latency_us: 1,
                    }]));
                }
                let index = pick(&self.m.states[&state].completed, a).unwrap();
                refuse(
                    CallIndices,
                    "CALL_COMPLETED_TWICE",
                    vec![Event::CallCompleted {
                        state,
                        index,
                        outcome: CallOutcome::Responded { status: Some(500) },
                        response: None,
                        latency_us: 2,
                    }],
                )
            }
            Bad::ServedByAnotherState => {
                // A call recorded for a token its state does not process (seed 001).
                let state = if a.is_multiple_of(2) {
                    self.ensure_open_batch_state(a)
                } else {
                    self.ensure_open_token_state(a, 0)
                };
                let other = {
                    let own = match &state.subject {
                        Subject::Token(t) => Some(t.clone()),
                        Subject::Batch(_) => None,
                    };
                    let idle = self.ensure_idle(a);
                    if Some(&idle) == own.as_ref() {
                        let step = self.ingest(a);
                        self.exec(step);
                        TokenId::for_row(self.m.rows - 1)
                    } else {
                        idle
                    }
                };
                let action = if v.is_multiple_of(2) {
                    Action::Allocate(state, Some(other))
                } else {
                    let index = self.m.states[&state].calls;
                    Action::Events(vec![Event::CallAllocated {
                        state,
                        index,
                        kind: "llm".into(),
                        request: self.pool(a),
                        served: Some(other),
                    }])
                };
                Injection {
                    action,
                    rule: References,
                    code: "SERVED_TOKEN",
                    resume_after: false,
                }
            }
            Bad::SecondOutcome => {
                let t = self.ensure_terminal(a);
                let event = match v % 4 {
                    0 | 1 => Event::TokenOutcome {
                        outcome: self.outcome_for_any(a),
                        token: t,
                    },
                    2 => Event::TokenForked {
                        children: vec![ForkChild {
                            token: TokenId::fork_child(&t, "late"),
                            branch: "late".into(),
                        }],
                        parent: t,
                    },
                    _ => Event::TokenExpanded {
                        children: vec![TokenId::expanded(&t, 99)],
                        parent: t,
                    },
                };
                refuse(TerminalOutcome, "TOKEN_TERMINAL", vec![event])
            }
            Bad::EventAfterRunEnd => {
                if a.is_multiple_of(2) {
                    self.exec(Step::events(vec![Event::RunFinished {
                        status: FinalStatus::Failed,
                    }]));
                } else {
                    self.finish(a);
                }
                let action = match (v, self.m.states.keys().next()) {
                    (0, Some(state)) => Action::Allocate(state.clone(), None),
                    (1, _) => Action::Events(vec![Event::RowIngested {
                        row: self.m.rows,
                        source: n("src"),
                        payload: self.pool(a),
                    }]),
                    (2, _) => Action::Events(vec![Event::RunFinished {
                        status: FinalStatus::Completed,
                    }]),
                    (3, _) => Action::Events(vec![Event::RunResumed {
                        reason: "too late".into(),
                    }]),
                    (4, _) => Action::Events(vec![Event::NodeRegistered {
                        node: n("late"),
                        kind: NodeKind::Sink,
                        plugin: "csv".into(),
                        config_hash: Hash32::ZERO,
                    }]),
                    _ => Action::Events(vec![Event::Checkpoint {
                        rows_ingested: 0,
                        note: "late".into(),
                    }]),
                };
                Injection {
                    action,
                    rule: RunLifecycle,
                    code: "RUN_ENDED",
                    resume_after: false,
                }
            }
            Bad::StateReopened => {
                // Any existing state of a free token, opened again under its own number.
                let free: BTreeSet<TokenId> = self.m.free().into_iter().collect();
                let existing: Vec<StateId> = self
                    .m
                    .states
                    .keys()
                    .filter(|s| matches!(&s.subject, Subject::Token(t) if free.contains(t)))
                    .cloned()
                    .collect();
                let state = match pick(&existing, a) {
                    Some(s) => s,
                    None => {
                        let s = self.ensure_open_token_state(a, 0);
                        if a.is_multiple_of(2) {
                            self.close(&s, false);
                        }
                        s
                    }
                };
                refuse(
                    StateLifecycle,
                    "ATTEMPT",
                    vec![Event::StateOpened {
                        state,
                        input: self.pool(a),
                    }],
                )
            }
            Bad::StateClosedTwice => {
                let state = self.ensure_closed_state(a);
                refuse(
                    StateLifecycle,
                    "STATE_CLOSED_TWICE",
                    vec![Event::StateClosed {
                        state,
                        result: StateResult::Completed {
                            output: self.pool(a),
                        },
                        duration_us: 1,
                    }],
                )
            }
            Bad::WrongAttempt => {
                let t = self.ensure_idle(a);
                let subject = Subject::Token(t);
                let node = n(TOKEN_NODES[a as usize % 3]);
                let next = self.m.next_attempt(&subject, &node);
                let attempt = if v == 0 { 0 } else { next + 1 + a % 3 };
                refuse(
                    StateLifecycle,
                    "ATTEMPT",
                    vec![Event::StateOpened {
                        state: StateId {
                            subject,
                            node,
                            attempt,
                        },
                        input: self.pool(a),
                    }],
                )
            }
            Bad::PreviousAttemptOpen => {
                let state = self.ensure_open_token_state(a, 0);
                refuse(
                    StateLifecycle,
                    "PREVIOUS_ATTEMPT_OPEN",
                    vec![Event::StateOpened {
                        state: StateId {
                            attempt: state.attempt + 1,
                            ..state
                        },
                        input: self.pool(a),
                    }],
                )
            }
            Bad::MemberAfterCompletion => {
                let batch = self.ensure_completed_batch(a);
                let event = match v % 3 {
                    0 => {
                        let token = self.ensure_idle(a);
                        let ordinal = self.m.batches[&batch].members.len() as u32;
                        Event::BatchMemberAdded {
                            batch,
                            token,
                            ordinal,
                        }
                    }
                    1 => {
                        let subject = Subject::Batch(batch);
                        Event::StateOpened {
                            state: StateId {
                                attempt: self.m.next_attempt(&subject, &n(AGG)),
                                subject,
                                node: n(AGG),
                            },
                            input: self.pool(a),
                        }
                    }
                    _ => {
                        let state = self.m.batches[&batch].states.last().unwrap().clone();
                        Event::BatchCompleted {
                            batch,
                            trigger: "again".into(),
                            state,
                            outputs: BatchOutputs::Passthrough,
                        }
                    }
                };
                refuse(BatchMembership, "BATCH_COMPLETED", vec![event])
            }
            Bad::WrongMemberOrdinal => {
                let batch = self.ensure_joinable_batch(a);
                let token = self.ensure_idle(a);
                let members = self.m.batches[&batch].members.len() as u32;
                let ordinal = if members > 0 && v.is_multiple_of(2) {
                    a % members
                } else {
                    members + 1 + a % 3
                };
                refuse(
                    BatchMembership,
                    "MEMBER_ORDINAL",
                    vec![Event::BatchMemberAdded {
                        batch,
                        token,
                        ordinal,
                    }],
                )
            }
            Bad::CompletionNamesOtherState => {
                // Another batch's state, or a token's state, named as this batch's.
                let other = if v.is_multiple_of(2) {
                    self.ensure_open_batch_state(a)
                } else {
                    self.ensure_closed_state(a)
                };
                let unfinished: Vec<BatchId> = self
                    .m
                    .open_batches()
                    .into_iter()
                    .filter(|b| other.subject != Subject::Batch(b.clone()))
                    .collect();
                let batch = match pick(&unfinished, a) {
                    Some(b) => b,
                    None => {
                        let step = self.batch_open();
                        self.exec(step);
                        BatchId::for_node(&n(AGG), self.m.next_batch - 1)
                    }
                };
                refuse(
                    BatchMembership,
                    "BATCH_STATE",
                    vec![Event::BatchCompleted {
                        batch,
                        trigger: "count".into(),
                        state: other,
                        outputs: BatchOutputs::Passthrough,
                    }],
                )
            }
            Bad::CompletionWithOpenState => {
                let state = self.ensure_open_batch_state(a);
                let Subject::Batch(batch) = state.subject.clone() else {
                    unreachable!("a batch state")
                };
                refuse(
                    BatchMembership,
                    "BATCH_STATE_STATUS",
                    vec![Event::BatchCompleted {
                        batch,
                        trigger: "count".into(),
                        state,
                        outputs: BatchOutputs::Passthrough,
                    }],
                )
            }
            Bad::SkippedSinkOrdinal | Bad::RepeatedSinkOrdinal => {
                let sink = SINKS[a as usize % 2];
                if bad == Bad::RepeatedSinkOrdinal && self.m.next_write(sink).ordinal == 0 {
                    let t = self.ensure_idle(a);
                    self.exec(Step::events(vec![Event::TokenOutcome {
                        token: t,
                        outcome: Outcome::Completed {
                            write: self.m.next_write(sink),
                        },
                    }]));
                }
                let token = self.ensure_idle(a);
                let next = self.m.next_write(sink).ordinal;
                let ordinal = if bad == Bad::SkippedSinkOrdinal {
                    next + 1 + u64::from(a % 3)
                } else {
                    u64::from(a) % next
                };
                let write = SinkWrite {
                    sink: n(sink),
                    ordinal,
                };
                let outcome = match v % 3 {
                    0 => Outcome::Completed { write },
                    1 => Outcome::Routed { write },
                    _ => Outcome::Diverted {
                        write,
                        error: "x".into(),
                    },
                };
                refuse(
                    TerminalOutcome,
                    "SINK_ORDINAL",
                    vec![Event::TokenOutcome { token, outcome }],
                )
            }
            Bad::RunCompletesWithLiveTokens => {
                self.ensure_idle(a);
                refuse(
                    RunLifecycle,
                    "LIVE_TOKENS",
                    vec![Event::RunFinished {
                        status: FinalStatus::Completed,
                    }],
                )
            }
            Bad::RunCompletesWithOpenStates => {
                // No live token left, but a state still open (on an empty batch).
                self.drain(a);
                let step = self.batch_open();
                self.exec(step);
                let subject = Subject::Batch(BatchId::for_node(&n(AGG), self.m.next_batch - 1));
                let step = self.open(subject, n(AGG), self.pool(a), a);
                self.exec(step);
                refuse(
                    StateLifecycle,
                    "OPEN_STATES",
                    vec![Event::RunFinished {
                        status: FinalStatus::Completed,
                    }],
                )
            }
            Bad::EventWhileInterrupted => {
                self.exec(Step::events(vec![Event::RunInterrupted {
                    reason: "ctrl-c".into(),
                }]));
                let event = match v % 4 {
                    0 => Event::RowIngested {
                        row: self.m.rows,
                        source: n("src"),
                        payload: self.pool(a),
                    },
                    1 => Event::RunFinished {
                        status: FinalStatus::Failed,
                    },
                    2 => Event::RunInterrupted {
                        reason: "again".into(),
                    },
                    _ => Event::Checkpoint {
                        rows_ingested: 0,
                        note: "x".into(),
                    },
                };
                Injection {
                    resume_after: true,
                    ..refuse(RunLifecycle, "RUN_INTERRUPTED", vec![event])
                }
            }
            Bad::SkippedRowIndex => {
                let rows = self.m.rows;
                let row = if rows > 0 && v.is_multiple_of(2) {
                    u64::from(a) % rows
                } else {
                    rows + 1 + u64::from(a % 3)
                };
                refuse(
                    WellFormed,
                    "ROW_INDEX",
                    vec![Event::RowIngested {
                        row,
                        source: n("src"),
                        payload: self.pool(a),
                    }],
                )
            }
            Bad::QuarantineWithoutValidationError => {
                let candidates: Vec<TokenId> = self
                    .m
                    .idle()
                    .into_iter()
                    .filter(|t| {
                        let tok = &self.m.tokens[t];
                        !(tok.from_source
                            && tok.row.is_some_and(|r| self.m.failed_rows.contains(&r)))
                    })
                    .collect();
                let token = match pick(&candidates, a) {
                    Some(t) => t,
                    None => {
                        let step = self.ingest(a);
                        self.exec(step);
                        TokenId::for_row(self.m.rows - 1)
                    }
                };
                let write = v.is_multiple_of(2).then(|| self.m.next_write(QUARANTINE));
                refuse(
                    TerminalOutcome,
                    "QUARANTINE_WITHOUT_VALIDATION_ERROR",
                    vec![Event::TokenOutcome {
                        token,
                        outcome: Outcome::Quarantined { write },
                    }],
                )
            }
            Bad::TokenBuffered => {
                let (token, batch) = self.ensure_buffered(a);
                let mut code = "TOKEN_BUFFERED";
                let event = match v % 4 {
                    0 => Event::TokenOutcome {
                        token,
                        outcome: Outcome::Failed { error: "x".into() },
                    },
                    1 => Event::StateOpened {
                        state: StateId {
                            subject: Subject::Token(token.clone()),
                            node: n("map"),
                            attempt: self
                                .m
                                .next_attempt(&Subject::Token(token.clone()), &n("map")),
                        },
                        input: self.pool(a),
                    },
                    2 => Event::TokenForked {
                        children: vec![ForkChild {
                            token: TokenId::fork_child(&token, "a"),
                            branch: "a".into(),
                        }],
                        parent: token,
                    },
                    _ => {
                        // Joining a second batch (or the same one twice). Once the batch's
                        // state has opened, its fixed membership is what refuses it first.
                        if !self.m.batches[&batch].states.is_empty() {
                            code = "BATCH_PROCESSING";
                        }
                        let ordinal = self.m.batches[&batch].members.len() as u32;
                        Event::BatchMemberAdded {
                            batch,
                            token,
                            ordinal,
                        }
                    }
                };
                refuse(BatchMembership, code, vec![event])
            }
            Bad::DetailOfMissingRow => {
                // A row detail for a row the run has not ingested (yet).
                let event = Event::RowDetail {
                    row: self.m.rows + u64::from(v),
                    detail: self.pool(a),
                };
                refuse(References, "DANGLING_ROW", vec![event])
            }
            Bad::SecondRunStarted => refuse(
                RunLifecycle,
                "RUN_RESTARTED",
                vec![Event::RunStarted {
                    run: if v.is_multiple_of(2) {
                        self.run.id().clone()
                    } else {
                        run_id("another")
                    },
                    config_hash: Hash32::ZERO,
                    engine_version: "x".into(),
                    started_at_ms: 2,
                }],
            ),
            Bad::RowTokenTaken => {
                // A fork child or an expansion element named as the next source row's
                // token is a new token like any other; the row is then refused, though
                // the ledger skips the lookup while every token is a row's.
                let parent = self.ensure_idle(a);
                let next_row = self.m.rows;
                let taken = TokenId::for_row(next_row);
                let event = if v.is_multiple_of(2) {
                    Event::TokenForked {
                        parent,
                        children: vec![ForkChild {
                            token: taken,
                            branch: "x".into(),
                        }],
                    }
                } else {
                    Event::TokenExpanded {
                        parent,
                        children: vec![taken],
                    }
                };
                self.exec(Step::events(vec![event]));
                refuse(
                    WellFormed,
                    "DUPLICATE_TOKEN",
                    vec![Event::RowIngested {
                        row: next_row,
                        source: n("src"),
                        payload: self.pool(a),
                    }],
                )
            }
            Bad::DuplicateToken => {
                let parent = self.ensure_idle(a);
                let existing = self.ensure_token(a);
                let event = match v % 3 {
                    0 => Event::TokenForked {
                        parent,
                        children: vec![ForkChild {
                            token: existing,
                            branch: "x".into(),
                        }],
                    },
                    1 => Event::TokenExpanded {
                        children: vec![
                            TokenId::expanded(&parent, 0),
                            TokenId::expanded(&parent, 0),
                        ],
                        parent,
                    },
                    _ => Event::TokensCoalesced {
                        node: n(MERGE),
                        parents: vec![parent],
                        merged: existing,
                    },
                };
                refuse(WellFormed, "DUPLICATE_TOKEN", vec![event])
            }
            Bad::PoolStatsOnClosedState => {
                let state = self.ensure_closed_state(a);
                refuse(
                    StateLifecycle,
                    "POOL_STATS_ON_CLOSED_STATE",
                    vec![pool_stats(state, a)],
                )
            }
            Bad::PoolStatsTwice => {
                let state = if a.is_multiple_of(2) {
                    self.ensure_open_batch_state(a)
                } else {
                    self.ensure_open_token_state(a, a % 2)
                };
                // Twice in one commit, or once more after the first was stored.
                let events = if !self.m.states[&state].pool && v.is_multiple_of(2) {
                    vec![pool_stats(state.clone(), a), pool_stats(state, a + 1)]
                } else {
                    if !self.m.states[&state].pool {
                        self.exec(Step::events(vec![pool_stats(state.clone(), a)]));
                    }
                    vec![pool_stats(state, a + 1)]
                };
                refuse(WellFormed, "POOL_STATS_TWICE", events)
            }
            Bad::PoolStatsOnGhostState => {
                // A real token's attempt never opened, or a token that never existed.
                if a.is_multiple_of(2) {
                    let subject = Subject::Token(self.ensure_token(a));
                    let attempt = self.m.next_attempt(&subject, &n("llm")) + a % 3;
                    let state = StateId {
                        subject,
                        node: n("llm"),
                        attempt,
                    };
                    refuse(References, "DANGLING_STATE", vec![pool_stats(state, a)])
                } else {
                    let state = StateId {
                        subject: Subject::Token(self.ghost_token()),
                        node: n("llm"),
                        attempt: 1,
                    };
                    refuse(References, "DANGLING_TOKEN", vec![pool_stats(state, a)])
                }
            }
        }
    }

    fn outcome_for_any(&self, a: u32) -> Outcome {
        match a % 3 {
            0 => Outcome::Completed {
                write: self.m.next_write("out"),
            },
            1 => Outcome::Discarded { reason: "x".into() },
            _ => Outcome::Failed { error: "x".into() },
        }
    }

    /// Injects one bad event of kind `bad` and checks it is refused with its rule and
    /// leaves no trace. `wrap` chooses how it is sent: alone; inside a commit between
    /// valid events (with a payload of its own); or pipelined between two valid commits
    /// that the writer will likely group with it.
    fn inject(&mut self, bad: Bad, a: u32, wrap: u8) {
        let inj = self.prepare(bad, a);
        let running = !self.m.ended && !self.m.interrupted;
        let ctx = format!("{bad:?} (a={a}, wrap={wrap})");
        let before_rr = self.ledger.run_record(self.run.id()).unwrap().unwrap();
        let before = snapshot(&self.ledger);
        let refused = |err: LedgerError| {
            let v = err
                .rule()
                .unwrap_or_else(|| panic!("{ctx}: not a rule violation: {err}"));
            assert_eq!(
                (v.rule, v.code),
                (inj.rule, inj.code),
                "{ctx}: refused for another reason: {err}"
            );
        };
        match (inj.action, wrap % 3) {
            (Action::Allocate(state, served), _) => {
                let err = self
                    .run
                    .state_handle(state)
                    .allocate_call("http", format!("bad {}", self.uniq).into_bytes(), served)
                    .expect_err(&ctx);
                refused(err);
            }
            (Action::Events(events), 1) if running => {
                let commit = self.wrapped(events);
                refused(
                    self.run
                        .submit(commit, Durability::Flushed)
                        .expect_err(&ctx),
                );
            }
            (Action::Events(events), 2) if running => {
                let (err, _) = self.send_in_group(events, &before, &before_rr, &ctx);
                refused(err);
                self.after_refusal(inj.resume_after, a, &ctx);
                return;
            }
            (Action::Events(events), _) => {
                let commit = Commit::of(events.into_iter().map(Item::Event).collect());
                refused(
                    self.run
                        .submit(commit, Durability::Buffered)
                        .expect_err(&ctx),
                );
            }
        }
        assert_eq!(
            self.ledger.run_record(self.run.id()).unwrap().unwrap(),
            before_rr,
            "{ctx}: the run record changed"
        );
        assert!(snapshot(&self.ledger) == before, "{ctx}: the store changed");
        self.after_refusal(inj.resume_after, a, &ctx);
    }

    /// The bad events inside a commit between valid events, with a payload nobody else
    /// stores: all of it must be dropped with the bad event.
    fn wrapped(&mut self, events: Vec<Event>) -> Commit {
        let mut commit = Commit::new();
        commit.payload(format!("payload of a refused commit {}", self.uniq()).into_bytes());
        commit.push(Event::Checkpoint {
            rows_ingested: self.m.rows,
            note: "before".into(),
        });
        commit.push(Event::NodeRegistered {
            node: n(&format!("extra-{}", self.uniq())),
            kind: NodeKind::Transform,
            plugin: "x".into(),
            config_hash: Hash32::ZERO,
        });
        for e in events {
            commit.push(e);
        }
        commit.push(Event::Checkpoint {
            rows_ingested: 0,
            note: "after".into(),
        });
        commit
    }

    /// Sends the bad events (wrapped) between valid commits queued together behind a
    /// durable one, so that the writer most likely takes them as one commit group; checks
    /// the valid ones were kept and nothing else changed. Returns the refusal and whether
    /// the neighbours on both sides did share a log segment (were one group).
    fn send_in_group(
        &mut self,
        events: Vec<Event>,
        before: &[(Vec<u8>, Vec<u8>)],
        before_rr: &projection::RunRec,
        ctx: &str,
    ) -> (LedgerError, bool) {
        let wrapped = self.wrapped(events);
        let run = self.run.clone();
        let checkpoint = |d| {
            let commit = Commit::new().event(Event::Checkpoint {
                rows_ingested: 0,
                note: "neighbour".into(),
            });
            run.submit_nowait(commit, d).unwrap()
        };
        // The writer fsyncs for the first while the rest queue up behind it.
        let slow = checkpoint(Durability::Flushed);
        let lead: Vec<Pending> = (0..3).map(|_| checkpoint(Durability::Buffered)).collect();
        let bad = run.submit_nowait(wrapped, Durability::Buffered).unwrap();
        let tail: Vec<Pending> = (0..3).map(|_| checkpoint(Durability::Buffered)).collect();
        slow.wait().expect("a valid neighbour");
        let lead: Vec<Receipt> = lead.into_iter().map(|p| p.wait().expect(ctx)).collect();
        let err = bad.wait().expect_err(ctx);
        let tail: Vec<Receipt> = tail.into_iter().map(|p| p.wait().expect(ctx)).collect();
        let (last_before, first_after) = (lead[2].last_seq, tail[0].first_seq);
        assert_eq!(
            first_after,
            last_before + 1,
            "{ctx}: the refused commit took seqs"
        );
        let grouped = !self
            .ledger
            .raw_db()
            .contains_key(projection::log_key(self.run.id(), first_after))
            .unwrap();
        self.check_only_neighbours_added(before, before_rr, 7, ctx);
        (err, grouped)
    }

    /// The store differs from `before` only by `added` neighbouring checkpoints: new log
    /// records after the old head and the run record.
    fn check_only_neighbours_added(
        &self,
        before: &[(Vec<u8>, Vec<u8>)],
        before_rr: &projection::RunRec,
        added: u64,
        ctx: &str,
    ) {
        let run = self.run.id();
        let after = snapshot(&self.ledger);
        let old: BTreeMap<&Vec<u8>, &Vec<u8>> = before.iter().map(|(k, v)| (k, v)).collect();
        let log_prefix = projection::log_prefix(run);
        let run_key = PKey::Run.encode(run);
        for (k, v) in &after {
            if old.get(k) == Some(&v) {
                continue;
            }
            assert!(
                *k == run_key || (k.starts_with(&log_prefix) && !old.contains_key(k)),
                "{ctx}: an unexpected key changed: {}",
                String::from_utf8_lossy(k)
            );
        }
        assert!(
            old.keys().all(|k| after.iter().any(|(a, _)| a == *k)),
            "{ctx}: a key disappeared"
        );
        let rr = self.ledger.run_record(run).unwrap().unwrap();
        assert_eq!(rr.next_seq, before_rr.next_seq + added, "{ctx}");
        let log = read_log(&self.ledger, run);
        for e in &log[before_rr.next_seq as usize..] {
            assert!(matches!(e.event, Event::Checkpoint { .. }), "{ctx}: {e:?}");
        }
    }

    /// After a refusal: the run verifies, and (unless it has ended) accepts valid events
    /// and completes.
    fn after_refusal(&mut self, resume: bool, a: u32, ctx: &str) {
        let report = self
            .ledger
            .verify(self.run.id(), &VerifyOptions::default())
            .unwrap();
        assert!(report.ok(), "{ctx}: {:?}", report.failure);
        if resume {
            self.exec(Step::events(vec![Event::RunResumed {
                reason: "resume".into(),
            }]));
        }
        if !self.m.ended {
            self.check_against_model();
            self.finish(a);
            let report = self
                .ledger
                .verify(self.run.id(), &VerifyOptions::default())
                .unwrap();
            assert!(report.ok(), "{ctx}: after finishing: {:?}", report.failure);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A valid prefix plus one bad event: refused with its rule, and nothing changes.
    #[test]
    fn invalid_events_are_refused_and_leave_no_trace(
        ops in ops(),
        bad in 0..ALL_BAD.len(),
        a in any::<u32>(),
        wrap in any::<u8>(),
    ) {
        let mut sim = Sim::new();
        for (kind, x, y) in ops {
            sim.op(kind, x, y);
        }
        sim.inject(ALL_BAD[bad], a, wrap);
    }
}

/// Every kind of bad event, in each of its variants and ways of sending, after short
/// pseudo-random prefixes: the property test above samples kinds at random, this makes
/// sure none is ever skipped.
#[test]
fn every_kind_of_invalid_event_is_refused() {
    for (k, &bad) in ALL_BAD.iter().enumerate() {
        for a in 0..7u32 {
            let mut sim = Sim::new();
            // A small linear congruential generator: a different prefix per case.
            let mut x = (k as u32).wrapping_mul(2_654_435_761) ^ a;
            for _ in 0..(a * 3) {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                sim.op((x >> 24) as u8, x, x.rotate_left(13));
            }
            sim.inject(bad, a, a as u8);
        }
    }
}

/// A refused commit that shares its commit group with valid commits of the same run leaves
/// no trace either: not its valid events, not its payload, not the seqs it would have
/// taken. Repeated until the writer has demonstrably grouped them (it groups whatever is
/// queued while it works, so this takes one or two tries).
#[test]
fn a_refused_commit_inside_a_commit_group_leaves_no_trace() {
    for (k, &bad) in ALL_BAD.iter().enumerate() {
        let mut sim = Sim::new();
        for i in 0..20u32 {
            sim.op((k as u32 * 7 + i) as u8, i * 31 + k as u32, i);
        }
        let inj = sim.prepare(bad, k as u32);
        let Action::Events(events) = inj.action else {
            continue; // API allocations wait for their reply: they cannot be queued.
        };
        if sim.m.ended || sim.m.interrupted {
            continue; // valid neighbours would be refused too.
        }
        let mut grouped = false;
        for attempt in 0..100 {
            let ctx = format!("{bad:?}, try {attempt}");
            let before_rr = sim.ledger.run_record(sim.run.id()).unwrap().unwrap();
            let before = snapshot(&sim.ledger);
            let (err, g) = sim.send_in_group(events.clone(), &before, &before_rr, &ctx);
            let v = err.rule().expect("a rule violation");
            assert_eq!((v.rule, v.code), (inj.rule, inj.code), "{ctx}: {err}");
            if g {
                grouped = true;
                break;
            }
        }
        assert!(grouped, "{bad:?}: the writer never grouped the commits");
        sim.after_refusal(inj.resume_after, k as u32, &format!("{bad:?}"));
    }
}
