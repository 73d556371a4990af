//! The single writer: every append from every thread is ordered here.
//!
//! Callers send commands over a channel; the writer drains whatever is waiting (a commit
//! group), applies each command's events through the integrity rules in its own
//! transaction, and writes the group — log segment, changed projections and payloads — in
//! one sled batch. One fsync then serves every command in the group that asked for
//! durability. A command whose events break a rule is answered with the violation and
//! leaves no trace; the others in its group are unaffected.

use crate::bucket;
use crate::codec;
use crate::error::{violation, LedgerError, Result, Rule};
use crate::event::Event;
use crate::ids::{Hash32, NodeId, RunId, StateId, Subject, TokenId};
use crate::projection::{self, PKey, PKeyRef, PVal, StateRec};
use crate::rules::{self, Proj, TxProj};
use crate::store::Store;
use crossbeam_channel::{Receiver, Sender};
use hashbrown::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most commands folded into one commit group.
const MAX_GROUP: usize = 4096;
/// Projection records kept decoded in memory between groups; past this the cache is
/// dropped, which bounds the writer's memory whatever the run's size.
const CACHE_LIMIT: usize = 20_000;

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

/// One run's projections as the writer knows them: a read-through cache of storage, in which
/// the current group's changes are made (and from which they are written).
type RunCache = HashMap<PKey, PVal>;

pub(crate) struct Writer {
    store: Arc<Store>,
    cache: HashMap<RunId, RunCache>,
}

/// A run's part of the current group.
#[derive(Default)]
struct GroupRun {
    /// Keys of the records the group changed: only these are encoded and written.
    dirty: HashSet<PKey>,
    segment: Vec<u8>,
    first_seq: Option<u64>,
    started: bool,
}

/// The commands of one commit group, applied and waiting to be written.
#[derive(Default)]
struct Group {
    runs: HashMap<RunId, GroupRun>,
    payloads: Vec<Vec<u8>>,
    durable: bool,
    replies: Vec<Reply>,
}

/// Reads through the run's cache to storage; changes go to the cache and are noted as
/// dirty. Commands apply through a [`TxProj`] over this, so a rejected command leaves
/// the cache as it was.
struct GroupProj<'a> {
    run: &'a RunId,
    cache: &'a mut RunCache,
    dirty: &'a mut HashSet<PKey>,
    store: &'a Store,
}

impl GroupProj<'_> {
    /// Brings `key`'s record into the cache if storage has it; false if nobody has it.
    fn load(&mut self, key: PKeyRef<'_>) -> Result<bool> {
        if self.cache.contains_key(&key) {
            return Ok(true);
        }
        match self.store.load_proj(self.run, key)? {
            Some(v) => {
                self.cache.insert(key.to_owned(), v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn mark(&mut self, key: PKeyRef<'_>) {
        if !self.dirty.contains(&key) {
            self.dirty.insert(key.to_owned());
        }
    }
}

impl Proj for GroupProj<'_> {
    fn get(&mut self, key: PKeyRef<'_>) -> Result<Option<&PVal>> {
        if !self.load(key)? {
            return Ok(None);
        }
        Ok(self.cache.get(&key))
    }
    fn get_mut(&mut self, key: PKeyRef<'_>) -> Result<Option<&mut PVal>> {
        if !self.load(key)? {
            return Ok(None);
        }
        self.mark(key);
        Ok(self.cache.get_mut(&key))
    }
    fn put(&mut self, key: PKey, val: PVal) {
        self.mark(key.as_ref());
        self.cache.insert(key, val);
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
        let mut group = Group::default();
        for cmd in cmds {
            match cmd {
                Cmd::Flush { reply } => {
                    group.durable = true;
                    group.replies.push(Reply::Flush(reply));
                }
                Cmd::ClearCache { reply } => {
                    // The commands before it changed the cache and are not written yet:
                    // write them first, so that clearing loses nothing of theirs.
                    self.finish_group(std::mem::take(&mut group));
                    self.cache.clear();
                    let _ = reply.send(());
                }
                Cmd::Commit {
                    run,
                    items,
                    payloads,
                    durability,
                    reply,
                } => {
                    let gr = group.runs.entry(run.clone()).or_default();
                    let cache = self.cache.entry(run.clone()).or_default();
                    let result = apply_commit(&self.store, &run, cache, gr, items);
                    if result.is_ok() {
                        group.payloads.extend(payloads);
                        group.durable |= durability == Durability::Flushed;
                    }
                    group.replies.push(Reply::Commit(reply, result));
                }
            }
        }
        self.finish_group(group);
    }

    /// Writes the group and answers its commands.
    fn finish_group(&mut self, mut group: Group) {
        if group.replies.is_empty() {
            return;
        }
        let written = self.write_group(&mut group);
        match written {
            Ok(()) => {
                let cached: usize = self.cache.values().map(|c| c.len()).sum();
                if cached > CACHE_LIMIT {
                    self.cache.clear();
                }
            }
            Err(_) => {
                // Storage refused the batch: nothing of it is there, but the cache holds
                // its changes; forget them.
                self.cache.clear();
            }
        }
        for reply in group.replies {
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

    fn write_group(&self, group: &mut Group) -> Result<(), String> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for bytes in std::mem::take(&mut group.payloads) {
            let hash = Hash32::of(&bytes);
            batch.insert(projection::payload_key(&hash), bytes);
            any = true;
        }
        for (run, gr) in group.runs.iter_mut() {
            let Some(first) = gr.first_seq else { continue };
            batch.insert(
                projection::log_key(run, first),
                std::mem::take(&mut gr.segment),
            );
            if gr.started {
                batch.insert(projection::run_index_key(run), Vec::new());
            }
            let cache = self.cache.get(run);
            // Records that live in row buckets, by bucket: each bucket touched is read
            // once, merged with its changed records and written whole.
            let mut buckets: BTreeMap<u64, Vec<bucket::Entry>> = BTreeMap::new();
            for k in &gr.dirty {
                let v = cache
                    .and_then(|c| c.get(k))
                    .ok_or_else(|| format!("changed projection {k:?} left the cache"))?;
                let bytes = codec::encode(v).map_err(|e| e.to_string())?;
                match bucket::bucket_of(k.as_ref()) {
                    None => batch.insert(k.encode(run), bytes),
                    Some(b) => {
                        let mut suffix = Vec::with_capacity(24);
                        k.as_ref().encode_suffix(&mut suffix);
                        buckets.entry(b).or_default().push((suffix, bytes));
                    }
                }
            }
            for (b, mut changes) in buckets {
                changes.sort_unstable_by(|x, y| x.0.cmp(&y.0));
                let key = bucket::bucket_key(run, b);
                let old = self.store.get_raw(&key).map_err(|e| e.to_string())?;
                let merged = bucket::merge(old.as_deref(), &changes).map_err(|e| e.to_string())?;
                batch.insert(key, merged);
            }
            any = true;
        }
        if any {
            self.store
                .db
                .apply_batch(batch)
                .map_err(|e| e.to_string())?;
        }
        if group.durable {
            self.store.db.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Applies one command in its own transaction over the group's state so far.
fn apply_commit(
    store: &Store,
    run: &RunId,
    cache: &mut RunCache,
    gr: &mut GroupRun,
    items: Vec<Item>,
) -> Result<Receipt> {
    let mut base = GroupProj {
        run,
        cache,
        dirty: &mut gr.dirty,
        store,
    };
    // A pipeline-shaped commit changes about one record per two events.
    let mut tx = TxProj::with_capacity(&mut base, items.len() / 2 + 4);
    let mut segment = Vec::new();
    let mut receipt = Receipt {
        first_seq: 0,
        last_seq: 0,
        head: Hash32::ZERO,
        allocated: Vec::new(),
    };
    let mut started = false;
    for (i, item) in items.into_iter().enumerate() {
        let (seq, prev) = rules::run_head(&mut tx)?;
        let event = resolve(&mut tx, item, &mut receipt.allocated)?;
        if let Event::RunStarted { .. } = event {
            started = true;
        }
        let hash =
            match codec::append_record(&mut segment, seq, &prev, &event, codec::DECODE_LIMIT)? {
                Ok(hash) => hash,
                Err(len) => {
                    return Err(violation(
                        Rule::WellFormed,
                        "EVENT_TOO_LARGE",
                        format!("{} event of {len} bytes", event.name()),
                    ))
                }
            };
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
            let index = rec.calls;
            allocated.push(index);
            Ok(Event::CallAllocated {
                index,
                state,
                kind,
                request,
                served,
            })
        }
    }
}

fn subject_states<'p>(p: &'p mut dyn Proj, subject: &Subject) -> Result<&'p [StateRec]> {
    let missing = |what: &str, id: &dyn std::fmt::Display| {
        violation(
            Rule::References,
            "DANGLING_SUBJECT",
            format!("{what} {id} does not exist"),
        )
    };
    match subject {
        Subject::Token(t) => match p.get(PKeyRef::Token(t))? {
            Some(PVal::Token(rec)) => Ok(&rec.states),
            Some(_) => Err(LedgerError::Corrupt(format!(
                "token {t} record has the wrong kind"
            ))),
            None => Err(missing("token", t)),
        },
        Subject::Batch(b) => match p.get(PKeyRef::Batch(b))? {
            Some(PVal::Batch(rec)) => Ok(&rec.states),
            Some(_) => Err(LedgerError::Corrupt(format!(
                "batch {b} record has the wrong kind"
            ))),
            None => Err(missing("batch", b)),
        },
    }
}
