//! `attest export` and `attest verify-export` through the binary, on every example: the
//! jsonl export verifies without the ledger, a one-byte change is caught, and the
//! OpenLineage export describes the run, its nodes and datasets and carries the head.

use attest_tests::Scratch;
use serde_json::Value;

const EXAMPLES: [&str; 3] = ["threshold-gate", "quarantine", "multi-transform"];

fn run(s: &Scratch, example: &str) -> Value {
    s.run_json(&format!("examples/{example}/pipeline.yaml"))
}

fn export(s: &Scratch, run: &str, file: &str, format: &str) {
    let out = s
        .attest()
        .args([
            "export",
            "--ledger",
            "out/ledger",
            "--run",
            run,
            "--out",
            file,
            "--format",
            format,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn verify_export(s: &Scratch, file: &str) -> (Option<i32>, Value) {
    let out = s
        .attest()
        .args(["verify-export", file, "--json"])
        .output()
        .unwrap();
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

#[test]
fn every_example_exports_and_verifies_and_a_changed_byte_is_caught() {
    let s = Scratch::new();
    for example in EXAMPLES {
        let summary = run(&s, example);
        let run_id = summary["run_id"].as_str().unwrap();
        let file = format!("{example}.jsonl");
        export(&s, run_id, &file, "jsonl");
        let (rc, report) = verify_export(&s, &file);
        assert_eq!(rc, Some(0), "{example}: {report}");
        assert_eq!(report["run"], run_id);
        assert_eq!(report["head"]["head"], summary["head"], "{example}");

        let bytes = std::fs::read(s.path().join(&file)).unwrap();
        // A digit in a hash, a letter in a readable event, a byte of the manifest.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let positions = [
            text.find("\"hash\":\"").unwrap() + 10,
            text.find("\"event\":{").unwrap() + 12,
            text.rfind("\"count\":").unwrap() + 8,
        ];
        for at in positions {
            let mut t = bytes.clone();
            t[at] = if t[at] == b'1' { b'2' } else { b'1' };
            let changed = format!("{example}-{at}.jsonl");
            std::fs::write(s.path().join(&changed), t).unwrap();
            let (rc, report) = verify_export(&s, &changed);
            assert_eq!(rc, Some(4), "{example}: byte {at} changed: {report}");
            assert_eq!(report["ok"], false);
        }
    }
    let (rc, _) = verify_export(&s, "no-such-file.jsonl");
    assert_eq!(rc, Some(2));
}

#[test]
fn openlineage_export_describes_the_run_its_nodes_and_datasets() {
    let s = Scratch::new();
    let summary = run(&s, "threshold-gate");
    let run_id = summary["run_id"].as_str().unwrap();
    export(&s, run_id, "ol.jsonl", "openlineage");
    let events: Vec<Value> = s
        .read("ol.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (first, last) = (&events[0], &events[events.len() - 1]);
    assert_eq!(first["eventType"], "START");
    assert_eq!(last["eventType"], "COMPLETE");
    let pipeline_run = first["run"]["runId"].as_str().unwrap();
    assert_eq!(last["run"]["runId"], pipeline_run);
    let uuid = regex_like_uuid(pipeline_run);
    assert!(uuid, "{pipeline_run} is a UUID");
    // source, gate, transform(s), two sinks: each a child job with START and COMPLETE.
    let children: Vec<&Value> = events
        .iter()
        .filter(|e| e["run"]["facets"]["parent"]["run"]["runId"] == pipeline_run)
        .collect();
    assert_eq!(children.len(), events.len() - 2);
    assert_eq!(children.len() % 2, 0);
    for e in &events {
        assert_eq!(e["run"]["facets"]["attest_ledger"]["run"], run_id);
        let head = format!(
            "{}:{}",
            e["run"]["facets"]["attest_ledger"]["count"],
            e["run"]["facets"]["attest_ledger"]["head"]
                .as_str()
                .unwrap()
        );
        assert_eq!(head, summary["head"].as_str().unwrap());
    }
    let names = |key: &str| -> Vec<String> {
        last[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("inputs"), vec!["examples/threshold-gate/input.csv"]);
    let mut outputs = names("outputs");
    outputs.sort();
    assert_eq!(
        outputs,
        vec![
            "out/threshold-gate/high.csv",
            "out/threshold-gate/normal.csv"
        ]
    );
    let sink_outputs = children
        .iter()
        .filter(|e| e["eventType"] == "COMPLETE")
        .flat_map(|e| e["outputs"].as_array().unwrap().clone())
        .filter(|d| d["facets"]["attest_artifact"]["rows"].as_u64().is_some())
        .count();
    assert_eq!(
        sink_outputs, 2,
        "each sink's artifact, with its hash and rows"
    );
}

fn regex_like_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}
