//! The audit domain's events: everything the engine decides is one of these.
//!
//! Events are appended to a run's hash chain and folded into projections by
//! [`crate::rules::apply`]. New variants must only ever be added at the end of an enum:
//! the codec identifies variants by position.

use crate::ids::{BatchId, Hash32, NodeId, RunId, StateId, TokenId};
use serde::{Deserialize, Serialize};

/// What kind of pipeline node a registered node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    Source,
    Transform,
    Gate,
    Aggregation,
    Coalesce,
    Sink,
}

/// A row written to a sink: `ordinal` counts the rows written to that sink from 0,
/// contiguously, so `attest lineage --output SINK:N` resolves through it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkWrite {
    pub sink: NodeId,
    pub ordinal: u64,
}

/// A terminal outcome the engine records for a token with [`Event::TokenOutcome`].
///
/// Forked, expanded, coalesced and consumed-in-batch are terminal too, but they are not
/// here: they are only ever the effect of the structural events that create the children
/// ([`Event::TokenForked`], [`Event::TokenExpanded`], [`Event::TokensCoalesced`],
/// [`Event::BatchCompleted`]), so a parent can never end without its children existing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Reached a sink through the normal path (`on_success`, fork branch, coalesce, batch).
    Completed { write: SinkWrite },
    /// Sent to a sink by a routing decision (gate route, transform `on_error`).
    Routed { write: SinkWrite },
    /// Failed source validation; written to the quarantine sink, or discarded when `None`.
    Quarantined { write: Option<SinkWrite> },
    /// Could not be written to its sink and went to the sink's failsink instead.
    Diverted { write: SinkWrite, error: String },
    /// Dropped on purpose (`discard`).
    Discarded { reason: String },
    /// Processing failed (retries exhausted, failed batch, expression error, ...).
    Failed { error: String },
}

impl Outcome {
    /// The sink write this outcome claims, if any.
    pub fn write(&self) -> Option<&SinkWrite> {
        match self {
            Outcome::Completed { write } | Outcome::Routed { write } => Some(write),
            Outcome::Diverted { write, .. } => Some(write),
            Outcome::Quarantined { write } => write.as_ref(),
            Outcome::Discarded { .. } | Outcome::Failed { .. } => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Completed { .. } => "completed",
            Outcome::Routed { .. } => "routed",
            Outcome::Quarantined { .. } => "quarantined",
            Outcome::Diverted { .. } => "diverted",
            Outcome::Discarded { .. } => "discarded",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// How a node state ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateResult {
    Completed { output: Hash32 },
    Failed { error: String, retryable: bool },
}

/// How an external call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallOutcome {
    /// A response arrived (`status` is the HTTP status where there is one).
    Responded { status: Option<u16> },
    /// No usable response: connection refused, timeout, reset, ...
    Errored { error: String, retryable: bool },
}

/// What a completed batch produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOutputs {
    /// Transform mode: the members end `consumed_in_batch` and these new tokens, whose
    /// parents are all the members, carry the results on.
    Transform { outputs: Vec<TokenId> },
    /// Passthrough mode: the members themselves continue.
    Passthrough,
    /// The batch failed; each member still needs its own terminal outcome.
    Failed { error: String },
}

/// A fork child: its token and the branch it takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkChild {
    pub token: TokenId,
    pub branch: String,
}

/// How a run ended for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinalStatus {
    Completed,
    Failed,
}

/// One audit event. See `docs/ledger-format.md` for the meaning of each field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The genesis event of a run's chain: commits to the run id and configuration hash.
    /// The configuration bytes are in the payload store under `config_hash`.
    RunStarted {
        run: RunId,
        config_hash: Hash32,
        engine_version: String,
        started_at_ms: u64,
    },
    NodeRegistered {
        node: NodeId,
        kind: NodeKind,
        plugin: String,
        config_hash: Hash32,
    },
    EdgeRegistered {
        from: NodeId,
        to: NodeId,
        label: String,
    },
    /// A source row was read; it becomes the token `TokenId::for_row(row)`.
    RowIngested {
        row: u64,
        source: NodeId,
        payload: Hash32,
    },
    /// A source row failed validation. The token still needs its terminal outcome
    /// (normally `Quarantined`).
    ValidationFailed {
        row: u64,
        error: String,
    },
    StateOpened {
        state: StateId,
        input: Hash32,
    },
    StateClosed {
        state: StateId,
        result: StateResult,
        duration_us: u64,
    },
    /// An external call's index was allocated and its request recorded, before it is sent.
    /// `served` names the token the call is for when a batch state serves many.
    CallAllocated {
        state: StateId,
        index: u32,
        kind: String,
        request: Hash32,
        served: Option<TokenId>,
    },
    CallCompleted {
        state: StateId,
        index: u32,
        outcome: CallOutcome,
        response: Option<Hash32>,
        latency_us: u64,
    },
    RouteDecided {
        state: StateId,
        token: TokenId,
        label: String,
        to: Vec<NodeId>,
    },
    /// The parent ends `forked` and the children are created, in one event.
    TokenForked {
        parent: TokenId,
        children: Vec<ForkChild>,
    },
    /// The parent ends `expanded` and the children are created, in one event.
    TokenExpanded {
        parent: TokenId,
        children: Vec<TokenId>,
    },
    /// The parents end `coalesced` and the merged token is created, in one event.
    TokensCoalesced {
        node: NodeId,
        parents: Vec<TokenId>,
        merged: TokenId,
    },
    BatchOpened {
        batch: BatchId,
        node: NodeId,
    },
    BatchMemberAdded {
        batch: BatchId,
        token: TokenId,
        ordinal: u32,
    },
    /// Fixes the batch's membership; names the trigger and the state that processed it.
    BatchCompleted {
        batch: BatchId,
        trigger: String,
        state: StateId,
        outputs: BatchOutputs,
    },
    TokenOutcome {
        token: TokenId,
        outcome: Outcome,
    },
    ArtifactWritten {
        sink: NodeId,
        path: String,
        content_hash: Hash32,
        size: u64,
        rows: u64,
    },
    Checkpoint {
        rows_ingested: u64,
        note: String,
    },
    /// The run stopped early but can be resumed (Ctrl-C).
    RunInterrupted {
        reason: String,
    },
    /// The run continues after an interruption or a crash.
    RunResumed {
        reason: String,
    },
    RunFinished {
        status: FinalStatus,
    },
    /// What re-execution needs of source row `row` that its canonical payload does not
    /// keep, as a payload (`docs/ledger-format.md` §8): the record's field order when it
    /// differs from the last order recorded, and a quarantined row's quarantine row with
    /// its order. Follows the row's `RowIngested`; only rows that need one have one.
    RowDetail {
        row: u64,
        detail: Hash32,
    },
    /// What a pooled executor's AIMD throttle did for the calls of one state (recorded
    /// once, before the state closes, for every state a pool served): the capacity errors
    /// it retried, the highest dispatch delay in force for them, and the time they waited
    /// for the throttle (spacing and back-off, summed over calls), in microseconds.
    PoolStats {
        state: StateId,
        capacity_retries: u64,
        peak_delay_us: u64,
        throttled_us: u64,
    },
}

impl Event {
    /// A stable lower-case name, used in error messages and exports.
    pub fn name(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::NodeRegistered { .. } => "node_registered",
            Event::EdgeRegistered { .. } => "edge_registered",
            Event::RowIngested { .. } => "row_ingested",
            Event::ValidationFailed { .. } => "validation_failed",
            Event::StateOpened { .. } => "state_opened",
            Event::StateClosed { .. } => "state_closed",
            Event::CallAllocated { .. } => "call_allocated",
            Event::CallCompleted { .. } => "call_completed",
            Event::RouteDecided { .. } => "route_decided",
            Event::TokenForked { .. } => "token_forked",
            Event::TokenExpanded { .. } => "token_expanded",
            Event::TokensCoalesced { .. } => "tokens_coalesced",
            Event::BatchOpened { .. } => "batch_opened",
            Event::BatchMemberAdded { .. } => "batch_member_added",
            Event::BatchCompleted { .. } => "batch_completed",
            Event::TokenOutcome { .. } => "token_outcome",
            Event::ArtifactWritten { .. } => "artifact_written",
            Event::Checkpoint { .. } => "checkpoint",
            Event::RunInterrupted { .. } => "run_interrupted",
            Event::RunResumed { .. } => "run_resumed",
            Event::RunFinished { .. } => "run_finished",
            Event::RowDetail { .. } => "row_detail",
            Event::PoolStats { .. } => "pool_stats",
        }
    }
}
