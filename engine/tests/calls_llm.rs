//! The `llm` and `http` transforms in whole runs against the local fake server: each row's
//! call under its own state (seed 001), every failure kind ending in a recorded outcome,
//! secrets kept out of every ledger byte, and re-execution from the record.

mod support;

use attest_engine::calls::{CallBackend, RecordedBackend};
use attest_engine::run::RunStatus;
use attest_ledger::lineage::LineageQuery;
use attest_ledger::verify::VerifyOptions;
use attest_ledger::Ledger;
use attest_tests::fake_llm::{FakeLlm, Fault};
use std::sync::Arc;
use std::time::Duration;
use support::{all_bytes, ask_states, Pipeline};

/// Seed 001: rows run concurrently (8 workers for `pool_size: 8`) against a server that
/// holds each answer a while. Every row's call sits under its own state and token, asks
/// its own prompt and gets its own answer, run after run.
#[test]
fn concurrent_rows_each_record_their_own_call() {
    let server = FakeLlm::start();
    server.set_latency(Duration::from_millis(15));
    let n = 96u64;
    for round in 0..3 {
        let p = Pipeline::numbered(n);
        let ledger = Ledger::open(p.path("ledger")).unwrap();
        let yaml = p.llm_yaml(&server.url(), ", pool_size: 8, timeout_seconds: 20", 3);
        let s = p.run(&yaml, &[("FAKE_KEY", "sk-seed-001")], &ledger, None);
        assert_eq!(
            s.status,
            RunStatus::Completed,
            "round {round}: {:?}",
            s.error
        );
        assert_eq!(
            s.sinks,
            vec![("output".to_string(), n), ("errors".to_string(), 0)]
        );
        for row in 0..n {
            let prompt = format!("Review {row}: review number {row}");
            let states = ask_states(&ledger, &s.run_id, row);
            assert_eq!(states.len(), 1, "round {round} row {row}");
            let st = &states[0];
            assert_eq!(st.state, format!("t{row}@ask#1"));
            assert_eq!(st.calls.len(), 1, "round {round} row {row}");
            let call = &st.calls[0];
            assert_eq!((call.index, call.status.as_str()), (0, "responded"));
            let request = call.request.as_ref().unwrap();
            assert_eq!(
                request["body"]["json"]["messages"][0]["content"], prompt,
                "round {round}: row {row}'s call asked another row's prompt"
            );
            let response = call.response.as_ref().unwrap();
            let body: serde_json::Value =
                serde_json::from_str(response["body"]["text"].as_str().unwrap()).unwrap();
            assert_eq!(body["choices"][0]["message"]["content"], prompt);
            assert_eq!(
                st.output.as_ref().unwrap()["llm_response"],
                prompt,
                "round {round}: row {row}'s output holds another row's answer"
            );
        }
        let out = p.read("out.csv");
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("id,text,llm_response,llm_response_usage,llm_response_model")
        );
        for (row, line) in lines.enumerate() {
            assert!(
                line.starts_with(&format!(
                    "{row},review number {row},Review {row}: review number {row},"
                )),
                "{line}"
            );
        }
        let report = ledger.verify(&s.run_id, &VerifyOptions::default()).unwrap();
        assert!(report.ok(), "{:?}", report.failure);
    }
    assert!(
        server.max_in_flight() > 1,
        "the rows were never in flight together"
    );
}

/// What one failure kind must come to.
struct Kind {
    name: &'static str,
    /// How to make the server (or the address) fail.
    setup: fn(&FakeLlm),
    /// The base URL to use instead of the server's (a refused connection).
    url: Option<String>,
    /// `routed` (to `errors`, permanent) or `failed` (retries ran out).
    outcome: &'static str,
    /// Text the call's recorded error contains.
    call_error: &'static str,
}

fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1")
}

/// Every failure kind ends in a terminal outcome for the row, each attempt's state closed
/// failed with its error, and each attempt's call completed with its error: none pending,
/// none lost.
#[test]
fn every_failure_kind_ends_in_a_recorded_outcome() {
    let kinds = [
        Kind {
            name: "refused",
            setup: |_| {},
            url: Some(closed_port_url()),
            outcome: "failed",
            call_error: "refused",
        },
        Kind {
            name: "hang",
            setup: |s| s.fail_always(Some(Fault::Hang)),
            url: None,
            outcome: "failed",
            call_error: "timeout",
        },
        Kind {
            name: "reset",
            setup: |s| s.fail_always(Some(Fault::Reset)),
            url: None,
            outcome: "failed",
            call_error: "reset",
        },
        Kind {
            name: "malformed json",
            setup: |s| s.fail_always(Some(Fault::MalformedJson)),
            url: None,
            outcome: "routed",
            call_error: "not valid JSON",
        },
        Kind {
            name: "wrong content type",
            setup: |s| s.fail_always(Some(Fault::WrongContentType)),
            url: None,
            outcome: "routed",
            call_error: "content type is text/html",
        },
        Kind {
            name: "4xx",
            setup: |s| s.fail_always(Some(Fault::Status(400))),
            url: None,
            outcome: "routed",
            call_error: "HTTP 400",
        },
        Kind {
            name: "5xx",
            setup: |s| s.fail_always(Some(Fault::Status(500))),
            url: None,
            outcome: "failed",
            call_error: "server_error",
        },
        Kind {
            name: "429",
            setup: |s| s.fail_always(Some(Fault::Status(429))),
            url: None,
            outcome: "failed",
            call_error: "rate_limited",
        },
        Kind {
            name: "truncated",
            setup: |s| s.fail_always(Some(Fault::Truncated)),
            url: None,
            outcome: "routed",
            call_error: "response_truncated",
        },
    ];
    let attempts = 2;
    for k in kinds {
        let server = FakeLlm::start();
        (k.setup)(&server);
        let p = Pipeline::numbered(2);
        let ledger = Ledger::open(p.path("ledger")).unwrap();
        let url = k.url.clone().unwrap_or_else(|| server.url());
        let yaml = p.llm_yaml(&url, ", timeout_seconds: 0.5", attempts);
        let s = p.run(&yaml, &[("FAKE_KEY", "sk-kinds")], &ledger, None);
        assert_eq!(s.status, RunStatus::Completed, "{}: {:?}", k.name, s.error);
        let want_states = if k.outcome == "failed" { attempts } else { 1 };
        for row in 0..2 {
            let l = ledger
                .lineage(&s.run_id, &LineageQuery::Row(row))
                .unwrap()
                .unwrap();
            let outcome = l.tokens[0].outcome.as_ref().unwrap();
            assert_eq!(outcome.outcome, k.outcome, "{}", k.name);
            let states = ask_states(&ledger, &s.run_id, row);
            assert_eq!(states.len() as u32, want_states, "{}", k.name);
            for (i, st) in states.iter().enumerate() {
                assert_eq!(st.attempt, i as u32 + 1);
                assert_eq!(st.status, "failed", "{}", k.name);
                assert_eq!(st.calls.len(), 1, "{}: one call per attempt", k.name);
                let call = &st.calls[0];
                assert_eq!(call.status, "errored", "{}: {:?}", k.name, call);
                let error = call.error.as_deref().unwrap_or("");
                assert!(
                    error.contains(k.call_error),
                    "{}: call error {error:?}",
                    k.name
                );
                assert!(call.response.is_some(), "{}: no answer record", k.name);
            }
        }
        if k.outcome == "routed" {
            assert_eq!(p.read("errors.csv").lines().count(), 3, "{}", k.name);
        } else {
            assert_eq!(s.failed, 2, "{}", k.name);
        }
        let report = ledger.verify(&s.run_id, &VerifyOptions::default()).unwrap();
        assert!(report.ok(), "{}: {:?}", k.name, report.failure);
    }
}

/// A burst of capacity errors is retried under the retry policy: the failed attempt and
/// its call stay recorded under attempt 1's state, the answer under attempt 2's.
#[test]
fn a_retried_call_sits_under_its_own_attempt() {
    let server = FakeLlm::start();
    server.fail_next(1, Fault::Status(503));
    let p = Pipeline::numbered(1);
    let ledger = Ledger::open(p.path("ledger")).unwrap();
    let yaml = p.llm_yaml(&server.url(), "", 3);
    let s = p.run(&yaml, &[("FAKE_KEY", "sk-retry")], &ledger, None);
    assert_eq!(s.status, RunStatus::Completed, "{:?}", s.error);
    assert_eq!(s.sinks[0].1, 1);
    let states = ask_states(&ledger, &s.run_id, 0);
    let summary: Vec<(String, u32, String, u32)> = states
        .iter()
        .map(|st| {
            (
                st.state.clone(),
                st.calls.len() as u32,
                st.calls[0].status.clone(),
                st.calls[0].index,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("t0@ask#1".to_string(), 1, "errored".to_string(), 0),
            ("t0@ask#2".to_string(), 1, "responded".to_string(), 0),
        ]
    );
    assert_eq!(states[0].status, "failed");
    assert!(states[0].error.as_deref().unwrap().contains("rate_limited"));
    assert_eq!(server.requests(), 2);
}

/// The secret reaches the server but no byte of the ledger: from `${ENV}`, from a literal
/// `api_key` in the YAML, and from an `http` transform's `Authorization` header whose token
/// also appears in the URL.
#[test]
fn secrets_never_reach_the_ledger() {
    let server = FakeLlm::start();
    let env_secret = "sk-ENV-7f3a9c1e5b";
    let literal_secret = "sk-LITERAL-2d8e4f6a0c";
    let http_secret = "tok-HTTP-9b1d3f5e7a";
    let p = Pipeline::numbered(4);
    let ledger_dir = p.path("ledger");
    let runs = [
        (
            p.llm_yaml(&server.url(), "", 1),
            vec![("FAKE_KEY", env_secret)],
            env_secret,
        ),
        (
            p.llm_yaml(&server.url(), "", 1)
                .replace("'${FAKE_KEY}'", &format!("'{literal_secret}'")),
            vec![],
            literal_secret,
        ),
        (
            p.yaml(
                "http",
                &format!(
                    "url: '{}/chat/completions?key=${{TOKEN}}', method: POST, \
                     headers: {{Authorization: 'Bearer ${{TOKEN}}'}}, \
                     body_template: '{{\"messages\": [{{\"role\": \"user\", \"content\": \"{{{{ row.text }}}}\"}}]}}', \
                     response_fields: {{answer: /choices/0/message/content}}",
                    server.url()
                ),
                1,
            ),
            vec![("TOKEN", http_secret)],
            http_secret,
        ),
    ];
    let mut last_run = None;
    for (yaml, env, secret) in &runs {
        let ledger = Ledger::open(&ledger_dir).unwrap();
        let s = p.run(yaml, env, &ledger, None);
        last_run = Some(s.run_id.clone());
        assert_eq!(s.status, RunStatus::Completed, "{:?}", s.error);
        assert_eq!(s.sinks[0].1, 4, "{secret}: {}", p.read("errors.csv"));
        drop(ledger);
        assert!(
            server.credentials().iter().any(|c| c.contains(secret)),
            "{secret} was never sent, so this proves nothing"
        );
    }
    let files = all_bytes(&ledger_dir);
    assert!(!files.is_empty());
    for (_, _, secret) in &runs {
        for (path, bytes) in &files {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in {}",
                path.display()
            );
        }
    }
    // The redaction is visible where it happened: the recorded request says so.
    let ledger = Ledger::open(&ledger_dir).unwrap();
    // The `http` run's first call.
    let run = last_run.unwrap();
    let st = &ask_states(&ledger, &run, 0)[0];
    let request = st.calls[0].request.as_ref().unwrap();
    assert_eq!(
        request["headers"][0],
        serde_json::json!(["authorization", "<redacted>"])
    );
    assert!(request["url"]
        .as_str()
        .unwrap()
        .ends_with("?key=<redacted>"));
}

/// Re-execution with every call answered from the record: the same output, no request
/// sent; a changed request or a call the record lacks stops the run with its code.
#[test]
fn re_execution_answers_from_the_record() {
    let server = FakeLlm::start();
    let p = Pipeline::numbered(12);
    let ledger = Ledger::open(p.path("ledger")).unwrap();
    let yaml = p.llm_yaml(&server.url(), ", pool_size: 4", 1);
    let env = [("FAKE_KEY", "sk-replay")];
    let first = p.run(&yaml, &env, &ledger, None);
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    let out = p.read("out.csv");
    let sent = server.requests();
    assert_eq!(sent, 12);

    let recorded: Arc<dyn CallBackend> =
        Arc::new(RecordedBackend::new(ledger.clone(), first.run_id.clone()));
    std::fs::remove_file(p.path("out.csv")).unwrap();
    // Another key: credentials are redacted, so the requests still match.
    let again = p.run(
        &yaml,
        &[("FAKE_KEY", "sk-other")],
        &ledger,
        Some(recorded.clone()),
    );
    assert_eq!(again.status, RunStatus::Completed, "{:?}", again.error);
    assert_eq!(p.read("out.csv"), out);
    assert_eq!(server.requests(), sent, "re-execution sent a request");

    let changed = yaml.replace("Review {{ row.id }}", "Row {{ row.id }}");
    let diverged = p.run(&changed, &env, &ledger, Some(recorded.clone()));
    assert_eq!(diverged.status, RunStatus::Failed);
    let error = diverged.error.unwrap_or_default();
    assert!(error.contains("CALL_REQUEST_CHANGED"), "{error}");

    let longer = Pipeline::numbered(13);
    let more = longer.llm_yaml(&server.url(), ", pool_size: 4", 1);
    let missing = longer.run(&more, &env, &ledger, Some(recorded));
    assert_eq!(missing.status, RunStatus::Failed);
    let error = missing.error.unwrap_or_default();
    assert!(
        error.contains("CALL_MISSING") && error.contains("t12@ask#1"),
        "{error}"
    );
    assert_eq!(server.requests(), sent);
}

/// A template error is a load error with its place, before any run or call.
#[test]
fn a_bad_template_is_refused_at_load() {
    let p = Pipeline::numbered(1);
    let yaml = p
        .llm_yaml("http://127.0.0.1:9/v1", "", 1)
        .replace("{{ row.text }}", "{{ row.text ");
    let path = p.path("pipeline.yaml");
    std::fs::write(&path, yaml).unwrap();
    let errors = match attest_engine::build::load(&path, &|_| Some("k".into())) {
        Err(e) => e,
        Ok(_) => panic!("loaded"),
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .contains("pipeline.yaml:9:3: transform `ask`: plugin `llm`: template: syntax error"),
        "{errors:?}"
    );
}

/// What multi-query and `llm_batch` cannot run is refused at load, with its place: a
/// query template that does not compile, and multi-query inside `llm_batch`.
#[test]
fn bad_multi_query_and_llm_batch_options_are_refused_at_load() {
    let p = Pipeline::numbered(1);
    let yaml = p.llm_yaml(
        "http://127.0.0.1:9/v1",
        ", queries: {q1: {input_fields: {t: text}, template: '{{ t '}}",
        1,
    );
    let path = p.path("pipeline.yaml");
    std::fs::write(&path, yaml).unwrap();
    let errors = match attest_engine::build::load(&path, &|_| Some("k".into())) {
        Err(e) => e,
        Ok(_) => panic!("loaded"),
    };
    assert!(
        errors
            .iter()
            .any(|e| e.contains("pipeline.yaml:9:3: transform `ask`")
                && e.contains("query `q1`: template: syntax error")),
        "{errors:?}"
    );

    let d = p.dir.path().display();
    let batch = format!(
        "source:\n  plugin: csv\n  on_success: rows\n  options:\n    path: {d}/input.csv\n    \
         schema: {{mode: observed}}\n    on_validation_failure: discard\n\
         aggregations:\n- name: ask\n  plugin: llm_batch\n  input: rows\n  on_success: output\n  \
         on_error: discard\n  trigger: {{count: 2}}\n  output_mode: passthrough\n  \
         options: {{provider: openai, base_url: 'http://127.0.0.1:9/v1', model: m, api_key: k, \
         template: 'x', queries: {{q1: {{input_fields: {{t: text}}}}}}, schema: {{mode: observed}}}}\n\
         sinks:\n  output: {{plugin: csv, options: {{path: {d}/out.csv, schema: {{mode: observed}}}}}}\n"
    );
    std::fs::write(&path, batch).unwrap();
    let errors = match attest_engine::build::load(&path, &|_| Some("k".into())) {
        Err(e) => e,
        Ok(_) => panic!("loaded"),
    };
    assert!(
        errors
            .iter()
            .any(|e| e.contains("aggregation `ask`: plugin `llm_batch`")
                && e.contains("`queries` (multi-query) is not supported by `llm_batch`")),
        "{errors:?}"
    );
}

/// A calling transform after an aggregation runs on the sequencer's walk: the batch's
/// events (the outputs' creation included) must be in the ledger before the call is
/// allocated on an output token's state. Each output row gets its own recorded call.
#[test]
fn a_calling_transform_after_an_aggregation_records_its_calls() {
    let server = FakeLlm::start();
    let p = Pipeline::numbered(7);
    let d = p.dir.path().display();
    let yaml = format!(
        "source:\n  plugin: csv\n  on_success: rows\n  options:\n    path: {d}/input.csv\n    \
         schema: {{mode: fixed, fields: ['id: int', 'text: str']}}\n    on_validation_failure: discard\n\
         aggregations:\n- name: batch\n  plugin: batch_replicate\n  input: rows\n  on_success: ask_in\n  \
         on_error: discard\n  trigger: {{count: 3}}\n  output_mode: transform\n  \
         options: {{default_copies: 1, schema: {{mode: observed}}}}\n\
         transforms:\n- name: ask\n  plugin: llm\n  input: ask_in\n  on_success: output\n  on_error: errors\n  \
         options: {{provider: openai, base_url: '{}', model: m, api_key: '${{FAKE_KEY}}', \
         template: 'Batched {{{{ row.id }}}}', required_input_fields: [id]}}\n\
         sinks:\n  output: {{plugin: csv, options: {{path: {d}/out.csv, schema: {{mode: observed}}}}}}\n  \
         errors: {{plugin: csv, options: {{path: {d}/errors.csv, schema: {{mode: observed}}}}}}\n",
        server.url()
    );
    let ledger = Ledger::open(p.path("ledger")).unwrap();
    let s = p.run(&yaml, &[("FAKE_KEY", "sk-agg")], &ledger, None);
    assert_eq!(s.status, RunStatus::Completed, "{:?}", s.error);
    assert_eq!(s.sinks[0].1, 7, "{}", p.read("errors.csv"));
    assert_eq!(server.requests(), 7);
    for ordinal in 0..7u64 {
        let l = ledger
            .lineage(
                &s.run_id,
                &LineageQuery::Output {
                    sink: attest_ledger::NodeId::new("output").unwrap(),
                    ordinal,
                },
            )
            .unwrap()
            .unwrap();
        let focus = l.tokens.iter().find(|t| t.token == l.focus).unwrap();
        let st = focus.states.iter().find(|s| s.node == "ask").unwrap();
        assert_eq!(st.calls.len(), 1);
        let prompt =
            &st.calls[0].request.as_ref().unwrap()["body"]["json"]["messages"][0]["content"];
        let id = st.input.as_ref().unwrap()["id"].clone();
        assert_eq!(prompt, &serde_json::json!(format!("Batched {id}")));
    }
    let report = ledger.verify(&s.run_id, &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.failure);
}

/// Azure OpenAI: the deployment's URL with its API version, the key in `api-key`.
#[test]
fn azure_calls_the_deployment_with_an_api_key_header() {
    let server = FakeLlm::start();
    let p = Pipeline::numbered(1);
    let endpoint = server.url().trim_end_matches("/v1").to_string();
    let yaml = p.yaml(
        "llm",
        &format!(
            "provider: azure, endpoint: '{endpoint}/', deployment_name: gpt-dep, api_key: '${{FAKE_KEY}}', \
             template: 'Hello {{{{ row.id }}}}', required_input_fields: [id]"
        ),
        1,
    );
    let ledger = Ledger::open(p.path("ledger")).unwrap();
    let s = p.run(&yaml, &[("FAKE_KEY", "azure-key-123456")], &ledger, None);
    assert_eq!(s.status, RunStatus::Completed, "{:?}", s.error);
    assert_eq!(server.credentials(), vec!["azure-key-123456".to_string()]);
    let st = &ask_states(&ledger, &s.run_id, 0)[0];
    let request = st.calls[0].request.as_ref().unwrap();
    assert_eq!(
        request["url"],
        format!("{endpoint}/openai/deployments/gpt-dep/chat/completions?api-version=2024-10-21")
    );
    assert_eq!(
        request["headers"][0],
        serde_json::json!(["api-key", "<redacted>"])
    );
    assert_eq!(request["body"]["json"]["model"], "gpt-dep");
    assert_eq!(st.output.as_ref().unwrap()["llm_response_model"], "gpt-dep");
}
