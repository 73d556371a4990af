//! Error types.

use crate::codec::CodecError;
use crate::ids::InvalidId;
use std::fmt;

/// The integrity rules of DESIGN.md, numbered as there. `WellFormed` covers events that are
/// malformed in themselves (an empty fork, a duplicate id, a non-contiguous row index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    WellFormed,
    /// 1. Every reference resolves.
    References,
    /// 2. Call indices are allocated by the ledger per state, gap-free, on open states.
    CallIndices,
    /// 3. A state opens once and closes once; attempts count 1, 2, 3, ...
    StateLifecycle,
    /// 4. Every token ends with exactly one terminal outcome.
    TerminalOutcome,
    /// 5. A batch's membership is fixed when it completes; its completion names its state.
    BatchMembership,
    /// 6. Events belong to a started, unfinished run; a run completes only when every token
    ///    is terminal.
    RunLifecycle,
}

impl Rule {
    pub fn number(self) -> u8 {
        match self {
            Rule::WellFormed => 0,
            Rule::References => 1,
            Rule::CallIndices => 2,
            Rule::StateLifecycle => 3,
            Rule::TerminalOutcome => 4,
            Rule::BatchMembership => 5,
            Rule::RunLifecycle => 6,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Rule::WellFormed => "well-formed events",
            Rule::References => "references resolve",
            Rule::CallIndices => "call indices",
            Rule::StateLifecycle => "state lifecycle",
            Rule::TerminalOutcome => "one terminal outcome",
            Rule::BatchMembership => "batch membership",
            Rule::RunLifecycle => "run lifecycle",
        }
    }
}

/// An event that breaks an integrity rule. Nothing of the commit it was in is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleViolation {
    pub rule: Rule,
    /// A stable code, e.g. `DANGLING_STATE`, `CALL_INDEX`, `TOKEN_TERMINAL`.
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for RuleViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "integrity rule {} ({}) {}: {}",
            self.rule.number(),
            self.rule.title(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for RuleViolation {}

pub(crate) fn violation(rule: Rule, code: &'static str, message: impl Into<String>) -> LedgerError {
    LedgerError::Rule(RuleViolation {
        rule,
        code,
        message: message.into(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{0}")]
    Rule(RuleViolation),
    #[error("ledger at {path} is in use by another process (lock file {lock}); wait for it to finish or use another --ledger directory")]
    Locked { path: String, lock: String },
    #[error("ledger storage error at {path}: {message}")]
    Storage { path: String, message: String },
    #[error("corrupt ledger record: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Id(#[from] InvalidId),
    #[error("no run {0} in this ledger")]
    UnknownRun(String),
    #[error("run {0} already exists in this ledger")]
    RunExists(String),
    #[error("the ledger writer has stopped: {0}")]
    WriterGone(String),
    #[error("value cannot be hashed: {0}")]
    Canonical(#[from] crate::canonical::CanonicalError),
}

impl LedgerError {
    /// The violated rule, when this is a rule violation.
    pub fn rule(&self) -> Option<&RuleViolation> {
        match self {
            LedgerError::Rule(v) => Some(v),
            _ => None,
        }
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
