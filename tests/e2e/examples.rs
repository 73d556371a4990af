//! Every example, run through the binary: every output row checked, the ledger's counts,
//! verification, and lineage back to the source.

use attest_tests::Scratch;
use serde_json::Value;

fn replay_ok(s: &Scratch, run: &str) -> Value {
    let (code, report) = s.replay_json(&["--run", run]);
    assert_eq!(code, Some(0), "{report}");
    report
}

#[test]
fn threshold_gate_routes_rows_and_records_everything() {
    let s = Scratch::new();
    let summary = s.run_json("examples/threshold-gate/pipeline.yaml");
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["rows"], 6);
    assert_eq!(summary["sinks"]["output"], 4);
    assert_eq!(summary["sinks"]["high_values"], 2);
    assert_eq!(summary["quarantined"], 0);
    assert_eq!(
        s.read("out/threshold-gate/normal.csv"),
        "id,amount,ok,customer\r\n1,250.5,True,Ada Lovelace\r\n3,999.99,False,Grace Hopper\r\n4,1000.0,True,Edsger Dijkstra\r\n6,42.0,True,Donald Knuth\r\n"
    );
    assert_eq!(
        s.read("out/threshold-gate/high.csv"),
        "id,amount,ok,customer\r\n2,1500.0,True,Alan Turing\r\n5,12000.25,False,Barbara Liskov\r\n"
    );
    let run = summary["run_id"].as_str().unwrap();
    let report = replay_ok(&s, run);
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["head"]["head"], summary["head"],
        "replay confirms the head run printed"
    );
    assert_eq!(report["head"]["hash"].as_str().unwrap().len(), 64);
    // Per row: ingested, 2 × (state opened + closed), route, outcome = 7 events; plus the
    // genesis, 1 + 2 + 2 registrations, edges, checkpoints, 2 artifacts and the end.
    assert!(report["events"].as_u64().unwrap() >= 6 * 7);
    assert_eq!(
        summary["head"].as_str().unwrap().split(':').next().unwrap(),
        report["events"].to_string()
    );

    // Lineage of the second high row: source row 4 (index 4), both nodes, route "true".
    let out = s
        .attest()
        .args([
            "lineage",
            "--ledger",
            "out/ledger",
            "--output",
            "high_values:1",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l["source_rows"][0]["row"], 4);
    // The source row as read (CSV cells by column name), and the row as validated.
    assert_eq!(l["source_rows"][0]["value"]["name"], "Barbara Liskov");
    assert_eq!(l["tokens"][0]["states"][0]["input"]["amount"], 12000.25);
    let states: Vec<&str> = l["tokens"][0]["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["rename", "amount_threshold"]);
    assert_eq!(l["tokens"][0]["routes"][0]["label"], "true");
    assert_eq!(l["tokens"][0]["outcome"]["outcome"], "routed");
    assert_eq!(l["tokens"][0]["outcome"]["sink"], "high_values");
    assert_eq!(l["artifacts"][0]["rows"], 2);

    // The text form names the same facts for a person.
    let text = s
        .attest()
        .args(["lineage", "--ledger", "out/ledger", "--row", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("source row 1"), "{text}");
    assert!(text.contains("amount_threshold"), "{text}");

    // `runs` lists it.
    let runs = s
        .attest()
        .args(["runs", "--ledger", "out/ledger", "--json"])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["run_id"], run);
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[0]["rows"], 6);
}

#[test]
fn quarantine_example_keeps_going_and_records_each_validation_error() {
    let s = Scratch::new();
    let summary = s.run_json("examples/quarantine/pipeline.yaml");
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["rows"], 7);
    assert_eq!(summary["quarantined"], 5);
    assert_eq!(summary["sinks"]["valid"], 2);
    assert_eq!(summary["sinks"]["quarantine"], 5);
    assert_eq!(
        s.read("out/quarantine/valid.csv"),
        "id,email,age,score\r\n1,ada@example.org,36,9.5\r\n5,barbara@example.org,84,9.75\r\n"
    );
    let q = s.read("out/quarantine/quarantine.jsonl");
    let lines: Vec<Value> = q
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[0]["age"], "forty-one",
        "quarantined rows keep their raw values"
    );
    assert_eq!(lines[2]["id"], "x4");
    let run = summary["run_id"].as_str().unwrap();
    replay_ok(&s, run);
    let out = s
        .attest()
        .args([
            "lineage",
            "--ledger",
            "out/ledger",
            "--row",
            "1",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        l["source_rows"][0]["validation_error"]
            .as_str()
            .unwrap()
            .contains("age"),
        "{l}"
    );
    assert_eq!(l["tokens"][0]["outcome"]["outcome"], "quarantined");
}

#[test]
fn multi_transform_example_renames_truncates_filters_and_routes() {
    let s = Scratch::new();
    let summary = s.run_json("examples/multi-transform/pipeline.yaml");
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["sinks"]["accepted"], 3);
    assert_eq!(summary["sinks"]["rejected"], 1);
    assert_eq!(summary["sinks"]["blocked"], 1);
    assert_eq!(
        s.read("out/multi-transform/accepted.csv"),
        "id,score,comment\r\n1,80,Short and sweet\r\n2,65,This comment is defin...\r\n5,55,Ünïcödé is handled in...\r\n"
    );
    assert_eq!(
        s.read("out/multi-transform/rejected.json"),
        r#"[{"id": "4", "score": "12", "comment": "Needs work"}]"#
    );
    assert_eq!(
        s.read("out/multi-transform/blocked.jsonl"),
        "{\"id\": \"3\", \"score\": \"90\", \"comment\": \"My password is hunter2\"}\n"
    );
    replay_ok(&s, summary["run_id"].as_str().unwrap());
}

#[test]
fn replay_checks_a_head_kept_outside_the_ledger() {
    let s = Scratch::new();
    let summary = s.run_json("examples/threshold-gate/pipeline.yaml");
    let head = summary["head"].as_str().unwrap().to_string();
    let ok = s
        .attest()
        .args(["replay", "--ledger", "out/ledger", "--expect-head", &head])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // A head from a longer history than the ledger holds: truncated or rewritten.
    let (count, hash) = head.split_once(':').unwrap();
    let longer = format!("{}:{hash}", count.parse::<u64>().unwrap() + 1);
    let bad = s
        .attest()
        .args([
            "replay",
            "--ledger",
            "out/ledger",
            "--expect-head",
            &longer,
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(4));
    let report: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(report["failure"]["code"], "HEAD_MISMATCH");
    let malformed = s
        .attest()
        .args([
            "replay",
            "--ledger",
            "out/ledger",
            "--expect-head",
            "nonsense",
        ])
        .output()
        .unwrap();
    assert_eq!(malformed.status.code(), Some(2));
}

#[test]
fn lineage_draws_dot_and_mermaid_graphs_of_a_real_run() {
    let s = Scratch::new();
    s.run_json("examples/threshold-gate/pipeline.yaml");
    for (format, start, must) in [
        (
            "dot",
            "digraph lineage {",
            "\"st_t1@amount_threshold#1\" -> \"out_t1\" [label=\"route true\"];",
        ),
        (
            "mermaid",
            "flowchart LR",
            "st_t1_amount_threshold_1 -->|\"route true\"| out_t1",
        ),
    ] {
        let out = s
            .attest()
            .args([
                "lineage",
                "--ledger",
                "out/ledger",
                "--output",
                "high_values:0",
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with(start), "{text}");
        assert!(text.contains(must), "{format}:\n{text}");
    }
}
