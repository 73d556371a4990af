//! Lineage golden tests: each example is run, and `attest lineage` for a few rows (in every
//! format) is compared with a committed file under `tests/golden/lineage/`. Values that
//! differ from run to run are normalised first: the run id, sequence numbers (rows are
//! committed in whatever order the workers finish), and durations.
//!
//! To accept a deliberate change of output, run with `UPDATE_GOLDEN=1` and review the diff.

use attest_tests::{repo, Scratch};
use serde_json::Value;

/// (example, lineage target arguments, file stem).
const CASES: &[(&str, &[&str], &str)] = &[
    ("threshold-gate", &["--row", "0"], "row-0"),
    ("threshold-gate", &["--row", "1"], "row-1"),
    (
        "threshold-gate",
        &["--output", "high_values:1"],
        "output-high_values-1",
    ),
    ("quarantine", &["--row", "0"], "row-0"),
    ("quarantine", &["--row", "1"], "row-1"),
    ("quarantine", &["--row", "6"], "row-6"),
    ("multi-transform", &["--row", "0"], "row-0"),
    ("multi-transform", &["--row", "2"], "row-2"),
    ("multi-transform", &["--row", "4"], "row-4"),
];

const FORMATS: &[(&str, &str)] = &[
    ("json", "json"),
    ("text", "txt"),
    ("dot", "dot"),
    ("mermaid", "mmd"),
];

fn normalise_json(v: &mut Value, run: &str) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "duration_us" || k == "latency_us" || k == "seq" || k.ends_with("_seq") {
                    if v.is_number() {
                        *v = Value::from(0);
                    }
                } else {
                    normalise_json(v, run);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| normalise_json(i, run)),
        Value::String(s) if s.contains(run) => *s = s.replace(run, "<run>"),
        _ => {}
    }
}

/// The run id and every "in N us" duration replaced.
fn normalise_text(text: &str, run: &str) -> String {
    let text = text.replace(run, "<run>");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(" in ") {
        let after = &rest[at + 4..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(" us") {
            out.push_str(&rest[..at]);
            out.push_str(" in N us");
            rest = &after[digits + 3..];
        } else {
            out.push_str(&rest[..at + 4]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn lineage_matches_the_committed_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for example in ["threshold-gate", "quarantine", "multi-transform"] {
        // Each example in its own scratch directory and ledger, so `latest` is its run.
        let s = Scratch::new();
        let out = s
            .attest()
            .args([
                "run",
                &format!("examples/{example}/pipeline.yaml"),
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        let run = summary["run_id"].as_str().unwrap().to_string();
        for (_, args, stem) in CASES.iter().filter(|c| c.0 == example) {
            for (format, ext) in FORMATS {
                let out = s
                    .attest()
                    .args(["lineage", "--ledger", "out/ledger", "--format", format])
                    .args(*args)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{example} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8(out.stdout).unwrap();
                let actual = if *format == "json" {
                    let mut v: Value = serde_json::from_str(&text).unwrap();
                    normalise_json(&mut v, &run);
                    serde_json::to_string_pretty(&v).unwrap() + "\n"
                } else {
                    normalise_text(&text, &run)
                };
                let path = repo().join(format!("tests/golden/lineage/{example}/{stem}.{ext}"));
                if update {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &actual).unwrap();
                    continue;
                }
                let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                        path.display()
                    )
                });
                if expected != actual {
                    mismatches.push(format!(
                        "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn normalising_keeps_everything_but_run_specific_values() {
    assert_eq!(
        normalise_text("run r-1: a in 27 us, b in 3 us; in 4 rows in 5 ms", "r-1"),
        "run <run>: a in N us, b in N us; in 4 rows in 5 ms"
    );
    let mut v = serde_json::json!({"run": "r-1", "seq": 4, "opened_seq": 5, "duration_us": 9, "hash": "abc", "rows": 2});
    normalise_json(&mut v, "r-1");
    assert_eq!(
        v,
        serde_json::json!({"run": "<run>", "seq": 0, "opened_seq": 0, "duration_us": 0, "hash": "abc", "rows": 2})
    );
}
