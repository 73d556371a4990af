//! What sources yield, and how they fail.

use std::path::PathBuf;

use serde_json::Value;

use crate::value::Row;

/// One record read from a source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRecord {
    /// 0-based index over the records the source yields (valid and quarantined alike); blank
    /// lines and skipped rows do not count. ELSPETH's `__row_number__` is this plus one.
    pub row_index: u64,
    /// Line in the source file: for CSV the physical line on which the record ends
    /// (ELSPETH's `reader.line_num`); for JSONL the line; for a JSON array the line on
    /// which the item starts.
    pub line: u64,
    /// The record as read, before validation.
    pub raw: RawRecord,
    pub outcome: Outcome,
}

/// The record as it appeared in the file.
#[derive(Clone, Debug, PartialEq)]
pub enum RawRecord {
    /// CSV cells in column order.
    Cells(Vec<String>),
    /// A JSON item as parsed.
    Json(Value),
    /// Text that could not be parsed at all (a bad JSONL line, or the message for a JSON
    /// file that failed as a whole).
    Text(String),
}

/// Whether the record passed the source schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The validated, coerced row.
    Valid(Row),
    /// Sent to `on_validation_failure`: `row` is what a quarantine sink writes (ELSPETH's raw
    /// row) and `error` says why.
    Quarantined { row: Row, error: String },
}

impl Outcome {
    pub fn is_valid(&self) -> bool {
        matches!(self, Outcome::Valid(_))
    }
}

/// A source failure that stops reading. Every variant names the file, and the line where
/// one applies.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {message}", path = path.display())]
    Config { path: PathBuf, message: String },

    #[error("{path}: cannot read: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path}:{line}: not valid UTF-8 (bad byte at offset {byte_offset} of the line); \
         only utf-8 input is supported",
        path = path.display()
    )]
    InvalidUtf8 {
        path: PathBuf,
        line: u64,
        byte_offset: usize,
    },

    #[error("{path}:{line}: header: {message}", path = path.display())]
    Header {
        path: PathBuf,
        line: u64,
        message: String,
    },

    #[error(
        "{path}:{line}: record is larger than {limit} bytes (an unterminated quote?)",
        path = path.display()
    )]
    RecordTooLarge {
        path: PathBuf,
        line: u64,
        limit: usize,
    },
}
