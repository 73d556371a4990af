//! Helpers shared by the ledger's integration tests. Each test binary uses a different
//! subset, so unused ones are expected in any single binary.
#![allow(dead_code)]

use attest_ledger::codec;
use attest_ledger::projection::{self, PKey, PVal};
use attest_ledger::*;
use std::path::Path;

pub fn n(s: &str) -> NodeId {
    NodeId::new(s).expect("test node ids are valid")
}

/// The outcome of source row `row`'s token: written to sink `out` as its `row`-th row, as
/// the tests' one-sink pipelines write them.
pub fn written_to_out(row: u64) -> Event {
    Event::TokenOutcome {
        token: TokenId::for_row(row),
        outcome: Outcome::Completed {
            write: SinkWrite {
                sink: n("out"),
                ordinal: row,
            },
        },
    }
}

pub fn run_id(s: &str) -> RunId {
    RunId::new(s).expect("test run ids are valid")
}

pub fn start(ledger: &Ledger, id: &str) -> RunHandle {
    ledger
        .start_run_with_id(
            run_id(id),
            RunStart {
                config: format!("pipeline for {id}").into_bytes(),
                engine_version: "test".into(),
                started_at_ms: 1,
            },
        )
        .expect("start run")
}

/// Registers one node per (name, kind) in one commit.
pub fn register(run: &RunHandle, nodes: &[(&str, NodeKind)]) {
    run.append(
        nodes
            .iter()
            .map(|(name, kind)| Event::NodeRegistered {
                node: n(name),
                kind: *kind,
                plugin: format!("{kind:?}").to_lowercase(),
                config_hash: Hash32::of(name.as_bytes()),
            })
            .collect(),
    )
    .expect("register nodes");
}

/// Every key and value of the whole sled tree, in key order.
pub fn snapshot(ledger: &Ledger) -> Vec<(Vec<u8>, Vec<u8>)> {
    ledger
        .raw_db()
        .iter()
        .map(|kv| {
            let (k, v) = kv.expect("read sled");
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// One stored projection value.
pub fn proj(ledger: &Ledger, run: &RunId, key: &PKey) -> Option<PVal> {
    ledger
        .raw_projection(run, key)
        .expect("read sled")
        .map(|v| codec::decode(&v).expect("projection decodes"))
}

pub fn token(ledger: &Ledger, run: &RunId, t: &TokenId) -> Option<projection::TokenRec> {
    match proj(ledger, run, &PKey::Token(t.clone())) {
        None => None,
        Some(PVal::Token(rec)) => Some(rec),
        Some(other) => panic!("token key holds {other:?}"),
    }
}

/// A record of a run's log as stored: its seq, hash and event.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub seq: u64,
    pub hash: Hash32,
    pub event: Event,
}

/// Reads a run's whole log, segment by segment, asserting it frames.
pub fn read_log(ledger: &Ledger, run: &RunId) -> Vec<LogEntry> {
    let mut out = Vec::new();
    for kv in ledger.raw_db().scan_prefix(projection::log_prefix(run)) {
        let (_, segment) = kv.expect("read sled");
        for rec in codec::read_segment(&segment) {
            let rec = rec.expect("record frames");
            out.push(LogEntry {
                seq: rec.seq,
                hash: rec.hash,
                event: rec.event().expect("event decodes"),
            });
        }
    }
    out
}

pub fn assert_verifies(ledger: &Ledger, run: &RunId) -> verify::VerifyReport {
    let report = ledger
        .verify(run, &verify::VerifyOptions::default())
        .expect("verify runs");
    assert!(report.ok(), "verification failed: {:?}", report.failure);
    report
}

/// Copies a directory tree (a closed ledger) file by file.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}
