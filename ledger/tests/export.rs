//! Export → verify-export: a run's chain as JSON lines checks from the text alone, and a
//! change of any single byte, a dropped, repeated or reordered line, or a missing manifest
//! is caught.

mod common;

use attest_ledger::export::{self, ExportReport};
use attest_ledger::verify::FailureCode;
use attest_ledger::*;
use common::*;
use serde_json::json;

/// A finished run with a state, a call (with a non-ASCII body) and two rows.
fn exported() -> (Vec<u8>, verify::Head) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = start(&ledger, "exp");
    register(
        &run,
        &[
            ("src", NodeKind::Source),
            ("llm", NodeKind::Transform),
            ("out", NodeKind::Sink),
        ],
    );
    for row in 0..2u64 {
        let mut c = Commit::new();
        let payload = c.value(&json!({"id": row, "text": "café"})).unwrap();
        c.push(Event::RowIngested {
            row,
            source: n("src"),
            payload,
        });
        run.submit(c, Durability::Buffered).unwrap();
        let token = TokenId::for_row(row);
        let st = run
            .open_state(Subject::Token(token.clone()), n("llm"), payload)
            .unwrap();
        let call = st.allocate_call("llm", "prompt é".into(), None).unwrap();
        st.complete_call(
            &call,
            CallOutcome::Responded { status: Some(200) },
            Some(b"ok".to_vec()),
            5,
        )
        .unwrap();
        let out = ledger.put_value(&json!({"id": row, "label": "ü"})).unwrap();
        st.close(StateResult::Completed { output: out }, 10)
            .unwrap();
        run.append(vec![written_to_out(row)]).unwrap();
    }
    run.append(vec![Event::RunFinished {
        status: FinalStatus::Completed,
    }])
    .unwrap();
    let mut out = Vec::new();
    let head = ledger.export_jsonl(run.id(), &mut out).unwrap();
    let stored = ledger.run_record(run.id()).unwrap().unwrap();
    assert_eq!((head.count, head.hash), (stored.next_seq, stored.head));
    (out, head)
}

fn check(bytes: &[u8]) -> ExportReport {
    export::verify_export(&mut &bytes[..]).unwrap()
}

fn code(bytes: &[u8]) -> Option<FailureCode> {
    check(bytes).failure.map(|f| f.code)
}

#[test]
fn an_export_verifies_from_its_text_alone() {
    let (bytes, head) = exported();
    let report = check(&bytes);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.head, Some(head));
    assert_eq!(report.events, head.count);
    assert_eq!(report.run.as_deref(), Some("exp"));
    let text = String::from_utf8(bytes).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"]["RunStarted"]["run"], "exp");
    assert_eq!(
        first["event"]["RunStarted"]["config_hash"],
        Hash32::of(b"pipeline for exp").to_hex(),
        "hashes are hex in the readable event"
    );
}

#[test]
fn every_single_byte_change_is_caught() {
    let (bytes, _) = exported();
    // Low bit (a digit or letter becomes its neighbour), case bit, high bit (ASCII
    // becomes a broken UTF-8 sequence), taken in turn over the positions.
    for i in 0..bytes.len() {
        let flip = [0x01u8, 0x20, 0x80][i % 3];
        let mut t = bytes.clone();
        t[i] ^= flip;
        assert!(
            !check(&t).ok(),
            "byte {i} ({:?}) ^ {flip:#x} went unnoticed",
            bytes[i] as char
        );
    }
}

#[test]
fn dropped_repeated_reordered_and_cut_lines_are_caught() {
    let (bytes, _) = exported();
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let join = |ls: &[&str]| {
        ls.iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let n = lines.len();

    let mut dropped = lines.clone();
    dropped.remove(3);
    assert_eq!(code(&join(&dropped)), Some(FailureCode::SeqGap));

    let mut repeated = lines.clone();
    repeated.insert(3, lines[3]);
    assert_eq!(code(&join(&repeated)), Some(FailureCode::SeqGap));

    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    assert_eq!(code(&join(&swapped)), Some(FailureCode::SeqGap));

    // Without its manifest (or with the tail and the manifest gone): truncated.
    assert_eq!(
        code(&join(&lines[..n - 1])),
        Some(FailureCode::HeadMismatch)
    );
    assert_eq!(
        code(&join(&lines[..n - 3])),
        Some(FailureCode::HeadMismatch)
    );
    // Tail records gone but the manifest kept.
    let mut cut = lines[..n - 3].to_vec();
    cut.push(lines[n - 1]);
    assert_eq!(code(&join(&cut)), Some(FailureCode::HeadMismatch));
    // Anything after the manifest.
    let mut extra = lines.clone();
    extra.push(lines[0]);
    assert_eq!(code(&join(&extra)), Some(FailureCode::DecodeFailed));
    assert_eq!(code(b""), Some(FailureCode::HeadMismatch));
}
