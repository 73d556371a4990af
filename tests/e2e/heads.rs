//! Heads kept outside the ledger, through the binary: `attest run` records its head in the
//! heads log, `attest head` prints and signs it, and `replay --expect-head` (COUNT:HASH, a
//! bare hash, or a signed head file with `--verify-key`) catches a truncated or rewritten
//! ledger and a head whose signature does not stand.

use attest_ledger::codec;
use attest_ledger::projection;
use attest_ledger::{Ledger, RunId};
use attest_tests::{Scratch, LEDGER};
use serde_json::Value;

fn run(s: &Scratch) -> Value {
    s.run_json("examples/threshold-gate/pipeline.yaml")
}

fn code(report: &Value) -> &str {
    report["failure"]["code"].as_str().unwrap_or("none")
}

/// Makes a key pair `name` / `name.pub` in the scratch directory.
fn keygen(s: &Scratch, name: &str) {
    let out = s.attest().args(["keygen", "--out", name]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sign(s: &Scratch, key: &str, out_file: &str) {
    let out = s
        .attest()
        .args([
            "head",
            "--ledger",
            LEDGER,
            "--sign-key",
            key,
            "--out",
            out_file,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rewrites the run's last record: its event becomes `RunFinished { Failed }` and its hash
/// is recomputed, so the chain itself still links; only a head kept outside can tell.
fn rewrite_last_record(s: &Scratch, run: &str) {
    let ledger = Ledger::open(s.path().join(LEDGER)).unwrap();
    let db = ledger.raw_db();
    let prefix = projection::log_prefix(&RunId::new(run).unwrap());
    let (key, segment) = db.scan_prefix(&prefix).last().unwrap().unwrap();
    let records: Vec<_> = codec::read_segment(&segment).map(|r| r.unwrap()).collect();
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut body = r.event_bytes.to_vec();
        if i + 1 == records.len() {
            assert_eq!(
                body,
                [0x15, 0x00],
                "the last event is RunFinished(Completed)"
            );
            body[1] = 0x01;
        }
        codec::write_record(&mut out, r.seq, &r.prev, &body);
    }
    db.insert(key, out).unwrap();
    ledger.flush().unwrap();
}

/// Removes the run's last log segment.
fn truncate(s: &Scratch, run: &str) {
    let ledger = Ledger::open(s.path().join(LEDGER)).unwrap();
    let db = ledger.raw_db();
    let prefix = projection::log_prefix(&RunId::new(run).unwrap());
    let (key, _) = db.scan_prefix(&prefix).last().unwrap().unwrap();
    db.remove(key).unwrap();
    ledger.flush().unwrap();
}

#[test]
fn run_records_its_head_and_head_prints_it() {
    let s = Scratch::new();
    let summary = run(&s);
    let log = s.read("out/ledger/heads.jsonl");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["run"], summary["run_id"]);
    assert_eq!(lines[0]["head"], summary["head"]);
    assert_eq!(lines[0]["status"], "completed");
    assert_eq!(summary["heads_log"], "out/ledger/heads.jsonl");
    // A second run appends.
    run(&s);
    assert_eq!(s.read("out/ledger/heads.jsonl").lines().count(), 2);

    let out = s
        .attest()
        .args([
            "head",
            "--ledger",
            LEDGER,
            "--run",
            summary["run_id"].as_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let head: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(head["head"], summary["head"]);
    assert_eq!(head["count"], summary["events"]);
}

#[test]
fn a_signed_head_verifies_and_a_bad_signature_is_an_integrity_failure() {
    let s = Scratch::new();
    run(&s);
    keygen(&s, "ops.key");
    keygen(&s, "other.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.path().join("ops.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the private key is readable by its owner only"
        );
    }
    sign(&s, "ops.key", "head.json");
    let (rc, report) =
        s.replay_json(&["--expect-head", "head.json", "--verify-key", "ops.key.pub"]);
    assert_eq!((rc, code(&report)), (Some(0), "none"), "{report}");

    let (rc, report) = s.replay_json(&[
        "--expect-head",
        "head.json",
        "--verify-key",
        "other.key.pub",
    ]);
    assert_eq!((rc, code(&report)), (Some(4), "HEAD_SIGNATURE_INVALID"));

    // The count edited to match a truncated ledger: the signature no longer stands.
    let mut edited: Value = serde_json::from_str(&s.read("head.json")).unwrap();
    edited["count"] = (edited["count"].as_u64().unwrap() - 1).into();
    s.write("edited.json", &edited.to_string());
    let (rc, report) = s.replay_json(&[
        "--expect-head",
        "edited.json",
        "--verify-key",
        "ops.key.pub",
    ]);
    assert_eq!((rc, code(&report)), (Some(4), "HEAD_SIGNATURE_INVALID"));

    // Stripping the signature does not help either.
    let mut stripped = edited.clone();
    stripped.as_object_mut().unwrap().remove("signature");
    s.write("stripped.json", &stripped.to_string());
    let (rc, report) = s.replay_json(&[
        "--expect-head",
        "stripped.json",
        "--verify-key",
        "ops.key.pub",
    ]);
    assert_eq!((rc, code(&report)), (Some(4), "HEAD_SIGNATURE_INVALID"));

    // A signed file without a key to check it is a usage error, as is a key without a file.
    let (rc, _) = s.replay_json(&["--expect-head", "head.json"]);
    assert_eq!(rc, Some(2));
    let (rc, _) = s.replay_json(&["--verify-key", "ops.key.pub"]);
    assert_eq!(rc, Some(2));
    // Keys are never overwritten.
    let out = s
        .attest()
        .args(["keygen", "--out", "ops.key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_rewritten_ledger_fails_every_kind_of_outside_head() {
    let s = Scratch::new();
    let summary = run(&s);
    let run_id = summary["run_id"].as_str().unwrap();
    let head = summary["head"].as_str().unwrap().to_string();
    let hash = head.split_once(':').unwrap().1.to_string();
    keygen(&s, "ops.key");
    sign(&s, "ops.key", "head.json");
    let (rc, _) = s.replay_json(&["--expect-head", &hash]);
    assert_eq!(rc, Some(0), "a bare hash of the intact ledger is found");

    rewrite_last_record(&s, run_id);
    for args in [
        vec!["--expect-head", head.as_str()],
        vec!["--expect-head", hash.as_str()],
        vec!["--expect-head", "head.json", "--verify-key", "ops.key.pub"],
    ] {
        let (rc, report) = s.replay_json(&args);
        assert_eq!(
            (rc, code(&report)),
            (Some(4), "HEAD_MISMATCH"),
            "{args:?}: {report}"
        );
    }
}

#[test]
fn a_truncated_ledger_fails_every_kind_of_outside_head() {
    let s = Scratch::new();
    let summary = run(&s);
    let run_id = summary["run_id"].as_str().unwrap();
    let head = summary["head"].as_str().unwrap().to_string();
    let hash = head.split_once(':').unwrap().1.to_string();
    keygen(&s, "ops.key");
    sign(&s, "ops.key", "head.json");
    // An unsigned head file, for operators who keep heads in write-once storage instead.
    let out = s
        .attest()
        .args(["head", "--ledger", LEDGER, "--out", "plain.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rc, report) = s.replay_json(&["--expect-head", "plain.json"]);
    assert_eq!(rc, Some(0), "{report}");
    truncate(&s, run_id);
    for args in [
        vec!["--expect-head", head.as_str()],
        vec!["--expect-head", "head.json", "--verify-key", "ops.key.pub"],
        vec!["--expect-head", "plain.json"],
    ] {
        let (rc, report) = s.replay_json(&args);
        assert_eq!(
            (rc, code(&report)),
            (Some(4), "HEAD_MISMATCH"),
            "{args:?}: {report}"
        );
    }
    // A bare hash the truncated chain no longer holds.
    let (rc, report) = s.replay_json(&["--expect-head", &hash]);
    assert_eq!((rc, code(&report)), (Some(4), "HEAD_MISMATCH"), "{report}");
    // Signing refuses a ledger that does not verify.
    let out = s
        .attest()
        .args([
            "head",
            "--ledger",
            LEDGER,
            "--sign-key",
            "ops.key",
            "--out",
            "again.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(!s.path().join("again.json").exists());
}

#[test]
fn purge_is_recorded_and_an_unrecorded_deletion_is_tampering() {
    let s = Scratch::new();
    let first = run(&s);
    let out = s
        .attest()
        .args([
            "purge",
            "--ledger",
            LEDGER,
            "--payloads",
            "--older-than",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let purge: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(purge["runs"][0], first["run_id"]);
    assert!(purge["removed"].as_u64().unwrap() > 0);
    assert_eq!(purge["records"], serde_json::json!([0]));
    let first_id = first["run_id"].as_str().unwrap();
    let (rc, report) = s.replay_json(&["--run", first_id]);
    assert_eq!(rc, Some(0), "{report}");
    assert_eq!(report["payloads_purged"], purge["payloads"]);

    // A second run (of other data: the payload store is shared, content-addressed), one
    // of whose row payloads is deleted behind the ledger's back.
    let out = s
        .attest()
        .args(["run", "examples/multi-transform/pipeline.yaml", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    let second_id = second["run_id"].as_str().unwrap();
    {
        let ledger = Ledger::open(s.path().join(LEDGER)).unwrap();
        let l = ledger
            .lineage(
                &RunId::new(second_id).unwrap(),
                &attest_ledger::lineage::LineageQuery::Row(2),
            )
            .unwrap()
            .unwrap();
        let hash = attest_ledger::Hash32::from_hex(&l.source_rows[0].hash).unwrap();
        // Every copy (the row's bytes may be stored by its ingestion and again as the
        // first transform's input, in different commit groups).
        assert!(
            ledger
                .raw_edit_payload(&hash, attest_ledger::packs::Edit::Remove)
                .unwrap()
                >= 1
        );
        ledger.flush().unwrap();
    }
    let (rc, report) = s.replay_json(&["--run", second_id]);
    assert_eq!(
        (rc, code(&report)),
        (Some(4), "PAYLOAD_MISSING"),
        "{report}"
    );
    // The first run's purged payloads still verify as purged.
    let (rc, _) = s.replay_json(&["--run", first_id]);
    assert_eq!(rc, Some(0));
}

#[test]
fn a_purge_log_rewritten_from_scratch_fails_its_outside_head() {
    let s = Scratch::new();
    let summary = run(&s);
    let purge = |days: &str| -> Value {
        let out = s
            .attest()
            .args([
                "purge",
                "--ledger",
                LEDGER,
                "--payloads",
                "--older-than",
                days,
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let purged = purge("0");
    let purge_head = purged["purge_head"].as_str().unwrap().to_string();
    let run_id = summary["run_id"].as_str().unwrap();
    let (rc, report) = s.replay_json(&["--run", run_id, "--expect-purge-head", &purge_head]);
    assert_eq!(rc, Some(0), "{report}");

    // Someone rewrites the purge log from scratch with a consistent chain that names one
    // hash more (so that deleting that payload would pass as purged).
    {
        let ledger = Ledger::open(s.path().join(LEDGER)).unwrap();
        let db = ledger.raw_db();
        let key = [b'Z', 0, 0, 0, 0, 0, 0, 0, 0];
        let stored = db.get(key).unwrap().unwrap();
        let record = codec::read_segment(&stored).next().unwrap().unwrap();
        let mut body: attest_ledger::purge::PurgeRecord =
            codec::decode(record.event_bytes).unwrap();
        body.hashes
            .push(attest_ledger::Hash32::of(b"another payload"));
        let mut framed = Vec::new();
        codec::write_record(
            &mut framed,
            0,
            &attest_ledger::Hash32::ZERO,
            &codec::encode(&body).unwrap(),
        );
        db.insert(key, framed).unwrap();
        ledger.flush().unwrap();
        assert!(
            ledger.purge_log().unwrap().broken.is_none(),
            "the forged chain is consistent"
        );
    }
    let (rc, report) = s.replay_json(&["--run", run_id]);
    assert_eq!(
        rc,
        Some(0),
        "without the outside head the rewrite passes: {report}"
    );
    let (rc, report) = s.replay_json(&["--run", run_id, "--expect-purge-head", &purge_head]);
    assert_eq!((rc, code(&report)), (Some(4), "HEAD_MISMATCH"), "{report}");
    let (rc, _) = s.replay_json(&["--run", run_id, "--expect-purge-head", "nonsense"]);
    assert_eq!(rc, Some(2));
}
