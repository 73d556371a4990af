//! Purging payload bytes, recorded in a hash chain of its own: the purge log.
//!
//! A run's chain cannot record its own purges (a finished run takes no more events, and
//! purges happen long after), so every purge appends one record to a ledger-wide chain
//! framed and hashed exactly like a run's log (`docs/ledger-format.md` §4–5), under the key
//! `Z ‖ u64be(seq)`. The record names every hash it purged. The tombstone `X ‖ hash` left
//! beside each purged payload holds the purge record's seq, as a fast index only:
//! verification counts a missing payload as purged only when a record of an intact purge
//! log names its hash. A tombstone without such a record is tampering (`PAYLOAD_MISSING`).
//! Payloads stored in packs ([`crate::packs`]) are purged in place: their entry keeps its
//! hash and loses its bytes, and that purged entry is their tombstone.

use crate::codec;
use crate::error::{LedgerError, Result};
use crate::event::Event;
use crate::ids::{Hash32, RunId};
use crate::ledger::Ledger;
use crate::packs;
use crate::payload_index;
use crate::projection::{self, RunStatus};
use crate::store::Store;
use crate::verify::Head;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Key prefix of the purge log.
const PURGE_LOG: u8 = b'Z';

fn record_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = PURGE_LOG;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The body of one purge-log record (bincode, like an event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRecord {
    pub at_ms: u64,
    /// Why, in the operator's words (e.g. "retention: older than 30 days").
    pub reason: String,
    /// The runs whose payloads were purged (informational; the hashes are what counts).
    pub runs: Vec<RunId>,
    /// Every payload hash this purge removed, sorted.
    pub hashes: Vec<Hash32>,
}

/// A purge-log record as read back: its place in the chain and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeEntry {
    pub seq: u64,
    pub hash: Hash32,
    pub record: PurgeRecord,
}

/// The purge log as read: every record up to the first that fails its checks.
#[derive(Clone, Debug, Default)]
pub struct PurgeLog {
    pub entries: Vec<PurgeEntry>,
    /// Where and why the log stops being trustworthy; records from there on are ignored.
    pub broken: Option<(u64, String)>,
}

impl PurgeLog {
    /// The head of the intact part (count and last hash), if it has any record.
    pub fn head(&self) -> Option<Head> {
        self.entries.last().map(|e| Head {
            count: e.seq + 1,
            hash: e.hash,
        })
    }

    /// Every hash an intact record names.
    pub fn purged(&self) -> HashSet<Hash32> {
        self.purged_since(0)
    }

    /// Every hash an intact record made at or after `ms` names. A purge older than a run
    /// cannot account for that run's payloads: the run stored its payloads again when it
    /// referenced them, so their absence is someone else's doing.
    pub fn purged_since(&self, ms: u64) -> HashSet<Hash32> {
        self.entries
            .iter()
            .filter(|e| e.record.at_ms >= ms)
            .flat_map(|e| e.record.hashes.iter().copied())
            .collect()
    }
}

/// What one purge did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeReceipt {
    /// The purge-log records written, in order (none when there was nothing to purge;
    /// several when the hashes would not fit one record).
    pub entries: Vec<PurgeEntry>,
    /// How many payloads still had bytes to remove.
    pub removed: usize,
}

/// Most hashes one purge-log record names: 6.4 MB of hashes, well inside the decoder's
/// limit (`codec::DECODE_LIMIT`), which a larger record would exceed and so break the log.
const HASHES_PER_RECORD: usize = 200_000;

/// Reads and checks the purge log: keys contiguous from 0, each record framed, hashed and
/// chained to the one before, its body decodable.
pub(crate) fn read_log(store: &Store) -> Result<PurgeLog> {
    let mut log = PurgeLog::default();
    let mut prev = Hash32::ZERO;
    for (expected, item) in (0u64..).zip(store.db.scan_prefix([PURGE_LOG])) {
        let (key, value) = item.map_err(|e| store.storage_err(e))?;
        let mut broken = |why: String| log.broken = Some((expected, why));
        if key.as_ref() != record_key(expected) {
            broken("the purge log's keys are not contiguous from 0".into());
            break;
        }
        let mut records = codec::read_segment(&value);
        let record = match (records.next(), records.next()) {
            (Some(Ok(r)), None) => r,
            _ => {
                broken("the value is not exactly one framed record".into());
                break;
            }
        };
        if record.seq != expected {
            broken(format!("the record says seq {}", record.seq));
            break;
        }
        if record.computed_hash() != record.hash {
            broken("the record does not hash to its stored hash".into());
            break;
        }
        if record.prev != prev {
            broken("the record is not chained to the one before".into());
            break;
        }
        let body: PurgeRecord = match codec::decode(record.event_bytes) {
            Ok(b) => b,
            Err(e) => {
                broken(format!("the record's body does not decode: {e}"));
                break;
            }
        };
        prev = record.hash;
        log.entries.push(PurgeEntry {
            seq: expected,
            hash: record.hash,
            record: body,
        });
    }
    Ok(log)
}

/// Removes the bytes of `hashes` and records the purge, in one atomic batch, then flushes.
/// Refuses to extend a purge log that does not verify: a purge chained to a forged record
/// would launder it.
pub(crate) fn purge(
    store: &Store,
    runs: Vec<RunId>,
    hashes: &[Hash32],
    reason: &str,
    at_ms: u64,
) -> Result<PurgeReceipt> {
    purge_in_records(store, runs, hashes, reason, at_ms, HASHES_PER_RECORD)
}

fn purge_in_records(
    store: &Store,
    runs: Vec<RunId>,
    hashes: &[Hash32],
    reason: &str,
    at_ms: u64,
    per_record: usize,
) -> Result<PurgeReceipt> {
    let mut hashes = hashes.to_vec();
    hashes.sort_unstable();
    hashes.dedup();
    let mut receipt = PurgeReceipt {
        entries: Vec::new(),
        removed: 0,
    };
    if hashes.is_empty() {
        return Ok(receipt);
    }
    let log = read_log(store)?;
    if let Some((seq, why)) = &log.broken {
        return Err(LedgerError::Corrupt(format!(
            "the purge log is broken at record {seq} ({why}); refusing to purge more"
        )));
    }
    let (mut seq, mut prev) = log.head().map_or((0, Hash32::ZERO), |h| (h.count, h.hash));
    let mut batch = sled::Batch::default();
    // Bytes in packs: every copy, in every run, becomes a purged entry.
    let in_packs = purge_packs(store, &hashes, &mut batch)?;
    for chunk in hashes.chunks(per_record.max(1)) {
        let record = PurgeRecord {
            at_ms,
            reason: reason.to_string(),
            runs: runs.clone(),
            hashes: chunk.to_vec(),
        };
        let body = codec::encode(&record)?;
        let mut framed = Vec::with_capacity(codec::RECORD_HEADER_LEN + body.len());
        let hash = codec::write_record(&mut framed, seq, &prev, &body);
        for h in chunk {
            // Bytes under a key of their own (stored outside a commit, or before packs):
            // removed, and a tombstone left in their place. A hash found nowhere gets one
            // too, so that its absence is accounted for by this record.
            let key = projection::payload_key(h);
            let loose = store
                .db
                .contains_key(&key)
                .map_err(|e| store.storage_err(e))?;
            if loose || in_packs.contains(h) {
                receipt.removed += 1;
            }
            if loose || !in_packs.contains(h) {
                batch.remove(key);
                batch.insert(projection::purged_key(h), &seq.to_be_bytes()[..]);
            }
        }
        batch.insert(&record_key(seq)[..], framed);
        receipt.entries.push(PurgeEntry { seq, hash, record });
        prev = hash;
        seq += 1;
    }
    store
        .db
        .apply_batch(batch)
        .map_err(|e| store.storage_err(e))?;
    store.flush()?;
    Ok(receipt)
}

/// Above this many hashes, a run's packs are all read rather than looked up one hash at a
/// time through the index.
const SCAN_PACKS_FROM: usize = 64;

/// Adds to `batch` every pack, of every run, holding live bytes of one of `hashes` (sorted),
/// rewritten with those entries purged. Returns the hashes that had live bytes.
fn purge_packs(
    store: &Store,
    hashes: &[Hash32],
    batch: &mut sled::Batch,
) -> Result<HashSet<Hash32>> {
    let wanted: HashSet<Hash32> = hashes.iter().copied().collect();
    let mut removed = HashSet::new();
    for run in store.run_ids()? {
        let prefix = packs::pack_prefix(&run);
        let seqs: Vec<u64> = if hashes.len() > SCAN_PACKS_FROM {
            let mut all = Vec::new();
            for item in store.db.scan_prefix(&prefix) {
                let (key, _) = item.map_err(|e| store.storage_err(e))?;
                all.extend(packs::pack_seq(&key, &prefix));
            }
            all
        } else {
            payload_index::packs_holding(store, &run, hashes)?
        };
        for seq in seqs {
            let key = packs::pack_key(&run, seq);
            let Some(pack) = store.get_raw(&key)? else {
                continue;
            };
            let rewritten = packs::purge_entries(&pack, |h| {
                let hit = wanted.contains(h);
                if hit {
                    removed.insert(*h);
                }
                hit
            })?;
            if let Some((pack, _)) = rewritten {
                batch.insert(key, pack);
            }
        }
    }
    Ok(removed)
}

/// Edits every stored copy of `hash`'s bytes behind the ledger's back (see
/// [`Ledger::raw_edit_payload`]). A copy under its own key is replaced or removed; purging
/// it leaves the tombstone key, as [`purge`] does, but no purge-log record.
pub(crate) fn edit_everywhere(
    store: &Store,
    hash: &Hash32,
    edit: packs::Edit<'_>,
) -> Result<usize> {
    let mut batch = sled::Batch::default();
    let mut changed = 0;
    let key = projection::payload_key(hash);
    if store.get_raw(&key)?.is_some() {
        changed += 1;
        match edit {
            packs::Edit::Keep => changed -= 1,
            packs::Edit::Replace(bytes) => batch.insert(key, bytes),
            packs::Edit::Remove => batch.remove(key),
            packs::Edit::Purge => {
                batch.remove(key);
                batch.insert(projection::purged_key(hash), &0u64.to_be_bytes()[..]);
            }
        }
    }
    for run in store.run_ids()? {
        for seq in payload_index::packs_holding(store, &run, std::slice::from_ref(hash))? {
            let key = packs::pack_key(&run, seq);
            let Some(pack) = store.get_raw(&key)? else {
                continue;
            };
            let edited = packs::rewrite(&pack, |e| {
                // Only bytes: a purged entry is left as the purge left it.
                if e.hash == *hash && e.bytes.is_some() {
                    edit
                } else {
                    packs::Edit::Keep
                }
            })?;
            if let Some((pack, n)) = edited {
                batch.insert(key, pack);
                changed += n;
            }
        }
    }
    store
        .db
        .apply_batch(batch)
        .map_err(|e| store.storage_err(e))?;
    Ok(changed)
}

/// What `attest purge --payloads --older-than DAYS` chose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Finished runs started before the cut-off: their payloads go.
    pub runs: Vec<RunId>,
    /// Payloads referenced by those runs and by no run that is kept.
    pub hashes: Vec<Hash32>,
}

/// The payloads a run's events reference, except its configuration: a run's configuration
/// is kept so the run can still be explained and re-executed from its recorded sources.
fn run_payloads(store: &Store, run: &RunId, out: &mut HashSet<Hash32>) -> Result<()> {
    let mut refs = Vec::new();
    crate::records::for_each(store, run, |r| {
        let event: Event = r.event()?;
        if !matches!(event, Event::RunStarted { .. }) {
            crate::verify::referenced_payloads(&event, &mut refs);
        }
        out.extend(refs.drain(..));
        Ok(())
    })
}

impl Ledger {
    /// The purge log, checked (see [`PurgeLog::broken`]).
    pub fn purge_log(&self) -> Result<PurgeLog> {
        read_log(self.store())
    }

    /// Chooses what a retention purge removes: payloads of finished runs started before
    /// `cutoff_ms`, except any a kept run (younger, running or resumable) also references,
    /// since the payload store is shared between runs.
    pub fn retention_plan(&self, cutoff_ms: u64) -> Result<RetentionPlan> {
        let store = self.store();
        let mut old = HashSet::new();
        let mut kept = HashSet::new();
        let mut plan = RetentionPlan::default();
        for r in self.runs()? {
            let finished = matches!(r.status, RunStatus::Completed | RunStatus::Failed);
            if finished && r.started_at_ms < cutoff_ms {
                run_payloads(store, &r.run, &mut old)?;
                plan.runs.push(r.run);
            } else {
                run_payloads(store, &r.run, &mut kept)?;
            }
        }
        plan.hashes = old.difference(&kept).copied().collect();
        plan.hashes.sort_unstable();
        Ok(plan)
    }

    /// Purges payload bytes and records the purge in the purge log, atomically. Events
    /// keep the hashes, so every chain still verifies, and verification reports these
    /// payloads as purged. `runs` names the runs the purge was for (may be empty).
    pub fn purge_recorded(
        &self,
        runs: Vec<RunId>,
        hashes: &[Hash32],
        reason: &str,
        at_ms: u64,
    ) -> Result<PurgeReceipt> {
        purge(self.store(), runs, hashes, reason, at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_purge_is_split_into_chained_records_that_all_vouch() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let hashes: Vec<Hash32> = (0..7u8)
            .map(|i| ledger.put_payload(&[i]).unwrap())
            .collect();
        let receipt = purge_in_records(ledger.store(), vec![], &hashes, "retention", 5, 3).unwrap();
        assert_eq!(receipt.removed, 7);
        assert_eq!(
            receipt
                .entries
                .iter()
                .map(|e| e.record.hashes.len())
                .collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        let log = ledger.purge_log().unwrap();
        assert!(log.broken.is_none(), "{:?}", log.broken);
        assert_eq!(log.entries, receipt.entries);
        let purged = log.purged();
        assert!(hashes.iter().all(|h| purged.contains(h)));
        // The next purge continues the chain.
        let next = purge_in_records(ledger.store(), vec![], &hashes[..1], "again", 6, 3).unwrap();
        assert_eq!(next.entries[0].seq, 3);
        assert!(ledger.purge_log().unwrap().broken.is_none());
    }
}
