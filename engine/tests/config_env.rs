//! `${VAR}` expansion, warnings for ELSPETH-only sections, the condition hook, and files
//! read beside the settings file.

use attest_engine::config::*;

fn env(name: &str) -> Option<String> {
    match name {
        "DATA" => Some("/data".into()),
        "WORKERS" => Some("6".into()),
        "STRICT" => Some("true".into()),
        "KEY" => Some("sk-123".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

const PIPE: &str = "source:
  plugin: csv
  on_success: out
  options:
    path: ${DATA}/in-${MISSING:-default}.csv
    schema: {mode: observed}
    on_validation_failure: discard
sinks:
  out: {plugin: csv, options: {path: '${OUT_DIR:-out}/o.csv', encoding: \"${EMPTY:-utf-8}\"}}
concurrency: {max_workers: '${WORKERS}'}
";

#[test]
fn values_expand_from_the_given_environment() {
    let c = parse_str(PIPE, "p.yaml", &env).unwrap();
    assert_eq!(c.source.options.path.value, "/data/in-default.csv");
    // The expanded value keeps the location of the text it came from.
    assert_eq!(c.source.options.path.loc, Loc::new(5, 11));
    assert_eq!(c.sinks[0].options.path.value, "out/o.csv");
    // An empty variable takes the default, as in the shell.
    assert_eq!(c.sinks[0].options.encoding, "utf-8");
    // Expanded strings may stand for numbers, as after ELSPETH's lax validation.
    assert_eq!(c.concurrency.max_workers, Some(6));
}

#[test]
fn unset_variables_are_errors_at_their_value() {
    let e = parse_str(PIPE, "p.yaml", &no_env).unwrap_err();
    let shown: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        shown,
        vec![
            "p.yaml:5:11: environment variable `DATA` is not set; expected it to be set, or a default written as `${DATA:-default}`",
            "p.yaml:10:28: environment variable `WORKERS` is not set; expected it to be set, or a default written as `${WORKERS:-default}`",
        ]
    );
}

#[test]
fn keys_are_not_expanded_and_malformed_references_are_errors() {
    let yaml = "source:
  plugin: csv
  on_success: out
  options: {path: '${1BAD}', schema: {mode: observed}, on_validation_failure: discard}
sinks:
  out: {plugin: csv, options: {path: '${UNCLOSED'}}
  ${DATA}: {plugin: csv, options: {path: x}}
";
    let e = parse_str(yaml, "p.yaml", &env).unwrap_err();
    let got: Vec<(usize, usize, bool)> = e
        .iter()
        .map(|e| (e.line, e.column, e.message.contains("${")))
        .collect();
    assert_eq!(got.len(), 4, "{e}");
    assert_eq!((got[0].0, got[0].1), (4, 19));
    assert!(
        e.0[0]
            .message
            .contains("`${1BAD}` is not a valid reference"),
        "{e}"
    );
    assert_eq!((got[1].0, got[1].1), (6, 38));
    assert!(e.0[1].message.contains("unterminated"), "{e}");
    // The key stays `${DATA}` (lower-cased, being all upper case), not a valid sink name;
    // and nothing writes to it.
    assert_eq!((got[2].0, got[2].1), (7, 3));
    assert!(e.0[2].message.contains("sink name `${data}`"), "{e}");
    assert_eq!((got[3].0, got[3].1), (7, 3));
    assert!(e.0[3].message.contains("unreachable"), "{e}");
}

#[test]
fn expansion_reaches_every_string_value() {
    let single = "source:
  plugin: csv
  on_success: a
  options: {path: in.csv, schema: {mode: observed}, on_validation_failure: discard}
transforms:
- name: classify
  plugin: llm
  input: a
  on_success: out
  on_error: discard
  options:
    provider: openrouter
    model: ${MODEL:-gpt-4o-mini}
    api_key: ${KEY}
    template: 'Rate: ${DATA}'
    required_input_fields: []
    pool_size: ${POOL:-8}
sinks:
  out: {plugin: csv, options: {path: o.csv}}
";
    let c = parse_str(single, "p.yaml", &env).unwrap();
    let TransformOptions::Llm(llm) = &c.transforms[0].options else {
        panic!()
    };
    assert_eq!(llm.model, "gpt-4o-mini");
    assert_eq!(llm.api_key, "sk-123");
    assert_eq!(llm.template, "Rate: /data");
    assert_eq!(llm.pool.pool_size, 8);
}

#[test]
fn quoted_numbers_are_still_strings() {
    // Only values produced by `${...}` are read as numbers; a quoted literal is a string.
    let yaml = format!("{}\nretry: {{max_attempts: '3'}}\n", PIPE.trim_end());
    let e = parse_str(&yaml, "p.yaml", &env).unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    assert_eq!(
        e.0[0].to_string(),
        "p.yaml:11:23: `max_attempts` must be an integer; found the string \"3\""
    );
}

// ---- warnings ----

#[test]
fn elspeth_only_sections_are_accepted_with_warnings() {
    let yaml = format!(
        "{}
landscape: {{url: 'sqlite:///audit.db', export: {{enabled: false}}}}
checkpoint: {{enabled: true, frequency: every_n, checkpoint_interval: 10}}
payload_store: {{backend: filesystem, base_path: ./payloads}}
telemetry: {{enabled: false}}
rate_limit: {{enabled: true}}
depends_on: []
commencement_gates: []
collection_probes: []
secrets: {{source: env}}
run_mode: replay
replay_from: run-1
",
        PIPE.trim_end()
    );
    let c = parse_str(&yaml, "p.yaml", &env).unwrap();
    let got: Vec<(usize, usize, String)> = c
        .warnings
        .iter()
        .map(|w| (w.line, w.column, w.message.clone()))
        .collect();
    let expected_keys = [
        (12, "checkpoint"),
        (13, "payload_store"),
        (14, "telemetry"),
        (15, "rate_limit"),
        (16, "depends_on"),
        (17, "commencement_gates"),
        (18, "collection_probes"),
        (19, "secrets"),
    ];
    // landscape (line 11) is accepted silently: the ledger replaces it.
    assert_eq!(got.len(), expected_keys.len() + 2, "{got:#?}");
    for ((line, column, message), (want_line, key)) in got.iter().zip(expected_keys) {
        assert_eq!((*line, *column), (want_line, 1), "{message}");
        assert!(
            message.starts_with(&format!(
                "`{key}` is an ELSPETH setting with no effect here"
            )),
            "{message}"
        );
    }
    assert_eq!((got[8].0, got[8].1), (20, 11));
    assert!(
        got[8].2.starts_with("run_mode `replay` is ignored"),
        "{}",
        got[8].2
    );
    assert_eq!((got[9].0, got[9].1), (21, 1));
    assert_eq!(
        c.warnings[0].to_string(),
        "p.yaml:12:1: warning: `checkpoint` is an ELSPETH setting with no effect here: attest records every row durably in its ledger and resumes with `attest resume`"
    );
}

#[test]
fn live_run_mode_and_landscape_give_no_warning() {
    let yaml = format!(
        "{}\nrun_mode: live\nlandscape: {{url: x}}\n",
        PIPE.trim_end()
    );
    let c = parse_str(&yaml, "p.yaml", &env).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let bad = format!("{}\nrun_mode: dry\n", PIPE.trim_end());
    let e = parse_str(&bad, "p.yaml", &env).unwrap_err();
    assert_eq!(
        e.0[0].to_string(),
        "p.yaml:11:11: `run_mode` is \"dry\"; expected one of: live, replay, verify"
    );
}

// ---- the condition hook ----

const GATES: &str = "source:
  plugin: csv
  on_success: a
  options: {path: in.csv, schema: {mode: observed}, on_validation_failure: discard}
gates:
- name: g1
  input: a
  condition: row['amount'] > 1000
  routes: {'true': b, 'false': out}
- name: g2
  input: b
  condition: \"row['x'] >> 2\"
  routes: {'true': agg_in, 'false': out}
aggregations:
- name: agg
  plugin: batch_stats
  input: agg_in
  on_success: out
  on_error: discard
  trigger:
    condition: >-
      row['batch_count']
      >= 10
  options: {value_field: amount}
sinks:
  out: {plugin: csv, options: {path: o.csv}}
";

#[test]
fn conditions_are_kept_as_text_and_validated_through_the_hook() {
    let c = parse_str(GATES, "p.yaml", &no_env).unwrap();
    let conditions: Vec<(ConditionOwner<'_>, &str)> = c
        .conditions()
        .into_iter()
        .map(|(o, cond)| (o, cond.source.as_str()))
        .collect();
    assert_eq!(
        conditions,
        vec![
            (ConditionOwner::Gate("g1"), "row['amount'] > 1000"),
            (ConditionOwner::Gate("g2"), "row['x'] >> 2"),
            (
                ConditionOwner::AggregationTrigger("agg"),
                "row['batch_count'] >= 10"
            ),
        ]
    );
    // A stand-in compiler that rejects `>>` and the word `batch_count`.
    let check = |src: &str| -> Result<(), (usize, String)> {
        if let Some(i) = src.find(">>") {
            return Err((i, "unexpected `>>`; expected an operand".into()));
        }
        if let Some(i) = src.find("batch_count") {
            return Err((i, "unknown name".into()));
        }
        Ok(())
    };
    let e = c.validate_conditions(check).unwrap_err();
    let shown: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        shown,
        vec![
            // Double-quoted on one line: the offset maps to the exact column.
            "p.yaml:12:24: invalid condition of gate `g2`: unexpected `>>`; expected an operand",
            // A folded block scalar cannot be mapped character by character: its start.
            "p.yaml:22:7: invalid trigger condition of aggregation `agg`: unknown name",
        ]
    );
    assert!(c.validate_conditions(|_| Ok(())).is_ok());
    // Plain scalars map exactly too.
    let g1 = &c.gates[0].condition;
    assert_eq!(g1.location_of(14), Loc::new(8, 28));
}

// ---- files beside the settings file ----

#[test]
fn template_and_lookup_files_are_read_beside_the_settings_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prompt.j2"), "Rate {{ row.text }}\n").unwrap();
    std::fs::write(dir.path().join("lookup.yaml"), "labels: {pos: 1, neg: 0}\n").unwrap();
    std::fs::write(dir.path().join("empty.yaml"), "").unwrap();
    let settings = dir.path().join("pipeline.yaml");
    let yaml = |lookup: &str, template: &str| {
        format!(
            "source:
  plugin: csv
  on_success: a
  options: {{path: in.csv, schema: {{mode: observed}}, on_validation_failure: discard}}
transforms:
- name: rate
  plugin: llm
  input: a
  on_success: out
  on_error: discard
  options:
    provider: openrouter
    model: m
    api_key: k
    template_file: {template}
    lookup_file: {lookup}
    required_input_fields: [text]
sinks:
  out: {{plugin: csv, options: {{path: o.csv}}}}
"
        )
    };
    std::fs::write(&settings, yaml("lookup.yaml", "prompt.j2")).unwrap();
    let c = load_with_env(&settings, &no_env).unwrap();
    let TransformOptions::Llm(llm) = &c.transforms[0].options else {
        panic!()
    };
    assert_eq!(llm.template, "Rate {{ row.text }}\n");
    assert_eq!(llm.template_source.as_deref(), Some("prompt.j2"));
    assert_eq!(
        llm.lookup,
        Some(serde_json::json!({"labels": {"pos": 1, "neg": 0}}))
    );

    std::fs::write(&settings, yaml("empty.yaml", "prompt.j2")).unwrap();
    let c = load_with_env(&settings, &no_env).unwrap();
    let TransformOptions::Llm(llm) = &c.transforms[0].options else {
        panic!()
    };
    assert_eq!(llm.lookup, Some(serde_json::json!({})));

    std::fs::write(&settings, yaml("missing.yaml", "../etc/passwd")).unwrap();
    let e = load_with_env(&settings, &no_env).unwrap_err();
    let got: Vec<(usize, usize)> = e.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(got, vec![(15, 20), (16, 18)], "{e}");
    assert!(e.0[0].message.contains("`../etc/passwd`"), "{e}");
    assert!(e.0[1].message.contains("cannot open `missing.yaml`"), "{e}");

    // A broken lookup file is reported in that file.
    std::fs::write(dir.path().join("bad.yaml"), "a: [1\n").unwrap();
    std::fs::write(&settings, yaml("bad.yaml", "prompt.j2")).unwrap();
    let e = load_with_env(&settings, &no_env).unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    assert!(e.0[0].file.ends_with("bad.yaml"), "{e}");
}
