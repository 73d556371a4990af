//! Verification of a run's payloads: every referenced hash must name stored bytes that hash
//! to it, or a purge recorded in the purge log.
//!
//! The run's packs ([`crate::packs`]) are read in seq order and every entry is hashed: one
//! sequential pass, whatever the number of payloads. What the packs do not hold is looked
//! for under keys of its own (payloads stored outside a commit, or by a ledger written
//! before packs), then in other runs' packs. The same pass checks the payload index
//! ([`crate::payload_index`]) against the packs.

use crate::error::{LedgerError, Result};
use crate::ids::{Hash32, RunId};
use crate::packs;
use crate::payload_index;
use crate::projection;
use crate::store::Store;
use crate::verify::{fail, Failure, FailureCode, VerifyReport};
use hashbrown::HashMap;

/// Where a referenced payload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PayloadState {
    Ok,
    Purged,
    Mismatch(Hash32),
    Missing,
}

/// Below this many payloads stored under their own keys they are looked up one by one;
/// above it those keys are read in key order and merged with the sorted references, which costs sled a
/// fraction of a lookup per payload.
const SCAN_FROM: usize = 1024;

/// Checks payloads stored under keys of their own against their hashes (or their purge
/// tombstones), answering for each in the order given.
fn loose_states(store: &Store, payloads: &[(Hash32, u64)]) -> Result<Vec<PayloadState>> {
    let check = |hash: &Hash32, bytes: Option<&[u8]>| -> Result<PayloadState> {
        Ok(match bytes {
            Some(bytes) => {
                let found = Hash32::of(bytes);
                if found == *hash {
                    PayloadState::Ok
                } else {
                    PayloadState::Mismatch(found)
                }
            }
            None => {
                if store.get_raw(&projection::purged_key(hash))?.is_some() {
                    PayloadState::Purged
                } else {
                    PayloadState::Missing
                }
            }
        })
    };
    let mut states = vec![PayloadState::Missing; payloads.len()];
    let mut order: Vec<usize> = (0..payloads.len()).collect();
    let mut next = 0;
    if payloads.len() >= SCAN_FROM {
        order.sort_unstable_by(|a, b| payloads[*a].0.cmp(&payloads[*b].0));
        let first = projection::payload_key(&payloads[order[0]].0);
        let last = projection::payload_key(&payloads[order[order.len() - 1]].0);
        // The store is shared by every run: when most of what the scan passes belongs to
        // other runs, it stops paying for itself, and the rest are looked up one by one.
        let budget = 4 * payloads.len();
        let mut passed = 0usize;
        let mut scan = store.db.range(first..=last);
        let mut current = scan.next().transpose().map_err(|e| store.storage_err(e))?;
        while next < order.len() && passed <= budget {
            let i = order[next];
            let want = projection::payload_key(&payloads[i].0);
            while let Some((k, _)) = &current {
                if k.as_ref() >= want.as_slice() {
                    break;
                }
                passed += 1;
                current = scan.next().transpose().map_err(|e| store.storage_err(e))?;
            }
            states[i] = match &current {
                Some((k, v)) if k.as_ref() == want.as_slice() => check(&payloads[i].0, Some(v))?,
                _ => check(&payloads[i].0, None)?,
            };
            next += 1;
        }
    }
    for &i in &order[next..] {
        let bytes = store.get_raw(&projection::payload_key(&payloads[i].0))?;
        states[i] = check(&payloads[i].0, bytes.as_deref())?;
    }
    Ok(states)
}

/// Counts the payload checks and names the first failing payload, in reference order, as
/// a one-by-one check that stops at the first failure would.
pub(crate) fn report(
    payloads: &[(Hash32, u64)],
    states: &[PayloadState],
    report: &mut VerifyReport,
) -> Option<Failure> {
    for ((hash, seq), state) in payloads.iter().zip(states) {
        match state {
            PayloadState::Ok => report.payloads_checked += 1,
            PayloadState::Purged => report.payloads_purged += 1,
            PayloadState::Mismatch(found) => {
                report.payloads_checked += 1;
                return Some(fail(
                    FailureCode::PayloadMismatch,
                    Some(*seq),
                    hash,
                    found,
                    "a stored payload does not hash to its key",
                ));
            }
            PayloadState::Missing => {
                return Some(fail(
                    FailureCode::PayloadMissing,
                    Some(*seq),
                    hash,
                    "nothing",
                    "a referenced payload is gone and no purge was recorded",
                ))
            }
        }
    }
    None
}

/// What checking a run's payloads found.
pub(crate) struct PayloadCheck {
    /// For each referenced payload, in the order given.
    pub states: Vec<PayloadState>,
    /// A pack that does not frame: its entries cannot be trusted to say what they hold.
    pub pack_failure: Option<Failure>,
    /// The payload index does not match the packs.
    pub index_failure: Option<Failure>,
}

/// Checks every payload `payloads` references (hash, seq of first reference).
pub(crate) fn check(
    store: &Store,
    run: &RunId,
    payloads: &[(Hash32, u64)],
) -> Result<PayloadCheck> {
    let mut scan = scan_packs(store, run, payloads.len())?;
    if scan.pack_failure.is_none() && !scan.altered.is_empty() {
        // An entry that does not hash to its key is tampering even when nothing references
        // it (its hash may have been edited); one that is referenced is reported where it
        // is first referenced, below.
        let referenced: hashbrown::HashSet<&Hash32> = payloads.iter().map(|(h, _)| h).collect();
        if let Some((seq, stated, found)) = scan
            .altered
            .iter()
            .find(|(_, stated, _)| !referenced.contains(stated))
        {
            scan.pack_failure = Some(fail(
                FailureCode::PayloadMismatch,
                Some(*seq),
                stated,
                found,
                "an entry of the payload pack stored with this seq does not hash to its key",
            ));
        }
    }
    let mut states = vec![PayloadState::Missing; payloads.len()];
    let mut rest = Vec::new();
    for (i, (hash, _)) in payloads.iter().enumerate() {
        match scan.held.get(hash) {
            Some(state) => states[i] = *state,
            None => rest.push(i),
        }
    }
    if !rest.is_empty() {
        let elsewhere: Vec<(Hash32, u64)> = rest.iter().map(|&i| payloads[i]).collect();
        let loose = loose_states(store, &elsewhere)?;
        let others: Vec<RunId> = store.run_ids()?.into_iter().filter(|r| r != run).collect();
        for (&i, state) in rest.iter().zip(loose) {
            states[i] = match state {
                PayloadState::Missing => in_other_runs(store, &others, &payloads[i].0)?,
                s => s,
            };
        }
    }
    Ok(PayloadCheck {
        states,
        pack_failure: scan.pack_failure,
        index_failure: scan.index_failure,
    })
}

/// What another run's packs hold for `hash` (a payload stored by one run and referenced
/// by another).
fn in_other_runs(store: &Store, runs: &[RunId], hash: &Hash32) -> Result<PayloadState> {
    let mut state = PayloadState::Missing;
    for other in runs {
        match payload_index::find(store, other, hash)? {
            payload_index::Found::Live(bytes) => {
                let found = Hash32::of(&bytes);
                return Ok(if found == *hash {
                    PayloadState::Ok
                } else {
                    PayloadState::Mismatch(found)
                });
            }
            payload_index::Found::Purged => state = PayloadState::Purged,
            payload_index::Found::Absent => {}
        }
    }
    Ok(state)
}

/// Every hash the run's packs hold, and what its entries say of it.
struct PackScan {
    held: HashMap<Hash32, PayloadState>,
    /// Entries whose bytes do not hash to their key: pack seq, key, hash of the bytes.
    altered: Vec<(u64, Hash32, Hash32)>,
    pack_failure: Option<Failure>,
    index_failure: Option<Failure>,
}

/// Two entries for one hash: a copy that does not hash to its key is tampering whatever the
/// other says; else one intact copy is enough.
fn merge(old: Option<PayloadState>, new: PayloadState) -> PayloadState {
    match (old, new) {
        (Some(m @ PayloadState::Mismatch(_)), _) | (_, m @ PayloadState::Mismatch(_)) => m,
        (Some(PayloadState::Ok), _) | (_, PayloadState::Ok) => PayloadState::Ok,
        _ => PayloadState::Purged,
    }
}

fn scan_packs(store: &Store, run: &RunId, expected: usize) -> Result<PackScan> {
    let mut scan = PackScan {
        held: HashMap::with_capacity(expected),
        altered: Vec::new(),
        pack_failure: None,
        index_failure: None,
    };
    let indexed = match payload_index::read_all(store, run) {
        Ok(i) => Some(i),
        Err(LedgerError::Corrupt(why)) => {
            scan.index_failure = Some(index_mismatch(why));
            None
        }
        Err(e) => return Err(e),
    };
    let below = indexed.as_ref().map_or(0, |(wm, _)| wm.next_seq);
    // The index entries the packs below the watermark call for.
    let mut derived = Vec::new();
    let prefix = packs::pack_prefix(run);
    'packs: for item in store.db.scan_prefix(&prefix) {
        let (key, pack) = item.map_err(|e| store.storage_err(e))?;
        let Some(seq) = packs::pack_seq(&key, &prefix) else {
            scan.pack_failure = Some(fail(
                FailureCode::PayloadMismatch,
                None,
                "a payload pack key ending in a seq",
                String::from_utf8_lossy(&key).replace('\0', "/"),
                "a payload pack is stored under a malformed key",
            ));
            break;
        };
        for e in packs::entries(&pack) {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    scan.pack_failure = Some(fail(
                        FailureCode::PayloadMismatch,
                        Some(seq),
                        "a well-framed payload pack",
                        err,
                        "the payload pack stored with this seq does not frame",
                    ));
                    break 'packs;
                }
            };
            let state = match e.bytes {
                Some(bytes) => {
                    let found = Hash32::of(bytes);
                    if found == e.hash {
                        PayloadState::Ok
                    } else {
                        scan.altered.push((seq, e.hash, found));
                        PayloadState::Mismatch(found)
                    }
                }
                None => PayloadState::Purged,
            };
            let old = scan.held.get(&e.hash).copied();
            scan.held.insert(e.hash, merge(old, state));
            if seq < below {
                derived.push((payload_index::prefix(&e.hash), seq));
            }
        }
    }
    // Every entry of the packs it covers must be in the index, or a lookup would not find
    // it. An index entry naming a pack that does not hold its hash only costs a lookup a
    // wasted read (a payload deleted from its pack is reported as missing, below).
    if let (Some((_, entries)), None) = (&indexed, &scan.pack_failure) {
        derived.sort_unstable();
        derived.dedup();
        let mut indexed = entries.iter().peekable();
        let unindexed = derived.iter().find(|want| {
            while indexed.next_if(|e| e < want).is_some() {}
            indexed.next_if(|e| e == want).is_none()
        });
        if let Some((prefix, seq)) = unindexed {
            scan.index_failure = Some(index_mismatch(format!(
                "no entry for hash prefix {prefix:016x} in the pack at seq {seq}"
            )));
        }
    }
    Ok(scan)
}

fn index_mismatch(why: String) -> Failure {
    fail(
        FailureCode::ProjectionMismatch,
        None,
        "a payload index that matches the run's packs",
        why,
        "the payload index does not match the payload packs",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

    /// The one-by-one check the scan must agree with.
    fn one_by_one(store: &Store, payloads: &[(Hash32, u64)]) -> Vec<PayloadState> {
        payloads
            .iter()
            .map(|(h, _)| match store.payload(h).unwrap() {
                Some(b) if Hash32::of(&b) == *h => PayloadState::Ok,
                Some(b) => PayloadState::Mismatch(Hash32::of(&b)),
                None if store.get_raw(&projection::purged_key(h)).unwrap().is_some() => {
                    PayloadState::Purged
                }
                None => PayloadState::Missing,
            })
            .collect()
    }

    #[test]
    fn the_loose_payload_scan_agrees_with_one_by_one_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let db = ledger.raw_db();
        let mut refs = Vec::new();
        for i in 0..3000u64 {
            let bytes = format!("payload {i}").into_bytes();
            let h = ledger.put_payload(&bytes).unwrap();
            match i % 100 {
                7 => {
                    db.insert(projection::payload_key(&h), &b"forged"[..])
                        .unwrap();
                }
                13 => {
                    db.remove(projection::payload_key(&h)).unwrap();
                }
                21 => {
                    db.remove(projection::payload_key(&h)).unwrap();
                    db.insert(projection::purged_key(&h), &[][..]).unwrap();
                }
                _ => {}
            }
            refs.push((h, i));
        }
        // Referenced hashes that were never stored at all.
        for i in 0..10u64 {
            refs.push((Hash32::of(format!("absent {i}").as_bytes()), 3000 + i));
        }
        let store = ledger.store();
        let want = one_by_one(store, &refs);
        assert!(want.iter().any(|s| matches!(s, PayloadState::Mismatch(_))));
        assert!(want.contains(&PayloadState::Purged));
        assert!(want.contains(&PayloadState::Missing));
        assert_eq!(loose_states(store, &refs).unwrap(), want);
        // Many more payloads belonging to nobody: the scan gives up part way and the rest
        // are looked up one by one, with the same answers.
        for i in 0..20_000u64 {
            ledger.put_payload(format!("other {i}").as_bytes()).unwrap();
        }
        assert_eq!(loose_states(store, &refs).unwrap(), want);
    }
}
