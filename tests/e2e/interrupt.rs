//! Ctrl-C stops a run cleanly: finished rows are written, the run is recorded as
//! interrupted, the exit code is 3, and the ledger still verifies.

use attest_tests::Scratch;
use std::time::{Duration, Instant};

#[test]
fn sigint_records_an_interrupted_run_and_exits_3() {
    let s = Scratch::new();
    // Enough rows that the run is still going when the signal arrives.
    let mut csv = String::from("id,name,amount,ok\n");
    for i in 0..400_000 {
        csv.push_str(&format!("{i},name {i},{}.5,true\n", i % 3000));
    }
    s.write("examples/threshold-gate/input.csv", &csv);
    let child = std::process::Command::new(attest_tests::binary())
        .args(["run", "examples/threshold-gate/pipeline.yaml", "--json"])
        .current_dir(s.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until rows are being written, then interrupt.
    let started = Instant::now();
    while !s.path().join("out/threshold-gate/normal.csv").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "interrupted");
    let rows = summary["rows"].as_u64().unwrap();
    assert!(rows > 0 && rows < 400_000, "rows {rows}");
    // Every row counted as written is in the files.
    let written = s.read("out/threshold-gate/normal.csv").lines().count() - 1
        + std::fs::read_to_string(s.path().join("out/threshold-gate/high.csv"))
            .map_or(0, |t| t.lines().count() - 1);
    let counted = summary["sinks"]["output"].as_u64().unwrap()
        + summary["sinks"]["high_values"].as_u64().unwrap();
    assert_eq!(written as u64, counted);
    let runs = s
        .attest()
        .args(["runs", "--ledger", "out/ledger", "--json"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["status"], "interrupted");
    let replay = s
        .attest()
        .args(["replay", "--ledger", "out/ledger"])
        .output()
        .unwrap();
    assert_eq!(
        replay.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&replay.stdout)
    );
}
