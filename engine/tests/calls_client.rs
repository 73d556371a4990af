//! The audited client on its own: shared call indices across clients and threads (seed
//! 004), no call on a closed state, and the recorded backend answering from the ledger.

use attest_engine::calls::{
    Answer, BackendError, CallBackend, CallContext, CallError, CallKey, CallScope, Journal,
    LiveBackend, RecordedBackend, Redactor, Request, RequestBody, Verdict,
};
use attest_ledger::{
    CallOutcome, Event, Hash32, Ledger, NodeId, NodeKind, RunHandle, RunStart, StateHandle,
    Subject, TokenId,
};
use attest_tests::fake_llm::FakeLlm;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Never rejects a response.
#[derive(Debug)]
struct Accept;
impl Verdict for Accept {
    fn message(&self) -> String {
        String::new()
    }
    fn retryable(&self) -> bool {
        false
    }
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

/// A run with a source, a transform `ask` and one ingested row, and an open state for
/// that row at `ask`.
fn open_state(ledger: &Ledger) -> (RunHandle, StateHandle) {
    let run = ledger
        .start_run(RunStart {
            config: b"cfg".to_vec(),
            engine_version: "test".into(),
            started_at_ms: 1,
        })
        .unwrap();
    let register = |name: &str, kind| Event::NodeRegistered {
        node: node(name),
        kind,
        plugin: "x".into(),
        config_hash: Hash32::ZERO,
    };
    let payload = ledger.put_value(&json!({"id": 0})).unwrap();
    run.append(vec![
        register("src", NodeKind::Source),
        register("ask", NodeKind::Transform),
        Event::RowIngested {
            row: 0,
            source: node("src"),
            payload,
        },
    ])
    .unwrap();
    let state = run
        .open_state(Subject::Token(TokenId::for_row(0)), node("ask"), payload)
        .unwrap();
    (run, state)
}

fn request(url: &str, prompt: &str) -> Request {
    Request {
        method: "POST".into(),
        url: format!("{url}/chat/completions"),
        headers: vec![("Authorization".into(), "Bearer sk-client-test".into())],
        body: Some(RequestBody::Json(json!({
            "model": "m",
            "messages": [{"role": "user", "content": prompt}],
        }))),
        timeout: Duration::from_secs(10),
    }
}

fn live() -> Arc<dyn CallBackend> {
    Arc::new(LiveBackend::new())
}

fn redactor() -> Arc<Redactor> {
    Arc::new(Redactor::new(["sk-client-test".to_string()]))
}

/// Seed 004: an "http" and an "llm" client share one state, each on its own threads. The
/// ledger numbers their calls 0..n with no gap and no repeat, every call completed, run
/// after run.
#[test]
fn two_clients_on_one_state_share_one_sequence_of_indices() {
    let server = FakeLlm::start();
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let (run, state) = open_state(&ledger);
        let (scope, ctx) = CallScope::open(Journal::Ledger(state.clone()), live(), redactor());
        let per_thread = 5;
        let threads = 4;
        std::thread::scope(|s| {
            for t in 0..threads {
                let ctx = ctx.clone();
                let url = server.url();
                s.spawn(move || {
                    let kind = if t % 2 == 0 { "http" } else { "llm" };
                    for i in 0..per_thread {
                        let got = ctx
                            .call(kind, request(&url, &format!("{kind} {t} {i}")), |r| {
                                Ok::<_, Accept>(r.status)
                            })
                            .unwrap();
                        assert_eq!(got.ok(), Some(200));
                    }
                });
            }
        });
        scope.close().unwrap();
        let n = (per_thread * threads) as u32;
        let mut kinds = std::collections::BTreeMap::new();
        let mut prompts = std::collections::BTreeSet::new();
        for i in 0..n {
            let rec = ledger
                .call_record(run.id(), state.id(), i)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: call {i} missing"));
            *kinds.entry(rec.kind.clone()).or_insert(0) += 1;
            let done = rec.completion.expect("every call completed");
            assert_eq!(done.outcome, CallOutcome::Responded { status: Some(200) });
            let request: serde_json::Value =
                serde_json::from_slice(&ledger.payload(&rec.request).unwrap().unwrap()).unwrap();
            prompts.insert(
                request["body"]["json"]["messages"][0]["content"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert!(
            ledger
                .call_record(run.id(), state.id(), n)
                .unwrap()
                .is_none(),
            "round {round}: more calls than were made"
        );
        assert_eq!(kinds.get("http"), Some(&10), "round {round}");
        assert_eq!(kinds.get("llm"), Some(&10), "round {round}");
        // Every request recorded once: no index was given to two calls.
        assert_eq!(prompts.len(), n as usize, "round {round}");
    }
}

/// Once the executor closes the state, no clone of its context can call: the client
/// refuses before anything is recorded or sent.
#[test]
fn a_context_cannot_call_after_its_state_closes() {
    let server = FakeLlm::start();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (run, state) = open_state(&ledger);
    let (scope, ctx) = CallScope::open(Journal::Ledger(state.clone()), live(), redactor());
    let kept: CallContext = ctx.clone();
    ctx.call("llm", request(&server.url(), "before"), |_| {
        Ok::<_, Accept>(())
    })
    .unwrap()
    .ok();
    scope.close().unwrap();
    let err = kept
        .call("llm", request(&server.url(), "after"), |_| {
            Ok::<_, Accept>(())
        })
        .unwrap_err();
    assert!(
        matches!(&err, CallError::NotMade(m) if m.contains("closed")),
        "{err:?}"
    );
    assert_eq!(server.requests(), 1);
    assert!(ledger
        .call_record(run.id(), state.id(), 1)
        .unwrap()
        .is_none());
    // And the ledger itself refuses a call on the state once it is closed.
    state
        .close(
            attest_ledger::StateResult::Completed {
                output: Hash32::ZERO,
            },
            0,
        )
        .unwrap();
    let refused = state
        .allocate_call("llm", b"{}".to_vec(), None)
        .unwrap_err();
    assert_eq!(
        refused.rule().map(|r| r.code),
        Some("CALL_ON_CLOSED_STATE"),
        "{refused}"
    );
}

/// A call dropped after its request was recorded still gets a completion: no call is
/// lost, and the state can then close.
#[test]
fn an_abandoned_call_is_completed_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (run, state) = open_state(&ledger);
    let (scope, ctx) = CallScope::open(Journal::Ledger(state.clone()), live(), redactor());
    let pending = ctx
        .prepare("llm", request("http://127.0.0.1:9", "never sent"))
        .unwrap();
    assert_eq!(pending.index(), 0);
    drop(pending);
    scope.close().unwrap();
    let rec = ledger
        .call_record(run.id(), state.id(), 0)
        .unwrap()
        .unwrap();
    match rec.completion.map(|c| c.outcome) {
        Some(CallOutcome::Errored { error, retryable }) => {
            assert!(error.contains("abandoned"), "{error}");
            assert!(!retryable);
        }
        other => panic!("{other:?}"),
    }
}

/// The recorded backend answers each call from the record of the same (state, index),
/// sends nothing, and reports a call the record lacks or whose request changed. With a
/// detached journal, re-execution writes nothing either.
#[test]
fn the_recorded_backend_answers_from_the_record_and_sends_nothing() {
    let server = FakeLlm::start();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (run, state) = open_state(&ledger);
    let (scope, ctx) = CallScope::open(Journal::Ledger(state.clone()), live(), redactor());
    let mut live_answers = Vec::new();
    for prompt in ["first", "second"] {
        let r = ctx
            .call("llm", request(&server.url(), prompt), |r| {
                Ok::<_, Accept>(r.clone())
            })
            .unwrap()
            .ok()
            .unwrap();
        live_answers.push(r);
    }
    // A refused call is recorded as an error, and replays as that error.
    let refused = ctx
        .call("llm", request("http://127.0.0.1:9", "third"), |_| {
            Ok::<_, Accept>(())
        })
        .unwrap_err();
    scope.close().unwrap();
    let sent = server.requests();
    assert_eq!(sent, 2);
    let events_before = ledger.run_record(run.id()).unwrap().unwrap().next_seq;

    let recorded: Arc<dyn CallBackend> =
        Arc::new(RecordedBackend::new(ledger.clone(), run.id().clone()));
    let (scope, ctx) = CallScope::open(
        Journal::detached(state.id().clone()),
        recorded.clone(),
        redactor(),
    );
    for (prompt, want) in ["first", "second"].iter().zip(&live_answers) {
        let got = ctx
            .call("llm", request(&server.url(), prompt), |r| {
                Ok::<_, Accept>(r.clone())
            })
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(&got, want);
    }
    let again = ctx
        .call("llm", request("http://127.0.0.1:9", "third"), |_| {
            Ok::<_, Accept>(())
        })
        .unwrap_err();
    assert_eq!(again, refused);
    // A fourth call was never made live.
    let missing = ctx
        .call("llm", request(&server.url(), "fourth"), |_| {
            Ok::<_, Accept>(())
        })
        .unwrap_err();
    assert!(
        matches!(&missing, CallError::Fault(f) if f.to_string().contains("CALL_MISSING")),
        "{missing:?}"
    );
    let fault = scope.close().unwrap_err();
    assert!(fault.to_string().starts_with("CALL_MISSING"), "{fault}");
    assert_eq!(
        server.requests(),
        sent,
        "the recorded backend sent something"
    );
    assert_eq!(
        ledger.run_record(run.id()).unwrap().unwrap().next_seq,
        events_before,
        "re-execution wrote to the ledger"
    );

    // A request that differs from the recorded one at the same index is a divergence.
    let key = CallKey {
        state: state.id(),
        index: 0,
    };
    let changed = request(&server.url(), "FIRST")
        .prepare(&redactor())
        .unwrap();
    match recorded.perform(key, &changed) {
        Err(e @ BackendError::RequestChanged { .. }) => {
            assert_eq!(e.code(), "CALL_REQUEST_CHANGED")
        }
        other => panic!("{:?}", other.map(|a| matches!(a, Answer::Response(_)))),
    }
    // Only the credential differs: the redacted requests are the same.
    let mut other_key = request(&server.url(), "first");
    other_key.headers = vec![("Authorization".into(), "Bearer sk-another".into())];
    let other_key = other_key
        .prepare(&Redactor::new(["sk-another".to_string()]))
        .unwrap();
    assert!(matches!(
        recorded.perform(key, &other_key),
        Ok(Answer::Response(_))
    ));
    assert_eq!(server.requests(), sent);
}

/// Indices are allocated in submission order before dispatch; sent from threads in any
/// order, each call is still answered with its own recorded response on re-execution.
#[test]
fn calls_prepared_in_order_and_sent_concurrently_replay_deterministically() {
    let server = FakeLlm::start();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let (run, state) = open_state(&ledger);
    let prompts: Vec<String> = (0..8).map(|i| format!("query {i}")).collect();
    let send_all = |ctx: &CallContext, reverse: bool| -> Vec<String> {
        let mut pending: Vec<_> = prompts
            .iter()
            .map(|p| ctx.prepare("llm", request(&server.url(), p)).unwrap())
            .collect();
        if reverse {
            pending.reverse();
        }
        let mut answers: Vec<(u32, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = pending
                .into_iter()
                .map(|p| {
                    s.spawn(move || {
                        let i = p.index();
                        let text = p
                            .send(|r| Ok::<_, Accept>(r.text().unwrap_or("").to_string()))
                            .unwrap()
                            .ok()
                            .unwrap();
                        (i, text)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        answers.sort();
        answers.into_iter().map(|(_, t)| t).collect()
    };
    let (scope, ctx) = CallScope::open(Journal::Ledger(state.clone()), live(), redactor());
    let live_answers = send_all(&ctx, false);
    scope.close().unwrap();
    for (i, a) in live_answers.iter().enumerate() {
        assert!(a.contains(&format!("query {i}")), "{a}");
    }
    let recorded: Arc<dyn CallBackend> =
        Arc::new(RecordedBackend::new(ledger.clone(), run.id().clone()));
    for _ in 0..5 {
        let (scope, ctx) = CallScope::open(
            Journal::detached(state.id().clone()),
            recorded.clone(),
            redactor(),
        );
        assert_eq!(send_all(&ctx, true), live_answers);
        scope.close().unwrap();
    }
    assert_eq!(server.requests(), prompts.len() as u64);
}

/// Answers every call at once with a 200, sending nothing.
struct Instant200;
impl CallBackend for Instant200 {
    fn perform(
        &self,
        _key: CallKey<'_>,
        _request: &attest_engine::calls::Prepared,
    ) -> Result<Answer, BackendError> {
        std::thread::yield_now();
        Ok(Answer::Response(attest_engine::calls::Response::new(
            200,
            vec![("content-type".into(), "text/plain".into())],
            b"ok".to_vec(),
        )))
    }
}

/// Threads keep calling while the executor closes the state. Every call either was
/// refused before anything was recorded, or was recorded whole (request and completion)
/// before `close` returned; the ledger then accepts the state's close. Many rounds.
#[test]
fn closing_a_state_races_calls_and_loses_none() {
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let (run, state) = open_state(&ledger);
        let (scope, ctx) = CallScope::open(
            Journal::Ledger(state.clone()),
            Arc::new(Instant200),
            redactor(),
        );
        let made = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let ctx = ctx.clone();
                let made = &made;
                s.spawn(move || loop {
                    match ctx.call("llm", request("http://unused", &format!("{t}")), |_| {
                        Ok::<_, Accept>(())
                    }) {
                        Ok(_) => {
                            made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(CallError::NotMade(m)) => {
                            assert!(m.contains("closed"), "{m}");
                            return;
                        }
                        Err(e) => panic!("round {round}: {e}"),
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(2));
            scope.close().unwrap();
        });
        let n = made.load(std::sync::atomic::Ordering::SeqCst);
        for i in 0..n {
            let rec = ledger
                .call_record(run.id(), state.id(), i)
                .unwrap()
                .unwrap();
            assert!(rec.completion.is_some(), "round {round}: call {i} lost");
        }
        assert!(ledger
            .call_record(run.id(), state.id(), n)
            .unwrap()
            .is_none());
        state
            .close(
                attest_ledger::StateResult::Completed {
                    output: Hash32::ZERO,
                },
                0,
            )
            .unwrap();
    }
}

mod recorded_requests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// A ledger holding one recorded call (state t0@ask#1, index 0) of `request(URL,
    /// "recorded prompt")`, kept for the whole test binary.
    fn recorded() -> &'static (Ledger, attest_ledger::StateId, Arc<dyn CallBackend>) {
        static R: OnceLock<(Ledger, attest_ledger::StateId, Arc<dyn CallBackend>)> =
            OnceLock::new();
        R.get_or_init(|| {
            let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
            let ledger = Ledger::open(dir.path()).unwrap();
            let (run, state) = open_state(&ledger);
            let (scope, ctx) = CallScope::open(
                Journal::Ledger(state.clone()),
                Arc::new(Instant200),
                redactor(),
            );
            ctx.call("llm", request(URL, "recorded prompt"), |_| {
                Ok::<_, Accept>(())
            })
            .unwrap()
            .unwrap();
            scope.close().unwrap();
            let backend: Arc<dyn CallBackend> =
                Arc::new(RecordedBackend::new(ledger.clone(), run.id().clone()));
            (ledger, state.id().clone(), backend)
        })
    }

    const URL: &str = "http://127.0.0.1:9/v1";

    #[derive(Debug, Clone)]
    enum Change {
        Prompt(String),
        Url(String),
        Method(String),
        Header(String),
        Key(String),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            "[ -~]{0,40}".prop_map(Change::Prompt),
            "[a-z0-9/?=&]{1,20}".prop_map(Change::Url),
            "(GET|PUT|PATCH|DELETE|post)".prop_map(Change::Method),
            "[ -~]{0,20}".prop_map(Change::Header),
            "sk-[a-zA-Z0-9]{8,20}".prop_map(Change::Key),
        ]
    }

    proptest! {
        /// Any change to what a call asks is refused as CALL_REQUEST_CHANGED; a change
        /// of credential alone (redacted before hashing) is not a change.
        #[test]
        fn a_changed_request_is_never_answered(c in change()) {
            let (_, state, backend) = recorded();
            let mut r = request(URL, "recorded prompt");
            let mut secrets = vec!["sk-client-test".to_string()];
            let same = match &c {
                Change::Prompt(p) => {
                    r = request(URL, p);
                    p == "recorded prompt"
                }
                Change::Url(u) => {
                    r.url = format!("{}{u}", r.url);
                    false
                }
                Change::Method(m) => {
                    r.method = m.clone();
                    false
                }
                Change::Header(v) => {
                    r.headers.push(("x-extra".into(), v.clone()));
                    false
                }
                Change::Key(k) => {
                    r.headers = vec![("Authorization".into(), format!("Bearer {k}"))];
                    secrets = vec![k.clone()];
                    true
                }
            };
            let prepared = r.prepare(&Redactor::new(secrets)).unwrap();
            let got = backend.perform(CallKey { state, index: 0 }, &prepared);
            if same {
                prop_assert!(matches!(got, Ok(Answer::Response(_))), "{c:?}");
            } else {
                prop_assert!(
                    matches!(&got, Err(e) if e.code() == "CALL_REQUEST_CHANGED"),
                    "{c:?}: {:?}", got.map(|_| ())
                );
            }
        }
    }
}
