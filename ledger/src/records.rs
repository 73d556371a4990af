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
        for record in framed(run, &key, &segment) {
            f(&record?)?;
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
    for record in framed(run, &key, &segment) {
        f(&record?)?;
    }
    Ok(())
}

/// The records of one log segment of `run` stored at `key`; a record that does not frame
/// is an error naming the run and the segment.
fn framed<'s>(
    run: &'s RunId,
    key: &'s [u8],
    segment: &'s [u8],
) -> impl Iterator<Item = Result<RawRecord<'s>>> + 's {
    codec::read_segment(segment).map(move |record| {
        record.map_err(|e| {
            LedgerError::Corrupt(format!(
                "run {run}: a record in the log segment at key {} does not frame: {e}",
                hex(key)
            ))
        })
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Calls `f` on the records of `run`'s log from the newest back, until `f` returns
/// `Ok(false)`. Segments are read newest first, and the records of each in reverse.
pub(crate) fn for_each_rev(
    store: &Store,
    run: &RunId,
    mut f: impl FnMut(&RawRecord<'_>) -> Result<bool>,
) -> Result<()> {
    for item in store.db.scan_prefix(projection::log_prefix(run)).rev() {
        let (key, segment) = item.map_err(|e| store.storage_err(e))?;
        let records = framed(run, &key, &segment).collect::<Result<Vec<_>>>()?;
        for record in records.iter().rev() {
            if !f(record)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

impl crate::Ledger {
    /// Calls `f` with the events of `run` from the first, in order, until it returns
    /// `Ok(false)`: for reading what a run recorded at its start (its topology) without
    /// reading the rest.
    pub fn scan_events(
        &self,
        run: &RunId,
        mut f: impl FnMut(u64, &crate::Event) -> Result<bool>,
    ) -> Result<()> {
        for item in self.store().db.scan_prefix(projection::log_prefix(run)) {
            let (key, segment) = item.map_err(|e| self.store().storage_err(e))?;
            for record in framed(run, &key, &segment) {
                let record = record?;
                if !f(record.seq, &record.event()?)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Calls `f` with the events of `run` from the newest back, until it returns
    /// `Ok(false)`: for resume, which reads what a run recorded after its last checkpoint
    /// without reading the rest.
    pub fn scan_events_rev(
        &self,
        run: &RunId,
        mut f: impl FnMut(u64, &crate::Event) -> Result<bool>,
    ) -> Result<()> {
        for_each_rev(self.store(), run, |r| f(r.seq, &r.event()?))
    }

    /// The newest event of `run` for which `pick` returns something, with its seq: for
    /// resume, which needs the last checkpoint without reading the whole log.
    pub fn find_last_event<T>(
        &self,
        run: &RunId,
        mut pick: impl FnMut(&crate::Event) -> Option<T>,
    ) -> Result<Option<(u64, T)>> {
        let mut found = None;
        self.scan_events_rev(run, |seq, event| {
            if let Some(t) = pick(event) {
                found = Some((seq, t));
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// One projection record of `run` as the rules left it (`None` when absent): the state
    /// that resume rebuilds from and checks re-executed rows against.
    pub fn projection(
        &self,
        run: &RunId,
        key: &crate::projection::PKey,
    ) -> Result<Option<crate::projection::PVal>> {
        self.store().get_proj(run, key)
    }
}

#[cfg(test)]
mod tests {
    use crate::event::Event;
    use crate::projection::{PKey, PVal};
    use crate::test_support::{node, source_to_sink_run};

    fn checkpoint(rows: u64, note: &str) -> Event {
        Event::Checkpoint {
            rows_ingested: rows,
            note: note.into(),
        }
    }

    #[test]
    fn find_last_event_reads_from_the_newest_record_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = crate::Ledger::open(dir.path()).unwrap();
        let run = source_to_sink_run(&ledger);
        // Separate commits make separate log segments.
        run.append(vec![checkpoint(0, "first")]).unwrap();
        run.append(vec![checkpoint(0, "second"), checkpoint(0, "third")])
            .unwrap();
        run.append(vec![Event::RowIngested {
            row: 0,
            source: node("src"),
            payload: crate::Hash32::ZERO,
        }])
        .unwrap();
        let last = ledger
            .find_last_event(run.id(), |e| match e {
                Event::Checkpoint { note, .. } => Some(note.clone()),
                _ => None,
            })
            .unwrap();
        // genesis, one registration commit of 2, then the checkpoints at 3, 4, 5.
        assert_eq!(last, Some((5, "third".to_string())));
        let none = ledger
            .find_last_event(run.id(), |e| match e {
                Event::RunFinished { .. } => Some(()),
                _ => None,
            })
            .unwrap();
        assert_eq!(none, None);
        let mut newest = Vec::new();
        ledger
            .scan_events_rev(run.id(), |seq, e| {
                newest.push((seq, e.name()));
                Ok(seq > 5)
            })
            .unwrap();
        assert_eq!(
            newest,
            vec![(6, "row_ingested"), (5, "checkpoint")],
            "newest first, stopping when told"
        );
        let mut first = Vec::new();
        ledger
            .scan_events(run.id(), |seq, e| {
                first.push((seq, e.name()));
                Ok(seq < 2)
            })
            .unwrap();
        assert_eq!(
            first,
            vec![
                (0, "run_started"),
                (1, "node_registered"),
                (2, "node_registered")
            ]
        );
        match ledger
            .projection(run.id(), &PKey::Node(node("out")))
            .unwrap()
        {
            Some(PVal::Node(n)) => assert_eq!(n.next_ordinal, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ledger
                .projection(run.id(), &PKey::Node(node("nope")))
                .unwrap(),
            None
        );
    }
}
