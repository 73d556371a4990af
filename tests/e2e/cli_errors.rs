//! Bad input gets a clear message naming what and where, and the right exit code.

use attest_tests::Scratch;

#[test]
fn a_config_typo_is_exit_2_with_file_line_and_column() {
    let s = Scratch::new();
    let text = s
        .read("examples/threshold-gate/pipeline.yaml")
        .replace("  condition:", "  conditon:");
    s.write("bad.yaml", &text);
    let out = s.attest().args(["validate", "bad.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:22:3"), "{err}");
    assert!(err.contains("conditon"), "{err}");
    // `run` refuses it too, and records nothing.
    let out = s.attest().args(["run", "bad.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!s.path().join("out/ledger").exists());
}

#[test]
fn a_bad_condition_is_reported_at_its_position() {
    let s = Scratch::new();
    let text = s
        .read("examples/threshold-gate/pipeline.yaml")
        .replace("row['amount'] > 1000", "row['amount'] >> 1000");
    s.write("bad.yaml", &text);
    let out = s.attest().args(["validate", "bad.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:22:"), "{err}");
    assert!(err.contains("amount_threshold"), "{err}");
}

#[test]
fn a_missing_input_file_is_exit_2_naming_the_file() {
    let s = Scratch::new();
    std::fs::remove_file(s.path().join("examples/threshold-gate/input.csv")).unwrap();
    let out = s
        .attest()
        .args(["run", "examples/threshold-gate/pipeline.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("examples/threshold-gate/input.csv"), "{err}");
}

#[test]
fn validate_accepts_every_example() {
    let s = Scratch::new();
    for ex in ["threshold-gate", "quarantine", "multi-transform"] {
        let out = s
            .attest()
            .args(["validate", &format!("examples/{ex}/pipeline.yaml")])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{ex}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn replay_without_a_ledger_is_exit_2() {
    let s = Scratch::new();
    let out = s
        .attest()
        .args(["replay", "--ledger", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
}

#[test]
fn invalid_utf8_mid_file_fails_the_run_naming_the_line_and_keeps_earlier_rows() {
    let s = Scratch::new();
    let mut bytes = b"id,name,amount,ok\n1,Ada,5.0,true\n2,Al".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b"an,7.0,true\n");
    std::fs::write(s.path().join("examples/threshold-gate/input.csv"), bytes).unwrap();
    let out = s
        .attest()
        .args(["run", "examples/threshold-gate/pipeline.yaml", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "failed");
    let error = summary["error"].as_str().unwrap();
    assert!(
        error.contains("examples/threshold-gate/input.csv:3"),
        "{error}"
    );
    // The row read before the bad line was still processed, written and recorded.
    assert_eq!(summary["rows"], 1);
    assert_eq!(
        s.read("out/threshold-gate/normal.csv"),
        "id,amount,ok,customer\r\n1,5.0,True,Ada\r\n"
    );
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

#[test]
fn help_names_every_command_and_the_exit_codes() {
    let s = Scratch::new();
    let out = s.attest().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "run", "validate", "runs", "replay", "lineage", "head", "export", "purge", "plugins",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "`attest --help` lists no `{command}`: {help}"
        );
    }
    for code in [
        "0 success",
        "1 the run failed",
        "2 bad usage",
        "3 interrupted",
        "4 an audit-integrity violation",
    ] {
        assert!(
            help.contains(code),
            "`attest --help` lacks exit code {code:?}: {help}"
        );
    }
}

#[test]
fn lineage_help_points_at_the_json_schema_and_shows_examples() {
    let s = Scratch::new();
    let out = s.attest().args(["lineage", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("docs/lineage-json.md"), "{help}");
    for example in [
        "attest lineage --row 42",
        "attest lineage --output flagged:0",
    ] {
        assert!(help.contains(example), "no example {example:?}: {help}");
    }
}
