//! Every example, run through the binary: every output row checked, the ledger's counts,
//! verification, and lineage back to the source.

use attest_tests::Scratch;
use serde_json::Value;

fn run_json(s: &Scratch, pipeline: &str) -> Value {
    let out = s
        .attest()
        .args(["run", pipeline, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn replay_ok(s: &Scratch, run: &str) -> Value {
    let out = s
        .attest()
        .args(["replay", "--ledger", "out/ledger", "--run", run, "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn threshold_gate_routes_rows_and_records_everything() {
    let s = Scratch::new();
    let summary = run_json(&s, "examples/threshold-gate/pipeline.yaml");
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
    let summary = run_json(&s, "examples/quarantine/pipeline.yaml");
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
    let summary = run_json(&s, "examples/multi-transform/pipeline.yaml");
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
