//! Tampering: a real run is written and closed, then copies of its directory are edited
//! behind the ledger's back (records, segments, projections, payloads) and verification
//! must name each edit with its stable code and the sequence number where it shows.

mod common;

use attest_ledger::codec::{self, RECORD_HEADER_LEN};
use attest_ledger::packs::Edit;
use attest_ledger::projection::{self, PKey, PVal};
use attest_ledger::rules::{self, MemProj};
use attest_ledger::verify::{FailureCode, Head, VerifyOptions};
use attest_ledger::*;
use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The closed ledger every test copies.
struct Fixture {
    dir: PathBuf,
    run: RunId,
    /// The head as an outside observer recorded it when the run ended.
    head: Head,
    /// The log as written, for locating records.
    log: Vec<LogEntry>,
}

const ROWS: u64 = 4;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build)
}

/// A run with several tokens, states, calls, routes and payloads, and several multi-record
/// segments with more segments after them.
fn build() -> Fixture {
    // Kept for the whole test binary (a static is never dropped), so it lives in the
    // directory Cargo provides for integration tests' data rather than a temp dir that
    // would be left behind; a previous run's copy is replaced.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tamper-fixture");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let ledger = Ledger::open(&dir).unwrap();
    let run = start(&ledger, "tamper");
    register(
        &run,
        &[
            ("src", NodeKind::Source),
            ("classify", NodeKind::Transform),
            ("gate", NodeKind::Gate),
            ("flagged", NodeKind::Sink),
            ("clean", NodeKind::Sink),
        ],
    );
    let mut ingest = Commit::new();
    let mut inputs = Vec::new();
    for row in 0..ROWS {
        let payload = ingest
            .value(&json!({"id": row, "text": format!("tender {row}")}))
            .unwrap();
        inputs.push(payload);
        ingest.push(Event::RowIngested {
            row,
            source: n("src"),
            payload,
        });
    }
    run.submit(ingest, Durability::Buffered).unwrap();
    let mut ordinals = [0u64; 2];
    for row in 0..ROWS {
        let token = TokenId::for_row(row);
        let st = run
            .open_state(
                Subject::Token(token.clone()),
                n("classify"),
                inputs[row as usize],
            )
            .unwrap();
        for attempt_call in 0..=(row % 2) {
            let call = st
                .allocate_call(
                    "llm",
                    format!("{{\"prompt\":\"classify {row}/{attempt_call}\"}}").into_bytes(),
                    None,
                )
                .unwrap();
            st.complete_call(
                &call,
                CallOutcome::Responded { status: Some(200) },
                Some(format!("{{\"flag\":{}}}", row % 2 == 0).into_bytes()),
                1000 + row,
            )
            .unwrap();
        }
        let output = ledger
            .put_value(&json!({"id": row, "flag": row % 2 == 0}))
            .unwrap();
        st.close(StateResult::Completed { output }, 2000).unwrap();
        // The gate's state, its route and the outcome: one multi-record segment per row.
        let (label, sink, which) = if row % 2 == 0 {
            ("flagged", "flagged", 0)
        } else {
            ("clean", "clean", 1)
        };
        let gate_state = StateId {
            subject: Subject::Token(token.clone()),
            node: n("gate"),
            attempt: 1,
        };
        let mut commit = Commit::new();
        commit.items.push(Item::OpenState {
            subject: Subject::Token(token.clone()),
            node: n("gate"),
            input: output,
        });
        commit.push(Event::RouteDecided {
            state: gate_state.clone(),
            token: token.clone(),
            label: label.into(),
            to: vec![n(sink)],
        });
        commit.push(Event::StateClosed {
            state: gate_state,
            result: StateResult::Completed { output },
            duration_us: 3,
        });
        commit.push(Event::TokenOutcome {
            token,
            outcome: Outcome::Routed {
                write: SinkWrite {
                    sink: n(sink),
                    ordinal: ordinals[which],
                },
            },
        });
        ordinals[which] += 1;
        run.submit(commit, Durability::Buffered).unwrap();
    }
    run.append(vec![
        Event::ArtifactWritten {
            sink: n("flagged"),
            path: "flagged.csv".into(),
            content_hash: Hash32::of(b"flagged rows"),
            size: 12,
            rows: ordinals[0],
        },
        Event::ArtifactWritten {
            sink: n("clean"),
            path: "clean.csv".into(),
            content_hash: Hash32::of(b"clean rows"),
            size: 10,
            rows: ordinals[1],
        },
        Event::Checkpoint {
            rows_ingested: ROWS,
            note: "end of source".into(),
        },
        Event::RunFinished {
            status: FinalStatus::Completed,
        },
    ])
    .unwrap();
    ledger.flush().unwrap();
    let report = assert_verifies(&ledger, run.id());
    let head = report.head.expect("a verified run has a head");
    let log = read_log(&ledger, run.id());
    assert_eq!(head.count, log.len() as u64);
    let run = run.id().clone();
    drop(ledger);
    Fixture {
        dir,
        run,
        head,
        log,
    }
}

/// A fresh copy of the fixture's directory, opened.
struct Copy {
    _dir: tempfile::TempDir,
    ledger: Ledger,
}

fn copy() -> Copy {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("ledger");
    copy_dir(&f.dir, &path);
    let ledger = Ledger::open(&path).unwrap();
    Copy { _dir: dir, ledger }
}

/// Verifies the fixture's run in `ledger` and returns the failure's (code, seq).
fn failure(ledger: &Ledger, opts: &VerifyOptions) -> (FailureCode, Option<u64>) {
    let report = ledger.verify(&fixture().run, opts).unwrap();
    match report.failure {
        Some(f) => (f.code, f.seq),
        None => panic!("tampering went unnoticed: {report:?}"),
    }
}

fn plain() -> VerifyOptions {
    VerifyOptions::default()
}

fn with_head() -> VerifyOptions {
    VerifyOptions {
        expected_head: Some(fixture().head),
        ..VerifyOptions::default()
    }
}

/// One stored log segment: its key and records.
#[derive(Clone)]
struct Segment {
    key: Vec<u8>,
    records: Vec<Rec>,
}

/// One record's stored fields, owned.
#[derive(Clone, Debug)]
struct Rec {
    seq: u64,
    prev: Hash32,
    hash: Hash32,
    body: Vec<u8>,
}

impl Rec {
    /// The record's bytes exactly as stored (stored hash kept even if stale).
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // write_record frames the record and computes the hash; the stored hash field is
        // then overwritten so that stale hashes can be written on purpose.
        codec::write_record(&mut out, self.seq, &self.prev, &self.body);
        out[RECORD_HEADER_LEN - 32..RECORD_HEADER_LEN].copy_from_slice(&self.hash.0);
        out
    }
    /// Recomputes the record's own hash from its fields.
    fn rehash(&mut self) {
        self.hash = codec::record_hash(codec::FORMAT_VERSION, self.seq, &self.prev, &self.body);
    }
}

fn segments(ledger: &Ledger) -> Vec<Segment> {
    ledger
        .raw_db()
        .scan_prefix(projection::log_prefix(&fixture().run))
        .map(|kv| {
            let (k, v) = kv.unwrap();
            let records = codec::read_segment(&v)
                .map(|r| {
                    let r = r.unwrap();
                    Rec {
                        seq: r.seq,
                        prev: r.prev,
                        hash: r.hash,
                        body: r.event_bytes.to_vec(),
                    }
                })
                .collect();
            Segment {
                key: k.to_vec(),
                records,
            }
        })
        .collect()
}

fn write_segment(ledger: &Ledger, seg: &Segment) {
    let bytes: Vec<u8> = seg.records.iter().flat_map(Rec::bytes).collect();
    ledger.raw_db().insert(&seg.key, bytes).unwrap();
}

/// The first segment with at least `min` records that has another segment after it.
fn middle_segment(ledger: &Ledger, min: usize) -> Segment {
    let segs = segments(ledger);
    segs[..segs.len() - 1]
        .iter()
        .find(|s| s.records.len() >= min)
        .cloned()
        .expect("the fixture has multi-record segments in the middle")
}

/// Seq of the first record whose event matches.
fn seq_of(pred: impl Fn(&Event) -> bool) -> u64 {
    fixture()
        .log
        .iter()
        .find(|e| pred(&e.event))
        .expect("the fixture has such an event")
        .seq
}

/// Attacker's tool: rewrites every record from `from` on so that each links to the one
/// before it and hashes correctly, i.e. a consistent chain with a rewritten history.
fn rechain(ledger: &Ledger, from: u64) {
    let mut prev: Option<Hash32> = None;
    for mut seg in segments(ledger) {
        let mut changed = false;
        for rec in &mut seg.records {
            if rec.seq >= from {
                if let Some(p) = prev {
                    rec.prev = p;
                }
                rec.rehash();
                changed = true;
            }
            prev = Some(rec.hash);
        }
        if changed {
            write_segment(ledger, &seg);
        }
    }
}

/// Attacker's tool: replaces the run's projections with those the (edited) log produces,
/// built with the ledger's own public `apply`.
fn rebuild_projections(ledger: &Ledger) {
    let run = &fixture().run;
    let db = ledger.raw_db();
    let mut mem = MemProj::default();
    for seg in segments(ledger) {
        for rec in seg.records {
            let event: Event = codec::decode(&rec.body).unwrap();
            rules::apply(&mut mem, run, rec.seq, rec.hash, &event).unwrap();
        }
    }
    for kv in db.scan_prefix(projection::proj_prefix(run)) {
        db.remove(kv.unwrap().0).unwrap();
    }
    for (k, v) in &mem.map {
        let bytes = codec::encode(v).unwrap();
        ledger.raw_set_projection(run, k, Some(&bytes)).unwrap();
    }
}

#[test]
fn the_untouched_copy_verifies_also_against_its_head() {
    let c = copy();
    let report = c.ledger.verify(&fixture().run, &with_head()).unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.events, fixture().head.count);
    assert!(report.payloads_checked > 10);
}

/// One byte changed anywhere in any record is caught at that record: in the hash, the
/// previous hash or the event, RECORD_ALTERED; in the sequence number, SEQ_GAP; in the
/// format version, DECODE_FAILED.
#[test]
fn one_changed_byte_is_caught_at_its_record() {
    let c = copy();
    let db = c.ledger.raw_db();
    for seg in segments(&c.ledger) {
        let original = db.get(&seg.key).unwrap().unwrap();
        let mut at = 0usize;
        for rec in &seg.records {
            let len = RECORD_HEADER_LEN + rec.body.len();
            let mut cases = vec![
                (at + 5, FailureCode::DecodeFailed),
                (at + 6, FailureCode::SeqGap),
                (at + 14 + 31, FailureCode::RecordAltered),
                (at + 46, FailureCode::RecordAltered),
                (at + 46 + 17, FailureCode::RecordAltered),
                (at + RECORD_HEADER_LEN, FailureCode::RecordAltered),
            ];
            if !rec.body.is_empty() {
                cases.push((at + len - 1, FailureCode::RecordAltered));
            }
            for (offset, code) in cases {
                let mut bytes = original.to_vec();
                bytes[offset] ^= 0x01;
                db.insert(&seg.key, bytes).unwrap();
                assert_eq!(
                    failure(&c.ledger, &plain()),
                    (code, Some(rec.seq)),
                    "byte {} of record {}",
                    offset - at,
                    rec.seq
                );
            }
            at += len;
        }
        db.insert(&seg.key, original).unwrap();
    }
    // Everything restored: the copy verifies again, so each failure above was the edit's.
    assert!(c.ledger.verify(&fixture().run, &with_head()).unwrap().ok());
}

/// A record changed and given a matching hash of its own breaks the link to it from the
/// next record.
#[test]
fn a_rehashed_record_breaks_the_chain_at_the_next_seq() {
    let c = copy();
    // The last byte of row 1's ingest is inside its payload hash: the edited event still
    // decodes and keeps every rule, so only the chain can tell.
    let k = seq_of(|e| matches!(e, Event::RowIngested { row: 1, .. }));
    let mut seg = segments(&c.ledger)
        .into_iter()
        .find(|s| s.records.iter().any(|r| r.seq == k))
        .unwrap();
    let rec = seg.records.iter_mut().find(|r| r.seq == k).unwrap();
    *rec.body.last_mut().unwrap() ^= 0x80;
    rec.rehash();
    write_segment(&c.ledger, &seg);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::ChainBroken, Some(k + 1))
    );
}

#[test]
fn a_record_deleted_from_the_middle_of_a_segment_is_a_gap() {
    let c = copy();
    let mut seg = middle_segment(&c.ledger, 3);
    let removed = seg.records.remove(1);
    write_segment(&c.ledger, &seg);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::SeqGap, Some(removed.seq))
    );
}

#[test]
fn a_deleted_segment_is_a_gap() {
    let c = copy();
    let segs = segments(&c.ledger);
    let victim = &segs[segs.len() / 2];
    c.ledger.raw_db().remove(&victim.key).unwrap();
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::SeqGap, Some(victim.records[0].seq))
    );
}

#[test]
fn swapped_records_are_caught_where_the_order_breaks() {
    // As stored: the first record out of place has the wrong seq.
    let c = copy();
    let mut seg = middle_segment(&c.ledger, 3);
    let first = seg.records[1].seq;
    seg.records.swap(1, 2);
    write_segment(&c.ledger, &seg);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::SeqGap, Some(first))
    );

    // Renumbered and rehashed by the attacker: the links still give it away.
    let c = copy();
    let mut seg = middle_segment(&c.ledger, 3);
    seg.records.swap(1, 2);
    for (i, rec) in seg.records.iter_mut().enumerate().skip(1).take(2) {
        rec.seq = first + i as u64 - 1;
        rec.rehash();
    }
    write_segment(&c.ledger, &seg);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::ChainBroken, Some(first))
    );

    // Two whole segments swapped (their keys kept): the seq inside the first moved one.
    let c = copy();
    let segs = segments(&c.ledger);
    let (a, b) = (&segs[3], &segs[4]);
    let db = c.ledger.raw_db();
    let (abytes, bbytes) = (
        db.get(&a.key).unwrap().unwrap(),
        db.get(&b.key).unwrap().unwrap(),
    );
    db.insert(&a.key, bbytes).unwrap();
    db.insert(&b.key, abytes).unwrap();
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::SeqGap, Some(a.records[0].seq))
    );
}

#[test]
fn an_inserted_record_is_caught() {
    // A copy of a record placed after it: a repeated seq.
    let c = copy();
    let mut seg = middle_segment(&c.ledger, 3);
    let dup = seg.records[1].clone();
    seg.records.insert(2, dup.clone());
    write_segment(&c.ledger, &seg);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::SeqGap, Some(dup.seq + 1))
    );

    // A well-formed new record, linked and hashed correctly, pushes the next one out.
    let forged = |prev: &Rec| {
        let mut r = Rec {
            seq: prev.seq + 1,
            prev: prev.hash,
            hash: Hash32::ZERO,
            body: codec::encode(&Event::Checkpoint {
                rows_ingested: 0,
                note: "forged".into(),
            })
            .unwrap(),
        };
        r.rehash();
        r
    };
    let c = copy();
    let mut seg = middle_segment(&c.ledger, 3);
    let new = forged(&seg.records[1]);
    seg.records.insert(2, new.clone());
    write_segment(&c.ledger, &seg);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::SeqGap, Some(new.seq + 1))
    );

    // ... and if everything after it is renumbered and rehashed too, the old link after
    // the forged record does not fit.
    let c = copy();
    let mut seg = middle_segment(&c.ledger, 3);
    let new = forged(&seg.records[1]);
    seg.records.insert(2, new.clone());
    for rec in seg.records.iter_mut().skip(3) {
        rec.seq += 1;
        rec.rehash();
    }
    write_segment(&c.ledger, &seg);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::ChainBroken, Some(new.seq + 1))
    );
}

#[test]
fn a_cut_record_does_not_decode() {
    let c = copy();
    let seg = middle_segment(&c.ledger, 2);
    let bytes = c.ledger.raw_db().get(&seg.key).unwrap().unwrap();
    let cut = RECORD_HEADER_LEN + seg.records[0].body.len() + 10;
    c.ledger.raw_db().insert(&seg.key, &bytes[..cut]).unwrap();
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::DecodeFailed, Some(seg.records[1].seq))
    );
}

#[test]
fn an_edited_projection_is_a_mismatch() {
    let run = &fixture().run;
    // Decoded, changed and re-encoded: the record of token t0 claims another ending.
    let c = copy();
    let key = PKey::Token(TokenId::for_row(0));
    let Some(PVal::Token(mut t)) = proj(&c.ledger, run, &key) else {
        panic!("token t0 has a record")
    };
    t.terminal = Some((
        projection::Terminal::Outcome(Outcome::Discarded {
            reason: "never flagged".into(),
        }),
        t.terminal.as_ref().map_or(0, |(_, s)| *s),
    ));
    let bytes = codec::encode(&PVal::Token(t)).unwrap();
    c.ledger
        .raw_set_projection(run, &key, Some(&bytes))
        .unwrap();
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::ProjectionMismatch, None)
    );

    // One raw byte of a call record.
    let c = copy();
    let call = fixture()
        .log
        .iter()
        .find_map(|e| match &e.event {
            Event::CallAllocated { state, index, .. } => Some(PKey::Call(state.clone(), *index)),
            _ => None,
        })
        .expect("the fixture makes a call");
    let mut v = c
        .ledger
        .raw_projection(run, &call)
        .unwrap()
        .expect("a stored call record");
    let last = v.len() - 1;
    v[last] ^= 0x01;
    c.ledger.raw_set_projection(run, &call, Some(&v)).unwrap();
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::ProjectionMismatch, None)
    );
}

#[test]
fn a_deleted_or_added_projection_is_a_mismatch() {
    let run = &fixture().run;
    let c = copy();
    let key = PKey::Row(2);
    assert!(c.ledger.raw_projection(run, &key).unwrap().is_some());
    c.ledger.raw_set_projection(run, &key, None).unwrap();
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::ProjectionMismatch, None)
    );

    let c = copy();
    let key = PKey::Token(TokenId::new("t99").unwrap());
    let Some(PVal::Token(t)) = proj(&c.ledger, run, &PKey::Token(TokenId::for_row(0))) else {
        panic!("token t0 has a record")
    };
    let bytes = codec::encode(&PVal::Token(t)).unwrap();
    c.ledger
        .raw_set_projection(run, &key, Some(&bytes))
        .unwrap();
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::ProjectionMismatch, None)
    );
}

/// The payload a given event references, and the seq of its first reference.
fn row_payload(row: u64) -> (Hash32, u64) {
    fixture()
        .log
        .iter()
        .find_map(|e| match &e.event {
            Event::RowIngested {
                row: r, payload, ..
            } if *r == row => Some((*payload, e.seq)),
            _ => None,
        })
        .expect("the row was ingested")
}

#[test]
fn an_edited_payload_is_a_mismatch() {
    let c = copy();
    let (hash, seq) = row_payload(2);
    let mut bytes = c.ledger.payload(&hash).unwrap().unwrap();
    bytes[0] ^= 0x20;
    assert_eq!(
        c.ledger
            .raw_edit_payload(&hash, Edit::Replace(&bytes))
            .unwrap(),
        1
    );
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::PayloadMismatch, Some(seq))
    );
}

#[test]
fn a_deleted_payload_is_missing_unless_its_purge_was_recorded() {
    let c = copy();
    // A call response: referenced by a call_completed event.
    let (hash, seq) = fixture()
        .log
        .iter()
        .find_map(|e| match &e.event {
            Event::CallCompleted {
                response: Some(r), ..
            } => Some((*r, e.seq)),
            _ => None,
        })
        .unwrap();
    // Every stored copy (two commit groups may each have stored the same bytes).
    assert!(c.ledger.raw_edit_payload(&hash, Edit::Remove).unwrap() >= 1);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::PayloadMissing, Some(seq))
    );
    // A bare tombstone, written behind the ledger's back, is not a recorded purge.
    c.ledger
        .raw_db()
        .insert(projection::purged_key(&hash), Vec::new())
        .unwrap();
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::PayloadMissing, Some(seq))
    );
    // A purge recorded in the purge log keeps the hash and says so; the chain still
    // verifies.
    c.ledger.purge_payloads(&[hash], "retention", 1).unwrap();
    let report = c.ledger.verify(&fixture().run, &plain()).unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.payloads_purged, 1);
}

/// The last `k` records removed from the log (whole segments or the end of one).
fn truncate_tail(ledger: &Ledger, k: usize) -> u64 {
    let mut left = k;
    for mut seg in segments(ledger).into_iter().rev() {
        if left == 0 {
            break;
        }
        if seg.records.len() <= left {
            left -= seg.records.len();
            ledger.raw_db().remove(&seg.key).unwrap();
        } else {
            let keep = seg.records.len() - left;
            seg.records.truncate(keep);
            write_segment(ledger, &seg);
            left = 0;
        }
    }
    fixture().head.count - k as u64
}

#[test]
fn a_truncated_tail_is_caught_by_projections_and_by_an_outside_head() {
    for k in [1usize, 2, 5] {
        let c = copy();
        let count = truncate_tail(&c.ledger, k);
        assert_eq!(
            failure(&c.ledger, &plain()),
            (FailureCode::ProjectionMismatch, None),
            "{k} records cut"
        );
        // An attacker who also rebuilds the projections leaves a ledger that is
        // consistent in itself; only the head kept outside it shows the loss.
        rebuild_projections(&c.ledger);
        let report = c.ledger.verify(&fixture().run, &plain()).unwrap();
        assert!(report.ok(), "{:?}", report.failure);
        assert_eq!(report.events, count);
        assert_eq!(
            failure(&c.ledger, &with_head()),
            (FailureCode::HeadMismatch, Some(count)),
            "{k} records cut"
        );
    }
}

/// A history rewritten from the edit on (re-encoded event, rechained, projections rebuilt)
/// is consistent in itself; the head kept outside the ledger catches it at its position.
#[test]
fn a_rewritten_history_is_caught_by_the_outside_head() {
    let c = copy();
    // Forge the route of row 0: "flagged" becomes "clean".
    let k = seq_of(|e| matches!(e, Event::RouteDecided { label, .. } if label == "flagged"));
    let mut seg = segments(&c.ledger)
        .into_iter()
        .find(|s| s.records.iter().any(|r| r.seq == k))
        .unwrap();
    let rec = seg.records.iter_mut().find(|r| r.seq == k).unwrap();
    let Event::RouteDecided {
        state, token, to, ..
    } = codec::decode(&rec.body).unwrap()
    else {
        unreachable!("seq_of found a route")
    };
    rec.body = codec::encode(&Event::RouteDecided {
        state,
        token,
        label: "clean".into(),
        to,
    })
    .unwrap();
    write_segment(&c.ledger, &seg);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::RecordAltered, Some(k))
    );
    rechain(&c.ledger, k);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::ProjectionMismatch, None)
    );
    rebuild_projections(&c.ledger);
    assert!(c.ledger.verify(&fixture().run, &plain()).unwrap().ok());
    let count = fixture().head.count;
    assert_eq!(
        failure(&c.ledger, &with_head()),
        (FailureCode::HeadMismatch, Some(count - 1))
    );
}

/// A rewritten payload reference with a rebuilt chain and projections still fails on the
/// payload store: the forged hash names bytes nobody stored.
#[test]
fn a_forged_payload_reference_is_missing() {
    let c = copy();
    let k = seq_of(|e| matches!(e, Event::RowIngested { row: 1, .. }));
    let mut seg = segments(&c.ledger)
        .into_iter()
        .find(|s| s.records.iter().any(|r| r.seq == k))
        .unwrap();
    let rec = seg.records.iter_mut().find(|r| r.seq == k).unwrap();
    *rec.body.last_mut().unwrap() ^= 0x80;
    write_segment(&c.ledger, &seg);
    rechain(&c.ledger, k);
    rebuild_projections(&c.ledger);
    assert_eq!(
        failure(&c.ledger, &plain()),
        (FailureCode::PayloadMissing, Some(k))
    );
}
