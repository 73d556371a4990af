//! Projections: the state built by applying a run's events in order.
//!
//! They are stored beside the log (written in the same atomic batch) so that lineage
//! queries and live rule checks read indexes instead of scanning the log, and so that
//! verification can rebuild them from the log and compare. Records are deliberately coarse
//! (a token's states and routes live inside the token's record) because each stored key
//! costs far more than the bytes in it.

use crate::event::{BatchOutputs, CallOutcome, NodeKind, Outcome};
use crate::ids::{BatchId, Hash32, NodeId, RunId, StateId, Subject, TokenId};
use serde::{Deserialize, Serialize};

/// Rows per sink-index chunk: the sink ordinal → token index is stored in chunks so that a
/// row written costs a fraction of a key, and a chunk stays small to rewrite.
pub const SINK_CHUNK: u64 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Running,
    Interrupted,
    Completed,
    Failed,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRec {
    pub run: RunId,
    pub status: RunStatus,
    pub config_hash: Hash32,
    pub engine_version: String,
    pub started_at_ms: u64,
    /// Number of events in the chain; the next record's seq.
    pub next_seq: u64,
    /// Hash of the last record.
    pub head: Hash32,
    pub rows: u64,
    pub tokens: u64,
    /// Tokens without a terminal outcome.
    pub live_tokens: u64,
    pub open_states: u64,
    pub states: u64,
    pub calls: u64,
    pub resumes: u32,
    pub last_checkpoint_rows: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRec {
    pub kind: NodeKind,
    pub plugin: String,
    pub config_hash: Hash32,
    /// Sinks: the ordinal of the next row written.
    pub next_ordinal: u64,
    /// Sinks: artifacts recorded so far.
    pub artifacts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRec {
    pub source: NodeId,
    pub payload: Hash32,
    pub seq: u64,
    pub validation_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    Source,
    Fork { branch: String },
    Expand { index: u64 },
    Coalesce { node: NodeId },
    Batch { batch: BatchId },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateStatus {
    Open,
    Completed { output: Hash32 },
    Failed { error: String, retryable: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRec {
    pub node: NodeId,
    pub attempt: u32,
    pub input: Hash32,
    pub opened_seq: u64,
    pub status: StateStatus,
    pub closed_seq: Option<u64>,
    pub duration_us: u64,
    /// Calls allocated on this state: the next call index.
    pub calls: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRec {
    pub node: NodeId,
    pub attempt: u32,
    pub label: String,
    pub to: Vec<NodeId>,
    pub seq: u64,
}

/// How a token ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Terminal {
    Outcome(Outcome),
    Forked,
    Expanded,
    Coalesced { into: TokenId },
    ConsumedInBatch { batch: BatchId },
}

impl Terminal {
    pub fn name(&self) -> &'static str {
        match self {
            Terminal::Outcome(o) => o.name(),
            Terminal::Forked => "forked",
            Terminal::Expanded => "expanded",
            Terminal::Coalesced { .. } => "coalesced",
            Terminal::ConsumedInBatch { .. } => "consumed_in_batch",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRec {
    pub row: Option<u64>,
    pub origin: Origin,
    pub parents: Vec<TokenId>,
    pub children: Vec<TokenId>,
    pub created_seq: u64,
    pub states: Vec<StateRec>,
    pub routes: Vec<RouteRec>,
    /// Every batch this token joined, in order.
    pub batches: Vec<BatchId>,
    /// The batch the token is waiting in (its non-terminal `buffered` outcome).
    pub buffered_in: Option<BatchId>,
    pub terminal: Option<(Terminal, u64)>,
}

impl TokenRec {
    pub fn new(row: Option<u64>, origin: Origin, parents: Vec<TokenId>, seq: u64) -> TokenRec {
        TokenRec {
            row,
            origin,
            parents,
            children: Vec::new(),
            created_seq: seq,
            states: Vec::new(),
            routes: Vec::new(),
            batches: Vec::new(),
            buffered_in: None,
            terminal: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCompletion {
    pub trigger: String,
    pub state: StateId,
    pub outputs: BatchOutputs,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRec {
    pub node: NodeId,
    pub opened_seq: u64,
    pub members: u32,
    pub states: Vec<StateRec>,
    pub completion: Option<BatchCompletion>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCompletion {
    pub outcome: CallOutcome,
    pub response: Option<Hash32>,
    pub latency_us: u64,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRec {
    pub kind: String,
    pub request: Hash32,
    pub served: Option<TokenId>,
    pub allocated_seq: u64,
    pub completion: Option<CallCompletion>,
}

/// A state's pool statistics ([`crate::Event::PoolStats`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRec {
    pub capacity_retries: u64,
    pub peak_delay_us: u64,
    pub throttled_us: u64,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRec {
    pub path: String,
    pub content_hash: Hash32,
    pub size: u64,
    pub rows: u64,
    pub seq: u64,
}

/// A projection key within one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PKey {
    Run,
    Node(NodeId),
    Edge(NodeId, NodeId, String),
    Row(u64),
    Token(TokenId),
    Batch(BatchId),
    Member(BatchId, u32),
    Call(StateId, u32),
    SinkChunk(NodeId, u64),
    Artifact(NodeId, u64),
    /// The pool statistics of a state.
    Pool(StateId),
}

/// A projection key that borrows its ids. Lookups use it, so that finding a record
/// allocates nothing (the rules look records up several times per event). It hashes and
/// compares exactly as the [`PKey`] it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PKeyRef<'a> {
    Run,
    Node(&'a NodeId),
    Edge(&'a NodeId, &'a NodeId, &'a str),
    Row(u64),
    Token(&'a TokenId),
    Batch(&'a BatchId),
    Member(&'a BatchId, u32),
    Call(&'a StateId, u32),
    SinkChunk(&'a NodeId, u64),
    Artifact(&'a NodeId, u64),
    Pool(&'a StateId),
}

impl PKey {
    pub fn as_ref(&self) -> PKeyRef<'_> {
        match self {
            PKey::Run => PKeyRef::Run,
            PKey::Node(n) => PKeyRef::Node(n),
            PKey::Edge(a, b, l) => PKeyRef::Edge(a, b, l),
            PKey::Row(r) => PKeyRef::Row(*r),
            PKey::Token(t) => PKeyRef::Token(t),
            PKey::Batch(b) => PKeyRef::Batch(b),
            PKey::Member(b, i) => PKeyRef::Member(b, *i),
            PKey::Call(s, i) => PKeyRef::Call(s, *i),
            PKey::SinkChunk(s, c) => PKeyRef::SinkChunk(s, *c),
            PKey::Artifact(s, i) => PKeyRef::Artifact(s, *i),
            PKey::Pool(s) => PKeyRef::Pool(s),
        }
    }
}

// By hand rather than derived: it must agree with `PKeyRef`'s hash for borrowed lookups.
impl std::hash::Hash for PKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state)
    }
}

impl PKeyRef<'_> {
    pub fn to_owned(self) -> PKey {
        match self {
            PKeyRef::Run => PKey::Run,
            PKeyRef::Node(n) => PKey::Node(n.clone()),
            PKeyRef::Edge(a, b, l) => PKey::Edge(a.clone(), b.clone(), l.to_string()),
            PKeyRef::Row(r) => PKey::Row(r),
            PKeyRef::Token(t) => PKey::Token(t.clone()),
            PKeyRef::Batch(b) => PKey::Batch(b.clone()),
            PKeyRef::Member(b, i) => PKey::Member(b.clone(), i),
            PKeyRef::Call(s, i) => PKey::Call(s.clone(), i),
            PKeyRef::SinkChunk(s, c) => PKey::SinkChunk(s.clone(), c),
            PKeyRef::Artifact(s, i) => PKey::Artifact(s.clone(), i),
            PKeyRef::Pool(s) => PKey::Pool(s.clone()),
        }
    }
}

impl hashbrown::Equivalent<PKey> for PKeyRef<'_> {
    fn equivalent(&self, key: &PKey) -> bool {
        *self == key.as_ref()
    }
}

/// A projection value. The variant always matches the key's kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PVal {
    Run(RunRec),
    Node(NodeRec),
    Edge,
    Row(RowRec),
    Token(TokenRec),
    Batch(BatchRec),
    Member(TokenId),
    Call(CallRec),
    SinkChunk(Vec<TokenId>),
    Artifact(ArtifactRec),
    Pool(PoolRec),
}

/// Key prefix bytes. One letter per family, so one run's projections share a prefix.
pub(crate) mod tag {
    pub const LOG: u8 = b'L';
    pub const PROJ: u8 = b'P';
    pub const RUN_INDEX: u8 = b'I';
    pub const PAYLOAD: u8 = b'B';
    pub const PURGED: u8 = b'X';
}

fn push_id(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// `P run \0` — every projection key of `run` starts with this.
pub fn proj_prefix(run: &RunId) -> Vec<u8> {
    let mut k = Vec::with_capacity(run.as_str().len() + 8);
    k.push(tag::PROJ);
    push_id(&mut k, run.as_str());
    k
}

impl PKey {
    pub fn encode(&self, run: &RunId) -> Vec<u8> {
        self.as_ref().encode(run)
    }
}

impl PKeyRef<'_> {
    pub fn encode(self, run: &RunId) -> Vec<u8> {
        let mut k = proj_prefix(run);
        self.encode_suffix(&mut k);
        k
    }

    /// Appends what follows the run's prefix ([`proj_prefix`]) in this key.
    pub fn encode_suffix(self, k: &mut Vec<u8>) {
        match self {
            PKeyRef::Run => k.push(b'R'),
            PKeyRef::Node(n) => {
                k.push(b'N');
                push_id(k, n.as_str());
            }
            PKeyRef::Edge(a, b, label) => {
                k.push(b'E');
                push_id(k, a.as_str());
                push_id(k, b.as_str());
                k.extend_from_slice(label.as_bytes());
            }
            PKeyRef::Row(r) => {
                k.push(b'W');
                k.extend_from_slice(&r.to_be_bytes());
            }
            PKeyRef::Token(t) => {
                k.push(b'T');
                push_id(k, t.as_str());
            }
            PKeyRef::Batch(b) => {
                k.push(b'B');
                push_id(k, b.as_str());
            }
            PKeyRef::Member(b, i) => {
                k.push(b'M');
                push_id(k, b.as_str());
                k.extend_from_slice(&i.to_be_bytes());
            }
            PKeyRef::Call(s, i) => {
                k.push(b'C');
                encode_state(k, s);
                k.extend_from_slice(&i.to_be_bytes());
            }
            PKeyRef::SinkChunk(s, c) => {
                k.push(b'S');
                push_id(k, s.as_str());
                k.extend_from_slice(&c.to_be_bytes());
            }
            PKeyRef::Artifact(s, i) => {
                k.push(b'A');
                push_id(k, s.as_str());
                k.extend_from_slice(&i.to_be_bytes());
            }
            PKeyRef::Pool(s) => {
                k.push(b'Q');
                encode_state(k, s);
            }
        }
    }
}

/// A state id inside a key: `t` ‖ `token\0` or `b` ‖ `batch\0`, then `node\0 ‖ u32be(attempt)`.
fn encode_state(k: &mut Vec<u8>, s: &StateId) {
    match &s.subject {
        Subject::Token(t) => {
            k.push(b't');
            push_id(k, t.as_str());
        }
        Subject::Batch(b) => {
            k.push(b'b');
            push_id(k, b.as_str());
        }
    }
    push_id(k, s.node.as_str());
    k.extend_from_slice(&s.attempt.to_be_bytes());
}

/// Key of the log segment of `run` whose first record is `first_seq`.
pub fn log_key(run: &RunId, first_seq: u64) -> Vec<u8> {
    let mut k = log_prefix(run);
    k.extend_from_slice(&first_seq.to_be_bytes());
    k
}

pub fn log_prefix(run: &RunId) -> Vec<u8> {
    let mut k = Vec::with_capacity(run.as_str().len() + 10);
    k.push(tag::LOG);
    push_id(&mut k, run.as_str());
    k
}

pub fn run_index_key(run: &RunId) -> Vec<u8> {
    let mut k = vec![tag::RUN_INDEX];
    k.extend_from_slice(run.as_str().as_bytes());
    k
}

pub fn payload_key(hash: &Hash32) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(tag::PAYLOAD);
    k.extend_from_slice(&hash.0);
    k
}

pub fn purged_key(hash: &Hash32) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(tag::PURGED);
    k.extend_from_slice(&hash.0);
    k
}
