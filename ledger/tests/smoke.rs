use attest_ledger::verify::VerifyOptions;
use attest_ledger::*;

fn n(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

#[test]
fn a_small_run_appends_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = ledger
        .start_run(RunStart {
            config: b"source: {}".to_vec(),
            engine_version: "test".into(),
            started_at_ms: 1,
        })
        .unwrap();
    run.append(vec![
        Event::NodeRegistered {
            node: n("src"),
            kind: NodeKind::Source,
            plugin: "csv".into(),
            config_hash: Hash32::ZERO,
        },
        Event::NodeRegistered {
            node: n("map"),
            kind: NodeKind::Transform,
            plugin: "field_mapper".into(),
            config_hash: Hash32::ZERO,
        },
        Event::NodeRegistered {
            node: n("out"),
            kind: NodeKind::Sink,
            plugin: "csv".into(),
            config_hash: Hash32::ZERO,
        },
    ])
    .unwrap();
    let row = ledger.put_payload(b"{\"a\":1}").unwrap();
    run.append(vec![Event::RowIngested {
        row: 0,
        source: n("src"),
        payload: row,
    }])
    .unwrap();
    let st = run
        .open_state(Subject::Token(TokenId::for_row(0)), n("map"), row)
        .unwrap();
    assert_eq!(st.attempt(), 1);
    let c0 = st.allocate_call("http", b"GET /".to_vec(), None).unwrap();
    let c1 = st.allocate_call("llm", b"POST /".to_vec(), None).unwrap();
    assert_eq!((c0.index, c1.index), (0, 1));
    st.complete_call(
        &c0,
        CallOutcome::Responded { status: Some(200) },
        Some(b"ok".to_vec()),
        5,
    )
    .unwrap();
    st.close(StateResult::Completed { output: row }, 10)
        .unwrap();
    // A call on a closed state is refused and nothing is written.
    let before = ledger.run_record(run.id()).unwrap().unwrap();
    let err = st
        .allocate_call("http", b"late".to_vec(), None)
        .unwrap_err();
    assert_eq!(err.rule().unwrap().code, "CALL_ON_CLOSED_STATE");
    assert_eq!(ledger.run_record(run.id()).unwrap().unwrap(), before);
    run.append(vec![Event::TokenOutcome {
        token: TokenId::for_row(0),
        outcome: Outcome::Completed {
            write: SinkWrite {
                sink: n("out"),
                ordinal: 0,
            },
        },
    }])
    .unwrap();
    run.append(vec![Event::RunFinished {
        status: FinalStatus::Completed,
    }])
    .unwrap();
    ledger.flush().unwrap();
    let report = ledger.verify(run.id(), &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.events, 12);
}
