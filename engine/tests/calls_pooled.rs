//! Pooled LLM execution in whole runs against the local fake server, under real threads,
//! many times: multi-query rows never see another row's results (seed 000), concurrent
//! rows each call under their own state (seed 001), `llm_batch` calls all sit under the
//! batch's one state (seed 003), a multi-query row's calls share one state's indices
//! (seed 004), AIMD against a burst of 429s with its statistics in the ledger, the
//! capacity deadline, every failure kind recorded, re-execution that answers every
//! call, capacity retries included, from the record and sends nothing, and requests
//! recorded (durably, before they are sent) while the pool is full.

mod support;

use attest_engine::calls::{
    CallBackend, CallContext, CallError, CallScope, Journal, LiveBackend, RecordedBackend,
    Redactor, Request, RequestBody,
};
use attest_engine::run::{RunStatus, RunSummary};
use attest_ledger::lineage::{CallLineage, Lineage, LineageQuery, StateLineage};
use attest_ledger::verify::VerifyOptions;
use attest_ledger::{
    BatchId, Event, Hash32, Ledger, NodeId, NodeKind, RunId, RunStart, StateId, Subject, TokenId,
};
use attest_tests::fake_llm::{FakeLlm, Fault};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::{ask_states, Pipeline};

const KEY: [(&str, &str); 1] = [("FAKE_KEY", "sk-pooled-test")];

/// Multi-query options: `queries` queries `q1..qN`, each asking (through the echoing
/// server) for a JSON object that carries its row's marker: `{"echo": "row R qK", "n": R}`.
fn queries(n: usize) -> String {
    let mut q = String::from(", queries: {");
    for k in 1..=n {
        q.push_str(&format!(
            "q{k}: {{input_fields: {{i: id}}, \
             template: '{{\"echo\": \"row {{{{ i }}}} q{k}\", \"n\": {{{{ i }}}}}}', \
             output_fields: [{{suffix: echo, type: string}}, {{suffix: n, type: integer}}]}}, "
        ));
    }
    q.push('}');
    q
}

/// The prompt (and, echoed, the answer) of query `k` for row `row`.
fn marker(row: u64, k: usize) -> String {
    format!("{{\"echo\": \"row {row} q{k}\", \"n\": {row}}}")
}

fn prompt_of(call: &CallLineage) -> String {
    call.request.as_ref().unwrap()["body"]["json"]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The HTTP status the call got, whether the response was accepted or judged an error.
fn http_status(call: &CallLineage) -> Option<u16> {
    let recorded = call.response.as_ref()?.get("status")?.as_u64()?;
    u16::try_from(recorded).ok()
}

fn answer_of(call: &CallLineage) -> Option<String> {
    let body = call.response.as_ref()?["body"]["text"]
        .as_str()?
        .to_string();
    let v: Value = serde_json::from_str(&body).ok()?;
    v["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_string)
}

fn verified(ledger: &Ledger, run: &RunId) {
    let report = ledger.verify(run, &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.failure);
}

fn completed(s: &RunSummary) {
    assert_eq!(s.status, RunStatus::Completed, "{:?}", s.error);
}

/// Seed 000 (and 004): many rows run their queries concurrently on one executor. Every
/// row's output holds exactly its own queries' answers, every call of a row sits under
/// the row's one state with indices 0..N in query order, asks its own row's prompt and
/// got its own answer, round after round.
#[test]
fn seed_000_multi_query_rows_never_see_another_rows_results() {
    let server = FakeLlm::start();
    server.set_latency(Duration::from_millis(4));
    let (rows, nq) = (48u64, 3usize);
    for round in 0..3 {
        let p = Pipeline::numbered(rows);
        let ledger = Ledger::open(p.path("ledger")).unwrap();
        let extra = format!(", pool_size: 8{}", queries(nq));
        let yaml = p.llm_yaml(&server.url(), &extra, 2);
        let s = p.run_with_workers(&yaml, &KEY, &ledger, None, 8);
        completed(&s);
        assert_eq!(
            s.sinks[0].1,
            rows,
            "round {round}: {}",
            p.read("errors.csv")
        );
        for row in 0..rows {
            let states = ask_states(&ledger, &s.run_id, row);
            assert_eq!(states.len(), 1, "round {round} row {row}");
            let st = &states[0];
            assert_eq!(st.state, format!("t{row}@ask#1"));
            let indices: Vec<u32> = st.calls.iter().map(|c| c.index).collect();
            assert_eq!(indices, (0..nq as u32).collect::<Vec<_>>());
            let out = st.output.as_ref().unwrap();
            for (k, call) in (1..=nq).zip(&st.calls) {
                let mine = marker(row, k);
                assert_eq!(prompt_of(call), mine, "round {round} row {row} q{k}");
                assert_eq!(answer_of(call).as_deref(), Some(mine.as_str()));
                assert_eq!(out[format!("q{k}_echo")], format!("row {row} q{k}"));
                assert_eq!(out[format!("q{k}_n")], json!(row));
                assert_eq!(out[format!("q{k}_llm_response")], mine);
            }
            assert!(st.pool.is_some(), "row {row}: no pool statistics");
        }
        let csv = p.read("out.csv");
        assert_eq!(csv.lines().count() as u64, rows + 1);
        // The fields, query by query in query order, after the input's.
        let mut header = String::from("id,text");
        for k in 1..=nq {
            header.push_str(&format!(
                ",q{k}_echo,q{k}_n,q{k}_llm_response,q{k}_llm_response_usage,q{k}_llm_response_model"
            ));
        }
        assert_eq!(csv.lines().next(), Some(header.as_str()));
        for (row, line) in csv.lines().skip(1).enumerate() {
            assert!(
                line.starts_with(&format!("{row},review number {row},row {row} q1,{row},")),
                "round {round}: {line}"
            );
        }
        verified(&ledger, &s.run_id);
    }
    assert!(server.max_in_flight() > 1, "the calls never overlapped");
}

/// Seed 004 under the pool: one multi-query row's queries are in flight together, and
/// their calls (capacity retries included) take one state's indices: the first round in
/// query order, then the retried queries, again in query order.
#[test]
fn seed_004_a_multi_query_rows_calls_share_one_states_indices() {
    let server = FakeLlm::start();
    server.set_latency(Duration::from_millis(30));
    let nq = 6;
    let p = Pipeline::numbered(1);
    let ledger = Ledger::open(p.path("ledger")).unwrap();
    let extra = format!(
        ", pool_size: 6, recovery_step_ms: 5, max_dispatch_delay_ms: 50{}",
        queries(nq)
    );
    let yaml = p.llm_yaml(&server.url(), &extra, 1);
    let s = p.run(&yaml, &KEY, &ledger, None);
    completed(&s);
    assert!(
        server.max_in_flight() >= 2,
        "the row's queries were never in flight together"
    );

    for round in 0..5 {
        let p = Pipeline::numbered(4);
        let ledger = Ledger::open(p.path("ledger")).unwrap();
        server.fail_next(5, Fault::Status(429));
        let s = p.run(&p.llm_yaml(&server.url(), &extra, 1), &KEY, &ledger, None);
        completed(&s);
        assert_eq!(s.sinks[0].1, 4, "round {round}: {}", p.read("errors.csv"));
        let mut retries = 0;
        for row in 0..4 {
            let st = &ask_states(&ledger, &s.run_id, row)[0];
            let asked: Vec<String> = st.calls.iter().map(prompt_of).collect();
            // Round one: every query, in order.
            let first: Vec<String> = (1..=nq).map(|k| marker(row, k)).collect();
            assert_eq!(asked[..nq], first[..], "round {round} row {row}");
            // Then the retries: each one a query that met a 429 earlier, in query order.
            let refused: Vec<&String> = st.calls[..nq]
                .iter()
                .zip(&asked)
                .filter(|(c, _)| http_status(c) == Some(429))
                .map(|(_, a)| a)
                .collect();
            let again: Vec<&String> = asked[nq..].iter().collect();
            assert_eq!(again, refused, "round {round} row {row}");
            let indices: Vec<u32> = st.calls.iter().map(|c| c.index).collect();
            assert_eq!(indices, (0..st.calls.len() as u32).collect::<Vec<_>>());
            retries += st.pool.as_ref().unwrap().capacity_retries;
        }
        assert_eq!(retries, 5, "round {round}");
        verified(&ledger, &s.run_id);
    }
}

/// Seed 001 through the pool: with more workers than permits, rows are in flight together
/// up to `pool_size` and never beyond, and every call sits under its own row's state and
/// token, asking its own prompt.
#[test]
fn seed_001_pooled_rows_are_bounded_by_pool_size_and_each_calls_under_its_own_state() {
    for round in 0..3 {
        let server = FakeLlm::start();
        server.set_latency(Duration::from_millis(10));
        let n = 64u64;
        let p = Pipeline::numbered(n);
        let ledger = Ledger::open(p.path("ledger")).unwrap();
        let yaml = p.llm_yaml(&server.url(), ", pool_size: 4", 2);
        let s = p.run_with_workers(&yaml, &KEY, &ledger, None, 12);
        completed(&s);
        assert_eq!(s.sinks[0].1, n);
        assert_eq!(server.max_in_flight(), 4, "round {round}");
        for row in 0..n {
            let st = &ask_states(&ledger, &s.run_id, row)[0];
            assert_eq!(st.state, format!("t{row}@ask#1"));
            assert_eq!(st.calls.len(), 1);
            assert_eq!(
                prompt_of(&st.calls[0]),
                format!("Review {row}: review number {row}")
            );
            assert_eq!(
                st.output.as_ref().unwrap()["llm_response"],
                format!("Review {row}: review number {row}")
            );
            let pool = st.pool.as_ref().unwrap();
            assert_eq!(pool.capacity_retries, 0);
        }
        verified(&ledger, &s.run_id);
    }
}

/// A burst of 429s: every row still succeeds, and the ledger's pool statistics account
/// for every retry, with the delays the throttle imposed.
#[test]
fn aimd_rides_out_a_burst_of_429s_and_records_it() {
    for (round, code) in [429u16, 503, 529].into_iter().enumerate() {
        let server = FakeLlm::start();
        server.set_latency(Duration::from_millis(2));
        let burst = 12;
        server.fail_next(burst, Fault::Status(code));
        let n = 24u64;
        let p = Pipeline::numbered(n);
        let ledger = Ledger::open(p.path("ledger")).unwrap();
        let yaml = p.llm_yaml(
            &server.url(),
            ", pool_size: 4, recovery_step_ms: 5, max_dispatch_delay_ms: 200",
            1,
        );
        let s = p.run(&yaml, &KEY, &ledger, None);
        completed(&s);
        assert_eq!(s.sinks, vec![("output".into(), n), ("errors".into(), 0)]);
        assert_eq!(server.requests(), n + burst as u64, "round {round}");
        let (mut retries, mut peak, mut throttled) = (0, 0, 0);
        for row in 0..n {
            let states = ask_states(&ledger, &s.run_id, row);
            assert_eq!(states.len(), 1, "capacity errors are not pipeline retries");
            let st = &states[0];
            let pool = st.pool.as_ref().unwrap();
            let refused = st
                .calls
                .iter()
                .filter(|c| http_status(c) == Some(code))
                .count();
            assert_eq!(pool.capacity_retries, refused as u64, "row {row}");
            assert_eq!(http_status(st.calls.last().unwrap()), Some(200));
            retries += pool.capacity_retries;
            peak = peak.max(pool.peak_delay_us);
            throttled += pool.throttled_us;
        }
        assert_eq!(retries, burst as u64);
        // The first back-off is the recovery step; twelve errors doubled it further.
        assert!(peak >= 10_000, "peak delay {peak} us");
        assert!(
            throttled >= 5_000 * burst as u64,
            "throttled {throttled} us"
        );
        verified(&ledger, &s.run_id);
    }
}

/// Out of capacity for good: each row's call is retried until
/// `max_capacity_retry_seconds`, then the row fails `retry_timeout`: its state failed with
/// that reason, every call completed (none pending), the pool statistics counting every
/// retry, and the unchanged row in `on_error`.
#[test]
fn the_capacity_deadline_ends_in_a_recorded_retry_timeout() {
    let server = FakeLlm::start();
    server.fail_always(Some(Fault::Status(429)));
    let p = Pipeline::numbered(3);
    let ledger = Ledger::open(p.path("ledger")).unwrap();
    let yaml = p.llm_yaml(
        &server.url(),
        ", pool_size: 2, recovery_step_ms: 10, max_dispatch_delay_ms: 40, \
         max_capacity_retry_seconds: 0.25",
        3,
    );
    let s = p.run(&yaml, &KEY, &ledger, None);
    completed(&s);
    assert_eq!(s.sinks, vec![("output".into(), 0), ("errors".into(), 3)]);
    for row in 0..3 {
        let states = ask_states(&ledger, &s.run_id, row);
        assert_eq!(
            states.len(),
            1,
            "retry_timeout is an error result, not retried"
        );
        let st = &states[0];
        assert_eq!(st.status, "failed");
        let error: Value = serde_json::from_str(st.error.as_deref().unwrap()).unwrap();
        assert_eq!(error["reason"], "retry_timeout");
        assert_eq!(error["attempts"], json!(st.calls.len()));
        assert_eq!(error["last_error"]["reason"], "rate_limited");
        assert!(st.calls.len() >= 2, "row {row}: never retried");
        for c in &st.calls {
            assert_eq!((c.status.as_str(), http_status(c)), ("errored", Some(429)));
        }
        let pool = st.pool.as_ref().unwrap();
        assert_eq!(pool.capacity_retries, st.calls.len() as u64 - 1);
        assert!(pool.peak_delay_us >= 10_000);
        let l = ledger
            .lineage(&s.run_id, &LineageQuery::Row(row))
            .unwrap()
            .unwrap();
        let outcome = l.tokens[0].outcome.as_ref().unwrap();
        assert_eq!(
            (outcome.outcome.as_str(), outcome.sink.as_deref()),
            ("routed", Some("errors"))
        );
    }
    verified(&ledger, &s.run_id);
}

/// The modes a failure kind is tried in.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Single query, `pool_size` 3.
    Pooled,
    /// Two queries, `pool_size` 3.
    MultiPooled,
    /// Two queries, `pool_size` 1: every error is an error result.
    MultiUnpooled,
}

/// Every failure kind, in every pooled mode, ends in a terminal outcome for the row, each
/// attempt's state closed failed with its error, pool statistics on each, and each call
/// completed: none pending, none lost.
#[test]
fn every_failure_kind_ends_in_a_recorded_outcome_when_pooled() {
    fn closed_port_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}/v1")
    }
    // (name, fault, refused connection, outcome when pooled, reason when pooled)
    let kinds: [(&str, Option<Fault>, bool, &str, &str); 9] = [
        ("refused", None, true, "failed", "network_error"),
        ("hang", Some(Fault::Hang), false, "failed", "network_error"),
        (
            "reset",
            Some(Fault::Reset),
            false,
            "failed",
            "network_error",
        ),
        (
            "5xx",
            Some(Fault::Status(500)),
            false,
            "failed",
            "server_error",
        ),
        (
            "429",
            Some(Fault::Status(429)),
            false,
            "routed",
            "retry_timeout",
        ),
        (
            "4xx",
            Some(Fault::Status(400)),
            false,
            "routed",
            "llm_call_failed",
        ),
        (
            "malformed",
            Some(Fault::MalformedJson),
            false,
            "routed",
            "llm_call_failed",
        ),
        (
            "html",
            Some(Fault::WrongContentType),
            false,
            "routed",
            "llm_call_failed",
        ),
        (
            "truncated",
            Some(Fault::Truncated),
            false,
            "routed",
            "response_truncated",
        ),
    ];
    let attempts = 2u32;
    for mode in [Mode::Pooled, Mode::MultiPooled, Mode::MultiUnpooled] {
        for (name, fault, refused, pooled_outcome, reason) in &kinds {
            let server = FakeLlm::start();
            server.fail_always(fault.clone());
            let url = if *refused {
                closed_port_url()
            } else {
                server.url()
            };
            let p = Pipeline::numbered(2);
            let ledger = Ledger::open(p.path("ledger")).unwrap();
            let (pool, multi) = match mode {
                Mode::Pooled => ("pool_size: 3", String::new()),
                Mode::MultiPooled => ("pool_size: 3", queries(2)),
                Mode::MultiUnpooled => ("pool_size: 1", queries(2)),
            };
            let extra = format!(
                ", timeout_seconds: 0.5, {pool}, recovery_step_ms: 10, \
                 max_dispatch_delay_ms: 20, max_capacity_retry_seconds: 0.1{multi}"
            );
            let s = p.run(&p.llm_yaml(&url, &extra, attempts), &KEY, &ledger, None);
            let what = format!("{mode:?} {name}");
            completed(&s);
            let outcome = match mode {
                Mode::MultiUnpooled => "routed",
                _ => pooled_outcome,
            };
            let want_states = if outcome == "failed" { attempts } else { 1 };
            for row in 0..2 {
                let l = ledger
                    .lineage(&s.run_id, &LineageQuery::Row(row))
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    l.tokens[0].outcome.as_ref().unwrap().outcome,
                    outcome,
                    "{what}"
                );
                let states = ask_states(&ledger, &s.run_id, row);
                assert_eq!(states.len() as u32, want_states, "{what}");
                for st in &states {
                    assert_eq!(st.status, "failed", "{what}");
                    assert!(st.pool.is_some(), "{what}: no pool statistics");
                    assert!(!st.calls.is_empty(), "{what}: no call recorded");
                    for c in &st.calls {
                        assert_eq!(c.status, "errored", "{what}: {c:?}");
                        assert!(c.response.is_some(), "{what}: no answer record");
                    }
                    let error: Value = serde_json::from_str(st.error.as_deref().unwrap()).unwrap();
                    match mode {
                        Mode::Pooled => assert_eq!(error["reason"], *reason, "{what}"),
                        _ => {
                            assert_eq!(error["reason"], "multi_query_failed", "{what}");
                            assert_eq!(error["failed_queries"][0]["query"], "q1", "{what}");
                            // Without a pool a 429 is not throttled: its own reason.
                            let reason = match (mode, *name) {
                                (Mode::MultiUnpooled, "429") => "rate_limited",
                                _ => reason,
                            };
                            assert_eq!(
                                error["failed_queries"][0]["reason"], reason,
                                "{what}: {error}"
                            );
                        }
                    }
                }
                if let Mode::MultiUnpooled = mode {
                    // One query after the other, stopping at the first failure.
                    assert_eq!(states[0].calls.len(), 1, "{what}");
                }
            }
            if outcome == "routed" {
                assert_eq!(p.read("errors.csv").lines().count(), 3, "{what}");
            } else {
                assert_eq!(s.failed, 2, "{what}");
            }
            verified(&ledger, &s.run_id);
        }
    }
}

/// The calls of a run as (state, index, request hash, status, HTTP status, response
/// hash), for comparing a re-execution with its record call for call.
fn call_list(
    ledger: &Ledger,
    run: &RunId,
    rows: u64,
) -> Vec<(String, u32, String, String, Option<u16>)> {
    let mut out = Vec::new();
    for row in 0..rows {
        let l = ledger
            .lineage(run, &LineageQuery::Row(row))
            .unwrap()
            .unwrap();
        let mut states: Vec<&StateLineage> = l.tokens.iter().flat_map(|t| &t.states).collect();
        states.extend(l.batches.iter().flat_map(|b| &b.states));
        for st in states {
            for c in &st.calls {
                out.push((
                    st.state.clone(),
                    c.index,
                    c.request_hash.clone(),
                    c.status.clone(),
                    http_status(c),
                ));
            }
        }
    }
    out
}

/// Re-execution answers every call, capacity retries included, by (state, index) from the
/// record and sends nothing, and follows the record's retry decisions rather than its own
/// deadline: given a deadline that would have given up at once, it still retries where
/// the record did; given one that would never give up, it still stops where the record
/// did.
#[test]
fn re_execution_replays_capacity_retries_call_for_call_and_sends_nothing() {
    let server = FakeLlm::start();
    server.set_latency(Duration::from_millis(2));
    let n = 8u64;
    let p = Pipeline::numbered(n);
    let ledger = Ledger::open(p.path("ledger")).unwrap();
    let pool = ", pool_size: 4, recovery_step_ms: 5, max_dispatch_delay_ms: 40";
    let with = |deadline: &str, multi: &str| {
        p.llm_yaml(
            &server.url(),
            &format!("{pool}, max_capacity_retry_seconds: {deadline}{multi}"),
            1,
        )
    };
    for multi in [String::new(), queries(3)] {
        // Retries that succeeded.
        server.fail_next(9, Fault::Status(429));
        let first = p.run(&with("30", &multi), &KEY, &ledger, None);
        completed(&first);
        assert_eq!(first.sinks[0].1, n);
        let out = p.read("out.csv");
        let recorded = call_list(&ledger, &first.run_id, n);
        assert!(recorded.iter().any(|c| c.4 == Some(429)));
        let sent = server.requests();
        let record: Arc<dyn CallBackend> =
            Arc::new(RecordedBackend::new(ledger.clone(), first.run_id.clone()));
        std::fs::remove_file(p.path("out.csv")).unwrap();
        // A deadline of a microsecond: by its own rule it would give up after each 429.
        let again = p.run(&with("0.000001", &multi), &KEY, &ledger, Some(record));
        completed(&again);
        assert_eq!(p.read("out.csv"), out);
        assert_eq!(call_list(&ledger, &again.run_id, n), recorded);
        assert_eq!(server.requests(), sent, "re-execution sent a request");

        // Retries that ran out.
        server.fail_always(Some(Fault::Status(429)));
        let first = p.run(&with("0.1", &multi), &KEY, &ledger, None);
        server.fail_always(None);
        completed(&first);
        assert_eq!(
            first.sinks,
            vec![("output".into(), 0), ("errors".into(), n)]
        );
        let errors = p.read("errors.csv");
        let recorded = call_list(&ledger, &first.run_id, n);
        let sent = server.requests();
        let record: Arc<dyn CallBackend> =
            Arc::new(RecordedBackend::new(ledger.clone(), first.run_id.clone()));
        std::fs::remove_file(p.path("errors.csv")).unwrap();
        // A deadline of an hour: by its own rule it would go on past the record.
        let again = p.run(&with("3600", &multi), &KEY, &ledger, Some(record));
        completed(&again);
        assert_eq!(p.read("errors.csv"), errors);
        assert_eq!(call_list(&ledger, &again.run_id, n), recorded);
        assert_eq!(server.requests(), sent, "re-execution sent a request");
    }
}

/// An `llm_batch` pipeline: batches of `count`, passthrough, `pool_size` 4.
fn batch_yaml(p: &Pipeline, url: &str, count: u64, extra: &str) -> String {
    let d = p.dir.path().display();
    format!(
        "source:\n  plugin: csv\n  on_success: rows\n  options:\n    path: {d}/input.csv\n    \
         schema: {{mode: fixed, fields: ['id: int', 'text: str']}}\n    on_validation_failure: discard\n\
         aggregations:\n- name: ask\n  plugin: llm_batch\n  input: rows\n  on_success: output\n  \
         on_error: discard\n  trigger: {{count: {count}}}\n  output_mode: passthrough\n  \
         options: {{provider: openai, base_url: '{url}', model: fake-model, api_key: '${{FAKE_KEY}}', \
         template: 'Member {{{{ row.id }}}}: {{{{ row.text }}}}', required_input_fields: [id, text], \
         pool_size: 4, recovery_step_ms: 5, max_dispatch_delay_ms: 40{extra}}}\n\
         sinks:\n  output: {{plugin: csv, options: {{path: {d}/out.csv, schema: {{mode: observed}}}}}}\n"
    )
}

fn row_lineage(ledger: &Ledger, run: &RunId, row: u64) -> Lineage {
    ledger
        .lineage(run, &LineageQuery::Row(row))
        .unwrap()
        .unwrap()
}

/// Seed 003: every call of an `llm_batch` batch sits under the batch's one state (no state
/// is invented per row), names the member it served, asks that member's prompt and
/// brought that member its own answer; lineage for a member row (by row and by output)
/// shows that row's own call. Under real threads, several times.
#[test]
fn seed_003_llm_batch_calls_sit_under_the_batchs_state_and_serve_their_member() {
    let server = FakeLlm::start();
    server.set_latency(Duration::from_millis(5));
    let n = 10u64;
    for round in 0..4 {
        let p = Pipeline::numbered(n);
        let ledger = Ledger::open(p.path("ledger")).unwrap();
        server.fail_next(3, Fault::Status(429));
        let s = p.run(&batch_yaml(&p, &server.url(), 4, ""), &KEY, &ledger, None);
        completed(&s);
        assert_eq!(s.sinks[0].1, n, "round {round}");
        let run = &s.run_id;
        for row in 0..n {
            let l = row_lineage(&ledger, run, row);
            let token = &l.tokens[0];
            assert!(token.states.is_empty(), "a per-row state was recorded");
            assert_eq!(l.batches.len(), 1);
            let b = &l.batches[0];
            assert_eq!(b.batch, format!("ask#b{}", row / 4));
            assert_eq!(b.status, "passthrough");
            let st = &b.states[0];
            assert_eq!(st.state, format!("ask#b{}@ask#1", row / 4));
            // Only this row's call (a retried one shows every attempt), the others counted.
            let members = b.members.len() as u32;
            assert!(!st.calls.is_empty());
            let retries = st.calls.len() as u32 - 1;
            let pool = st.pool.as_ref().unwrap();
            assert!(u64::from(retries) <= pool.capacity_retries);
            let batch_calls = members + pool.capacity_retries as u32;
            assert_eq!(st.calls.len() as u32 + st.other_calls, batch_calls);
            let mine = format!("Member {row}: review number {row}");
            for c in &st.calls {
                assert_eq!(c.served.as_deref(), Some(format!("t{row}").as_str()));
                assert_eq!(prompt_of(c), mine, "round {round} row {row}");
            }
            let last = st.calls.last().unwrap();
            assert_eq!(answer_of(last).as_deref(), Some(mine.as_str()));
            // The member's own output row.
            let by_output = ledger
                .lineage(
                    run,
                    &LineageQuery::Output {
                        sink: NodeId::new("output").unwrap(),
                        ordinal: row,
                    },
                )
                .unwrap()
                .unwrap();
            assert_eq!(by_output.focus, format!("t{row}"));
            let calls = &by_output.batches[0].states[0].calls;
            assert_eq!(calls.last().map(prompt_of), Some(mine.clone()));
            assert!(calls
                .iter()
                .all(|c| c.served.as_deref() == Some(&*format!("t{row}"))));
        }
        let csv = p.read("out.csv");
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("id,text,llm_response,llm_response_usage,llm_response_model,llm_response_error")
        );
        for (row, line) in lines.enumerate() {
            assert!(
                line.starts_with(&format!(
                    "{row},review number {row},Member {row}: review number {row},"
                )),
                "{line}"
            );
        }
        verified(&ledger, run);
    }
}

/// A batch whose calls all fail ends every member FAILED (ELSPETH §7); a batch where one
/// row fails keeps it with its `<rf>_error`; both recorded, and both re-executed from the
/// record without a request.
#[test]
fn llm_batch_row_errors_and_failed_batches_are_recorded() {
    let server = FakeLlm::start();
    let p = Pipeline::numbered(6);
    let ledger = Ledger::open(p.path("ledger")).unwrap();
    // Batch 0 (rows 0-2): one row's call is refused with a 400. Batch 1 (rows 3-5): all.
    server.fail_next(1, Fault::Status(400));
    let yaml = batch_yaml(&p, &server.url(), 3, "");
    let s = {
        let first = p.run(&yaml, &KEY, &ledger, None);
        completed(&first);
        first
    };
    assert_eq!(s.sinks[0].1, 6);
    let csv = p.read("out.csv");
    let failed_rows: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains("llm_call_failed"))
        .collect();
    assert_eq!(failed_rows.len(), 1, "{csv}");
    server.fail_always(Some(Fault::Status(400)));
    let all = p.run(&yaml, &KEY, &ledger, None);
    server.fail_always(None);
    completed(&all);
    assert_eq!(all.sinks[0].1, 0);
    assert_eq!(all.failed, 6);
    for row in 0..6 {
        let l = row_lineage(&ledger, &all.run_id, row);
        let outcome = l.tokens[0].outcome.as_ref().unwrap();
        assert_eq!(outcome.outcome, "failed");
        assert!(outcome
            .detail
            .as_deref()
            .unwrap()
            .contains("all_rows_failed"));
        let st = &l.batches[0].states[0];
        assert_eq!(st.status, "failed");
        assert_eq!(st.calls.len(), 1);
        assert_eq!(http_status(&st.calls[0]), Some(400));
    }
    verified(&ledger, &all.run_id);

    let sent = server.requests();
    let record: Arc<dyn CallBackend> =
        Arc::new(RecordedBackend::new(ledger.clone(), s.run_id.clone()));
    std::fs::remove_file(p.path("out.csv")).unwrap();
    let again = p.run(&yaml, &KEY, &ledger, Some(record));
    completed(&again);
    assert_eq!(p.read("out.csv"), csv);
    assert_eq!(
        call_list(&ledger, &again.run_id, 6),
        call_list(&ledger, &s.run_id, 6)
    );
    assert_eq!(server.requests(), sent);
}

/// Seed 003, the other half: the audited client cannot record a call on a state nobody
/// opened. ELSPETH invented `{state_id}_row{i}` per batch row; here a call on an invented
/// state (a per-row id, an attempt never opened) or for a token outside the batch is
/// refused by the ledger, and nothing is recorded.
#[test]
fn seed_003_a_call_on_an_invented_state_is_refused_by_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = ledger
        .start_run(RunStart {
            config: b"cfg".to_vec(),
            engine_version: "test".into(),
            started_at_ms: 1,
        })
        .unwrap();
    let node = |s: &str| NodeId::new(s).unwrap();
    let register = |name: &str, kind| Event::NodeRegistered {
        node: node(name),
        kind,
        plugin: "x".into(),
        config_hash: Hash32::ZERO,
    };
    let payload = ledger.put_value(&json!({"id": 0})).unwrap();
    let batch = BatchId::for_node(&node("ask"), 0);
    let mut events = vec![
        register("src", NodeKind::Source),
        register("ask", NodeKind::Aggregation),
    ];
    for row in 0..3 {
        events.push(Event::RowIngested {
            row,
            source: node("src"),
            payload,
        });
    }
    events.push(Event::BatchOpened {
        batch: batch.clone(),
        node: node("ask"),
    });
    for ordinal in 0..2 {
        events.push(Event::BatchMemberAdded {
            batch: batch.clone(),
            token: TokenId::for_row(u64::from(ordinal)),
            ordinal,
        });
    }
    run.append(events).unwrap();
    let state = run
        .open_state(Subject::Batch(batch.clone()), node("ask"), payload)
        .unwrap();
    let request = || Request {
        method: "POST".into(),
        url: "http://127.0.0.1:9/v1/chat/completions".into(),
        headers: vec![],
        body: Some(RequestBody::Json(json!({"messages": []}))),
        timeout: Duration::from_secs(1),
    };
    let context = |id: StateId| -> (CallScope, CallContext) {
        CallScope::open(
            Journal::Ledger(run.state_handle(id)),
            Arc::new(LiveBackend::new()),
            Arc::new(Redactor::new(Vec::<String>::new())),
        )
    };
    // The batch's own state, for a member: allowed (and abandoned unsent).
    let (scope, ctx) = context(state.id().clone());
    let call = ctx
        .prepare_serving("llm", request(), Some(TokenId::for_row(1)))
        .unwrap();
    assert_eq!(call.index(), 0);
    drop(call);
    // For a token that is not a member of the batch: refused.
    let refused = ctx.prepare_serving("llm", request(), Some(TokenId::for_row(2)));
    assert!(
        matches!(&refused, Err(CallError::Fault(f)) if f.to_string().contains("SERVED_TOKEN")),
        "{:?}",
        refused.err()
    );
    assert!(scope.close().is_err(), "the refusal is the state's fault");
    let invented = [
        // ELSPETH's synthetic per-row id.
        StateId {
            subject: Subject::Token(TokenId::new(format!("{}_row0", state.id())).unwrap()),
            node: node("ask"),
            attempt: 1,
        },
        // An attempt of the batch that was never opened.
        StateId {
            subject: Subject::Batch(batch.clone()),
            node: node("ask"),
            attempt: 2,
        },
    ];
    for id in invented {
        let (scope, ctx) = context(id.clone());
        let refused = ctx.prepare_serving("llm", request(), None);
        assert!(
            matches!(&refused, Err(CallError::Fault(f))
                if f.to_string().contains("DANGLING")),
            "{id}: {:?}",
            refused.err()
        );
        assert!(scope.close().is_err());
    }
    let rec = ledger.run_record(run.id()).unwrap().unwrap();
    assert_eq!(rec.calls, 1, "only the batch's own call was recorded");
}

/// `attest replay`'s re-execution (`attest_engine::replay`) of pooled runs with capacity
/// retries and `retry_timeout`s, in every pooled shape (single query, multi-query,
/// `llm_batch`): no divergence, every recorded result matched, nothing sent; and the same
/// with the pipeline's deadline changed either way, since the retries follow the record.
#[test]
fn attest_replay_re_executes_pooled_runs_with_capacity_retries_without_divergence() {
    use attest_engine::replay::{reexecute, ReexecOptions};
    let server = FakeLlm::start();
    server.set_latency(Duration::from_millis(2));
    let env = |k: &str| (k == "FAKE_KEY").then(|| "sk-pooled-test".to_string());
    let n = 8u64;
    let p = Pipeline::numbered(n);
    let ledger = Ledger::open(p.path("ledger")).unwrap();
    let pool = ", pool_size: 4, recovery_step_ms: 5, max_dispatch_delay_ms: 40";
    let shapes = [
        p.llm_yaml(
            &server.url(),
            &format!("{pool}, max_capacity_retry_seconds: 0.1"),
            1,
        ),
        p.llm_yaml(
            &server.url(),
            &format!("{pool}, max_capacity_retry_seconds: 0.1{}", queries(3)),
            1,
        ),
        batch_yaml(&p, &server.url(), 3, ", max_capacity_retry_seconds: 0.1"),
    ];
    for (shape, yaml) in shapes.iter().enumerate() {
        for out_of_capacity in [false, true] {
            if out_of_capacity {
                server.fail_always(Some(Fault::Status(429)));
            } else {
                server.fail_next(7, Fault::Status(429));
            }
            let s = p.run(yaml, &KEY, &ledger, None);
            server.fail_always(None);
            completed(&s);
            let sent = server.requests();
            let what = format!("shape {shape}, out of capacity: {out_of_capacity}");
            for deadline in [None, Some("3600"), Some("0.000001")] {
                let pipeline = p.path("changed.yaml");
                let mut opts = ReexecOptions::new(&env);
                if let Some(d) = deadline {
                    std::fs::write(
                        &pipeline,
                        yaml.replace(
                            "max_capacity_retry_seconds: 0.1",
                            &format!("max_capacity_retry_seconds: {d}"),
                        ),
                    )
                    .unwrap();
                    opts.pipeline = Some(&pipeline);
                }
                let r = reexecute(&ledger, &s.run_id, &opts).unwrap();
                let c = r.comparison.as_ref().unwrap();
                assert_eq!(c.first, None, "{what}, deadline {deadline:?}");
                assert_eq!(c.compared, r.record_events, "{what}, deadline {deadline:?}");
                assert_eq!(
                    server.requests(),
                    sent,
                    "{what}: re-execution sent a request"
                );
            }
        }
    }
}

/// Holds every call until released (then sends it to the live server), counting the
/// calls being answered at once.
struct HeldCalls {
    live: LiveBackend,
    released: std::sync::Mutex<bool>,
    release: std::sync::Condvar,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
}

impl CallBackend for HeldCalls {
    fn perform(
        &self,
        key: attest_engine::calls::CallKey<'_>,
        request: &attest_engine::calls::Prepared,
    ) -> Result<attest_engine::calls::Answer, attest_engine::calls::BackendError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.max_in_flight.fetch_max(now, SeqCst);
        let mut released = self.released.lock().unwrap();
        while !*released {
            released = self.release.wait(released).unwrap();
        }
        drop(released);
        let answer = self.live.perform(key, request);
        self.in_flight.fetch_sub(1, SeqCst);
        answer
    }
}

/// Rows whose call 0 at `ask` is recorded in the ledger's storage.
fn rows_with_recorded_request(ledger: &Ledger, n: u64) -> usize {
    let Some(run) = ledger.latest_run().unwrap() else {
        return 0;
    };
    (0..n)
        .filter(|&row| {
            let state = StateId {
                subject: Subject::Token(TokenId::for_row(row)),
                node: NodeId::new("ask").unwrap(),
                attempt: 1,
            };
            ledger.call_record(&run.run, &state, 0).unwrap().is_some()
        })
        .count()
}

/// The write-ahead record of a request (an fsync) is made outside the pool: while
/// `pool_size` calls are out and held there, more rows get their requests recorded, ready
/// to go the moment a permit is given back, and still no more than `pool_size` calls are
/// ever in flight. With only `pool_size` workers no further request would be recorded
/// until a call came back, and each row's fsync would sit between one call and the next.
#[test]
fn requests_are_made_durable_while_the_pool_is_full() {
    use std::sync::atomic::Ordering::SeqCst;
    for round in 0..5 {
        let server = FakeLlm::start();
        let n = 24u64;
        let p = Pipeline::numbered(n);
        let ledger = Ledger::open(p.path("ledger")).unwrap();
        let yaml = p.llm_yaml(&server.url(), ", pool_size: 4", 2);
        let held = Arc::new(HeldCalls {
            live: LiveBackend::new(),
            released: std::sync::Mutex::new(false),
            release: std::sync::Condvar::new(),
            in_flight: Default::default(),
            max_in_flight: Default::default(),
        });
        let backend: Arc<dyn CallBackend> = held.clone();
        let summary = std::thread::scope(|s| {
            // One worker asked for: the pool's own need decides.
            let run = s.spawn(|| p.run_with_workers(&yaml, &KEY, &ledger, Some(backend), 1));
            // Hang guard only: the condition is normally met within milliseconds.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut recorded = 0;
            while std::time::Instant::now() < deadline {
                recorded = rows_with_recorded_request(&ledger, n);
                if held.in_flight.load(SeqCst) == 4 && recorded >= 6 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let in_flight = held.in_flight.load(SeqCst);
            *held.released.lock().unwrap() = true;
            held.release.notify_all();
            let summary = run.join().unwrap();
            assert_eq!(in_flight, 4, "round {round}: calls held in the pool");
            assert_eq!(
                recorded, 6,
                "round {round}: requests recorded while the pool was full \
                 (pool_size 4 and half as many again)"
            );
            summary
        });
        completed(&summary);
        assert_eq!(summary.sinks[0].1, n, "round {round}");
        assert_eq!(held.max_in_flight.load(SeqCst), 4, "round {round}");
        assert_eq!(server.requests(), n, "round {round}");
        verified(&ledger, &summary.run_id);
    }
}
