//! Verification of a ledger whose stored values were mutated. One realistic run is
//! recorded once; every input is a list of edits to its stored keys (flip bytes, cut,
//! replace, remove, add). `verify` must never panic, and whenever an edit really changed a
//! log segment, a projection or a payload, it must report a failure: verification that
//! passes over altered evidence would be the worst bug an audit ledger can have.
#![no_main]

use attest_ledger::verify::{Head, VerifyOptions};
use attest_ledger::{
    CallOutcome, Commit, Durability, Event, FinalStatus, Hash32, Ledger, NodeId, NodeKind, Outcome,
    RunId, RunStart, SinkWrite, StateResult, Subject, TokenId,
};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    run: RunId,
    head: Head,
    original: BTreeMap<Vec<u8>, Vec<u8>>,
    keys: Vec<Vec<u8>>,
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("a valid node id")
}

/// A run with every common kind of event, over several commits (so several segments).
fn record_run(ledger: &Ledger) -> RunId {
    let run = ledger
        .start_run(RunStart {
            config: b"source: {plugin: csv}".to_vec(),
            engine_version: "fuzz".into(),
            started_at_ms: 1,
        })
        .expect("start");
    let (src, llm, out) = (node("src"), node("llm"), node("out"));
    run.append(vec![
        Event::NodeRegistered {
            node: src.clone(),
            kind: NodeKind::Source,
            plugin: "csv".into(),
            config_hash: Hash32::of(b"src"),
        },
        Event::NodeRegistered {
            node: llm.clone(),
            kind: NodeKind::Transform,
            plugin: "llm".into(),
            config_hash: Hash32::of(b"llm"),
        },
        Event::NodeRegistered {
            node: out.clone(),
            kind: NodeKind::Sink,
            plugin: "csv".into(),
            config_hash: Hash32::of(b"out"),
        },
        Event::EdgeRegistered {
            from: src.clone(),
            to: llm.clone(),
            label: "continue".into(),
        },
        Event::EdgeRegistered {
            from: llm.clone(),
            to: out.clone(),
            label: "continue".into(),
        },
    ])
    .expect("topology");
    for row in 0..6u64 {
        let mut c = Commit::new();
        let payload = c.payload(format!("{{\"id\": {row}}}").into_bytes());
        c.push(Event::RowIngested {
            row,
            source: src.clone(),
            payload,
        });
        run.submit(c, Durability::Buffered).expect("row");
        let token = TokenId::for_row(row);
        let state = run
            .open_state(Subject::Token(token.clone()), llm.clone(), payload)
            .expect("open");
        let call = state
            .allocate_call("llm", format!("request {row}").into_bytes(), None)
            .expect("call");
        state
            .complete_call(
                &call,
                CallOutcome::Responded { status: Some(200) },
                Some(format!("response {row}").into_bytes()),
                10,
            )
            .expect("response");
        let output = ledger
            .put_payload(format!("output {row}").as_bytes())
            .expect("output");
        state
            .close(StateResult::Completed { output }, 20)
            .expect("close");
        run.append(vec![Event::TokenOutcome {
            token,
            outcome: Outcome::Completed {
                write: SinkWrite {
                    sink: out.clone(),
                    ordinal: row,
                },
            },
        }])
        .expect("outcome");
    }
    run.submit(
        Commit::new().event(Event::RunFinished {
            status: FinalStatus::Completed,
        }),
        Durability::Flushed,
    )
    .expect("finish");
    run.id().clone()
}

fn fixture() -> &'static Mutex<Fixture> {
    static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path()).expect("open ledger");
        let run = record_run(&ledger);
        ledger.flush().expect("flush");
        let report = ledger
            .verify(&run, &VerifyOptions::default())
            .expect("verify");
        assert!(report.ok(), "the fixture must verify: {:?}", report.failure);
        let head = report.head.expect("a head");
        let original: BTreeMap<Vec<u8>, Vec<u8>> = ledger
            .raw_db()
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("scan"))
            .collect();
        let keys = original.keys().cloned().collect();
        Mutex::new(Fixture {
            _dir: dir,
            ledger,
            run,
            head,
            original,
            keys,
        })
    })
}

/// Keys whose every change verification promises to detect: log segments, projections
/// and payloads (all of the fixture's payloads are referenced).
fn guarded(key: &[u8]) -> bool {
    matches!(key.first(), Some(b'L' | b'P' | b'B'))
}

fuzz_target!(|data: &[u8]| {
    let Ok(fx) = fixture().lock() else { return };
    let db = fx.ledger.raw_db();
    let mut touched: Vec<Vec<u8>> = Vec::new();
    // Keys whose net change verification must catch: edited or removed log segments,
    // projections and payloads, and projection records that were not there before.
    let mut watched: Vec<Vec<u8>> = Vec::new();
    let mut rest = data;
    let with_head = data.first().is_some_and(|b| b & 1 == 1);
    // Each edit: op, key index (2 bytes), argument length, argument.
    while rest.len() >= 4 {
        let (op, idx, n) = (rest[0], u16::from_le_bytes([rest[1], rest[2]]), rest[3]);
        let arg = &rest[4..(4 + usize::from(n)).min(rest.len())];
        rest = &rest[(4 + usize::from(n)).min(rest.len())..];
        let key = &fx.keys[usize::from(idx) % fx.keys.len()];
        let current = db.get(key).expect("get").map(|v| v.to_vec());
        let new: Option<Vec<u8>> = match (op % 5, current) {
            (0, Some(mut v)) if !v.is_empty() && !arg.is_empty() => {
                // Flip bits at positions named by the argument.
                for pair in arg.chunks(2) {
                    let at = usize::from(pair[0]) * 256 + usize::from(*pair.get(1).unwrap_or(&0));
                    let len = v.len();
                    v[at % len] ^= pair.get(1).copied().unwrap_or(1).max(1);
                }
                Some(v)
            }
            (1, Some(mut v)) => {
                v.truncate(usize::from(idx >> 4) % (v.len() + 1));
                Some(v)
            }
            (2, _) => Some(arg.to_vec()),
            (3, _) => None,
            (4, Some(_)) => {
                // A new key next to an existing one (an extra record of the same family).
                let mut extra = key.clone();
                extra.extend_from_slice(arg);
                extra.push(op);
                touched.push(extra.clone());
                db.insert(extra.clone(), arg).expect("insert");
                if extra.starts_with(b"P") && !fx.original.contains_key(&extra) {
                    watched.push(extra);
                }
                continue;
            }
            _ => continue,
        };
        touched.push(key.clone());
        match &new {
            Some(v) => db.insert(key.clone(), v.clone()).expect("insert"),
            None => db.remove(key).expect("remove"),
        };
        if guarded(key) {
            watched.push(key.clone());
        }
    }
    let opts = VerifyOptions {
        expected_head: with_head.then_some(fx.head),
        skip_payloads: false,
    };
    let result = fx.ledger.verify(&fx.run, &opts);
    // Net effect, not each edit: a later edit may have put the original back.
    let changed = watched
        .iter()
        .any(|k| db.get(k).expect("get").map(|v| v.to_vec()).as_ref() != fx.original.get(k));
    if let Ok(report) = &result {
        if changed {
            assert!(
                !report.ok(),
                "verification passed over altered keys {:?}",
                touched
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect::<Vec<_>>()
            );
        }
    }
    // Put everything back for the next input.
    for k in touched {
        match fx.original.get(&k) {
            Some(v) => db.insert(k, v.clone()).expect("restore"),
            None => db.remove(k).expect("restore"),
        };
    }
});
