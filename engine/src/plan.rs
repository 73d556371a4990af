//! The executable form of a pipeline: nodes with their plugin instances and resolved
//! targets. The configuration loader builds it (`build.rs`); the executor only ever sees
//! this, so plugins and wiring are decided once, before the run starts.

/// Plugins receive it; re-exported so that implementing [`Transform`] needs only this module.
pub use crate::calls::CallContext;
use crate::calls::Redactor;
use crate::value::{Row, Value};
use attest_ledger::{Hash32, NodeId, NodeKind, TokenId};
use std::sync::Arc;
use std::time::Duration;

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
    /// A gate's `fork` route: one child per branch, in `fork_to` order.
    Fork(Vec<ForkBranch>),
}

/// One branch of a fork.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkBranch {
    pub name: String,
    /// Where the child goes first.
    pub target: Target,
    /// The coalesce node ([`Plan::nodes`] index) that joins this branch, if any; a branch
    /// without one goes straight to the sink of its name.
    pub coalesce: Option<usize>,
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
/// per-row context arrives by value, never through shared mutable state (seed 001).
pub trait Transform: Send + Sync {
    /// `ctx` belongs to this one execution (one attempt of this node on this token): a
    /// plugin that makes external calls makes them through it, and they are recorded
    /// under this execution's state. Other plugins get [`CallContext::none`].
    fn process(&self, row: &Row, ctx: CallContext) -> Result<Row, TransformError>;

    /// `Some` for a plugin that makes external calls. The executor then commits the row's
    /// events so far (its state must be in the ledger before a call is allocated on it)
    /// and hands the plugin a context bound to the state. Plugins that make no calls keep
    /// the default, and their rows keep being recorded in one commit.
    fn calls(&self) -> Option<&CallSpec> {
        None
    }
}

/// What the executor needs to know about a plugin that makes external calls.
#[derive(Clone, Debug)]
pub struct CallSpec {
    /// The plugin's secrets, removed from everything recorded about its calls.
    pub redactor: Arc<Redactor>,
    /// Rows that must be able to wait on this plugin's calls at once (`pool_size`): the
    /// run uses at least this many workers.
    pub concurrency: usize,
}

/// A transform that turns one row into any number of rows (`json_explode`): the parent
/// token ends `expanded` and each output row is a child token.
pub trait Expand: Send + Sync {
    fn expand(&self, row: &Row) -> Result<Vec<Row>, TransformError>;
}

/// An aggregation plugin: processes a whole batch at once, in one state.
pub trait BatchTransform: Send + Sync {
    /// The batch's output rows. In passthrough mode the engine requires one per input row.
    fn process_batch(&self, rows: &[Row]) -> Result<Vec<Row>, TransformError>;

    /// `Some` for a plugin that makes external calls (`llm_batch`). The executor then
    /// commits the batch's events so far (its state must be in the ledger before a call
    /// is allocated on it) and runs [`BatchTransform::process_batch_calling`] instead.
    fn calls(&self) -> Option<&CallSpec> {
        None
    }

    /// [`BatchTransform::process_batch`] for a plugin that makes calls: `members` are the
    /// batch's tokens in member order (one per row), and `ctx` is bound to the batch's
    /// one state. Every call is recorded under that state and names the member it served
    /// (seed 003: no per-row state is invented).
    fn process_batch_calling(
        &self,
        rows: &[Row],
        members: &[TokenId],
        ctx: CallContext,
    ) -> Result<Vec<Row>, TransformError> {
        let _ = (members, ctx);
        self.process_batch(rows)
    }
}

/// A boolean expression over a row (an aggregation's trigger condition).
pub trait Predicate: Send + Sync {
    fn holds(&self, row: &Row) -> Result<bool, String>;
}

/// When a batch is flushed: whichever fires first, and always at the end of the source.
#[derive(Default)]
pub struct BatchTrigger {
    pub count: Option<u64>,
    pub timeout: Option<Duration>,
    /// Reads `row['batch_count']` and `row['batch_age_seconds']`.
    pub condition: Option<Box<dyn Predicate>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchMode {
    /// The plugin's outputs are new tokens; the members end consumed in the batch.
    Transform,
    /// One output row per member; the members continue with them.
    Passthrough,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoalescePolicy {
    RequireAll,
    First,
    Quorum(usize),
    BestEffort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeStrategy {
    Union,
    Nested,
    /// The row of the branch at this index.
    Select(usize),
}

/// The pipeline's `retry:` policy for row transforms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total tries, at least 1.
    pub max_attempts: u32,
    pub initial_delay: f64,
    pub max_delay: f64,
    pub exponential_base: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_delay: 1.0,
            max_delay: 60.0,
            exponential_base: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (from 1): initial × base^(attempt−1) plus
    /// `jitter` seconds (uniform in 0..1), capped at the maximum.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .exponential_base
            .powi(attempt.saturating_sub(1).min(1024) as i32);
        let secs = (self.initial_delay * exp + jitter).min(self.max_delay);
        Duration::from_secs_f64(if secs.is_finite() && secs > 0.0 {
            secs
        } else {
            0.0
        })
    }
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
    Expand {
        plugin: Box<dyn Expand>,
        on_success: Target,
        on_error: Target,
    },
    Aggregation {
        plugin: Box<dyn BatchTransform>,
        trigger: BatchTrigger,
        mode: BatchMode,
        /// Transform mode: a batch producing another number of rows fails.
        expected_output_count: Option<u64>,
        on_success: Target,
    },
    Coalesce {
        /// Branch names in configuration order (the order of union and nested merges).
        branches: Vec<String>,
        policy: CoalescePolicy,
        merge: MergeStrategy,
        /// Since the first arrival.
        timeout: Option<Duration>,
        on_success: Target,
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
    /// `on_write_failure`: where a row this sink cannot write goes; `None` fails it.
    pub on_write_failure: Option<WriteFailure>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    Discard,
    /// Index into [`Plan::sinks`]: the row ends `diverted` there.
    Sink(usize),
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
    pub retry: RetryPolicy,
}

impl Plan {
    /// Rows that must be able to wait on external calls at once: the largest
    /// [`CallSpec::concurrency`] of the plan's transforms (0 when none makes calls).
    pub fn call_concurrency(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| match &n.exec {
                NodeExec::Transform { plugin, .. } => plugin.calls().map(|c| c.concurrency),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}
