//! Reading a run's log records in order, for the tools that need every record as stored
//! (export, purge, finding a head by its hash). Verification has its own, faster walk.

use crate::codec::{self, RawRecord};
use crate::error::{LedgerError, Result};
use crate::ids::RunId;
use crate::projection;
use crate::store::Store;

/// Calls `f` on every record of `run`'s log in sequence order. A record that does not
/// frame is an error naming the run and the segment; chain checks are the caller's.
pub(crate) fn for_each(
    store: &Store,
    run: &RunId,
    mut f: impl FnMut(&RawRecord<'_>) -> Result<()>,
) -> Result<()> {
    for item in store.db.scan_prefix(projection::log_prefix(run)) {
        let (key, segment) = item.map_err(|e| store.storage_err(e))?;
        for record in codec::read_segment(&segment) {
            let record = record.map_err(|e| {
                LedgerError::Corrupt(format!(
                    "run {run}: a record in the log segment at key {} does not frame: {e}",
                    hex(&key)
                ))
            })?;
            f(&record)?;
        }
    }
    Ok(())
}

/// Calls `f` on every record of the one log segment of `run` that may hold `seq`: the
/// last segment whose first seq is at most `seq` (segment keys end in their first seq).
pub(crate) fn for_segment_holding(
    store: &Store,
    run: &RunId,
    seq: u64,
    mut f: impl FnMut(&RawRecord<'_>) -> Result<()>,
) -> Result<()> {
    let prefix = projection::log_prefix(run);
    let upto = projection::log_key(run, seq);
    let Some(item) = store.db.range(prefix.clone()..=upto).next_back() else {
        return Ok(());
    };
    let (key, segment) = item.map_err(|e| store.storage_err(e))?;
    if !key.starts_with(&prefix) {
        return Ok(());
    }
    for record in codec::read_segment(&segment) {
        let record = record.map_err(|e| {
            LedgerError::Corrupt(format!(
                "run {run}: a record in the log segment at key {} does not frame: {e}",
                hex(&key)
            ))
        })?;
        f(&record)?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
