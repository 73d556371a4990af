//! `attest replay` re-execution through the binary: every example re-executes without a
//! divergence; a pipeline whose mapping or threshold was changed after the run is reported
//! (exit 4) as OUTPUT_DIVERGED / ROUTE_DIVERGED at the right seq, node and token; purged
//! rows are named as not re-executable while verification still reports; and the JSON
//! report has its documented keys.

use attest_ledger::{Event, Ledger, RunId};
use attest_tests::{Scratch, LEDGER};
use serde_json::Value;
use std::collections::BTreeSet;

/// The recorded events of a run, read after the commands are done with the ledger.
fn events(s: &Scratch, run: &str) -> Vec<(u64, Event)> {
    let ledger = Ledger::open_for_reading(s.path().join(LEDGER)).unwrap();
    let mut out = Vec::new();
    ledger
        .for_each_event(&RunId::new(run).unwrap(), |seq, e| {
            out.push((seq, e));
            Ok(())
        })
        .unwrap();
    out
}

/// Writes the threshold-gate pipeline with `from` replaced by `to` as `changed.yaml`.
fn changed(s: &Scratch, from: &str, to: &str) {
    let text = s.read("examples/threshold-gate/pipeline.yaml");
    assert!(text.contains(from), "{from:?}");
    s.write("changed.yaml", &text.replace(from, to));
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn every_example_replays_and_re_executes_without_divergence() {
    // The LLM example talks to the local server, for the run; its replay sends nothing.
    let server = attest_tests::fake_llm::FakeLlm::bind(
        "127.0.0.1:0",
        attest_tests::fake_llm::Answering::Sentiment,
    )
    .unwrap();
    let s = Scratch::new();
    let mut names: Vec<String> = std::fs::read_dir(s.path().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        let out = s
            .attest()
            .args(["run", &format!("examples/{name}/pipeline.yaml"), "--json"])
            .env("LLM_BASE_URL", server.url())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}");
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        let run = summary["run_id"].as_str().unwrap();
        let before = server.requests();
        let out = s
            .attest()
            .args(["replay", "--ledger", LEDGER, "--json", "--run", run])
            .env("LLM_BASE_URL", server.url())
            .output()
            .unwrap();
        let (code, report): (Option<i32>, Value) = (
            out.status.code(),
            serde_json::from_slice(&out.stdout).unwrap(),
        );
        assert_eq!(
            server.requests(),
            before,
            "{name}: the replay sent a request"
        );
        assert_eq!(code, Some(0), "{name}: {report}");
        assert_eq!(report["ok"], true, "{name}");
        assert_eq!(report["failure"], Value::Null, "{name}");
        let r = &report["reexecution"];
        assert_eq!(r["performed"], true, "{name}: {r}");
        assert_eq!(r["divergences"], 0, "{name}: {r}");
        assert_eq!(r["compared"], r["record_events"], "{name}: {r}");
        assert!(r["states"].as_u64().unwrap() > 0, "{name}: {r}");
        // The outputs were not touched: re-execution writes into a scratch directory.
        let before = s.path().join("out").join(name);
        assert!(before.exists(), "{name}: the run wrote its outputs");
    }
}

#[test]
fn a_changed_mapping_is_output_diverged_at_the_mapper_and_token() {
    let s = Scratch::new();
    let summary = s.run_json("examples/threshold-gate/pipeline.yaml");
    let run = summary["run_id"].as_str().unwrap();
    let normal = s.read("out/threshold-gate/normal.csv");
    changed(&s, "{mapping: {name: customer}", "{mapping: {name: client}");
    let (code, report) = s.replay_json(&["--pipeline", "changed.yaml"]);
    assert_eq!(code, Some(4), "{report}");
    assert_eq!(report["ok"], false);
    let f = &report["failure"];
    let (seq, token) = events(&s, run)
        .into_iter()
        .find_map(|(seq, e)| match e {
            Event::StateClosed { state, .. } if state.node.as_str() == "rename" => {
                Some((seq, state.subject.to_string()))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(f["code"], "OUTPUT_DIVERGED", "{f}");
    assert_eq!(f["seq"], seq);
    assert_eq!(f["node"], "rename");
    assert_eq!(f["token"], token.as_str());
    assert_ne!(f["expected"], f["found"]);
    assert_eq!(report["reexecution"]["divergence"], *f);
    assert_eq!(report["reexecution"]["pipeline"], "changed.yaml");
    // Replaying the changed pipeline wrote nothing where the run wrote.
    assert_eq!(s.read("out/threshold-gate/normal.csv"), normal);
}

#[test]
fn a_changed_threshold_is_route_diverged_at_the_gate_and_token() {
    let s = Scratch::new();
    let summary = s.run_json("examples/threshold-gate/pipeline.yaml");
    let run = summary["run_id"].as_str().unwrap();
    // Only row 0 (amount 250.5) routes differently: with several diverging rows, which
    // one's route the record holds first depends on which worker committed first.
    changed(
        &s,
        "row['amount'] > 1000",
        "row['amount'] > 1000 or row['amount'] == 250.5",
    );
    let (code, report) = s.replay_json(&["--pipeline", "changed.yaml"]);
    assert_eq!(code, Some(4), "{report}");
    let f = &report["failure"];
    let seq = events(&s, run)
        .into_iter()
        .find_map(|(seq, e)| match e {
            Event::RouteDecided { token, .. } if token.as_str() == "t0" => Some(seq),
            _ => None,
        })
        .unwrap();
    assert_eq!(f["code"], "ROUTE_DIVERGED", "{f}");
    assert_eq!(f["seq"], seq);
    assert_eq!(f["node"], "amount_threshold");
    assert_eq!(f["token"], "t0");
    assert_eq!(f["expected"], "route \"false\" to output");
    assert_eq!(f["found"], "route \"true\" to high_values");

    // The text report says the same.
    let out = s
        .attest()
        .args(["replay", "--ledger", LEDGER, "--pipeline", "changed.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "ROUTE_DIVERGED at seq {seq}, node amount_threshold, token t0: "
        )),
        "{text}"
    );
}

#[test]
fn the_unchanged_pipeline_file_re_executes_without_divergence() {
    let s = Scratch::new();
    s.run_json("examples/threshold-gate/pipeline.yaml");
    let (code, report) = s.replay_json(&["--pipeline", "examples/threshold-gate/pipeline.yaml"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["reexecution"]["divergences"], 0);
}

#[test]
fn a_pipeline_of_another_shape_or_with_verify_only_is_refused_with_exit_2() {
    let s = Scratch::new();
    s.run_json("examples/threshold-gate/pipeline.yaml");
    changed(&s, "- name: rename", "- name: renamed");
    let out = s
        .attest()
        .args(["replay", "--ledger", LEDGER, "--pipeline", "changed.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("topology differs"), "{err}");
    assert!(err.contains("the run has transform `rename`"), "{err}");

    let out = s
        .attest()
        .args([
            "replay",
            "--ledger",
            LEDGER,
            "--verify-only",
            "--pipeline",
            "examples/threshold-gate/pipeline.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = s
        .attest()
        .args(["replay", "--ledger", LEDGER, "--pipeline", "missing.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}

#[test]
fn purged_rows_are_named_as_not_re_executed_and_verification_still_reports() {
    let s = Scratch::new();
    let summary = s.run_json("examples/threshold-gate/pipeline.yaml");
    let run = summary["run_id"].as_str().unwrap();
    let out = s
        .attest()
        .args([
            "purge",
            "--ledger",
            LEDGER,
            "--payloads",
            "--older-than",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let (code, report) = s.replay_json(&[]);
    // Verification passed (the purge is recorded): exit 0, with what could not be
    // re-executed named.
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["failure"], Value::Null);
    assert!(report["payloads_purged"].as_u64().unwrap() > 0, "{report}");
    let r = &report["reexecution"];
    assert_eq!(r["performed"], false);
    let n = &r["not_reexecuted"];
    assert_eq!(
        keys(n),
        BTreeSet::from(["reason", "rows", "rows_total", "states", "states_total"])
    );
    assert_eq!(n["rows_total"], 6);
    assert_eq!(n["rows"], serde_json::json!([0, 1, 2, 3, 4, 5]));
    let states: Vec<String> = events(&s, run)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::StateOpened { state, .. } => Some(state.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(n["states_total"], states.len());
    assert_eq!(n["states"], serde_json::json!(states));
    assert!(n["reason"].as_str().unwrap().contains("purged"), "{n}");

    let out = s
        .attest()
        .args(["replay", "--ledger", LEDGER])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("re-executed  no: source row 0"), "{text}");
    // States are listed in the record's order, which follows the workers' commits.
    assert!(
        text.contains(&format!("12 could not be re-executed: {}", states[0])),
        "{text}"
    );
}

#[test]
fn the_json_report_has_its_documented_keys() {
    let s = Scratch::new();
    s.run_json("examples/threshold-gate/pipeline.yaml");
    let top = BTreeSet::from([
        "run",
        "events",
        "head",
        "projections_checked",
        "payloads_checked",
        "payloads_purged",
        "failure",
        "reexecution",
        "ok",
        "elapsed_ms",
    ]);
    let reexecution = BTreeSet::from([
        "performed",
        "pipeline",
        "states",
        "events",
        "record_events",
        "compared",
        "divergences",
        "divergence",
        "not_reexecuted",
        "partial",
        "elapsed_ms",
    ]);
    let failure = BTreeSet::from([
        "code", "seq", "node", "token", "expected", "found", "message",
    ]);

    let (_, ok) = s.replay_json(&[]);
    assert_eq!(keys(&ok), top);
    assert_eq!(keys(&ok["reexecution"]), reexecution);
    assert_eq!(keys(&ok["head"]), BTreeSet::from(["count", "hash", "head"]));
    assert!(ok["reexecution"]["states"].is_u64());
    assert!(ok["reexecution"]["elapsed_ms"].is_u64());

    changed(&s, "row['amount'] > 1000", "row['amount'] > 200");
    let (_, diverged) = s.replay_json(&["--pipeline", "changed.yaml"]);
    assert_eq!(keys(&diverged), top);
    assert_eq!(keys(&diverged["failure"]), failure);
    assert_eq!(keys(&diverged["reexecution"]["divergence"]), failure);

    let (_, verify_only) = s.replay_json(&["--verify-only"]);
    assert_eq!(keys(&verify_only), top);
    assert_eq!(verify_only["reexecution"], Value::Null);
    assert_eq!(verify_only["ok"], true);

    // A verification failure has the same failure keys (node and token null).
    let wrong_head = format!("1:{}", "0".repeat(64));
    let (_, tampered) = s.replay_json(&["--expect-head", &wrong_head]);
    assert_eq!(tampered["ok"], false, "{tampered}");
    assert_eq!(keys(&tampered["failure"]), failure);
    assert_eq!(tampered["failure"]["node"], Value::Null);
    assert_eq!(tampered["reexecution"], Value::Null);
}

/// A replay of an LLM pipeline sends no request: the local server counts none, whether
/// the re-execution agrees with the record or asks something it cannot answer.
#[test]
fn replaying_an_llm_pipeline_sends_no_request() {
    use attest_tests::fake_llm::{Answering, FakeLlm};
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).unwrap();
    let s = Scratch::new();
    let pipeline = "examples/llm-sentiment/pipeline.yaml";
    let out = s
        .attest()
        .args(["run", pipeline, "--json"])
        .env("LLM_BASE_URL", server.url())
        .env("OPENROUTER_API_KEY", "sk-or-replay-secret")
        .env_remove("LLM_MODEL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(server.requests(), 6);

    // The same environment (another key: keys are redacted before anything is hashed).
    let out = s
        .attest()
        .args(["replay", "--ledger", LEDGER, "--json"])
        .env("LLM_BASE_URL", server.url())
        .env("OPENROUTER_API_KEY", "sk-or-another-key")
        .env_remove("LLM_MODEL")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["reexecution"]["divergences"], 0);
    assert_eq!(
        report["reexecution"]["compared"],
        report["reexecution"]["record_events"]
    );
    assert_eq!(server.requests(), 6, "the replay sent a request");

    // Another endpoint asks something else: refused from the record, still nothing sent.
    let out = s
        .attest()
        .args(["replay", "--ledger", LEDGER, "--json"])
        .env("LLM_BASE_URL", "http://127.0.0.1:9/v1")
        .env_remove("LLM_MODEL")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(4), "{report}");
    assert_eq!(
        report["failure"]["code"], "CALL_REQUEST_CHANGED",
        "{report}"
    );
    assert_eq!(report["failure"]["node"], "classify");
    assert_eq!(server.requests(), 6, "the replay sent a request");
}
