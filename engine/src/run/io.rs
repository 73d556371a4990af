//! What the executor needs from sources and sinks. The CSV and JSON plugins implement
//! these; tests implement them in memory.

use crate::value::{Row, Value};
use attest_ledger::Hash32;

/// A row that failed validation at the source boundary.
#[derive(Clone, Debug, PartialEq)]
pub struct Quarantine {
    /// The row as read (normalised keys, raw values): what the quarantine sink receives.
    pub row: Row,
    pub error: String,
}

/// One record read from a source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRecord {
    /// The record as read, before validation: stored as the row's payload so replay can
    /// re-validate from it.
    pub raw: Value,
    pub parsed: Result<Row, Quarantine>,
}

/// A failure that stops reading (unreadable file, invalid encoding). It names where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

pub trait RowSource: Send {
    /// The next record, `None` at the end.
    fn next_record(&mut self) -> Option<Result<SourceRecord, SourceError>>;
}

/// A row this sink cannot write (e.g. a field outside a fixed CSV header). The token fails
/// or is diverted; the run goes on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RowWriteError(pub String);

/// The sink itself failed (disk full, permission): the run cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkIoError(pub String);

/// How far a sink is durable: its file's length, the rows in it, and the hash of those
/// bytes (what a resume checks the file against before continuing it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SinkPosition {
    pub bytes: u64,
    pub rows: u64,
    pub hash: Hash32,
}

/// The finished file of a sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactInfo {
    pub path: String,
    pub content_hash: Hash32,
    pub size: u64,
    pub rows: u64,
}

/// Why a write did not happen: this row only, or the sink itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Row(#[from] RowWriteError),
    #[error(transparent)]
    Io(#[from] SinkIoError),
}

pub trait RowSink: Send {
    fn write_row(&mut self, row: &Row) -> Result<(), WriteError>;
    /// Flushes and fsyncs; rows written before are durable when it returns.
    fn flush_durable(&mut self) -> Result<SinkPosition, SinkIoError>;
    /// Where the sink's file stood before this run wrote to it, when that is content a
    /// resume must restore (an append-mode file that already had bytes). The run records
    /// it before its first row.
    fn position_before_run(&mut self) -> Result<Option<SinkPosition>, SinkIoError> {
        Ok(None)
    }
    /// Closes the sink; `None` when it never received a row (no file is created).
    fn finish(self: Box<Self>) -> Result<Option<ArtifactInfo>, SinkIoError>;
}
