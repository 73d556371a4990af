//! `attest resume` through the binary: Ctrl-C then resume gives the uninterrupted output,
//! and the bad inputs of a resume (rows 28–36 of the matrix in docs/reliability.md) are
//! refused with a message naming what and where, changing nothing.

use attest_tests::crash::{
    assert_every_run_verifies, assert_same_outputs, only_run, reference, replay_passes,
    resume_until_done, text, Example, Outputs,
};
use attest_tests::Scratch;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn threshold(s: &Scratch, rows: usize) -> Example {
    Example::grown(s, "threshold-gate", rows)
}

/// Runs the example in the crash child until it is interrupted at row `at`; returns the
/// run id.
fn interrupted_at(s: &Scratch, ex: &Example, at: u64) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_attest-crash-child"))
        .args([&ex.pipeline, "out/ledger", &format!("interrupt:{at}")])
        .current_dir(s.path())
        .output()
        .expect("crash child");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let run = only_run(s).expect("a run");
    assert_eq!(run["status"], "interrupted");
    run["run_id"].as_str().expect("id").to_string()
}

fn resume(s: &Scratch, args: &[&str]) -> Output {
    s.attest()
        .arg("resume")
        .args(args)
        .timeout(Duration::from_secs(300))
        .output()
        .expect("attest resume")
}

/// The run's record (status, events, head) and outputs, to show a refusal changed nothing.
fn state(s: &Scratch, ex: &Example) -> (serde_json::Value, Outputs) {
    (only_run(s).expect("a run"), ex.output_bytes(s))
}

fn refused(out: &Output, code: i32, message: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(message), "expected {message:?} in:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn ctrl_c_then_resume_gives_the_uninterrupted_output() {
    let mut rows = 8000;
    let setup = move |s: &Scratch, rows| threshold(s, rows);
    // A machine fast enough to finish before the signal gets a bigger input.
    for _ in 0..4 {
        let (ex, want) = reference(&|s| setup(s, rows));
        let s = Scratch::new();
        setup(&s, rows);
        let child = Command::new(attest_tests::binary())
            .args(["run", &ex.pipeline, "--json"])
            .current_dir(s.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn attest run");
        let started = Instant::now();
        while !s.path().join("out/threshold-gate/normal.csv").exists() {
            assert!(started.elapsed() < Duration::from_secs(120), "never wrote");
            std::thread::sleep(Duration::from_millis(10));
        }
        let kill = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(kill.success());
        let out = child.wait_with_output().expect("wait");
        if out.status.code() == Some(0) {
            rows *= 4;
            continue;
        }
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let run = summary["run_id"].as_str().expect("run id").to_string();
        let done = summary["rows"].as_u64().expect("rows");
        assert!(done < rows as u64, "{done}");
        let outs = resume_until_done(&s, &run);
        let last: serde_json::Value =
            serde_json::from_slice(&outs[outs.len() - 1].stdout).expect("resume --json");
        assert_eq!(last["run_id"], run.as_str());
        assert_eq!(last["status"], "completed");
        assert_eq!(last["rows"], rows as u64);
        assert_same_outputs(&s, &ex, &want, "Ctrl-C then resume");
        let r = only_run(&s).expect("one run");
        assert_eq!(r["status"], "completed");
        assert_every_run_verifies(&s);
        // Re-executed in one go, it agrees with the record id for id: the interruption,
        // the resume and the checkpoints are bookkeeping.
        replay_passes(&s, &run, false, &[]);
        // The resume is recorded in the run's own chain, and its head is in the heads log.
        let heads = s.read("out/ledger/heads.jsonl");
        assert!(heads.lines().count() >= 2, "{heads}");
        assert!(heads.contains(r["head"].as_str().expect("head")), "{heads}");
        return;
    }
    panic!("every run finished before Ctrl-C reached it");
}

#[test]
fn resume_without_pipeline_uses_the_recorded_configuration() {
    let s = Scratch::new();
    let ex = threshold(&s, 300);
    let run = interrupted_at(&s, &ex, 40);
    let (_, want) = reference(&|s| threshold(s, 300));
    let out = resume(&s, &["latest", "--ledger", "out/ledger"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "resuming run {run} with the configuration recorded in the ledger"
        )),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("run {run} completed")), "{stdout}");
    assert_same_outputs(&s, &ex, &want, "resume latest");
    assert_every_run_verifies(&s);
}

// --- the bad-input matrix, resume rows ----------------------------------------------------

#[test]
fn resume_unknown_run_id() {
    let s = Scratch::new();
    let ex = threshold(&s, 50);
    interrupted_at(&s, &ex, 10);
    let before = state(&s, &ex);
    let out = resume(&s, &["run-0-000000000000", "--ledger", "out/ledger"]);
    refused(
        &out,
        2,
        "attest: no run run-0-000000000000 in the ledger at out/ledger",
    );
    assert_eq!(state(&s, &ex), before);
    let out = resume(&s, &["latest", "--ledger", "out/nowhere"]);
    refused(
        &out,
        2,
        "attest: no ledger at out/nowhere (use --ledger DIR to name one)",
    );
}

#[test]
fn resume_a_completed_run() {
    let s = Scratch::new();
    let ex = threshold(&s, 50);
    let out = s
        .attest()
        .args(["run", &ex.pipeline])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run = only_run(&s).expect("run")["run_id"]
        .as_str()
        .expect("id")
        .to_string();
    let before = state(&s, &ex);
    let out = resume(&s, &[&run, "--ledger", "out/ledger"]);
    refused(
        &out,
        2,
        &format!("attest: run {run} already completed: there is nothing to resume"),
    );
    assert_eq!(state(&s, &ex), before);
    assert_every_run_verifies(&s);
}

#[test]
fn resume_a_failed_run() {
    let s = Scratch::new();
    let ex = threshold(&s, 50);
    // Invalid UTF-8 on line 30: the rows before it finish, then the run fails.
    let path = s.path().join("examples/threshold-gate/input.csv");
    let mut bytes = std::fs::read(&path).expect("input");
    let line30 = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(28)
        .map(|(i, _)| i + 1)
        .expect("30 lines");
    bytes.insert(line30, 0xff);
    std::fs::write(&path, bytes).expect("write");
    let out = s
        .attest()
        .args(["run", &ex.pipeline])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = only_run(&s).expect("run")["run_id"]
        .as_str()
        .expect("id")
        .to_string();
    let out = resume(&s, &[&run, "--ledger", "out/ledger"]);
    refused(
        &out,
        2,
        &format!("attest: run {run} failed, and a failed run is final; start a new run with `attest run`"),
    );
    assert_every_run_verifies(&s);
}

#[test]
fn resume_with_a_changed_pipeline() {
    let s = Scratch::new();
    let ex = threshold(&s, 200);
    let run = interrupted_at(&s, &ex, 30);
    let before = state(&s, &ex);
    let original = s.read(&ex.pipeline);
    s.write(
        &ex.pipeline,
        &original
            .replace("row['amount'] > 1000", "row['amount'] > 999")
            .replace(
                "on_error: discard\n  options: {mapping",
                "on_error: discard\n  options: {select_only: true, mapping",
            ),
    );
    let out = resume(
        &s,
        &[&run, "--ledger", "out/ledger", "--pipeline", &ex.pipeline],
    );
    refused(
        &out,
        2,
        &format!(
            "attest: the pipeline is not the one run {run} started with: the configuration of \
             gate `amount_threshold` changed; the configuration of transform `rename` changed; \
             resuming would mix two pipelines in one run"
        ),
    );
    // A node added.
    let rename = "  on_success: mapped\n  on_error: discard\n  options: {mapping: {name: customer}, schema: {mode: observed}}\n";
    assert!(original.contains(rename));
    s.write(
        &ex.pipeline,
        &original.replace(
            rename,
            &format!(
                "{}- name: extra\n  plugin: passthrough\n  input: pre\n  on_success: mapped\n  on_error: discard\n  options: {{schema: {{mode: observed}}}}\n",
                rename.replace("on_success: mapped", "on_success: pre")
            ),
        ),
    );
    let out = resume(
        &s,
        &[&run, "--ledger", "out/ledger", "--pipeline", &ex.pipeline],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("transform `extra` was added to the pipeline"),
        "{err}"
    );
    assert_eq!(state(&s, &ex), before);
    // The pipeline as it was resumes.
    s.write(&ex.pipeline, &original);
    let out = resume(
        &s,
        &[&run, "--ledger", "out/ledger", "--pipeline", &ex.pipeline],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_every_run_verifies(&s);
}

#[test]
fn resume_with_the_configuration_purged() {
    let s = Scratch::new();
    let ex = threshold(&s, 200);
    let run = interrupted_at(&s, &ex, 30);
    {
        let ledger = attest_ledger::Ledger::open(s.path().join("out/ledger")).expect("open");
        let id = attest_ledger::RunId::new(run.clone()).expect("id");
        let rec = ledger.run_record(&id).expect("read").expect("run");
        // Recorded as a purge made after the run started, as `attest purge` would.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .expect("clock");
        ledger
            .purge_payloads(&[rec.config_hash], "test: purge the configuration", now)
            .expect("purge");
    }
    let before = state(&s, &ex);
    let out = resume(&s, &[&run, "--ledger", "out/ledger"]);
    refused(
        &out,
        2,
        &format!("attest: the configuration run {run} started with (payload "),
    );
    assert!(
        text(&out)
            .contains("was purged from the ledger; give the pipeline file with --pipeline FILE"),
        "{}",
        text(&out)
    );
    assert_eq!(state(&s, &ex), before);
    // Given the file, the resume goes on: it needs no other payload.
    let out = resume(
        &s,
        &[&run, "--ledger", "out/ledger", "--pipeline", &ex.pipeline],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_every_run_verifies(&s);
}

#[test]
fn resume_while_another_process_holds_the_ledger() {
    let s = Scratch::new();
    let ex = threshold(&s, 50);
    let run = interrupted_at(&s, &ex, 10);
    let before = state(&s, &ex);
    let held = attest_ledger::Ledger::open(s.path().join("out/ledger")).expect("open");
    let out = resume(&s, &[&run, "--ledger", "out/ledger"]);
    refused(
        &out,
        2,
        "attest: ledger at out/ledger is in use by another process (lock file out/ledger/attest.lock); wait for it to finish or use another --ledger directory",
    );
    drop(held);
    assert_eq!(state(&s, &ex), before);
}

#[test]
fn resume_with_a_sink_file_deleted() {
    let s = Scratch::new();
    let ex = threshold(&s, 200);
    let run = interrupted_at(&s, &ex, 60);
    std::fs::remove_file(s.path().join("out/threshold-gate/normal.csv")).expect("rm");
    let before = state(&s, &ex);
    let out = resume(&s, &[&run, "--ledger", "out/ledger"]);
    refused(
        &out,
        4,
        "attest: sink output: out/threshold-gate/normal.csv: cannot resume: the file is missing; ",
    );
    assert!(text(&out).contains("rows ("), "{}", text(&out));
    assert_eq!(state(&s, &ex), before);
    assert_every_run_verifies(&s);
}

#[test]
fn resume_with_a_sink_file_edited() {
    let s = Scratch::new();
    let ex = threshold(&s, 200);
    let run = interrupted_at(&s, &ex, 60);
    let path = s.path().join("out/threshold-gate/high.csv");
    // One character of the first data row changed, the length kept.
    let original = s.read("out/threshold-gate/high.csv");
    let at = original.find("\r\n").expect("a header line") + 2;
    let mut edited = original.clone();
    let digit = if &original[at..at + 1] == "9" {
        "8"
    } else {
        "9"
    };
    edited.replace_range(at..at + 1, digit);
    assert_ne!(edited, original);
    std::fs::write(&path, &edited).expect("edit");
    let before = state(&s, &ex);
    let out = resume(&s, &[&run, "--ledger", "out/ledger"]);
    refused(
        &out,
        4,
        "attest: sink high_values: out/threshold-gate/high.csv: cannot resume: its first ",
    );
    assert!(
        text(&out).contains("bytes are not the ones recorded as durable"),
        "{}",
        text(&out)
    );
    assert_eq!(state(&s, &ex), before);
    assert_eq!(s.read("out/threshold-gate/high.csv"), edited);
}

#[test]
fn resume_with_the_input_changed() {
    let s = Scratch::new();
    let ex = threshold(&s, 200);
    let run = interrupted_at(&s, &ex, 60);
    let input = s.read("examples/threshold-gate/input.csv");
    let mut lines: Vec<&str> = input.lines().collect();
    lines[11] = "999,someone else,1.0,true";
    s.write(
        "examples/threshold-gate/input.csv",
        &(lines.join("\n") + "\n"),
    );
    let before = state(&s, &ex);
    let out = resume(&s, &[&run, "--ledger", "out/ledger"]);
    refused(
        &out,
        2,
        &format!("attest: source: row 10 of the input is not the row run {run} read (recorded "),
    );
    assert!(text(&out).contains("the input changed since the run started"));
    assert_eq!(state(&s, &ex), before);
}
