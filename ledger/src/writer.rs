//! The single writer: every append from every thread is ordered here.
//!
//! Callers send commands over a channel. The writer works in two stages, each on its own
//! thread, so that checking one commit group overlaps with storing the one before:
//!
//! 1. **Preparing** (`attest-ledger-writer`): drains whatever is waiting (a commit group),
//!    applies each command's events through the integrity rules in its own transaction,
//!    and builds the group's sled batch — log segments, changed projections, and one
//!    payload pack per run ([`crate::packs`]).
//! 2. **Storing** (`attest-ledger-store`): merges the group's changed records into their
//!    row buckets, adds a generation of the payload index when one is due
//!    ([`crate::payload_index`]), writes the group in one sled batch, and makes it durable
//!    with one fsync when any command in it asked for that. Only then are the group's
//!    commands answered.
//!
//! A command whose events break a rule is answered with the violation and leaves no
//! trace; the others in its group are unaffected. If storing a group fails, every group
//! prepared on top of it fails too (their checks assumed it was stored), and the
//! preparing stage starts again from what storage holds.

use crate::bucket;
use crate::codec;
use crate::error::{violation, LedgerError, Result, Rule};
use crate::event::Event;
use crate::ids::{Hash32, NodeId, RunId, StateId, Subject, TokenId};
use crate::packs::{self, PackBuilder};
use crate::payload_index;
use crate::projection::{self, PKey, PKeyRef, PVal, StateRec};
use crate::rules::{self, Proj, TxProj};
use crate::store::{StorageCause, Store};
use crossbeam_channel::{bounded, Receiver, Sender};
use hashbrown::hash_map::{Entry, EntryRef};
use hashbrown::HashMap;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Most commands folded into one commit group.
const MAX_GROUP: usize = 4096;
/// Roughly the most bytes (payloads and events) folded into one commit group. A group is
/// held in memory several times over on its way to storage (commands, records, the sled
/// batch, groups prepared ahead), so when the writer falls behind and its queue fills,
/// this rather than [`MAX_GROUP`] bounds the memory it holds.
const GROUP_BYTES: usize = 1 << 20;
/// What an event is taken to weigh towards [`GROUP_BYTES`] (a pipeline's events encode to
/// about 120 bytes as records).
const EVENT_BYTES: usize = 128;
/// Most records the change map kept for the next commit may have room for: a pipeline's
/// commits change a handful.
const SPARE_LIMIT: usize = 1024;
/// Projection records kept decoded in memory between groups; past this, the records no
/// event is expected to change again are dropped (or all, when live ones alone are too
/// many), which bounds the writer's memory whatever the run's size.
const CACHE_LIMIT: usize = 20_000;
/// Most bytes of one stored log segment or pack: a group's records and payloads are cut
/// into values of about this size. sled 0.34 logs a tree node larger than a quarter of
/// its 512 KiB segment as a blob file of its own, and its cache then counts that node by
/// the few bytes of the pointer it logged, not by the node: leaves full of a group's
/// whole segment or pack (up to a megabyte each) were never evicted, so a run's entire
/// log and payloads stayed in memory and peak RSS grew with the run (about 1.3 KB a
/// row). A leaf splits past 16 values, so 17 values of at most 7 KiB (119 KiB) keep
/// every leaf under the 128 KiB blob threshold, where the cache sees its real size. A
/// single record or a single commit's payloads larger than this still go in one value.
/// 7 KiB rather than 4: the append bench took 254-278k events/s against 168-183k with
/// 4 KiB values (fewer, larger inserts; docs/benchmarks.md).
pub(crate) const CHUNK_BYTES: usize = 7 * 1024;

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
        /// Each payload with its blake3 hash, computed by [`crate::Commit::payload`].
        payloads: Vec<(Hash32, Vec<u8>)>,
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
type RunCache = HashMap<PKey, Cached>;

/// A cached record, and the group that last changed it: whether a change makes the record
/// dirty is read off the record itself, so the cache is the only table a change touches
/// (a separate set of dirty keys cost a second hash for every record every commit changed).
struct Cached {
    val: PVal,
    /// The [`Writer::generation`] of the last group that changed it; 0 for none.
    changed_in: u64,
}

/// The preparing stage.
pub(crate) struct Writer {
    store: Arc<Store>,
    cache: HashMap<RunId, RunCache>,
    to_store: Sender<StoreCmd>,
    /// Set by the storing stage when a group failed to store.
    store_failed: Arc<AtomicBool>,
    /// Numbers the commit groups from 1, for [`Cached::changed_in`].
    generation: u64,
    /// The change map of the last committed transaction, kept for the next.
    spare: HashMap<PKey, PVal>,
    /// Reused for every commit's records and every changed projection's bytes, so that
    /// neither grows a fresh vector a few bytes at a time (reallocations were ~5% of this
    /// thread's instructions).
    scratch: Vec<u8>,
}

/// Groups prepared ahead of the storing stage: enough to keep both stages busy, few
/// enough to bound the memory held in prepared batches.
const PREPARED_AHEAD: usize = 2;

/// What the preparing stage hands the storing stage.
enum StoreCmd {
    Write(Prepared),
    /// Answered once every group sent before it is stored.
    Sync(Sender<()>),
    /// The preparing stage has dropped everything it built on a failed group: groups
    /// after this one are stored again.
    Reset,
}

/// A commit group, checked and encoded, waiting to be stored.
struct Prepared {
    batch: sled::Batch,
    /// Changed records of row buckets, by bucket key, each list sorted by suffix.
    buckets: Vec<(Vec<u8>, Vec<bucket::Entry>)>,
    /// The packs in `batch`, for the payload index: run, pack seq, the hashes in it.
    packs: Vec<(RunId, u64, Vec<Hash32>)>,
    /// Runs that ended (finished or were interrupted) in this group: their index is
    /// brought up to date with it.
    ended: Vec<RunId>,
    durable: bool,
    replies: Vec<Reply>,
}

/// The storing stage.
struct Storer {
    store: Arc<Store>,
    failed: Arc<AtomicBool>,
    /// Why the last group failed, until the preparing stage resets: groups prepared
    /// after it were checked against state that was never stored.
    poisoned: Option<String>,
    /// Each run's payload index entries not yet written (see [`payload_index`]).
    index: HashMap<RunId, payload_index::Pending>,
}

/// Starts the writer's two threads; commands sent on the returned channel are applied
/// in order. The handle's thread ends, after storing everything, once every sender is
/// dropped.
pub(crate) fn spawn(store: Arc<Store>) -> Result<(Sender<Cmd>, JoinHandle<()>)> {
    // What a crash left unindexed is indexed before anything new is stored, so the storing
    // stage starts every run from a complete index.
    payload_index::index_tails(&store)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let (to_store, store_rx) = bounded(PREPARED_AHEAD);
    let failed = Arc::new(AtomicBool::new(false));
    let storer = Storer {
        store: store.clone(),
        failed: failed.clone(),
        poisoned: None,
        index: HashMap::new(),
    };
    let storing = std::thread::Builder::new()
        .name("attest-ledger-store".into())
        .spawn(move || storer.run(store_rx))
        .map_err(|e| store.storage_err(e))?;
    let writer = Writer {
        store: store.clone(),
        cache: HashMap::new(),
        to_store,
        store_failed: failed,
        generation: 0,
        spare: HashMap::new(),
        scratch: Vec::new(),
    };
    let preparing = std::thread::Builder::new()
        .name("attest-ledger-writer".into())
        .spawn(move || {
            writer.run(rx);
            // `run` dropped the storing stage's channel: it ends once it has stored
            // what it holds.
            let _ = storing.join();
        })
        .map_err(|e| store.storage_err(e))?;
    Ok((tx, preparing))
}

/// A run's part of the current group.
#[derive(Default)]
struct GroupRun {
    /// Keys of the records the group changed, each once: only these are encoded and
    /// written.
    dirty: Vec<PKey>,
    /// The group's [`Writer::generation`]: a cached record changed in this group has it.
    generation: u64,
    /// The group's records, cut into segments of about [`CHUNK_BYTES`], each with the seq
    /// of its first record.
    segments: Vec<(u64, Vec<u8>)>,
    first_seq: Option<u64>,
    started: bool,
    /// The run finished or was interrupted in this group.
    ended: bool,
    /// The payloads of the run's accepted commits, cut into packs of about
    /// [`CHUNK_BYTES`] at commit boundaries, each keyed by the first seq of the first
    /// commit whose payloads it holds.
    packs: Vec<(u64, PackBuilder)>,
}

/// The commands of one commit group, applied and waiting to be written.
#[derive(Default)]
struct Group {
    runs: HashMap<RunId, GroupRun>,
    durable: bool,
    replies: Vec<Reply>,
}

/// Reads through the run's cache to storage; changes go to the cache and are noted as
/// dirty. Commands apply through a [`TxProj`] over this, so a rejected command leaves
/// the cache as it was.
struct GroupProj<'a> {
    run: &'a RunId,
    cache: &'a mut RunCache,
    dirty: &'a mut Vec<PKey>,
    /// The group's [`Writer::generation`].
    generation: u64,
    store: &'a Store,
}

impl GroupProj<'_> {
    /// `key`'s record, brought into the cache if storage has it; None if nobody has it.
    /// One hash of the key whether the cache has it or not.
    fn cached<'c>(
        cache: &'c mut RunCache,
        store: &Store,
        run: &RunId,
        key: PKeyRef<'_>,
    ) -> Result<Option<&'c mut Cached>> {
        match cache.entry_ref(&key) {
            EntryRef::Occupied(o) => Ok(Some(o.into_mut())),
            EntryRef::Vacant(slot) => match store.load_proj(run, key)? {
                Some(val) => Ok(Some(
                    slot.insert_with_key(key.to_owned(), Cached { val, changed_in: 0 }),
                )),
                None => Ok(None),
            },
        }
    }
}

impl Proj for GroupProj<'_> {
    fn get(&mut self, key: PKeyRef<'_>) -> Result<Option<&PVal>> {
        Ok(Self::cached(self.cache, self.store, self.run, key)?.map(|c| &c.val))
    }
    fn get_mut(&mut self, key: PKeyRef<'_>) -> Result<Option<&mut PVal>> {
        let Some(c) = Self::cached(self.cache, self.store, self.run, key)? else {
            return Ok(None);
        };
        if c.changed_in != self.generation {
            c.changed_in = self.generation;
            self.dirty.push(key.to_owned());
        }
        Ok(Some(&mut c.val))
    }
    fn put(&mut self, key: PKey, val: PVal) {
        let generation = self.generation;
        match self.cache.entry(key) {
            Entry::Occupied(mut o) => {
                if o.get().changed_in != generation {
                    self.dirty.push(o.key().clone());
                }
                *o.get_mut() = Cached {
                    val,
                    changed_in: generation,
                };
            }
            Entry::Vacant(slot) => {
                self.dirty.push(slot.key().clone());
                slot.insert(Cached {
                    val,
                    changed_in: generation,
                });
            }
        }
    }
}

enum Reply {
    Commit(Sender<Result<Receipt>>, Result<Receipt>),
    Flush(Sender<Result<()>>),
}

impl Writer {
    /// Runs until every sender is dropped.
    fn run(mut self, rx: Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let mut cmds = vec![first];
            let mut bytes = weight(&cmds[0]);
            while cmds.len() < MAX_GROUP && bytes < GROUP_BYTES {
                match rx.try_recv() {
                    Ok(c) => {
                        bytes += weight(&c);
                        cmds.push(c);
                    }
                    Err(_) => break,
                }
            }
            self.process_group(cmds);
        }
    }

    fn process_group(&mut self, cmds: Vec<Cmd>) {
        self.generation += 1;
        if self.store_failed.swap(false, Ordering::AcqRel) {
            // The cache holds changes of groups that were never stored: start again
            // from storage, and tell the storing stage that what follows is sound.
            self.cache.clear();
            let _ = self.to_store.send(StoreCmd::Reset);
        }
        let mut group = Group::default();
        for cmd in cmds {
            match cmd {
                Cmd::Flush { reply } => {
                    group.durable = true;
                    group.replies.push(Reply::Flush(reply));
                }
                Cmd::ClearCache { reply } => {
                    // The commands before it changed the cache and are not stored yet:
                    // store them first, so that clearing loses nothing of theirs.
                    self.send_group(std::mem::take(&mut group));
                    self.sync();
                    self.cache.clear();
                    // What follows is a group of its own.
                    self.generation += 1;
                    let _ = reply.send(());
                }
                Cmd::Commit {
                    run,
                    items,
                    payloads,
                    durability,
                    reply,
                } => {
                    let generation = self.generation;
                    let gr = group.runs.entry(run.clone()).or_insert_with(|| GroupRun {
                        generation,
                        ..GroupRun::default()
                    });
                    let cache = self.cache.entry(run.clone()).or_default();
                    let ends = items.iter().any(|i| {
                        matches!(
                            i,
                            Item::Event(Event::RunFinished { .. } | Event::RunInterrupted { .. })
                        )
                    });
                    let result = match storable(&payloads) {
                        Ok(()) => apply_commit(
                            &self.store,
                            &run,
                            cache,
                            gr,
                            items,
                            &mut self.spare,
                            &mut self.scratch,
                        ),
                        Err(e) => Err(e),
                    };
                    if let Ok(receipt) = &result {
                        add_payloads(&mut gr.packs, receipt.first_seq, &payloads);
                        gr.ended |= ends;
                        group.durable |= durability == Durability::Flushed;
                    }
                    group.replies.push(Reply::Commit(reply, result));
                }
            }
        }
        self.send_group(group);
        self.trim_cache();
    }

    /// Keeps the cache under [`CACHE_LIMIT`]: first by dropping the records that are done
    /// with (terminal tokens, completed batches and calls, rows, full sink chunks), which a
    /// pipeline's later events do not touch, else by dropping everything.
    fn trim_cache(&mut self) {
        let cached: usize = self.cache.values().map(|c| c.len()).sum();
        if cached <= CACHE_LIMIT {
            return;
        }
        // Records leaving the cache must be readable from storage: wait until every group
        // that changed them is stored.
        self.sync();
        for c in self.cache.values_mut() {
            c.retain(|_, c| still_changing(&c.val));
        }
        let kept: usize = self.cache.values().map(|c| c.len()).sum();
        if kept > CACHE_LIMIT * 3 / 4 {
            self.cache.clear();
        }
    }

    /// Waits until the storing stage has stored every group sent so far.
    fn sync(&self) {
        let (tx, rx) = bounded(1);
        if self.to_store.send(StoreCmd::Sync(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Encodes the group and hands it to the storing stage, which answers its commands.
    fn send_group(&mut self, mut group: Group) {
        if group.replies.is_empty() {
            return;
        }
        let prepared = match self.prepare(&mut group) {
            Ok((batch, buckets, packs)) => Prepared {
                batch,
                buckets,
                packs,
                ended: group
                    .runs
                    .iter()
                    .filter(|(_, gr)| gr.ended)
                    .map(|(run, _)| run.clone())
                    .collect(),
                durable: group.durable,
                replies: group.replies,
            },
            Err(e) => {
                // Nothing of the group is stored, but the cache holds its changes:
                // start again from storage once the groups before it are stored.
                self.sync();
                self.cache.clear();
                answer(&self.store, group.replies, &Err(e));
                return;
            }
        };
        if let Err(e) = self.to_store.send(StoreCmd::Write(prepared)) {
            // The storing stage is gone (it panicked): nothing more can be stored.
            if let StoreCmd::Write(p) = e.into_inner() {
                let gone = Err("the ledger's storing thread has ended".to_string());
                answer(&self.store, p.replies, &gone);
            }
        }
    }

    /// The group's sled batch, its changed bucket records for the storing stage to merge
    /// (only it reads buckets, so it always merges into what is stored), and its packs.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        group: &mut Group,
    ) -> Result<
        (
            sled::Batch,
            Vec<(Vec<u8>, Vec<bucket::Entry>)>,
            Vec<(RunId, u64, Vec<Hash32>)>,
        ),
        String,
    > {
        let mut batch = sled::Batch::default();
        let mut bucket_writes = Vec::new();
        let mut pack_list = Vec::new();
        for (run, gr) in group.runs.iter_mut() {
            if gr.first_seq.is_none() {
                continue;
            }
            for (first, segment) in std::mem::take(&mut gr.segments) {
                batch.insert(projection::log_key(run, first), segment);
            }
            for (first, pack) in std::mem::take(&mut gr.packs) {
                if !pack.is_empty() {
                    let (pack, hashes) = pack.finish();
                    batch.insert(packs::pack_key(run, first), pack);
                    pack_list.push((run.clone(), first, hashes));
                }
            }
            if gr.started {
                batch.insert(projection::run_index_key(run), Vec::new());
            }
            let cache = self.cache.get(run);
            // Records that live in row buckets, by bucket.
            let mut buckets: BTreeMap<u64, Vec<bucket::Entry>> = BTreeMap::new();
            // Each record is encoded into this and copied out at its exact size.
            let mut bytes = Vec::with_capacity(1024);
            for k in &gr.dirty {
                let v = cache
                    .and_then(|c| c.get(k))
                    .map(|c| &c.val)
                    .ok_or_else(|| format!("changed projection {k:?} left the cache"))?;
                bytes.clear();
                codec::encode_proj_into(v, &mut bytes).map_err(|e| e.to_string())?;
                match bucket::bucket_of(k.as_ref()) {
                    None => batch.insert(k.encode(run), &bytes[..]),
                    Some(b) => {
                        let mut suffix = Vec::with_capacity(24);
                        k.as_ref().encode_suffix(&mut suffix);
                        buckets.entry(b).or_default().push((suffix, bytes.to_vec()));
                    }
                }
            }
            for (b, mut changes) in buckets {
                changes.sort_unstable_by(|x, y| x.0.cmp(&y.0));
                bucket_writes.push((bucket::bucket_key(run, b), changes));
            }
        }
        Ok((batch, bucket_writes, pack_list))
    }
}

/// Appends a commit's records (consecutive, as [`apply_items`] wrote them) to the group's
/// segments, starting a new segment at the record that would take the last one past
/// [`CHUNK_BYTES`]. Segment boundaries carry no meaning in the format (§3 of
/// `docs/ledger-format.md`): only the seq of each one's first record.
fn add_records(segments: &mut Vec<(u64, Vec<u8>)>, first_seq: u64, records: &[u8]) {
    let mut rest = records;
    let mut seq = first_seq;
    while !rest.is_empty() {
        // The writer framed these records itself a moment ago. Should one not frame, the
        // rest goes whole into the current segment (verification would report it): never
        // lost, and never under a key a segment of this group already has.
        let (len, framed) = match codec::read_segment(rest).next() {
            Some(Ok(r)) => {
                seq = r.seq;
                (codec::RECORD_HEADER_LEN + r.event_bytes.len(), true)
            }
            _ => (rest.len(), false),
        };
        let (record, tail) = rest.split_at(len.min(rest.len()));
        match segments.last_mut() {
            Some((_, seg)) if !framed || seg.len() + record.len() <= CHUNK_BYTES => {
                seg.extend_from_slice(record)
            }
            _ => {
                // Sized for a full segment: filled a record at a time, it would otherwise
                // be reallocated several times on its way to CHUNK_BYTES.
                let mut seg = Vec::with_capacity(CHUNK_BYTES.max(record.len()));
                seg.extend_from_slice(record);
                segments.push((seq, seg));
            }
        }
        rest = tail;
    }
}

/// Adds an accepted commit's payloads to the group's packs: to the last one while they
/// fit within [`CHUNK_BYTES`], else to a new pack keyed by the commit's first seq (unique:
/// every commit has at least one record). One commit's payloads are never split.
fn add_payloads(
    packs: &mut Vec<(u64, PackBuilder)>,
    first_seq: u64,
    payloads: &[(Hash32, Vec<u8>)],
) {
    if payloads.is_empty() {
        return;
    }
    let adding: usize = payloads
        .iter()
        .map(|(_, b)| packs::ENTRY_HEADER_LEN + b.len())
        .sum();
    if packs
        .last()
        .is_none_or(|(_, p)| !p.is_empty() && p.len() + adding > CHUNK_BYTES)
    {
        packs.push((first_seq, PackBuilder::default()));
    }
    if let Some((_, pack)) = packs.last_mut() {
        for (hash, bytes) in payloads {
            // Sizes were checked before the commit applied: cannot fail.
            let _ = pack.add(*hash, bytes);
        }
    }
}

/// What a command is taken to weigh towards [`GROUP_BYTES`].
fn weight(cmd: &Cmd) -> usize {
    match cmd {
        Cmd::Commit {
            items, payloads, ..
        } => items.len() * EVENT_BYTES + payloads.iter().map(|(_, b)| b.len()).sum::<usize>(),
        Cmd::Flush { .. } | Cmd::ClearCache { .. } => 0,
    }
}

/// Whether later events are likely to change a record: the cache keeps these when it
/// must shrink.
fn still_changing(v: &PVal) -> bool {
    match v {
        PVal::Run(_) | PVal::Node(_) => true,
        PVal::Token(t) => t.terminal.is_none(),
        PVal::Batch(b) => b.completion.is_none(),
        PVal::Call(c) => c.completion.is_none(),
        PVal::SinkChunk(tokens) => (tokens.len() as u64) < projection::SINK_CHUNK,
        PVal::Edge | PVal::Row(_) | PVal::Member(_) | PVal::Artifact(_) | PVal::Pool(_) => false,
    }
}

/// Refuses a commit carrying a payload too large for a pack entry (4 GiB), before it
/// applies.
fn storable(payloads: &[(Hash32, Vec<u8>)]) -> Result<()> {
    match payloads.iter().find(|(_, b)| b.len() >= u32::MAX as usize) {
        Some((_, b)) => Err(violation(
            Rule::WellFormed,
            "PAYLOAD_TOO_LARGE",
            format!(
                "a payload of {} bytes (at most 4 GiB - 2 can be stored)",
                b.len()
            ),
        )),
        None => Ok(()),
    }
}

impl Storer {
    fn run(mut self, rx: Receiver<StoreCmd>) {
        for cmd in rx {
            match cmd {
                StoreCmd::Write(p) => self.write(p),
                StoreCmd::Sync(reply) => {
                    let _ = reply.send(());
                }
                StoreCmd::Reset => self.poisoned = None,
            }
        }
        self.index_everything();
    }

    fn write(&mut self, p: Prepared) {
        let written = match &self.poisoned {
            // A group prepared against one that failed to store fails with that group's
            // error: it is the cause, and the caller that happens to wait on this group
            // first (workers, ingestion and the sequencer race) reports the same message
            // as the one that waits on the failed group itself.
            Some(why) => Err(why.clone()),
            None => self.store_group(p.batch, p.buckets, &p.packs, &p.ended, p.durable),
        };
        if let Err(e) = &written {
            // The pending index entries may name packs that were never stored: start
            // again from what storage holds.
            self.index.clear();
            if self.poisoned.is_none() {
                self.poisoned = Some(e.clone());
                self.failed.store(true, Ordering::Release);
            }
        }
        answer(&self.store, p.replies, &written);
    }

    /// Notes the group's packs in the payload index and adds the generations now due to
    /// `batch`: a run's when it ended in this group or has [`payload_index::GENERATION`]
    /// entries waiting (fewer when a test says so).
    fn index_packs(
        &mut self,
        batch: &mut sled::Batch,
        packs: &[(RunId, u64, Vec<Hash32>)],
        ended: &[RunId],
    ) -> Result<()> {
        for (run, seq, hashes) in packs {
            if !self.index.contains_key(run) {
                let loaded = payload_index::Pending::load(&self.store, run)?;
                self.index.insert(run.clone(), loaded);
            }
            if let Some(pending) = self.index.get_mut(run) {
                pending.add(*seq, hashes);
                let due = self.store.index_generation.load(Ordering::Relaxed);
                if pending.len() >= due {
                    pending.write_generation(run, batch);
                }
            }
        }
        for run in ended {
            // Nothing more is appended to a finished run, and an interrupted one starts
            // again from storage when it resumes.
            if let Some(mut pending) = self.index.remove(run) {
                pending.write_generation(run, batch);
            }
        }
        Ok(())
    }

    /// Writes every run's pending index entries: the writer is stopping.
    fn index_everything(&mut self) {
        if self.poisoned.is_some() || self.index.is_empty() {
            return;
        }
        let mut batch = sled::Batch::default();
        for (run, pending) in self.index.iter_mut() {
            pending.write_generation(run, &mut batch);
        }
        self.index.clear();
        // Best effort: whatever is not indexed now is indexed when the ledger is next
        // opened.
        let _ = self.store.db.apply_batch(batch);
    }

    fn store_group(
        &mut self,
        mut batch: sled::Batch,
        buckets: Vec<(Vec<u8>, Vec<bucket::Entry>)>,
        packs: &[(RunId, u64, Vec<Hash32>)],
        ended: &[RunId],
        durable: bool,
    ) -> Result<(), String> {
        #[cfg(test)]
        if tests::take_fault(&self.store.path) {
            // Slow as well as failing, so that groups are prepared behind this one.
            std::thread::sleep(std::time::Duration::from_millis(50));
            return Err("injected storage failure".into());
        }
        self.index_packs(&mut batch, packs, ended)
            .map_err(|e| e.to_string())?;
        for (key, changes) in buckets {
            let old = self.store.get_raw(&key).map_err(|e| e.to_string())?;
            let merged = bucket::merge(old.as_deref(), &changes).map_err(|e| e.to_string())?;
            batch.insert(key, merged);
        }
        self.store.db.apply_batch(batch).map_err(|e| e.describe())?;
        if durable {
            self.store.db.flush().map_err(|e| e.describe())?;
        }
        Ok(())
    }
}

/// Answers a group's commands once it is stored (or failed to be).
fn answer(store: &Store, replies: Vec<Reply>, written: &Result<(), String>) {
    for reply in replies {
        match reply {
            Reply::Commit(tx, result) => {
                let result = match (written, result) {
                    (Err(e), Ok(_)) => Err(store.storage_err(e)),
                    (_, r) => r,
                };
                let _ = tx.send(result);
            }
            Reply::Flush(tx) => {
                let _ = tx.send(written.clone().map_err(|e| store.storage_err(e)));
            }
        }
    }
}

/// Applies one command in its own transaction over the group's state so far.
fn apply_commit(
    store: &Store,
    run: &RunId,
    cache: &mut RunCache,
    gr: &mut GroupRun,
    items: Vec<Item>,
    spare: &mut HashMap<PKey, PVal>,
    segment: &mut Vec<u8>,
) -> Result<Receipt> {
    let mut base = GroupProj {
        run,
        cache,
        dirty: &mut gr.dirty,
        generation: gr.generation,
        store,
    };
    // A pipeline-shaped commit changes about one record per two events.
    let mut tx = TxProj::reusing(&mut base, std::mem::take(spare), items.len() / 2 + 4);
    segment.clear();
    let (receipt, started) = apply_items(&mut tx, run, items, segment, None, codec::Chain::Hashed)?;
    *spare = tx.commit();
    if spare.capacity() > SPARE_LIMIT {
        // One large commit (a sequencer's outcomes) must not pin its table for good.
        *spare = HashMap::new();
    }
    gr.first_seq.get_or_insert(receipt.first_seq);
    add_records(&mut gr.segments, receipt.first_seq, segment);
    gr.started |= started;
    Ok(receipt)
}

/// Resolves a command's items into events, encodes each as a record appended to `segment`
/// and applies it through the integrity rules, in order, over `tx`: the one way a commit
/// becomes records, for the ledger's writer and for a scratch ledger alike. Returns the
/// receipt and whether the commit started the run; `events`, when given, receives the
/// events applied. On error the caller drops `tx`, so nothing is kept. `chain` says
/// whether records get their chain hash: only a scratch ledger, which drops them, skips it.
pub(crate) fn apply_items(
    tx: &mut dyn Proj,
    run: &RunId,
    items: Vec<Item>,
    segment: &mut Vec<u8>,
    mut events: Option<&mut Vec<Event>>,
    chain: codec::Chain,
) -> Result<(Receipt, bool)> {
    let mut receipt = Receipt {
        first_seq: 0,
        last_seq: 0,
        head: Hash32::ZERO,
        allocated: Vec::new(),
    };
    let mut started = false;
    let start_len = segment.len();
    for (i, item) in items.into_iter().enumerate() {
        let (seq, prev) = rules::run_head(tx)?;
        let event = resolve(tx, item, &mut receipt.allocated)?;
        if let Event::RunStarted { .. } = event {
            started = true;
        }
        let hash =
            match codec::append_event(segment, seq, &prev, &event, codec::DECODE_LIMIT, chain)? {
                Ok(hash) => hash,
                Err(len) => {
                    return Err(violation(
                        Rule::WellFormed,
                        "EVENT_TOO_LARGE",
                        format!("{} event of {len} bytes", event.name()),
                    ))
                }
            };
        rules::apply(tx, run, seq, hash, &event)?;
        if i == 0 {
            receipt.first_seq = seq;
        }
        receipt.last_seq = seq;
        receipt.head = hash;
        if let Some(out) = events.as_deref_mut() {
            out.push(event);
        }
    }
    if segment.len() == start_len {
        return Err(violation(
            Rule::WellFormed,
            "EMPTY_COMMIT",
            "a commit needs at least one event",
        ));
    }
    Ok((receipt, started))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Outcome, SinkWrite};
    use crate::ledger::{Commit, Ledger};
    use crate::test_support::{node, source_to_sink_run};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// Ledgers (by path) whose next stored group fails, as a full disk would.
    static FAULTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(super) fn take_fault(path: &Path) -> bool {
        let mut faults = FAULTS.lock().unwrap_or_else(|p| p.into_inner());
        match faults.iter().position(|p| p == path) {
            Some(i) => {
                faults.swap_remove(i);
                true
            }
            None => false,
        }
    }

    fn row(r: u64) -> Commit {
        let mut c = Commit::new();
        let payload = c.payload(format!("row {r}").into_bytes());
        c.push(Event::RowIngested {
            row: r,
            source: node("src"),
            payload,
        });
        c
    }

    /// A group that fails to store takes with it every group checked against it, and the
    /// writer then carries on from what storage holds: nothing is recorded that was
    /// refused, nothing recorded is lost, and the run verifies.
    #[test]
    fn a_failed_store_fails_what_depends_on_it_and_the_writer_recovers() {
        for round in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let ledger = Ledger::open(dir.path()).unwrap();
            let run = source_to_sink_run(&ledger);
            run.submit(row(0), Durability::Flushed).unwrap();
            FAULTS.lock().unwrap().push(ledger.path().to_path_buf());
            // Row 1's group fails; rows 2.. were checked against row 1 (in its group or
            // in groups prepared behind it) or, once the writer has started again, are
            // refused because row 1 is missing.
            let pending: Vec<_> = (1..6)
                .map(|r| {
                    let p = run.submit_nowait(row(r), Durability::Buffered).unwrap();
                    // Apart, so that most land in groups of their own.
                    std::thread::sleep(std::time::Duration::from_millis(3));
                    p
                })
                .collect();
            for (i, p) in pending.into_iter().enumerate() {
                assert!(
                    p.wait().is_err(),
                    "round {round}: row {} was accepted",
                    i + 1
                );
            }
            for r in 1..4 {
                run.submit(row(r), Durability::Buffered).unwrap();
            }
            let mut c = Commit::new();
            for r in 0..4 {
                c.push(Event::TokenOutcome {
                    token: TokenId::for_row(r),
                    outcome: Outcome::Completed {
                        write: SinkWrite {
                            sink: node("out"),
                            ordinal: r,
                        },
                    },
                });
            }
            run.submit(c, Durability::Flushed).unwrap();
            let rec = ledger.run_record(run.id()).unwrap().unwrap();
            assert_eq!(rec.rows, 4, "round {round}");
            let report = ledger.verify(run.id(), &Default::default()).unwrap();
            assert!(report.ok(), "round {round}: {:?}", report.failure);
        }
    }
}
