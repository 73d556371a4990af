//! The single writer: every append from every thread is ordered here.
//!
//! Callers send commands over a channel; the writer drains whatever is waiting (a commit
//! group), applies each command's events through the integrity rules in its own
//! transaction, and writes the group — log segment, changed projections and payloads — in
//! one sled batch. One fsync then serves every command in the group that asked for
//! durability. A command whose events break a rule is answered with the violation and
//! leaves no trace; the others in its group are unaffected.

use crate::codec;
use crate::error::{violation, LedgerError, Result, Rule};
use crate::event::Event;
use crate::ids::{Hash32, NodeId, RunId, StateId, Subject, TokenId};
use crate::projection::{self, PKey, PVal, StateRec};
use crate::rules::{self, Proj, TxProj};
use crate::store::Store;
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::sync::Arc;

/// Most commands folded into one commit group.
const MAX_GROUP: usize = 4096;
/// Projection records kept decoded in memory between groups; past this the cache is
/// dropped, which bounds the writer's memory whatever the run's size.
const CACHE_LIMIT: usize = 50_000;

/// When a commit is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Applied and visible to readers when the call returns; on disk after the next
    /// durable commit or [`crate::Ledger::flush`] (or sled's own periodic flush).
    Buffered,
    /// On disk (fsync) when the call returns. Commits grouped with it share the fsync.
    Flushed,
}

/// One item of a commit: a ready event, or an event whose number the ledger allocates.
#[derive(Clone, Debug)]
pub enum Item {
    Event(Event),
    /// Opens the next attempt of `node` on `subject`; the ledger picks the attempt number.
    OpenState {
        subject: Subject,
        node: NodeId,
        input: Hash32,
    },
    /// Allocates the next call index on an open state and records the request.
    AllocateCall {
        state: StateId,
        kind: String,
        request: Hash32,
        served: Option<TokenId>,
    },
}

/// What a successful commit returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Seq of the first and last record written by this commit.
    pub first_seq: u64,
    pub last_seq: u64,
    /// The run's head hash after this commit.
    pub head: Hash32,
    /// For each allocating item, in order: the attempt number or call index given.
    pub allocated: Vec<u32>,
}

pub(crate) enum Cmd {
    Commit {
        run: RunId,
        items: Vec<Item>,
        payloads: Vec<Vec<u8>>,
        durability: Durability,
        reply: Sender<Result<Receipt>>,
    },
    Flush {
        reply: Sender<Result<()>>,
    },
    /// Drops cached projections: tests that edit storage behind the writer use it.
    ClearCache {
        reply: Sender<()>,
    },
}

type Cache = HashMap<RunId, HashMap<PKey, PVal>>;

pub(crate) struct Writer {
    store: Arc<Store>,
    cache: Cache,
    cached: usize,
}

/// A run's changes within the current group.
#[derive(Default)]
struct GroupRun {
    changes: HashMap<PKey, PVal>,
    segment: Vec<u8>,
    first_seq: Option<u64>,
    started: bool,
}

/// Reads through the group's changes, then the cache, then storage.
struct GroupProj<'a> {
    run: &'a RunId,
    changes: &'a mut HashMap<PKey, PVal>,
    cache: Option<&'a HashMap<PKey, PVal>>,
    store: &'a Store,
}

impl Proj for GroupProj<'_> {
    fn get(&mut self, key: &PKey) -> Result<Option<PVal>> {
        if let Some(v) = self.changes.get(key) {
            return Ok(Some(v.clone()));
        }
        if let Some(v) = self.cache.and_then(|c| c.get(key)) {
            return Ok(Some(v.clone()));
        }
        self.store.get_proj(self.run, key)
    }
    fn put(&mut self, key: PKey, val: PVal) {
        self.changes.insert(key, val);
    }
}

enum Reply {
    Commit(Sender<Result<Receipt>>, Result<Receipt>),
    Flush(Sender<Result<()>>),
}

impl Writer {
    pub(crate) fn new(store: Arc<Store>) -> Writer {
        Writer {
            store,
            cache: HashMap::new(),
            cached: 0,
        }
    }

    /// Runs until every sender is dropped.
    pub(crate) fn run(mut self, rx: Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let mut cmds = vec![first];
            while cmds.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            self.process_group(cmds);
        }
    }

    fn process_group(&mut self, cmds: Vec<Cmd>) {
        let mut group: HashMap<RunId, GroupRun> = HashMap::new();
        let mut replies = Vec::with_capacity(cmds.len());
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        let mut durable = false;
        for cmd in cmds {
            match cmd {
                Cmd::Flush { reply } => {
                    durable = true;
                    replies.push(Reply::Flush(reply));
                }
                Cmd::ClearCache { reply } => {
                    self.cache.clear();
                    self.cached = 0;
                    let _ = reply.send(());
                }
                Cmd::Commit {
                    run,
                    items,
                    payloads: p,
                    durability,
                    reply,
                } => {
                    let gr = group.entry(run.clone()).or_default();
                    let result = self.apply_commit(&run, gr, items);
                    if result.is_ok() {
                        payloads.extend(p);
                        durable |= durability == Durability::Flushed;
                    }
                    replies.push(Reply::Commit(reply, result));
                }
            }
        }
        let written = self.write_group(&mut group, payloads, durable);
        match written {
            Ok(()) => self.remember(group),
            Err(_) => {
                // Storage refused the batch: nothing of it is there, so forget what was
                // cached from it too.
                self.cache.clear();
                self.cached = 0;
            }
        }
        for reply in replies {
            match reply {
                Reply::Commit(tx, result) => {
                    let result = match (&written, result) {
                        (Err(e), Ok(_)) => Err(self.store.storage_err(e)),
                        (_, r) => r,
                    };
                    let _ = tx.send(result);
                }
                Reply::Flush(tx) => {
                    let _ = tx.send(
                        written
                            .as_ref()
                            .map(|_| ())
                            .map_err(|e| self.store.storage_err(e)),
                    );
                }
            }
        }
    }

    /// Applies one command in its own transaction over the group's state so far.
    fn apply_commit(&self, run: &RunId, gr: &mut GroupRun, items: Vec<Item>) -> Result<Receipt> {
        let mut base = GroupProj {
            run,
            changes: &mut gr.changes,
            cache: self.cache.get(run),
            store: &self.store,
        };
        let mut tx = TxProj::new(&mut base);
        let mut segment = Vec::new();
        let mut receipt = Receipt {
            first_seq: 0,
            last_seq: 0,
            head: Hash32::ZERO,
            allocated: Vec::new(),
        };
        let mut started = false;
        for (i, item) in items.into_iter().enumerate() {
            let (seq, prev) = match rules::get_run(&mut tx)? {
                Some(rr) => (rr.next_seq, rr.head),
                None => (0, Hash32::ZERO),
            };
            let event = resolve(&mut tx, item, &mut receipt.allocated)?;
            if let Event::RunStarted { .. } = event {
                started = true;
            }
            let bytes = codec::encode(&event)?;
            if bytes.len() > codec::DECODE_LIMIT {
                return Err(violation(
                    Rule::WellFormed,
                    "EVENT_TOO_LARGE",
                    format!("{} event of {} bytes", event.name(), bytes.len()),
                ));
            }
            let hash = codec::write_record(&mut segment, seq, &prev, &bytes);
            rules::apply(&mut tx, run, seq, hash, &event)?;
            if i == 0 {
                receipt.first_seq = seq;
            }
            receipt.last_seq = seq;
            receipt.head = hash;
        }
        if segment.is_empty() {
            return Err(violation(
                Rule::WellFormed,
                "EMPTY_COMMIT",
                "a commit needs at least one event",
            ));
        }
        tx.commit();
        gr.first_seq.get_or_insert(receipt.first_seq);
        gr.segment.extend_from_slice(&segment);
        gr.started |= started;
        Ok(receipt)
    }

    fn write_group(
        &self,
        group: &mut HashMap<RunId, GroupRun>,
        payloads: Vec<Vec<u8>>,
        durable: bool,
    ) -> Result<(), String> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for bytes in payloads {
            let hash = Hash32::of(&bytes);
            batch.insert(projection::payload_key(&hash), bytes);
            any = true;
        }
        for (run, gr) in group.iter_mut() {
            let Some(first) = gr.first_seq else { continue };
            batch.insert(
                projection::log_key(run, first),
                std::mem::take(&mut gr.segment),
            );
            if gr.started {
                batch.insert(projection::run_index_key(run), Vec::new());
            }
            for (k, v) in &gr.changes {
                let bytes = codec::encode(v).map_err(|e| e.to_string())?;
                batch.insert(k.encode(run), bytes);
            }
            any = true;
        }
        if any {
            self.store
                .db
                .apply_batch(batch)
                .map_err(|e| e.to_string())?;
        }
        if durable {
            self.store.db.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn remember(&mut self, group: HashMap<RunId, GroupRun>) {
        for (run, gr) in group {
            if gr.first_seq.is_none() {
                continue;
            }
            let cache = self.cache.entry(run).or_default();
            for (k, v) in gr.changes {
                if cache.insert(k, v).is_none() {
                    self.cached += 1;
                }
            }
        }
        if self.cached > CACHE_LIMIT {
            self.cache.clear();
            self.cached = 0;
        }
    }
}

/// Turns an item into its event, allocating attempt numbers and call indices from the
/// projections as they stand: the ledger, not the caller, decides them.
fn resolve(p: &mut dyn Proj, item: Item, allocated: &mut Vec<u32>) -> Result<Event> {
    match item {
        Item::Event(e) => Ok(e),
        Item::OpenState {
            subject,
            node,
            input,
        } => {
            let states = subject_states(p, &subject)?;
            let attempt = states.iter().filter(|s| s.node == node).count() as u32 + 1;
            allocated.push(attempt);
            Ok(Event::StateOpened {
                state: StateId {
                    subject,
                    node,
                    attempt,
                },
                input,
            })
        }
        Item::AllocateCall {
            state,
            kind,
            request,
            served,
        } => {
            let states = subject_states(p, &state.subject)?;
            let rec = states
                .iter()
                .find(|s| s.node == state.node && s.attempt == state.attempt)
                .ok_or_else(|| {
                    violation(
                        Rule::References,
                        "DANGLING_STATE",
                        format!("state {state} was never opened"),
                    )
                })?;
            allocated.push(rec.calls);
            Ok(Event::CallAllocated {
                index: rec.calls,
                state,
                kind,
                request,
                served,
            })
        }
    }
}

fn subject_states(p: &mut dyn Proj, subject: &Subject) -> Result<Vec<StateRec>> {
    let missing = |what: &str, id: &dyn std::fmt::Display| {
        violation(
            Rule::References,
            "DANGLING_SUBJECT",
            format!("{what} {id} does not exist"),
        )
    };
    match subject {
        Subject::Token(t) => match p.get(&PKey::Token(t.clone()))? {
            Some(PVal::Token(rec)) => Ok(rec.states),
            Some(_) => Err(LedgerError::Corrupt(format!(
                "token {t} record has the wrong kind"
            ))),
            None => Err(missing("token", t)),
        },
        Subject::Batch(b) => match p.get(&PKey::Batch(b.clone()))? {
            Some(PVal::Batch(rec)) => Ok(rec.states),
            Some(_) => Err(LedgerError::Corrupt(format!(
                "batch {b} record has the wrong kind"
            ))),
            None => Err(missing("batch", b)),
        },
    }
}
