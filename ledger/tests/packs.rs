//! Payload packs and their index: a commit's payloads are stored with it and only with it,
//! every payload is found by its hash through each generation of the index and through
//! the tail a crash leaves unindexed, and any change to a pack or to the index made behind
//! the ledger's back is caught by verification.

mod common;

use attest_ledger::verify::{FailureCode, VerifyOptions};
use attest_ledger::*;
use common::*;
use proptest::prelude::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Commits `rows` rows of a source → map → sink run, `per_commit` rows to a commit, and
/// returns every payload hash they reference (two per row: the row and the map's output).
/// Commits are sent without waiting, so several land in one commit group.
fn rows(run: &RunHandle, from: u64, rows: u64, per_commit: u64) -> Vec<Hash32> {
    let mut hashes = Vec::new();
    let mut pending = Vec::new();
    let mut row = from;
    while row < from + rows {
        let mut c = Commit::new();
        for _ in 0..per_commit.min(from + rows - row) {
            let input = c.value(&json!({"row": row, "text": "some text"})).unwrap();
            let output = c.value(&json!({"row": row, "mapped": true})).unwrap();
            let state = StateId {
                subject: Subject::Token(TokenId::for_row(row)),
                node: n("map"),
                attempt: 1,
            };
            c.push(Event::RowIngested {
                row,
                source: n("src"),
                payload: input,
            });
            c.push(Event::StateOpened {
                state: state.clone(),
                input,
            });
            c.push(Event::StateClosed {
                state,
                result: StateResult::Completed { output },
                duration_us: 1,
            });
            c.push(written_to_out(row));
            hashes.extend([input, output]);
            row += 1;
        }
        pending.push(run.submit_nowait(c, Durability::Buffered).unwrap());
    }
    for p in pending {
        p.wait().unwrap();
    }
    hashes
}

fn started(ledger: &Ledger, id: &str) -> RunHandle {
    let run = start(ledger, id);
    register(
        &run,
        &[
            ("src", NodeKind::Source),
            ("map", NodeKind::Transform),
            ("out", NodeKind::Sink),
        ],
    );
    run
}

fn finish(run: &RunHandle) {
    run.submit(
        Commit::new().event(Event::RunFinished {
            status: FinalStatus::Completed,
        }),
        Durability::Flushed,
    )
    .unwrap();
}

fn verify(ledger: &Ledger, run: &RunHandle) -> verify::VerifyReport {
    ledger.verify(run.id(), &VerifyOptions::default()).unwrap()
}

/// Keys of the whole tree starting with `tag`.
fn keys(ledger: &Ledger, tag: u8) -> Vec<Vec<u8>> {
    ledger
        .raw_db()
        .scan_prefix([tag])
        .map(|kv| kv.unwrap().0.to_vec())
        .collect()
}

/// The run's watermark as stored: (next generation, next unindexed pack seq).
fn watermark(ledger: &Ledger, run: &RunId) -> Option<(u32, u64)> {
    let mut key = vec![payload_index::WATERMARK];
    key.extend_from_slice(run.as_str().as_bytes());
    let v = ledger.raw_db().get(key).unwrap()?;
    let gen = u32::from_be_bytes(v[..4].try_into().unwrap());
    let seq = u64::from_be_bytes(v[4..12].try_into().unwrap());
    Some((gen, seq))
}

#[test]
fn a_commits_payloads_are_stored_with_it_and_only_if_it_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = started(&ledger, "r");
    let stored = rows(&run, 0, 3, 3);
    let packs_before = keys(&ledger, packs::PACK).len();

    // A commit whose event breaks a rule (an unregistered source): refused whole.
    let mut refused = Commit::new();
    let orphan = refused.payload(b"never stored".to_vec());
    refused.push(Event::RowIngested {
        row: 3,
        source: n("nowhere"),
        payload: orphan,
    });
    assert!(run.submit(refused, Durability::Flushed).is_err());

    assert_eq!(keys(&ledger, packs::PACK).len(), packs_before);
    assert_eq!(ledger.payload(&orphan).unwrap(), None);
    for h in &stored {
        let bytes = ledger.run_payload(run.id(), h).unwrap().expect("stored");
        assert_eq!(Hash32::of(&bytes), *h);
        assert_eq!(ledger.payload(h).unwrap(), Some(bytes));
    }
    // No payload of the run has a key of its own: they are all in packs.
    assert!(keys(&ledger, b'B').is_empty());
    finish(&run);
    assert!(verify(&ledger, &run).ok());
}

#[test]
fn every_payload_is_found_through_each_generation_and_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    ledger.set_payload_index_generation(10);
    let run = started(&ledger, "r");
    // In small groups, so that many packs are written.
    let mut hashes = Vec::new();
    for i in 0..20 {
        hashes.extend(rows(&run, i * 2, 2, 1));
    }
    let (gens, _) = watermark(&ledger, run.id()).expect("generations written");
    assert!(gens >= 5, "{gens} generations");
    // A few more, short of a generation.
    ledger.set_payload_index_generation(1_000);
    hashes.extend(rows(&run, 40, 2, 1));
    let (_, indexed_to) = watermark(&ledger, run.id()).unwrap();
    // Some packs are past the watermark: the tail, found by reading it.
    assert!(keys(&ledger, packs::PACK)
        .iter()
        .any(|k| u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap()) >= indexed_to));
    for h in &hashes {
        assert!(ledger.payload(h).unwrap().is_some(), "{h}");
    }
    hashes.extend(rows(&run, 42, 5, 2));
    finish(&run);
    // The run's end indexes its tail.
    let (_, indexed_to) = watermark(&ledger, run.id()).unwrap();
    assert!(keys(&ledger, packs::PACK)
        .iter()
        .all(|k| u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap()) < indexed_to));
    for h in &hashes {
        let bytes = ledger.run_payload(run.id(), h).unwrap().expect("found");
        assert_eq!(Hash32::of(&bytes), *h);
    }
    let report = verify(&ledger, &run);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.payloads_checked, hashes.len() as u64 + 1);
}

#[test]
fn reopening_indexes_what_a_crash_left_unindexed() {
    let dir = tempfile::tempdir().unwrap();
    let (id, mut hashes) = {
        let ledger = Ledger::open(dir.path()).unwrap();
        let run = started(&ledger, "r");
        let hashes = rows(&run, 0, 30, 4);
        ledger.flush().unwrap();
        (run.id().clone(), hashes)
    };
    {
        // As a crash leaves it: packs stored, their index never written.
        let ledger = Ledger::open(dir.path()).unwrap();
        for tag in [payload_index::INDEX, payload_index::WATERMARK] {
            for k in keys(&ledger, tag) {
                ledger.raw_db().remove(k).unwrap();
            }
        }
        ledger.raw_db().flush().unwrap();
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    let (_, indexed_to) = watermark(&ledger, &id).expect("indexed when opened");
    assert!(indexed_to > 0);
    for h in &hashes {
        assert!(ledger.run_payload(&id, h).unwrap().is_some());
    }
    // The run goes on (as a resumed run would) and its index stays whole.
    let run = ledger.run(&id).unwrap();
    hashes.extend(rows(&run, 30, 6, 2));
    finish(&run);
    let report = verify(&ledger, &run);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.payloads_checked, hashes.len() as u64 + 1);
}

#[test]
fn an_index_entry_removed_hides_a_payload_and_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = started(&ledger, "r");
    let hashes = rows(&run, 0, 5, 5);
    finish(&run);
    let chunk = keys(&ledger, payload_index::INDEX).pop().unwrap();
    let mut value = ledger.raw_db().get(&chunk).unwrap().unwrap().to_vec();
    value.truncate(value.len() - 16);
    ledger.raw_db().insert(&chunk, value).unwrap();
    assert!(
        hashes
            .iter()
            .any(|h| ledger.run_payload(run.id(), h).unwrap().is_none()),
        "a payload the index no longer names is not found"
    );
    let f = verify(&ledger, &run).failure.expect("caught");
    assert_eq!(f.code, FailureCode::ProjectionMismatch, "{f}");
}

/// A closed ledger with a finished run whose index has several generations and one of
/// whose payloads was purged (a recorded purge): every proptest case edits a copy.
struct Fixture {
    dir: PathBuf,
    run: RunId,
    /// Every key of a pack or an index chunk, with its value's length.
    targets: Vec<(Vec<u8>, usize)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("packs-fixture");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let ledger = Ledger::open(&dir).unwrap();
        ledger.set_payload_index_generation(8);
        let run = started(&ledger, "packs");
        let hashes = rows(&run, 0, 12, 3);
        finish(&run);
        ledger.purge_payloads(&hashes[..1], "retention", 2).unwrap();
        let report = verify(&ledger, &run);
        assert!(report.ok(), "{:?}", report.failure);
        assert_eq!(report.payloads_purged, 1);
        let targets = [packs::PACK, payload_index::INDEX]
            .iter()
            .flat_map(|tag| ledger.raw_db().scan_prefix([*tag]))
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.len())
            })
            .collect();
        let id = run.id().clone();
        drop(run);
        drop(ledger);
        Fixture {
            dir,
            run: id,
            targets,
        }
    })
}

fn open_copy(from: &Path) -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(from, &dir.path().join("ledger"));
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    (dir, ledger)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever byte of whatever pack or index chunk is changed, verification fails.
    #[test]
    fn any_changed_byte_of_a_pack_or_the_index_is_caught(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let f = fixture();
        let (key, len) = &f.targets[which.index(f.targets.len())];
        let (_dir, ledger) = open_copy(&f.dir);
        let mut value = ledger.raw_db().get(key).unwrap().unwrap().to_vec();
        prop_assert_eq!(value.len(), *len);
        value[at.index(*len)] ^= flip;
        ledger.raw_db().insert(key.as_slice(), value).unwrap();
        let report = ledger.verify(&f.run, &VerifyOptions::default()).unwrap();
        let failure = report.failure;
        prop_assert!(failure.is_some(), "unnoticed: key {:?}", String::from_utf8_lossy(key));
        let code = failure.map(|f| f.code);
        prop_assert!(
            matches!(
                code,
                Some(
                    FailureCode::PayloadMismatch
                        | FailureCode::PayloadMissing
                        | FailureCode::ProjectionMismatch
                )
            ),
            "{:?}",
            code
        );
    }
}

/// A group's records and payloads are cut into values of at most 7 KiB (a larger value
/// only for one record or one commit's payloads on its own), so that sled keeps its tree
/// nodes inline and its cache counts them: with one value per group a run's whole log
/// and payloads stayed in memory. Cutting loses nothing: the segments are contiguous,
/// every payload is found by its hash, and the run verifies.
#[test]
fn a_large_group_is_stored_as_small_segments_and_packs() {
    const CHUNK: usize = 7 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = started(&ledger, "r");
    // One commit of 300 rows (1,200 events, 600 payloads), then 1,000 one-row commits sent
    // without waiting, which the writer folds into groups.
    let mut hashes = rows(&run, 0, 300, 300);
    hashes.extend(rows(&run, 300, 1000, 1));
    finish(&run);

    let mut log_prefix = vec![b'L'];
    log_prefix.extend_from_slice(run.id().as_str().as_bytes());
    log_prefix.push(0);
    let segments: Vec<(Vec<u8>, sled::IVec)> = ledger
        .raw_db()
        .scan_prefix(&log_prefix)
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (k.to_vec(), v)
        })
        .collect();
    assert!(segments.len() > 20, "{} segments", segments.len());
    let mut next_seq = 0u64;
    for (key, segment) in &segments {
        let first = u64::from_be_bytes(key[log_prefix.len()..].try_into().unwrap());
        assert_eq!(first, next_seq, "segments are contiguous");
        // Records: u32le event length, then a 78-byte header in all.
        let mut at = 0;
        let mut records = 0;
        while at < segment.len() {
            let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
            at += 78 + len;
            records += 1;
        }
        assert_eq!(at, segment.len());
        assert!(
            segment.len() <= CHUNK || records == 1,
            "a segment of {} bytes holds {records} records",
            segment.len()
        );
        next_seq += records;
    }

    let pack_values: Vec<sled::IVec> = ledger
        .raw_db()
        .scan_prefix(packs::pack_prefix(run.id()))
        .map(|kv| kv.unwrap().1)
        .collect();
    assert!(pack_values.len() > 10, "{} packs", pack_values.len());
    // Every pack but the one holding the single large commit's payloads is small.
    let large = pack_values.iter().filter(|p| p.len() > CHUNK).count();
    assert!(large <= 1, "{large} packs over {CHUNK} bytes");

    for h in &hashes {
        let bytes = ledger.run_payload(run.id(), h).unwrap().expect("stored");
        assert_eq!(Hash32::of(&bytes), *h);
    }
    let report = verify(&ledger, &run);
    assert!(report.ok(), "{:?}", report.failure);
    assert!(report.payloads_checked >= hashes.len() as u64);
}
