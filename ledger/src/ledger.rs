//! The public face of the ledger: open a directory, start or reopen runs, append events,
//! open states and allocate calls through owned handles.
//!
//! Every handle is `Clone + Send + Sync` and immutable: it names what it is bound to (run,
//! state, call) and sends commands to the single writer. No caller ever shares a mutable
//! context with another thread.

use crate::canonical;
use crate::error::{LedgerError, Result};
use crate::event::{CallOutcome, Event, StateResult};
use crate::ids::{Hash32, NodeId, RunId, StateId, Subject, TokenId};
use crate::projection::{PKey, RunRec};
use crate::store::Store;
use crate::writer::{self, Cmd, Durability, Item, Receipt};
use crossbeam_channel::{bounded, Receiver, Sender};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

struct Inner {
    store: Arc<Store>,
    /// Only `None` while dropping.
    tx: Option<Sender<Cmd>>,
    writer: Option<JoinHandle<()>>,
    /// A scratch ledger (see [`crate::scratch`]) stores no payloads.
    scratch: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has written what it holds; joining
        // it means a dropped ledger has finished its last commit.
        self.tx.take();
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

/// An open ledger directory. Cheap to clone; the last clone dropped stops the writer.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

/// What `start_run` needs.
#[derive(Clone, Debug)]
pub struct RunStart {
    /// The configuration exactly as it will be replayed (secrets already redacted). Stored
    /// as a payload; its blake3 hash is the run's configuration hash.
    pub config: Vec<u8>,
    pub engine_version: String,
    pub started_at_ms: u64,
}

/// A commit in the making: events (and allocations) plus the payloads they reference.
///
/// The payloads travel with the events and are stored in the same atomic write, in the
/// group's pack (see [`crate::packs`]): a caller never writes payloads itself.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    pub items: Vec<Item>,
    /// Each with its hash, computed here, so the writer never hashes them again and no
    /// caller can pair bytes with a hash they do not have.
    payloads: Vec<(Hash32, Vec<u8>)>,
}

impl Commit {
    pub fn new() -> Commit {
        Commit::default()
    }
    /// A commit of `items` carrying no payloads.
    pub fn of(items: Vec<Item>) -> Commit {
        Commit {
            items,
            payloads: Vec::new(),
        }
    }
    pub fn event(mut self, e: Event) -> Commit {
        self.items.push(Item::Event(e));
        self
    }
    pub fn push(&mut self, e: Event) {
        self.items.push(Item::Event(e));
    }
    /// Stores `bytes` in the payload store in the same atomic write; returns their hash.
    pub fn payload(&mut self, bytes: Vec<u8>) -> Hash32 {
        let h = Hash32::of(&bytes);
        self.payloads.push((h, bytes));
        h
    }
    /// Moves `other`'s events and payloads to the end of this commit.
    pub fn append(&mut self, other: Commit) {
        self.items.extend(other.items);
        self.payloads.extend(other.payloads);
    }
    /// The payloads carried so far, with their hashes.
    pub fn payloads(&self) -> impl Iterator<Item = (&Hash32, &[u8])> {
        self.payloads.iter().map(|(h, b)| (h, b.as_slice()))
    }
    /// Stores a value's canonical form; returns its hash (the value's hash).
    pub fn value(&mut self, v: &Value) -> Result<Hash32> {
        Ok(self.payload(canonical::to_canonical_bytes(v)?))
    }
}

/// A commit sent without waiting; `wait` gives its result.
pub struct Pending(Receiver<Result<Receipt>>);

impl Pending {
    pub fn wait(self) -> Result<Receipt> {
        self.0
            .recv()
            .map_err(|_| LedgerError::WriterGone("no reply".into()))?
    }
}

static SALT: AtomicU64 = AtomicU64::new(0);

impl Ledger {
    /// Opens (creating if needed) the ledger in `dir`. Fails within a second with
    /// [`LedgerError::Locked`] when another process has it open.
    pub fn open(dir: impl AsRef<Path>) -> Result<Ledger> {
        Ledger::open_with_cache(dir, crate::store::WRITE_CACHE)
    }

    /// Opens with a cache bound suited to reading whole runs (`attest replay`, lineage):
    /// see [`crate::store::READ_CACHE`].
    pub fn open_for_reading(dir: impl AsRef<Path>) -> Result<Ledger> {
        Ledger::open_with_cache(dir, crate::store::READ_CACHE)
    }

    /// Opens with sled's node cache bounded to `cache_bytes`.
    pub fn open_with_cache(dir: impl AsRef<Path>, cache_bytes: u64) -> Result<Ledger> {
        Ledger::with_writer(
            Store::open(dir.as_ref(), cache_bytes)?,
            false,
            writer::spawn,
        )
    }

    /// A ledger on `store` whose commands go to the writer `spawn` starts.
    pub(crate) fn with_writer(
        store: Store,
        scratch: bool,
        spawn: impl FnOnce(Arc<Store>) -> Result<(Sender<Cmd>, JoinHandle<()>)>,
    ) -> Result<Ledger> {
        let store = Arc::new(store);
        let (tx, handle) = spawn(store.clone())?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                store,
                tx: Some(tx),
                writer: Some(handle),
                scratch,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.store.path
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        self.inner
            .tx
            .as_ref()
            .ok_or_else(|| LedgerError::WriterGone("the ledger is closing".into()))?
            .send(cmd)
            .map_err(|_| LedgerError::WriterGone("the writer thread has ended".into()))
    }

    /// Starts a new run: stores the configuration and appends the genesis event
    /// durably.
    pub fn start_run(&self, start: RunStart) -> Result<RunHandle> {
        let config_hash = Hash32::of(&start.config);
        let salt = SALT.fetch_add(1, Ordering::Relaxed);
        let run = RunId::generate(&config_hash, start.started_at_ms, salt);
        self.start_run_with_id(run, start)
    }

    /// As [`Ledger::start_run`] with a chosen id (tests, imports). Refuses an existing id.
    pub fn start_run_with_id(&self, run: RunId, start: RunStart) -> Result<RunHandle> {
        if self.run_record(&run)?.is_some() {
            return Err(LedgerError::RunExists(run.to_string()));
        }
        let handle = RunHandle {
            ledger: self.clone(),
            run: run.clone(),
        };
        let mut commit = Commit::new();
        let config_hash = commit.payload(start.config);
        commit.push(Event::RunStarted {
            run,
            config_hash,
            engine_version: start.engine_version,
            started_at_ms: start.started_at_ms,
        });
        handle.submit(commit, Durability::Flushed)?;
        Ok(handle)
    }

    /// A handle on an existing run (to resume it or append to it).
    pub fn run(&self, run: &RunId) -> Result<RunHandle> {
        if self.run_record(run)?.is_none() {
            return Err(LedgerError::UnknownRun(run.to_string()));
        }
        Ok(RunHandle {
            ledger: self.clone(),
            run: run.clone(),
        })
    }

    /// The run's projection record (status, counts, head).
    pub fn run_record(&self, run: &RunId) -> Result<Option<RunRec>> {
        match self.store().get_proj(run, &PKey::Run)? {
            None => Ok(None),
            Some(crate::projection::PVal::Run(r)) => Ok(Some(r)),
            Some(_) => Err(LedgerError::Corrupt(format!(
                "run {run}'s record has the wrong kind"
            ))),
        }
    }

    /// The record of call `index` of `state` in `run`: its request hash and, once it has
    /// one, its completion. Read-only, so that re-execution (`attest replay`, `resume`) can
    /// answer calls from the record without writing anything.
    pub fn call_record(
        &self,
        run: &RunId,
        state: &StateId,
        index: u32,
    ) -> Result<Option<crate::projection::CallRec>> {
        match self
            .store()
            .get_proj(run, &PKey::Call(state.clone(), index))?
        {
            None => Ok(None),
            Some(crate::projection::PVal::Call(c)) => Ok(Some(c)),
            Some(_) => Err(LedgerError::Corrupt(format!(
                "call {index} of state {state} in run {run} has the wrong kind"
            ))),
        }
    }

    /// Every run in the ledger, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRec>> {
        let mut out = Vec::new();
        for id in self.store().run_ids()? {
            if let Some(r) = self.run_record(&id)? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (a.started_at_ms, &a.run).cmp(&(b.started_at_ms, &b.run)));
        Ok(out)
    }

    /// The most recently started run.
    pub fn latest_run(&self) -> Result<Option<RunRec>> {
        Ok(self.runs()?.pop())
    }

    /// Purges payload bytes and records the purge in the purge log (see [`crate::purge`]),
    /// in one atomic batch, then flushed. Events keep the hashes, so every chain still
    /// verifies; verification counts the payload as purged instead of missing. Returns how
    /// many payloads had bytes to remove.
    pub fn purge_payloads(&self, hashes: &[Hash32], reason: &str, at_ms: u64) -> Result<usize> {
        Ok(self
            .purge_recorded(Vec::new(), hashes, reason, at_ms)?
            .removed)
    }

    /// Stores bytes in the payload store outside any commit, under a key of their own, and
    /// returns their hash (idempotent; durable with the next flush). Commits carry their
    /// payloads instead ([`Commit::payload`]): one key per payload is what packs avoid.
    pub fn put_payload(&self, bytes: &[u8]) -> Result<Hash32> {
        let hash = Hash32::of(bytes);
        if self.inner.scratch {
            return Ok(hash);
        }
        let key = crate::projection::payload_key(&hash);
        let store = self.store();
        // A blind insert: content addressing makes rewriting the same bytes harmless, and
        // most payloads are new, so a lookup first would cost more than it saves.
        store
            .db
            .insert(key, bytes)
            .map_err(|e| store.storage_err(e))?;
        Ok(hash)
    }

    /// Stores a value's canonical form outside any commit (see [`Ledger::put_payload`]) and
    /// returns the value's hash.
    pub fn put_value(&self, v: &Value) -> Result<Hash32> {
        self.put_payload(&canonical::to_canonical_bytes(v)?)
    }

    /// The payload bytes for `hash`, if present (not purged), wherever they are stored.
    pub fn payload(&self, hash: &Hash32) -> Result<Option<Vec<u8>>> {
        self.store().payload(hash)
    }

    /// As [`Ledger::payload`], looking in `run`'s packs first: the quicker lookup when the
    /// run that referenced the payload is known.
    pub fn run_payload(&self, run: &RunId, hash: &Hash32) -> Result<Option<Vec<u8>>> {
        self.store().run_payload(run, hash)
    }

    /// Makes everything committed so far durable (one fsync).
    pub fn flush(&self) -> Result<()> {
        let (tx, rx) = bounded(1);
        self.send(Cmd::Flush { reply: tx })?;
        rx.recv()
            .map_err(|_| LedgerError::WriterGone("no reply".into()))?
    }

    /// Drops the writer's cached projections so the next commit reads storage. Only
    /// needed by tests that edit storage directly.
    #[doc(hidden)]
    pub fn clear_cache(&self) -> Result<()> {
        let (tx, rx) = bounded(1);
        self.send(Cmd::ClearCache { reply: tx })?;
        rx.recv()
            .map_err(|_| LedgerError::WriterGone("no reply".into()))
    }

    /// Writes the payload index in generations of `entries` entries instead of
    /// [`crate::payload_index::GENERATION`]: for tests, to exercise several generations
    /// in a small run.
    #[doc(hidden)]
    pub fn set_payload_index_generation(&self, entries: usize) {
        self.store()
            .index_generation
            .store(entries.max(1), Ordering::Relaxed);
    }

    /// Raw access to the underlying sled tree, for tamper tests and tools.
    #[doc(hidden)]
    pub fn raw_db(&self) -> &sled::Db {
        &self.store().db
    }

    /// The stored bytes of one projection record, wherever storage keeps it (its own key
    /// or its row's bucket), for tamper tests and tools.
    #[doc(hidden)]
    pub fn raw_projection(&self, run: &RunId, key: &PKey) -> Result<Option<Vec<u8>>> {
        self.store().proj_bytes(run, key.as_ref())
    }

    /// Edits every stored copy of the bytes of payload `hash` (under its own key or in any
    /// pack; purged entries are left alone), bypassing every rule and recording nothing:
    /// for tamper tests. Returns how many copies changed.
    #[doc(hidden)]
    pub fn raw_edit_payload(&self, hash: &Hash32, edit: crate::packs::Edit<'_>) -> Result<usize> {
        crate::purge::edit_everywhere(self.store(), hash, edit)
    }

    /// Overwrites (or, with `None`, removes) the stored bytes of one projection record,
    /// bypassing every rule: for tamper tests.
    #[doc(hidden)]
    pub fn raw_set_projection(&self, run: &RunId, key: &PKey, bytes: Option<&[u8]>) -> Result<()> {
        self.store().put_proj_bytes(run, key.as_ref(), bytes)
    }
}

/// One run of the ledger. Clone it freely across threads.
#[derive(Clone)]
pub struct RunHandle {
    ledger: Ledger,
    run: RunId,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunHandle({})", self.run)
    }
}

impl RunHandle {
    pub fn id(&self) -> &RunId {
        &self.run
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Sends a commit and returns without waiting for it.
    pub fn submit_nowait(&self, commit: Commit, durability: Durability) -> Result<Pending> {
        let (tx, rx) = bounded(1);
        self.ledger.send(Cmd::Commit {
            run: self.run.clone(),
            items: commit.items,
            payloads: commit.payloads,
            durability,
            reply: tx,
        })?;
        Ok(Pending(rx))
    }

    /// Commits atomically: every event and payload, or (on a rule violation or a storage
    /// error) none.
    pub fn submit(&self, commit: Commit, durability: Durability) -> Result<Receipt> {
        self.submit_nowait(commit, durability)?.wait()
    }

    /// Commits events (buffered durability).
    pub fn append(&self, events: Vec<Event>) -> Result<Receipt> {
        let commit = Commit {
            items: events.into_iter().map(Item::Event).collect(),
            ..Commit::default()
        };
        self.submit(commit, Durability::Buffered)
    }

    /// Opens the next attempt of `node` on `subject`.
    pub fn open_state(&self, subject: Subject, node: NodeId, input: Hash32) -> Result<StateHandle> {
        let commit = Commit {
            items: vec![Item::OpenState {
                subject: subject.clone(),
                node: node.clone(),
                input,
            }],
            ..Commit::default()
        };
        let receipt = self.submit(commit, Durability::Buffered)?;
        let attempt = receipt
            .allocated
            .first()
            .copied()
            .ok_or_else(|| LedgerError::Corrupt("open_state allocated no attempt".into()))?;
        Ok(StateHandle {
            run: self.clone(),
            id: StateId {
                subject,
                node,
                attempt,
            },
        })
    }

    /// A handle on a state known to be open (e.g. one opened inside a larger commit).
    pub fn state_handle(&self, id: StateId) -> StateHandle {
        StateHandle {
            run: self.clone(),
            id,
        }
    }
}

/// An open node state: run, subject (token or batch), node, attempt. Owned and immutable;
/// clone it into any thread. External calls for the state go through it, so their indices
/// come from the ledger's per-state allocator.
#[derive(Clone, Debug)]
pub struct StateHandle {
    run: RunHandle,
    id: StateId,
}

/// An allocated call: its state and index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallHandle {
    pub state: StateId,
    pub index: u32,
}

impl StateHandle {
    pub fn id(&self) -> &StateId {
        &self.id
    }
    pub fn run(&self) -> &RunHandle {
        &self.run
    }
    pub fn run_id(&self) -> &RunId {
        &self.run.run
    }
    pub fn node(&self) -> &NodeId {
        &self.id.node
    }
    pub fn attempt(&self) -> u32 {
        self.id.attempt
    }
    pub fn token(&self) -> Option<&TokenId> {
        match &self.id.subject {
            Subject::Token(t) => Some(t),
            Subject::Batch(_) => None,
        }
    }

    /// Allocates the next call index on this state and records the request (its bytes are
    /// stored as a payload in the same commit), before the call is made. On disk when it
    /// returns (it shares the fsync of whatever is committed with it): a request is sent
    /// only once its record is durable, so a crash can never leave a call made that the
    /// ledger does not know of, and a resumed run never sends again a request it cannot
    /// see was sent (write-ahead).
    pub fn allocate_call(
        &self,
        kind: &str,
        request: Vec<u8>,
        served: Option<TokenId>,
    ) -> Result<CallHandle> {
        let mut commit = Commit::new();
        let request = commit.payload(request);
        commit.items.push(Item::AllocateCall {
            state: self.id.clone(),
            kind: kind.to_string(),
            request,
            served,
        });
        let receipt = self.run.submit(commit, Durability::Flushed)?;
        let index = receipt
            .allocated
            .first()
            .copied()
            .ok_or_else(|| LedgerError::Corrupt("allocate_call allocated no index".into()))?;
        Ok(CallHandle {
            state: self.id.clone(),
            index,
        })
    }

    /// Records a call's response (bytes stored as a payload) or error.
    pub fn complete_call(
        &self,
        call: &CallHandle,
        outcome: CallOutcome,
        response: Option<Vec<u8>>,
        latency_us: u64,
    ) -> Result<Receipt> {
        self.complete_call_nowait(call, outcome, response, latency_us)?
            .wait()
    }

    /// As [`StateHandle::complete_call`], without waiting: the writer applies commits in
    /// the order they are sent, so anything sent after this (the state's close) follows
    /// it; the caller checks the result later with [`Pending::wait`].
    pub fn complete_call_nowait(
        &self,
        call: &CallHandle,
        outcome: CallOutcome,
        response: Option<Vec<u8>>,
        latency_us: u64,
    ) -> Result<Pending> {
        let mut commit = Commit::new();
        let response = response.map(|r| commit.payload(r));
        commit.push(Event::CallCompleted {
            state: call.state.clone(),
            index: call.index,
            outcome,
            response,
            latency_us,
        });
        self.run.submit_nowait(commit, Durability::Buffered)
    }

    /// Closes the state.
    pub fn close(&self, result: StateResult, duration_us: u64) -> Result<Receipt> {
        self.run.append(vec![Event::StateClosed {
            state: self.id.clone(),
            result,
            duration_us,
        }])
    }
}
