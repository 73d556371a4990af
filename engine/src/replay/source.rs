//! The source re-execution reads: the recorded rows, from the ledger, in order.
//!
//! Each row is its `RowIngested` payload put back in its recorded field order (see
//! [`super::detail`]), then validated against the source schema of the configuration being
//! re-executed, exactly as the CSV or JSON source validated the record it read. A row the
//! run quarantined is handed on quarantined, with its recorded quarantine row and error:
//! the source boundary is taken as recorded for it.

use super::detail::{apply_shape, read_detail};
use super::record::RowInfo;
use crate::config::{PipelineConfig, SourceFormat};
use crate::formats::Validator;
use crate::run::io::{Quarantine, RowSource, SourceError, SourceRecord};
use crate::value::Value;
use attest_ledger::payload_cursor::PayloadCursor;
use attest_ledger::{Ledger, RunId};
use std::sync::{Arc, Mutex};

/// Why a row cannot be re-executed, found while reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unavailable {
    pub row: u64,
    pub reason: String,
}

pub(crate) struct RecordedSource {
    /// The rows' payloads, read in row order: one pass over the run's packs.
    payloads: PayloadCursor,
    rows: Vec<RowInfo>,
    next: usize,
    /// The field order of the rows read (a shape, see [`super::detail`]).
    order: Value,
    validator: Validator,
    csv: bool,
    /// Ends the rows with this error, as the recorded run's source did (the run failed).
    fail_at_end: Option<String>,
    /// Set when a row's payload (or detail) is not in the ledger: re-execution stops.
    unavailable: Arc<Mutex<Option<Unavailable>>>,
}

impl RecordedSource {
    pub(crate) fn new(
        ledger: &Ledger,
        run: &RunId,
        rows: Vec<RowInfo>,
        config: &PipelineConfig,
        fail_at_end: Option<String>,
        unavailable: Arc<Mutex<Option<Unavailable>>>,
    ) -> RecordedSource {
        RecordedSource {
            payloads: PayloadCursor::new(ledger, run),
            rows,
            next: 0,
            order: Value::Null,
            validator: Validator::new(crate::open::schema(&config.source.options.schema)),
            csv: matches!(config.source.options.format, SourceFormat::Csv(_)),
            fail_at_end,
            unavailable,
        }
    }

    /// The row's payload bytes, or (having noted why) `None`.
    fn payload(
        &mut self,
        row: u64,
        what: &str,
        hash: &attest_ledger::Hash32,
        seq: u64,
    ) -> Option<Vec<u8>> {
        let reason = match self.payloads.get(hash, seq) {
            Ok(Some(bytes)) => return Some(bytes),
            Ok(None) => format!("its {what} ({hash}) is not in the ledger (purged)"),
            Err(e) => format!("its {what} cannot be read: {e}"),
        };
        if let Ok(mut slot) = self.unavailable.lock() {
            slot.get_or_insert(Unavailable { row, reason });
        }
        None
    }

    fn read(&mut self, row: u64, info: &RowInfo) -> Result<Option<SourceRecord>, String> {
        let Some(bytes) = self.payload(row, "payload", &info.payload, info.seq) else {
            return Ok(None);
        };
        let raw: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("row {row}: the recorded payload is not JSON: {e}"))?;
        let mut quarantine_row = None;
        if let Some((h, seq)) = &info.detail {
            let Some(bytes) = self.payload(row, "detail", h, *seq) else {
                return Ok(None);
            };
            let detail = read_detail(&bytes).map_err(|e| format!("row {row}: detail: {e}"))?;
            if let Some(order) = detail.order {
                self.order = order;
            }
            quarantine_row = detail.quarantine;
        }
        let raw = apply_shape(raw, &self.order).map_err(|e| format!("row {row}: {e}"))?;
        let parsed = match (&info.quarantined, quarantine_row) {
            (Some(error), Some(row)) => Err(Quarantine {
                row,
                error: error.clone(),
            }),
            (Some(_), None) => {
                if let Ok(mut slot) = self.unavailable.lock() {
                    slot.get_or_insert(Unavailable {
                        row,
                        reason: "it was quarantined, and the record does not keep its quarantine \
                                 row (recorded by an attest without row details)"
                            .into(),
                    });
                }
                return Ok(None);
            }
            (None, _) => self.validate(row, raw.clone())?,
        };
        Ok(Some(SourceRecord { raw, parsed }))
    }

    /// Validates a row the run accepted, as its source did.
    fn validate(
        &mut self,
        row: u64,
        raw: Value,
    ) -> Result<Result<crate::value::Row, Quarantine>, String> {
        let result = match raw {
            Value::Object(fields) if self.csv => self.validator.validate(fields),
            _ if self.csv => {
                return Err(format!(
                    "row {row}: a CSV row the run accepted is recorded as {}, not as named cells",
                    kind(&raw)
                ))
            }
            v => self.validator.validate_value(v),
        };
        Ok(result.map_err(|rej| Quarantine {
            row: rej.row,
            error: rej.message,
        }))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
        Value::String(_) => "a string",
        _ => "a scalar",
    }
}

impl RowSource for RecordedSource {
    fn next_record(&mut self) -> Option<Result<SourceRecord, SourceError>> {
        let Some(info) = self.rows.get(self.next).cloned() else {
            return self.fail_at_end.take().map(|e| Err(SourceError(e)));
        };
        let row = self.next as u64;
        self.next += 1;
        match self.read(row, &info) {
            Ok(Some(record)) => Some(Ok(record)),
            // The row cannot be re-executed: stop, as a source that failed.
            Ok(None) => {
                self.next = self.rows.len();
                self.fail_at_end = None;
                Some(Err(SourceError(format!("row {row} cannot be re-executed"))))
            }
            Err(e) => {
                self.next = self.rows.len();
                self.fail_at_end = None;
                Some(Err(SourceError(e)))
            }
        }
    }
}
