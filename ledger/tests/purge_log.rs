//! Purges recorded in the hash-chained purge log: a recorded purge verifies as purged; a
//! payload missing without an intact record naming it is tampering; retention chooses only
//! what no kept run needs.

mod common;

use attest_ledger::packs::Edit;
use attest_ledger::verify::{FailureCode, VerifyOptions};
use attest_ledger::*;
use common::*;
use serde_json::json;

/// A finished run started at `started_at_ms` with one row per value; returns the row
/// payload hashes.
fn finished_run(ledger: &Ledger, id: &str, started_at_ms: u64, values: &[&str]) -> Vec<Hash32> {
    let run = ledger
        .start_run_with_id(
            run_id(id),
            RunStart {
                config: b"the same pipeline".to_vec(),
                engine_version: "test".into(),
                started_at_ms,
            },
        )
        .unwrap();
    register(&run, &[("src", NodeKind::Source), ("out", NodeKind::Sink)]);
    let mut hashes = Vec::new();
    for (row, v) in values.iter().enumerate() {
        let row = row as u64;
        let mut c = Commit::new();
        let payload = c.value(&json!({ "v": v })).unwrap();
        hashes.push(payload);
        c.push(Event::RowIngested {
            row,
            source: n("src"),
            payload,
        });
        c.push(written_to_out(row));
        run.submit(c, Durability::Buffered).unwrap();
    }
    run.append(vec![Event::RunFinished {
        status: FinalStatus::Completed,
    }])
    .unwrap();
    ledger.flush().unwrap();
    hashes
}

fn verify(ledger: &Ledger, run: &str) -> verify::VerifyReport {
    ledger
        .verify(&run_id(run), &VerifyOptions::default())
        .unwrap()
}

/// The purge-log record with seq `seq`, as stored.
fn purge_key(seq: u64) -> Vec<u8> {
    let mut k = vec![b'Z'];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

#[test]
fn a_recorded_purge_is_reported_as_purged_and_chained() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let h = finished_run(&ledger, "r", 1, &["a", "b", "c"]);
    let first = ledger
        .purge_recorded(vec![run_id("r")], &[h[0]], "retention", 10)
        .unwrap();
    let second = ledger
        .purge_recorded(vec![run_id("r")], &[h[2], h[2]], "erasure request", 20)
        .unwrap();
    assert_eq!((first.removed, second.removed), (1, 1));
    let report = verify(&ledger, "r");
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.payloads_purged, 2);
    assert_eq!(ledger.payload(&h[0]).unwrap(), None);

    let log = ledger.purge_log().unwrap();
    assert!(log.broken.is_none());
    assert_eq!(log.entries.len(), 2);
    assert_eq!(log.entries[1].record.hashes, vec![h[2]], "deduplicated");
    assert_eq!(log.entries[1].record.reason, "erasure request");
    let head = log.head().unwrap();
    assert_eq!(head.count, 2);
    assert_eq!(Some(head.hash), second.entries.last().map(|e| e.hash));
}

#[test]
fn a_payload_removed_without_a_recorded_purge_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let h = finished_run(&ledger, "r", 1, &["a", "b"]);
    ledger.purge_payloads(&[h[0]], "retention", 10).unwrap();
    // Row 1's payload deleted and given a tombstone by hand: no record names it.
    assert_eq!(ledger.raw_edit_payload(&h[1], Edit::Remove).unwrap(), 1);
    ledger
        .raw_db()
        .insert(projection::purged_key(&h[1]), &0u64.to_be_bytes()[..])
        .unwrap();
    let report = verify(&ledger, "r");
    let f = report.failure.expect("tampering is caught");
    assert_eq!(f.code, FailureCode::PayloadMissing);
    assert_eq!(f.expected, h[1].to_hex());
}

#[test]
fn a_payload_purged_in_its_pack_without_a_recorded_purge_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let h = finished_run(&ledger, "r", 1, &["a", "b"]);
    ledger.purge_payloads(&[h[0]], "retention", 10).unwrap();
    // Row 1's bytes dropped from its pack as a purge would, with no record naming it.
    assert_eq!(ledger.raw_edit_payload(&h[1], Edit::Purge).unwrap(), 1);
    assert_eq!(ledger.payload(&h[1]).unwrap(), None);
    let f = verify(&ledger, "r").failure.expect("tampering is caught");
    assert_eq!(f.code, FailureCode::PayloadMissing);
    assert_eq!(f.expected, h[1].to_hex());
}

#[test]
fn an_edited_purge_record_stops_vouching_for_its_purges() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let h = finished_run(&ledger, "r", 1, &["a", "b"]);
    ledger.purge_payloads(&[h[0]], "retention", 10).unwrap();
    assert!(verify(&ledger, "r").ok());
    // Someone adds row 1's hash to the recorded purge, re-encoding the record without
    // being able to fix its hash.
    let db = ledger.raw_db();
    let stored = db.get(purge_key(0)).unwrap().unwrap().to_vec();
    let record = codec::read_segment(&stored).next().unwrap().unwrap();
    let mut body: purge::PurgeRecord = codec::decode(record.event_bytes).unwrap();
    body.hashes.push(h[1]);
    let new_body = codec::encode(&body).unwrap();
    let mut framed = stored[..codec::RECORD_HEADER_LEN].to_vec();
    framed[..4].copy_from_slice(&(new_body.len() as u32).to_le_bytes());
    framed.extend_from_slice(&new_body);
    db.insert(purge_key(0), framed).unwrap();
    assert_eq!(ledger.raw_edit_payload(&h[1], Edit::Remove).unwrap(), 1);

    let log = ledger.purge_log().unwrap();
    assert_eq!(log.broken.as_ref().map(|b| b.0), Some(0));
    assert!(log.entries.is_empty());
    let f = verify(&ledger, "r").failure.expect("caught");
    assert_eq!(f.code, FailureCode::PayloadMissing);
    assert_eq!(
        f.expected,
        h[0].to_hex(),
        "the first payload is unvouched too"
    );
    // And the broken log is not extended.
    let err = ledger.purge_payloads(&[h[1]], "more", 11).unwrap_err();
    assert!(err.to_string().contains("purge log is broken"), "{err}");
}

#[test]
fn a_forged_record_appended_out_of_chain_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let h = finished_run(&ledger, "r", 1, &["a", "b"]);
    ledger.purge_payloads(&[h[0]], "retention", 10).unwrap();
    // A second record framed correctly but chained to nothing (prev = zero).
    let body = codec::encode(&purge::PurgeRecord {
        at_ms: 11,
        reason: "forged".into(),
        runs: vec![],
        hashes: vec![h[1]],
    })
    .unwrap();
    let mut framed = Vec::new();
    codec::write_record(&mut framed, 1, &Hash32::ZERO, &body);
    let db = ledger.raw_db();
    db.insert(purge_key(1), framed).unwrap();
    assert_eq!(ledger.raw_edit_payload(&h[1], Edit::Remove).unwrap(), 1);
    let log = ledger.purge_log().unwrap();
    assert_eq!(log.entries.len(), 1);
    assert_eq!(log.broken.as_ref().map(|b| b.0), Some(1));
    let f = verify(&ledger, "r").failure.expect("caught");
    assert_eq!(f.code, FailureCode::PayloadMissing);
    assert_eq!(f.expected, h[1].to_hex());
}

#[test]
fn retention_takes_old_finished_runs_and_spares_what_kept_runs_share() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let old = finished_run(&ledger, "old", 1_000, &["only-old", "shared"]);
    let young = finished_run(&ledger, "young", 5_000, &["shared", "only-young"]);
    assert_eq!(old[1], young[0]);
    let plan = ledger.retention_plan(2_000).unwrap();
    assert_eq!(plan.runs, vec![run_id("old")]);
    assert_eq!(
        plan.hashes,
        vec![old[0]],
        "the shared row and the configuration stay"
    );
    let everything = ledger.retention_plan(10_000).unwrap();
    assert_eq!(everything.runs.len(), 2);
    assert_eq!(everything.hashes.len(), 3);
    assert!(!everything
        .hashes
        .contains(&Hash32::of(b"the same pipeline")));
}

#[test]
fn a_purge_from_before_a_run_does_not_excuse_that_runs_missing_payload() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let old = finished_run(&ledger, "old", 1, &["same row"]);
    ledger
        .purge_recorded(vec![run_id("old")], &old, "retention", 10)
        .unwrap();
    // A later run ingests the same bytes, so the same hash, and stores them again.
    let new = finished_run(&ledger, "new", 20, &["same row"]);
    assert_eq!(new, old);
    assert!(ledger.payload(&new[0]).unwrap().is_some());
    assert!(verify(&ledger, "new").ok());
    // Deleted again without a purge: the old purge names the hash but predates the run.
    assert_eq!(ledger.raw_edit_payload(&new[0], Edit::Remove).unwrap(), 1);
    let f = verify(&ledger, "new").failure.expect("caught");
    assert_eq!(f.code, FailureCode::PayloadMissing);
    let report = verify(&ledger, "old");
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.payloads_purged, 1);
}
