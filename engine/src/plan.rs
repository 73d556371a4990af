//! The executable form of a pipeline: nodes with their plugin instances and resolved
//! targets. The configuration loader builds it (`build.rs`); the executor only ever sees
//! this, so plugins and wiring are decided once, before the run starts.

use crate::value::{Row, Value};
use attest_ledger::{Hash32, NodeId, NodeKind};

/// Where a token goes next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Index into [`Plan::nodes`].
    Node(usize),
    /// Index into [`Plan::sinks`], and whether arriving there is a normal completion or a
    /// routing decision (gate route, `on_error`).
    Sink { sink: usize, routed: bool },
    /// `discard`: the token ends `discarded` with this reason.
    Discard { reason: String },
}

/// A row-level failure a transform reports: the row goes to the node's `on_error`.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformError {
    /// ELSPETH's error object, e.g. `{"reason": "missing_field", "field": "x"}`.
    pub reason: Value,
    /// Worth retrying under the pipeline's retry policy.
    pub retryable: bool,
}

impl TransformError {
    pub fn new(reason: Value) -> TransformError {
        TransformError {
            reason,
            retryable: false,
        }
    }
    pub fn message(&self) -> String {
        self.reason.to_string()
    }
}

/// A row transform. Instances are shared by all workers: `process` takes `&self`, and any
/// per-row context arrives by value, never through shared mutable state.
pub trait Transform: Send + Sync {
    fn process(&self, row: &Row) -> Result<Row, TransformError>;
}

/// A gate's condition: evaluates a row to the label of the route it takes.
pub trait Condition: Send + Sync {
    /// `Ok(label)`, or `Err(message)` when the expression fails on this row (missing
    /// field, type error): the row then fails, not the run.
    fn route_label(&self, row: &Row) -> Result<String, String>;
}

pub enum NodeExec {
    Transform {
        plugin: Box<dyn Transform>,
        on_success: Target,
        on_error: Target,
    },
    Gate {
        condition: Box<dyn Condition>,
        /// label → where the token goes.
        routes: Vec<(String, Target)>,
    },
}

pub struct NodePlan {
    pub id: NodeId,
    pub kind: NodeKind,
    pub plugin: String,
    /// Hash of this node's configuration, recorded at registration.
    pub config_hash: Hash32,
    pub exec: NodeExec,
}

pub struct SinkPlan {
    pub id: NodeId,
    pub plugin: String,
    pub config_hash: Hash32,
    pub path: String,
}

pub struct SourcePlan {
    pub id: NodeId,
    pub plugin: String,
    pub config_hash: Hash32,
    pub path: String,
    pub on_success: Target,
    /// Where rows that fail validation go (`None` = discard).
    pub on_validation_failure: Option<usize>,
}

pub struct Plan {
    pub source: SourcePlan,
    pub nodes: Vec<NodePlan>,
    pub sinks: Vec<SinkPlan>,
    /// Every edge for the ledger's registration: (from, to, label).
    pub edges: Vec<(NodeId, NodeId, String)>,
}
