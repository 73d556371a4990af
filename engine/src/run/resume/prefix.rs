//! Reading the input again up to where the run stopped.
//!
//! A resumed run continues the same source from its last checkpoint, so it reads the rows
//! before that point again, and checks every row the run had read against the payload
//! hash the run recorded: an input that changed since the run started is refused, since
//! the outputs would mix two inputs. The rows it needs are kept: those after the
//! checkpoint (they are processed again) and those whose tokens wait in an open batch.

use super::ResumeError;
use crate::run::io::{RowSource, SourceError, SourceRecord};
use attest_ledger::projection::{PKey, PVal};
use attest_ledger::{Hash32, Ledger, RunId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A source that first yields records already read, then the rest of another source.
struct Prefetched {
    ready: VecDeque<SourceRecord>,
    rest: Box<dyn RowSource>,
}

impl RowSource for Prefetched {
    fn next_record(&mut self) -> Option<Result<SourceRecord, SourceError>> {
        match self.ready.pop_front() {
            Some(r) => Some(Ok(r)),
            None => self.rest.next_record(),
        }
    }
}

/// The input read up to where the run stopped.
pub struct Prefix {
    /// The source, positioned at row `from` (the rows up to the run's `ingested` are held).
    pub source: Box<dyn RowSource>,
    /// The records of the rows asked for by `keep`.
    pub kept: BTreeMap<u64, SourceRecord>,
}

/// Reads rows `0..ingested` of `source`, checking each against the ledger; returns the
/// source positioned at row `from` and the records of the rows in `keep`.
pub fn read(
    ledger: &Ledger,
    run: &RunId,
    mut source: Box<dyn RowSource>,
    ingested: u64,
    from: u64,
    keep: &BTreeSet<u64>,
) -> Result<Prefix, ResumeError> {
    let mut ready = VecDeque::new();
    let mut kept = BTreeMap::new();
    for row in 0..ingested {
        let rec = match source.next_record() {
            Some(Ok(rec)) => rec,
            Some(Err(e)) => {
                return Err(ResumeError::Refused(format!(
                    "source: {e}; the run read {ingested} rows from this input without that error, so the input changed since run {run} started"
                )))
            }
            None => {
                return Err(ResumeError::Refused(format!(
                    "source: the input has {row} rows, but run {run} had read {ingested} from it; the input changed since the run started"
                )))
            }
        };
        check_row(ledger, run, row, &rec)?;
        if keep.contains(&row) {
            kept.insert(row, rec.clone());
        }
        if row >= from {
            ready.push_back(rec);
        }
    }
    Ok(Prefix {
        source: Box::new(Prefetched {
            ready,
            rest: source,
        }),
        kept,
    })
}

/// Row `row` must be what the run read: its raw record hashes to the recorded payload.
fn check_row(
    ledger: &Ledger,
    run: &RunId,
    row: u64,
    rec: &SourceRecord,
) -> Result<(), ResumeError> {
    let now = attest_ledger::canonical::hash_value(&rec.raw)
        .map_err(|e| ResumeError::Refused(format!("source: row {row} cannot be hashed: {e}")))?;
    let recorded = match ledger.projection(run, &PKey::Row(row))? {
        Some(PVal::Row(r)) => r.payload,
        _ => {
            return Err(ResumeError::Refused(format!(
                "run {run} records no row {row}, though it counts it as read; the ledger is inconsistent"
            )))
        }
    };
    if now != recorded {
        return Err(ResumeError::Refused(format!(
            "source: row {row} of the input is not the row run {run} read (recorded {}, now {}): the input changed since the run started",
            short(&recorded),
            short(&now)
        )));
    }
    Ok(())
}

fn short(h: &Hash32) -> String {
    h.to_hex()[..16].to_string()
}
