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

#[test]
fn lineage_follows_a_fork_to_both_sinks() {
    use attest_ledger::lineage::LineageQuery;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = ledger
        .start_run(RunStart {
            config: b"cfg".to_vec(),
            engine_version: "test".into(),
            started_at_ms: 2,
        })
        .unwrap();
    let reg = |node: &str, kind| Event::NodeRegistered {
        node: n(node),
        kind,
        plugin: "p".into(),
        config_hash: Hash32::ZERO,
    };
    run.append(vec![
        reg("src", NodeKind::Source),
        reg("gate", NodeKind::Gate),
        reg("a", NodeKind::Sink),
        reg("b", NodeKind::Sink),
    ])
    .unwrap();
    let value = serde_json::json!({"id": 1});
    let h = ledger.put_value(&value).unwrap();
    run.append(vec![Event::RowIngested {
        row: 0,
        source: n("src"),
        payload: h,
    }])
    .unwrap();
    let t0 = TokenId::for_row(0);
    let st = run
        .open_state(Subject::Token(t0.clone()), n("gate"), h)
        .unwrap();
    st.close(StateResult::Completed { output: h }, 1).unwrap();
    let (ca, cb) = (TokenId::fork_child(&t0, "a"), TokenId::fork_child(&t0, "b"));
    run.append(vec![
        Event::RouteDecided {
            state: st.id().clone(),
            token: t0.clone(),
            label: "fork".into(),
            to: vec![n("a"), n("b")],
        },
        Event::TokenForked {
            parent: t0.clone(),
            children: vec![
                ForkChild {
                    token: ca.clone(),
                    branch: "a".into(),
                },
                ForkChild {
                    token: cb.clone(),
                    branch: "b".into(),
                },
            ],
        },
        Event::TokenOutcome {
            token: ca.clone(),
            outcome: Outcome::Completed {
                write: SinkWrite {
                    sink: n("a"),
                    ordinal: 0,
                },
            },
        },
        Event::TokenOutcome {
            token: cb.clone(),
            outcome: Outcome::Completed {
                write: SinkWrite {
                    sink: n("b"),
                    ordinal: 0,
                },
            },
        },
    ])
    .unwrap();

    let by_row = ledger
        .lineage(run.id(), &LineageQuery::Row(0))
        .unwrap()
        .unwrap();
    let names: Vec<_> = by_row.tokens.iter().map(|t| t.token.as_str()).collect();
    assert_eq!(names, ["t0", "t0.a", "t0.b"]);
    assert_eq!(by_row.source_rows[0].value.as_ref(), Some(&value));
    assert_eq!(by_row.tokens[0].outcome.as_ref().unwrap().outcome, "forked");
    assert_eq!(by_row.tokens[0].routes[0].label, "fork");
    assert_eq!(by_row.tokens[0].states[0].output.as_ref(), Some(&value));

    let by_output = ledger
        .lineage(
            run.id(),
            &LineageQuery::Output {
                sink: n("b"),
                ordinal: 0,
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(by_output.focus, "t0.b");
    let names: Vec<_> = by_output.tokens.iter().map(|t| t.token.as_str()).collect();
    assert_eq!(names, ["t0", "t0.b"], "ancestry, not the sibling branch");
    assert_eq!(
        by_output.tokens[1]
            .outcome
            .as_ref()
            .unwrap()
            .sink
            .as_deref(),
        Some("b")
    );
    assert!(ledger
        .lineage(run.id(), &LineageQuery::Row(5))
        .unwrap()
        .is_none());
    assert!(ledger
        .lineage(
            run.id(),
            &LineageQuery::Output {
                sink: n("a"),
                ordinal: 1
            }
        )
        .unwrap()
        .is_none());
}

#[test]
fn an_invalid_new_id_is_a_rule_violation_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = ledger
        .start_run(RunStart {
            config: b"c".to_vec(),
            engine_version: "t".into(),
            started_at_ms: 3,
        })
        .unwrap();
    // Ids arrive decoded from storage or built by serde without `new`'s check.
    let bad: NodeId = serde_json::from_str("\"a\\u0000b\"").unwrap();
    let before = ledger.run_record(run.id()).unwrap();
    let err = run
        .append(vec![Event::NodeRegistered {
            node: bad,
            kind: NodeKind::Sink,
            plugin: "p".into(),
            config_hash: Hash32::ZERO,
        }])
        .unwrap_err();
    let v = err.rule().expect("a rule violation");
    assert_eq!((v.rule, v.code), (Rule::WellFormed, "INVALID_ID"));
    assert_eq!(ledger.run_record(run.id()).unwrap(), before);
}

#[test]
fn an_empty_log_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = ledger
        .start_run(RunStart {
            config: b"c".to_vec(),
            engine_version: "t".into(),
            started_at_ms: 4,
        })
        .unwrap();
    ledger.flush().unwrap();
    let events = ledger.run_record(run.id()).unwrap().unwrap().next_seq;
    ledger
        .raw_db()
        .insert(
            attest_ledger::projection::log_key(run.id(), events),
            Vec::<u8>::new(),
        )
        .unwrap();
    let report = ledger.verify(run.id(), &VerifyOptions::default()).unwrap();
    let f = report.failure.expect("an empty segment is a failure");
    assert_eq!(f.code, attest_ledger::verify::FailureCode::DecodeFailed);
    assert_eq!(f.seq, Some(events));
}

fn started(ledger: &Ledger, nodes: &[(&str, NodeKind)]) -> RunHandle {
    let run = ledger
        .start_run(RunStart {
            config: b"c".to_vec(),
            engine_version: "t".into(),
            started_at_ms: 5,
        })
        .unwrap();
    run.append(
        nodes
            .iter()
            .map(|(id, kind)| Event::NodeRegistered {
                node: n(id),
                kind: *kind,
                plugin: "p".into(),
                config_hash: Hash32::ZERO,
            })
            .collect(),
    )
    .unwrap();
    run
}

#[test]
fn a_token_cannot_end_while_its_state_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = started(
        &ledger,
        &[("src", NodeKind::Source), ("map", NodeKind::Transform)],
    );
    run.append(vec![Event::RowIngested {
        row: 0,
        source: n("src"),
        payload: Hash32::ZERO,
    }])
    .unwrap();
    let st = run
        .open_state(Subject::Token(TokenId::for_row(0)), n("map"), Hash32::ZERO)
        .unwrap();
    let err = run
        .append(vec![Event::TokenOutcome {
            token: TokenId::for_row(0),
            outcome: Outcome::Discarded { reason: "x".into() },
        }])
        .unwrap_err();
    assert_eq!(err.rule().unwrap().code, "STATE_OPEN_AT_OUTCOME");
    st.close(
        StateResult::Failed {
            error: "e".into(),
            retryable: false,
        },
        1,
    )
    .unwrap();
    run.append(vec![Event::TokenOutcome {
        token: TokenId::for_row(0),
        outcome: Outcome::Discarded { reason: "x".into() },
    }])
    .unwrap();
}

#[test]
fn no_member_joins_a_batch_once_its_state_has_opened() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = started(
        &ledger,
        &[("src", NodeKind::Source), ("agg", NodeKind::Aggregation)],
    );
    let batch = BatchId::for_node(&n("agg"), 0);
    run.append(vec![
        Event::RowIngested {
            row: 0,
            source: n("src"),
            payload: Hash32::ZERO,
        },
        Event::RowIngested {
            row: 1,
            source: n("src"),
            payload: Hash32::ZERO,
        },
        Event::BatchOpened {
            batch: batch.clone(),
            node: n("agg"),
        },
        Event::BatchMemberAdded {
            batch: batch.clone(),
            token: TokenId::for_row(0),
            ordinal: 0,
        },
    ])
    .unwrap();
    run.open_state(Subject::Batch(batch.clone()), n("agg"), Hash32::ZERO)
        .unwrap();
    let err = run
        .append(vec![Event::BatchMemberAdded {
            batch,
            token: TokenId::for_row(1),
            ordinal: 1,
        }])
        .unwrap_err();
    let v = err.rule().unwrap();
    assert_eq!(
        (v.rule, v.code),
        (Rule::BatchMembership, "BATCH_PROCESSING")
    );
}

#[test]
fn purged_payloads_keep_their_hashes_and_the_run_still_verifies() {
    use attest_ledger::lineage::LineageQuery;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = started(
        &ledger,
        &[("src", NodeKind::Source), ("out", NodeKind::Sink)],
    );
    let value = serde_json::json!({"secret": "customer data"});
    let h = ledger.put_value(&value).unwrap();
    run.append(vec![
        Event::RowIngested {
            row: 0,
            source: n("src"),
            payload: h,
        },
        Event::TokenOutcome {
            token: TokenId::for_row(0),
            outcome: Outcome::Completed {
                write: SinkWrite {
                    sink: n("out"),
                    ordinal: 0,
                },
            },
        },
    ])
    .unwrap();
    let before = ledger.verify(run.id(), &VerifyOptions::default()).unwrap();
    assert!(before.ok());
    assert_eq!(before.payloads_purged, 0);

    assert_eq!(
        ledger
            .purge_payloads(&[h], "retention: 30 days", 99)
            .unwrap(),
        1
    );
    assert_eq!(ledger.payload(&h).unwrap(), None, "the bytes are gone");
    let after = ledger.verify(run.id(), &VerifyOptions::default()).unwrap();
    assert!(after.ok(), "{:?}", after.failure);
    assert_eq!(after.payloads_purged, 1);
    assert_eq!(after.head, before.head, "the chain is untouched");
    let l = ledger
        .lineage(run.id(), &LineageQuery::Row(0))
        .unwrap()
        .unwrap();
    assert_eq!(l.source_rows[0].hash, h.to_hex(), "lineage keeps the hash");
    assert_eq!(l.source_rows[0].value, None, "but no longer the value");

    // Bytes deleted without a purge are tampering.
    let other = ledger.put_payload(b"config bytes").unwrap();
    assert_ne!(other, h);
    let cfg = ledger.run_record(run.id()).unwrap().unwrap().config_hash;
    assert_eq!(
        ledger
            .raw_edit_payload(&cfg, attest_ledger::packs::Edit::Remove)
            .unwrap(),
        1
    );
    let tampered = ledger.verify(run.id(), &VerifyOptions::default()).unwrap();
    assert_eq!(
        tampered.failure.unwrap().code,
        attest_ledger::verify::FailureCode::PayloadMissing
    );
}
