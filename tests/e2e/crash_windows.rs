//! A crash in each window `attest resume` must repair, placed exactly: the crash child
//! (`tests/bin/crash_child.rs`) runs an example and kills itself with SIGKILL at a chosen
//! point, after making the ledger durable up to that moment. Each test first checks that
//! the crash left the state of its window (so the test cannot pass by missing it), then
//! resumes through the binary and compares the outputs byte for byte with an
//! uninterrupted run; every ledger must pass `attest replay --verify-only`.

use attest_ledger::projection::{PKey, PVal};
use attest_ledger::{BatchId, Event, Ledger, NodeId, RunId, TokenId};
use attest_tests::crash::{
    assert_every_run_verifies, assert_same_outputs, crash_child, len, only_run, reference,
    resume_until_done, Example, Outputs,
};
use attest_tests::Scratch;
use std::path::Path;

/// Runs `ex` in the crash child until `spec`; it must die by SIGKILL. Returns the run id.
fn crash(s: &Scratch, ex: &Example, spec: &str) -> String {
    crash_child(
        s,
        Path::new(env!("CARGO_BIN_EXE_attest-crash-child")),
        ex,
        spec,
        &[],
    )
}

/// What the ledger says about where a crashed run stopped.
struct Cut {
    /// Rows released at the last checkpoint.
    released: u64,
    /// Rows read.
    ingested: u64,
    /// Durable bytes per sink, from the last checkpoint's note.
    bytes: Vec<(String, u64)>,
    /// Rows after the cut whose own events are recorded (processed, not written).
    processed_after: u64,
}

fn cut(s: &Scratch, run: &str) -> Cut {
    let ledger = Ledger::open(s.path().join("out/ledger")).expect("open ledger");
    let id = RunId::new(run).expect("id");
    let rec = ledger.run_record(&id).expect("read").expect("run");
    let last = ledger
        .find_last_event(&id, |e| match e {
            Event::Checkpoint {
                rows_ingested,
                note,
            } => Some((*rows_ingested, note.clone())),
            _ => None,
        })
        .expect("read log");
    let (released, note) = last.map(|(_, c)| c).unwrap_or((0, "{}".into()));
    let note: serde_json::Value = serde_json::from_str(&note).expect("note is JSON");
    let bytes = note["sinks"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|v| {
                    (
                        v["path"].as_str().unwrap_or_default().to_string(),
                        v["bytes"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let processed_after = (released..rec.rows)
        .filter(|i| {
            matches!(
                ledger.projection(&id, &PKey::Token(TokenId::for_row(*i))),
                Ok(Some(PVal::Token(t))) if !t.states.is_empty() || t.terminal.is_some()
            )
        })
        .count() as u64;
    Cut {
        released,
        ingested: rec.rows,
        bytes,
        processed_after,
    }
}

/// threshold-gate with its high values in a JSON array (indented), whose closing bracket
/// is rewritten at every durable point.
fn threshold(s: &Scratch, rows: usize) -> Example {
    Example::grown(s, "threshold-gate", rows).edit(s, |t| {
        t.replace(
            "options: {path: out/threshold-gate/high.csv,",
            "options: {path: out/threshold-gate/high.json, format: json, indent: 2,",
        )
        .replace("high_values: {plugin: csv", "high_values: {plugin: json")
    })
}

/// The uninterrupted outputs of the threshold example, run once for the tests that share it.
fn threshold_reference() -> Outputs {
    static ONCE: std::sync::OnceLock<Outputs> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| reference(&|s| threshold(s, 9_000)).1)
        .clone()
}

/// Crashes `setup`'s example at `spec`, checks the window with `window`, resumes, compares
/// with `want` (the uninterrupted outputs).
fn check(
    setup: &dyn Fn(&Scratch) -> Example,
    want: Outputs,
    spec: &str,
    window: &dyn Fn(&Scratch, &Cut),
) {
    let s = Scratch::new();
    let ex = setup(&s);
    let run = crash(&s, &ex, spec);
    let c = cut(&s, &run);
    assert!(c.ingested > c.released, "{spec}: rows read after the cut");
    window(&s, &c);
    resume_until_done(&s, &run);
    assert_same_outputs(&s, &ex, &want, spec);
    assert_eq!(only_run(&s).expect("run")["status"], "completed");
    assert_every_run_verifies(&s);
}

#[test]
fn fsynced_rows_whose_outcomes_were_not_recorded_are_cut_and_redone() {
    // Killed right after the first fsync, before its checkpoint: the file holds rows the
    // ledger does not count as written, and rows processed but not written.
    check(
        &|s| threshold(s, 9_000),
        threshold_reference(),
        "durable:1",
        &|s, c| {
            assert_eq!(c.released, 0, "no checkpoint was recorded");
            let written = len(&s.path().join("out/threshold-gate/normal.csv"))
                + len(&s.path().join("out/threshold-gate/high.json"));
            assert!(written > 0, "fsynced rows on disk");
            assert!(c.processed_after > 0, "rows processed but not written");
        },
    );
}

#[test]
fn a_crash_after_a_checkpoint_resumes_from_it() {
    // The second flush: the first checkpoint is recorded, then one sink is fsynced further.
    check(
        &|s| threshold(s, 9_000),
        threshold_reference(),
        "durable:3",
        &|s, c| {
            assert!(c.released > 0, "a checkpoint was recorded");
            assert!(c.processed_after > 0, "rows processed but not written");
            let beyond = c
                .bytes
                .iter()
                .any(|(path, bytes)| len(&s.path().join(path)) > *bytes);
            assert!(
                beyond,
                "a sink is durable beyond its recorded position: {:?}",
                c.bytes
            );
        },
    );
}

#[test]
fn a_torn_write_is_cut_off() {
    // Killed mid-run with rows buffered; the files then get half a row each, as a write
    // torn by a power cut would leave them.
    let setup = |s: &Scratch| threshold(s, 9_000);
    let want = threshold_reference();
    let s = Scratch::new();
    let ex = setup(&s);
    let run = crash(&s, &ex, "written:7000");
    for (file, torn) in [
        ("out/threshold-gate/normal.csv", "77,half a ro"),
        ("out/threshold-gate/high.json", ",\n  {\n    \"id\": 7"),
    ] {
        let path = s.path().join(file);
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        bytes.extend_from_slice(torn.as_bytes());
        std::fs::write(&path, bytes).expect("tear");
    }
    let c = cut(&s, &run);
    assert!(c.processed_after > 0);
    resume_until_done(&s, &run);
    assert_same_outputs(&s, &ex, &want, "torn write");
    assert_every_run_verifies(&s);
}

#[test]
fn an_open_batch_is_rebuilt_from_the_ledger() {
    // One batch for the whole input (it flushes at the end of the source): every cut has
    // it open. Aggregation and member events force a checkpoint every 16,384 events, and
    // the source reads at most 4,096 rows ahead, so at row 21,000 one has happened.
    let setup = |s: &Scratch| {
        Example::grown(s, "batch-stats", 22_000).edit(s, |t| {
            t.replace("trigger: {count: 3}", "trigger: {count: 1000000}")
        })
    };
    check(&setup, reference(&setup).1, "read:21000", &|s, c| {
        assert!(c.released > 0, "a checkpoint was recorded");
        let ledger = Ledger::open(s.path().join("out/ledger")).expect("open");
        let run = ledger.latest_run().expect("read").expect("run").run;
        let batch = BatchId::for_node(&NodeId::new("per_region").expect("id"), 0);
        match ledger.projection(&run, &PKey::Batch(batch)) {
            Ok(Some(PVal::Batch(b))) => {
                assert!(b.completion.is_none(), "the batch is open");
                assert_eq!(u64::from(b.members), c.released, "its members are recorded");
            }
            other => panic!("no open batch: {other:?}"),
        }
    });
}

#[test]
fn fork_and_coalesce_after_a_crash() {
    let setup = |s: &Scratch| Example::grown(s, "fork-coalesce", 9_000);
    check(&setup, reference(&setup).1, "durable:2", &|_, c| {
        assert!(c.processed_after > 0);
    });
}
