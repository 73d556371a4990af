//! The bad-input matrix (issue 4, docs/reliability.md): each test feeds `attest` one kind
//! of bad input and checks three things: the exit code, the message a user sees (it names
//! what is wrong and where), and what the ledger holds afterwards (either no run was
//! started, or every recorded run passes `attest replay`: no half-written record).

use attest_tests::fake_llm::{FakeLlm, Fault};
use attest_tests::Scratch;
use std::path::Path;
use std::process::Output;

const PIPELINE: &str = "examples/threshold-gate/pipeline.yaml";
const INPUT: &str = "examples/threshold-gate/input.csv";
const LEDGER: &str = "out/ledger";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run(s: &Scratch, pipeline: &str) -> Output {
    s.attest()
        .args(["run", pipeline])
        .output()
        .expect("attest runs")
}

/// Asserts the exit code and that the output holds every one of `needles`: stderr for
/// errors before a run starts, the run summary on stdout for a run that failed.
fn expect(out: &Output, code: i32, needles: &[&str]) {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out));
    // Shown with --nocapture: docs/reliability.md quotes these.
    println!("exit {:?}\n{text}", out.status.code());
    assert_eq!(out.status.code(), Some(code), "output: {text}");
    // The summary pads its labels to its longest sink name: compare words, not spaces.
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let flat = words(&text);
    for n in needles {
        assert!(flat.contains(&words(n)), "the output lacks {n:?}: {text}");
    }
    assert!(!text.contains("panicked"), "attest panicked: {text}");
}

/// What the ledger holds after a failure.
#[derive(Debug, PartialEq)]
enum Ledger {
    /// No run was started (the directory may not even exist).
    NoRun,
    /// Runs were recorded, with these statuses, and every one passes `attest replay`.
    Verified(Vec<String>),
}

fn ledger_state(s: &Scratch, dir: &str) -> Ledger {
    if !s.path().join(dir).join("db").exists() {
        return Ledger::NoRun;
    }
    let out = s
        .attest()
        .args(["runs", "--json", "--ledger", dir])
        .output()
        .expect("attest runs");
    assert_eq!(out.status.code(), Some(0), "runs: {}", stderr(&out));
    let runs: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("runs --json prints JSON");
    let runs = runs.as_array().expect("a list of runs").clone();
    if runs.is_empty() {
        return Ledger::NoRun;
    }
    let mut statuses = Vec::new();
    for r in runs {
        let id = r["run_id"].as_str().expect("a run id");
        let replay = s
            .attest()
            .args(["replay", "--ledger", dir, "--run", id])
            .output()
            .expect("attest replay");
        assert_eq!(
            replay.status.code(),
            Some(0),
            "replay of {id}: {}{}",
            String::from_utf8_lossy(&replay.stdout),
            stderr(&replay)
        );
        statuses.push(r["status"].as_str().unwrap_or("?").to_string());
    }
    Ledger::Verified(statuses)
}

/// The threshold-gate example with its input replaced by `bytes`.
fn with_input(bytes: &[u8]) -> Scratch {
    let s = Scratch::new();
    std::fs::write(s.path().join(INPUT), bytes).expect("write input");
    s
}

/// The threshold-gate example with `from` replaced by `to` in its pipeline, as bad.yaml.
fn with_config(from: &str, to: &str) -> Scratch {
    let s = Scratch::new();
    let text = s.read(PIPELINE);
    assert!(text.contains(from), "the example holds {from:?}");
    s.write("bad.yaml", &text.replacen(from, to, 1));
    s
}

/// A config error: exit 2 from both `validate` and `run`, and nothing recorded.
fn expect_config_error(s: &Scratch, needles: &[&str]) {
    let out = s.attest().args(["validate", "bad.yaml"]).output().unwrap();
    expect(&out, 2, needles);
    let out = run(s, "bad.yaml");
    expect(&out, 2, needles);
    assert_eq!(ledger_state(s, LEDGER), Ledger::NoRun);
}

// ---------------------------------------------------------------- input files

#[test]
fn missing_input_file() {
    let s = Scratch::new();
    std::fs::remove_file(s.path().join(INPUT)).unwrap();
    let out = run(&s, PIPELINE);
    expect(
        &out,
        2,
        &[&format!(
            "attest: source: {INPUT}: cannot read: No such file or directory"
        )],
    );
    assert_eq!(ledger_state(&s, LEDGER), Ledger::NoRun);
}

#[test]
fn unreadable_input_file() {
    let s = Scratch::new();
    let path = s.path().join(INPUT);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&path).is_ok() {
        // Running as root, where permissions do not apply: a directory in the file's
        // place cannot be read either.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
    }
    let out = run(&s, PIPELINE);
    expect(
        &out,
        2,
        &[&format!("attest: source: {INPUT}: cannot read: ")],
    );
    assert_eq!(ledger_state(&s, LEDGER), Ledger::NoRun);
}

#[test]
fn csv_ragged_rows_are_quarantined_with_their_line() {
    let s = Scratch::new();
    let text = s
        .read("examples/quarantine/input.csv")
        .lines()
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        s.path().join("examples/quarantine/input.csv"),
        format!("{text}\n9,a@b.c\n10,x@y.z,30,1.5,extra\n"),
    )
    .unwrap();
    let out = run(&s, "examples/quarantine/pipeline.yaml");
    expect(&out, 0, &[]);
    assert_eq!(
        s.read("out/quarantine/quarantine.jsonl"),
        "{\"__raw_line__\": \"9,a@b.c\", \"__line_number__\": 3, \"__row_number__\": 2}\n\
         {\"__raw_line__\": \"10,x@y.z,30,1.5,extra\", \"__line_number__\": 4, \"__row_number__\": 3}\n"
    );
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
    // The ledger keeps why: the validation error names the line.
    let out = s
        .attest()
        .args(["lineage", "--ledger", LEDGER, "--row", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("validation error: CSV parse error at line 3: expected 4 fields, got 2"),
        "{text}"
    );
}

#[test]
fn csv_invalid_utf8_names_file_and_line() {
    let s = with_input(b"id,name,amount,ok\n1,Ada,1.5,true\n2,Al\xffan,2.5,true\n3,Grace,3,true\n");
    let out = run(&s, PIPELINE);
    expect(
        &out,
        1,
        &[&format!(
            "error        source: {INPUT}:3: not valid UTF-8 (bad byte at offset 4 of the line)"
        )],
    );
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["failed".into()])
    );
}

#[test]
fn csv_ten_megabyte_field_is_read_whole() {
    let big = "x".repeat(10 * 1024 * 1024);
    let s = with_input(format!("id,name,amount,ok\n1,{big},5,true\n2,b,2000,false\n").as_bytes());
    let out = run(&s, PIPELINE);
    expect(&out, 0, &[]);
    let normal = s.read("out/threshold-gate/normal.csv");
    assert!(
        normal.contains(&big),
        "the 10 MB field reached the sink whole"
    );
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
}

#[test]
fn csv_bom_and_crlf_are_plain_input() {
    let s = with_input(b"\xef\xbb\xbfid,name,amount,ok\r\n1,Ada,1500,true\r\n2,Alan,5,false\r\n");
    let out = run(&s, PIPELINE);
    expect(&out, 0, &[]);
    // The BOM is not part of the first header, and no \r reaches the values.
    let high = s.read("out/threshold-gate/high.csv");
    // (field_mapper moves the renamed field last.)
    assert_eq!(high, "id,amount,ok,customer\r\n1,1500.0,True,Ada\r\n");
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
}

#[test]
fn csv_duplicate_headers_name_the_column() {
    let s = with_input(b"id,name,amount,name\n1,Ada,1500,x\n");
    let out = run(&s, PIPELINE);
    expect(
        &out,
        2,
        &[&format!(
            "attest: source: {INPUT}:1: header: duplicate field name after normalization: \
             \"name\" <- column 2 (\"name\"), column 4 (\"name\")"
        )],
    );
    assert_eq!(ledger_state(&s, LEDGER), Ledger::NoRun);
}

// ---------------------------------------------------------------- JSON inputs

/// The quarantine example reading `input.json` (array mode) with `bytes` in it.
fn json_input(bytes: &[u8]) -> Scratch {
    let s = Scratch::new();
    let text = s
        .read("examples/quarantine/pipeline.yaml")
        .replace("plugin: csv\n  on_success", "plugin: json\n  on_success")
        .replace(
            "examples/quarantine/input.csv",
            "examples/quarantine/input.json",
        );
    s.write("json.yaml", &text);
    std::fs::write(s.path().join("examples/quarantine/input.json"), bytes).unwrap();
    s
}

#[test]
fn json_truncated_document_is_one_quarantined_record() {
    let s = json_input(br#"[{"id": 1, "email": "a@b.c", "age": 3, "score": 1.5}, {"id": 2, "#);
    let out = run(&s, "json.yaml");
    expect(&out, 0, &[]);
    // Like ELSPETH: no data rows, one quarantined record saying what and where.
    assert_eq!(
        s.read("out/quarantine/quarantine.jsonl"),
        "{\"file_path\": \"examples/quarantine/input.json\", \"parse_error\": \"JSON parse error at \
         line 1 col 65: Expecting property name enclosed in double quotes\"}\n"
    );
    assert!(!s.path().join("out/quarantine/valid.csv").exists());
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
}

#[test]
fn json_not_an_array_is_one_quarantined_record() {
    let s = json_input(br#"{"id": 1, "email": "a@b.c", "age": 3, "score": 1.5}"#);
    let out = run(&s, "json.yaml");
    expect(&out, 0, &[]);
    assert_eq!(
        s.read("out/quarantine/quarantine.jsonl"),
        "{\"file_path\": \"examples/quarantine/input.json\", \
         \"structure_error\": \"Expected JSON array, got dict\"}\n"
    );
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
}

// ---------------------------------------------------------------- configuration

#[test]
fn config_typo() {
    let s = with_config("  condition:", "  conditon:");
    expect_config_error(
        &s,
        &[
            "bad.yaml:22:3: unknown key `conditon` in gate; expected one of: name, input, \
           condition, routes, fork_to (did you mean `condition`?)",
        ],
    );
}

#[test]
fn config_wrong_type() {
    let s = with_config(
        "on_validation_failure: discard",
        "on_validation_failure: [discard]",
    );
    expect_config_error(
        &s,
        &["bad.yaml:11:28: `on_validation_failure` must be a string; found a list"],
    );
}

#[test]
fn config_dangling_connection() {
    let s = with_config("  input: mapped", "  input: mappd");
    expect_config_error(
        &s,
        &["bad.yaml:21:10: no node produces `mappd`, the input of gate `amount_threshold`"],
    );
}

#[test]
fn config_cycle() {
    let loop_nodes = "- name: loop_a\n  plugin: passthrough\n  input: loop_x\n  on_success: loop_y\n  \
                      on_error: discard\n  options: {schema: {mode: observed}}\n\
                      - name: loop_b\n  plugin: passthrough\n  input: loop_y\n  on_success: loop_x\n  \
                      on_error: discard\n  options: {schema: {mode: observed}}\ngates:\n";
    let s = with_config("gates:\n", loop_nodes);
    expect_config_error(
        &s,
        &["bad.yaml:19:9: cycle: transform `loop_a`, transform `loop_b` feed each other"],
    );
}

/// The threshold-gate example with an `llm` transform (given `options`) before `rename`,
/// as bad.yaml.
fn with_llm(options: &str) -> Scratch {
    let s = Scratch::new();
    let text = s.read(PIPELINE).replacen(
        "- name: rename\n  plugin: field_mapper\n  input: gate_in\n",
        &format!(
            "- name: ask\n  plugin: llm\n  input: gate_in\n  on_success: gate_in2\n  \
             on_error: discard\n  options: {{provider: openai, model: m, api_key: k, \
             template: 'hi', required_input_fields: [], schema: {{mode: observed}}, {options}}}\n\
             - name: rename\n  plugin: field_mapper\n  input: gate_in2\n"
        ),
        1,
    );
    s.write("bad.yaml", &text);
    s
}

#[test]
fn config_invalid_pool_option() {
    let s = with_llm("pool_size: 0");
    expect_config_error(
        &s,
        &["bad.yaml:18:133: `pool_size` is 0; expected 1 or more"],
    );
}

/// An `llm` pipeline (threshold-gate with `ask` before `rename`) whose endpoint is at
/// `base_url`, with a quick retry policy of two attempts.
fn with_llm_endpoint(base_url: &str, timeout_seconds: f64) -> Scratch {
    let s = with_llm(&format!(
        "base_url: '{base_url}', timeout_seconds: {timeout_seconds}"
    ));
    let text = s.read("bad.yaml");
    s.write(
        "bad.yaml",
        &format!("{text}retry: {{max_attempts: 2, initial_delay_seconds: 0.01, max_delay_seconds: 0.1}}\n"),
    );
    s
}

/// The lineage of source row 0 as text.
fn lineage_row0(s: &Scratch) -> String {
    let out = s
        .attest()
        .args(["lineage", "--ledger", LEDGER, "--row", "0"])
        .output()
        .expect("attest lineage");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Nothing listens at the endpoint: every attempt's call is refused and recorded so; the
/// rows end failed once their retries run out, and the run exits 1 naming the transform
/// and the error.
#[test]
fn llm_endpoint_refuses_connections() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let s = with_llm_endpoint(&format!("http://127.0.0.1:{port}/v1"), 1.0);
    let out = run(&s, "bad.yaml");
    expect(
        &out,
        1,
        &[
            "unanswered   6 (rows failed: an external service gave no usable answer)",
            "error        ask: gave up after 2 attempt(s): {\"reason\":\"network_error\",\"kind\":\"refused\"",
        ],
    );
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
    let l = lineage_row0(&s);
    assert_eq!(l.matches("      error: refused: ").count(), 2, "{l}");
}

/// The endpoint accepts the request and never answers: each call times out after
/// `timeout_seconds` and is recorded as a timeout.
#[test]
fn llm_endpoint_hangs() {
    let server = FakeLlm::start();
    server.fail_always(Some(Fault::Hang));
    let s = with_llm_endpoint(&server.url(), 0.5);
    let out = run(&s, "bad.yaml");
    expect(
        &out,
        1,
        &[
            "unanswered   6 (rows failed: an external service gave no usable answer)",
            "error        ask: gave up after 2 attempt(s): {\"reason\":\"network_error\",\"kind\":\"timeout\"",
        ],
    );
    assert_eq!(server.requests(), 12);
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
    assert_eq!(
        lineage_row0(&s).matches("      error: timeout: ").count(),
        2
    );
}

/// The endpoint answers 200 with a body that is not JSON: a permanent error, so each row
/// goes to `on_error` (here `discard`) after one call, with the error on the state and
/// on the call, and the run completes.
#[test]
fn llm_endpoint_returns_garbage() {
    let server = FakeLlm::start();
    server.fail_always(Some(Fault::MalformedJson));
    let s = with_llm_endpoint(&server.url(), 5.0);
    let out = run(&s, "bad.yaml");
    expect(&out, 0, &["discarded    6"]);
    assert_eq!(server.requests(), 6);
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
    let l = lineage_row0(&s);
    // On the state and on its call.
    let error = "error: {\"reason\":\"llm_call_failed\",\"error\":\"the response is not valid JSON";
    assert_eq!(l.matches(error).count(), 2, "{l}");
}

/// The endpoint is out of capacity for good (429 to everything) and the transform is
/// pooled: each row's call is throttled and retried until `max_capacity_retry_seconds`,
/// then the row goes to `on_error` (here `discard`) with `retry_timeout`, every attempt's
/// call recorded in the row's one state with the throttle's statistics.
#[test]
fn llm_endpoint_out_of_capacity() {
    let server = FakeLlm::start();
    server.fail_always(Some(Fault::Status(429)));
    let s = with_llm(&format!(
        "base_url: '{}', pool_size: 2, recovery_step_ms: 20, max_dispatch_delay_ms: 50, \
         max_capacity_retry_seconds: 0.2",
        server.url()
    ));
    let out = run(&s, "bad.yaml");
    expect(&out, 0, &["discarded    6"]);
    assert!(
        server.requests() >= 12,
        "never retried: {}",
        server.requests()
    );
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
    let l = lineage_row0(&s);
    assert!(l.contains("ask attempt 1: failed"), "{l}");
    assert!(!l.contains("ask attempt 2"), "{l}");
    assert!(l.contains("error: {\"reason\":\"retry_timeout\""), "{l}");
    assert!(l.contains("    pool: "), "{l}");
    assert!(l.contains("call 1 llm: errored"), "{l}");
}

#[test]
fn config_unset_variable() {
    let s = with_config(
        "path: out/threshold-gate/normal.csv",
        "path: \"${ATTEST_TEST_UNSET_DIR}/normal.csv\"",
    );
    expect_config_error(
        &s,
        &["bad.yaml:25:68: environment variable `ATTEST_TEST_UNSET_DIR` is not set"],
    );
}

// ---------------------------------------------------------------- outputs

#[test]
fn output_directory_missing_is_created() {
    let s = with_config("out/threshold-gate/normal.csv", "out/new/deeper/normal.csv");
    let out = run(&s, "bad.yaml");
    expect(&out, 0, &[]);
    assert!(s.path().join("out/new/deeper/normal.csv").exists());
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
}

#[test]
fn output_path_blocked_by_a_file() {
    let s = with_config("out/threshold-gate/normal.csv", "blocker/normal.csv");
    std::fs::write(s.path().join("blocker"), b"").unwrap();
    let out = run(&s, "bad.yaml");
    expect(
        &out,
        2,
        &[
            "sink output: cannot create directory blocker for blocker/normal.csv: \
           part of that path exists and is not a directory",
        ],
    );
    assert_eq!(ledger_state(&s, LEDGER), Ledger::NoRun);
}

/// A tmpfs mounted at a directory (`options` as for `mount -o`), unmounted when dropped.
/// Tests use it as root, where permission bits do not apply and `mount` does.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Mount {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|st| st.success());
        assert!(
            ok,
            "this test mounts a tmpfs ({options}) at {}; it needs root, as the project's \
             machines and CI have",
            dir.display()
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn output_directory_read_only() {
    let s = with_config("out/threshold-gate/normal.csv", "ro/normal.csv");
    let dir = s.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores permission bits; there a read-only file system stands in.
    let _mount = if std::fs::File::create(dir.join("probe")).is_ok() {
        std::fs::remove_file(dir.join("probe")).unwrap();
        Some(Mount::tmpfs(&dir, "ro,size=64k"))
    } else {
        None
    };
    let out = run(&s, "bad.yaml");
    // The file is created with its first row, so this is found once the run has started:
    // the run fails, and is recorded as failed.
    expect(
        &out,
        1,
        &["error        sink output: ro/normal.csv: create: "],
    );
    assert!(!stderr(&out).contains("sink output: sink output"));
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["failed".into()])
    );
}

#[test]
fn output_disk_full() {
    assert!(
        Path::new("/dev/full").exists(),
        "/dev/full is needed to simulate a full disk"
    );
    let s = Scratch::new();
    std::fs::create_dir_all(s.path().join("out/full")).unwrap();
    std::os::unix::fs::symlink("/dev/full", s.path().join("out/full/normal.csv")).unwrap();
    let text = s
        .read(PIPELINE)
        .replace("out/threshold-gate/normal.csv", "out/full/normal.csv");
    s.write("bad.yaml", &text);
    let out = run(&s, "bad.yaml");
    expect(
        &out,
        1,
        &["error        sink output: out/full/normal.csv: flush: No space left on device"],
    );
    let err = stderr(&out);
    assert!(
        err.contains("failed: sink output: out/full/normal.csv: flush: No space left on device"),
        "the reason is on stderr too: {err}"
    );
    // The rows read are counted although the sink lost them (it said 0 when the flush at
    // the run's end failed).
    let summary = String::from_utf8_lossy(&out.stdout);
    let rows_in: u64 = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("rows in"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `rows in` line: {summary}"));
    assert!((1..=6).contains(&rows_in), "rows in {rows_in}: {summary}");
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["failed".into()])
    );
}

// ---------------------------------------------------------------- the ledger

#[test]
fn ledger_disk_full() {
    let mut input = String::from("id,name,amount,ok\n");
    for i in 0..5000 {
        input.push_str(&format!("{i},name {i},{}.5,true\n", i % 2000));
    }
    let s = with_input(input.as_bytes());
    let dir = s.path().join(LEDGER);
    std::fs::create_dir_all(&dir).unwrap();
    let mount = Mount::tmpfs(&dir, "size=300k");
    let out = run(&s, PIPELINE);
    expect(
        &out,
        1,
        &["attest: ledger storage error at out/ledger: No space left on device (os error 28)"],
    );
    // With room again, what was recorded verifies. The run could not record its end, so
    // it stays `running` (for `attest resume`).
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&dir)
        .status()
        .is_ok_and(|st| st.success());
    assert!(grown, "remount the ledger's tmpfs larger");
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["running".into()])
    );
    // ...and `attest resume` finishes it with the output of a run that had room.
    let resumed = s
        .attest()
        .args(["resume", "latest", "--ledger", LEDGER])
        .output()
        .expect("attest resume");
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let reference = with_input(input.as_bytes());
    assert_eq!(run(&reference, PIPELINE).status.code(), Some(0));
    for file in [
        "out/threshold-gate/normal.csv",
        "out/threshold-gate/high.csv",
    ] {
        assert!(s.read(file) == reference.read(file), "{file} differs");
    }
    assert_eq!(
        ledger_state(&s, LEDGER),
        Ledger::Verified(vec!["completed".into()])
    );
    drop(mount);
}

#[test]
fn ledger_locked_by_another_process() {
    let s = Scratch::new();
    let held = attest_ledger::Ledger::open(s.path().join(LEDGER)).expect("open the ledger");
    let out = run(&s, PIPELINE);
    expect(
        &out,
        2,
        &["attest: ledger at out/ledger is in use by another process \
           (lock file out/ledger/attest.lock)"],
    );
    drop(held);
    assert_eq!(ledger_state(&s, LEDGER), Ledger::NoRun);
}

/// sled's data file, the largest file under the ledger's `db/`.
fn sled_file(s: &Scratch) -> std::path::PathBuf {
    std::fs::read_dir(s.path().join(LEDGER).join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("sled's data file")
}

#[test]
fn ledger_corrupted_database_file() {
    type Corruption = fn(&mut Vec<u8>);
    let corruptions: [(&str, Corruption); 2] = [
        ("every byte after the header flipped", |b| {
            b.iter_mut().skip(64).for_each(|x| *x ^= 0x5a)
        }),
        ("cut in half", |b| b.truncate(b.len() / 2)),
    ];
    for (what, corrupt) in corruptions {
        let s = Scratch::new();
        let out = s
            .attest()
            .args(["run", "--json", PIPELINE])
            .output()
            .unwrap();
        expect(&out, 0, &[]);
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (id, head) = (
            summary["run_id"].as_str().unwrap().to_string(),
            summary["head"].as_str().unwrap().to_string(),
        );
        let file = sled_file(&s);
        let mut bytes = std::fs::read(&file).unwrap();
        corrupt(&mut bytes);
        std::fs::write(&file, bytes).unwrap();
        // sled recovers a corrupted log to its last intact point, so without an outside
        // head the damage can look like a shorter (or no) run. The head `attest run`
        // printed catches it: exit 4, never a panic.
        let out = s
            .attest()
            .args([
                "replay",
                "--ledger",
                LEDGER,
                "--run",
                &id,
                "--expect-head",
                &head,
            ])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        println!("{what}: exit {:?}\n{text}", out.status.code());
        assert_eq!(out.status.code(), Some(4), "{what}: {text}");
        assert!(
            text.contains("EMPTY_RUN") || text.contains("HEAD_MISMATCH"),
            "{what}: {text}"
        );
        // Without the head: whatever is left is reported, no panic.
        let out = s
            .attest()
            .args(["replay", "--ledger", LEDGER])
            .output()
            .unwrap();
        let text = stderr(&out);
        assert!(!text.contains("panicked"), "{what}: {text}");
        assert!(
            matches!(out.status.code(), Some(0 | 2 | 4)),
            "{what}: {text}"
        );
    }
}

#[test]
fn ledger_tampered_record_is_an_integrity_failure() {
    let s = Scratch::new();
    expect(&run(&s, PIPELINE), 0, &[]);
    {
        let ledger = attest_ledger::Ledger::open(s.path().join(LEDGER)).unwrap();
        let db = ledger.raw_db();
        // The first log segment (key prefix `L`): change one byte of its last event.
        let (key, value) = db
            .scan_prefix(b"L")
            .next()
            .expect("a log segment")
            .expect("readable");
        let mut edited = value.to_vec();
        let last = edited.len() - 1;
        edited[last] ^= 1;
        db.insert(key, edited).unwrap();
        ledger.flush().unwrap();
    }
    let out = s
        .attest()
        .args(["replay", "--ledger", LEDGER])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    println!("{text}");
    // The first segment holds the genesis record alone (it is written durably first).
    assert!(
        text.contains(
            "RECORD_ALTERED at seq 0: the record's content does not hash to the hash stored in it"
        ),
        "{text}"
    );
}
