//! The executor's stateful and multi-token paths on in-memory sources and sinks: retries
//! as separate attempts, an aggregation flushed by its timer while the source is idle, and
//! rows a sink cannot write diverted to its failsink.

use attest_engine::plan::*;
use attest_engine::run::io::*;
use attest_engine::run::{execute, RunOptions, RunStatus, RunSummary};
use attest_engine::transforms::BatchStats;
use attest_engine::value::{Row, Value};
use attest_ledger::lineage::{Lineage, LineageQuery};
use attest_ledger::verify::VerifyOptions;
use attest_ledger::{Hash32, Ledger, NodeId, NodeKind, RunStart, TokenId};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Yields its records, sleeping before the record at `pause_before` and noting when it
/// resumed.
struct IdleSource {
    records: std::vec::IntoIter<SourceRecord>,
    next: usize,
    pause_before: Option<(usize, Duration)>,
    resumed: Arc<Mutex<Option<Instant>>>,
}

impl RowSource for IdleSource {
    fn next_record(&mut self) -> Option<Result<SourceRecord, SourceError>> {
        if let Some((at, pause)) = self.pause_before {
            if self.next == at {
                std::thread::sleep(pause);
                *self.resumed.lock().unwrap() = Some(Instant::now());
            }
        }
        self.next += 1;
        self.records.next().map(Ok)
    }
}

fn source(rows: Vec<Value>) -> IdleSource {
    IdleSource {
        records: rows
            .into_iter()
            .map(|raw| SourceRecord {
                parsed: Ok(raw.as_object().unwrap().clone()),
                raw,
            })
            .collect::<Vec<_>>()
            .into_iter(),
        next: 0,
        pause_before: None,
        resumed: Arc::default(),
    }
}

/// Keeps rows with the moment each was written; unless lenient, refuses rows with an
/// `unwritable` field.
#[derive(Clone, Default)]
struct MemSink(Arc<Mutex<Vec<(Instant, Row)>>>, bool);

impl MemSink {
    fn rows(&self) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| Value::Object(r.clone()))
            .collect()
    }
}

impl RowSink for MemSink {
    fn write_row(&mut self, row: &Row) -> Result<(), WriteError> {
        if !self.1 && row.contains_key("unwritable") {
            return Err(RowWriteError("field unwritable is outside the header".into()).into());
        }
        self.0.lock().unwrap().push((Instant::now(), row.clone()));
        Ok(())
    }
    fn flush_durable(&mut self) -> Result<SinkPosition, SinkIoError> {
        Ok(SinkPosition::default())
    }
    fn finish(self: Box<Self>) -> Result<Option<ArtifactInfo>, SinkIoError> {
        Ok(None)
    }
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn sinks(names: &[&str]) -> Vec<SinkPlan> {
    names
        .iter()
        .map(|s| SinkPlan {
            id: id(s),
            plugin: "mem".into(),
            config_hash: Hash32::ZERO,
            path: "mem".into(),
            on_write_failure: None,
        })
        .collect()
}

fn node(name: &str, kind: NodeKind, exec: NodeExec) -> NodePlan {
    NodePlan {
        id: id(name),
        kind,
        plugin: name.into(),
        config_hash: Hash32::ZERO,
        exec,
    }
}

fn sink(i: usize) -> Target {
    Target::Sink {
        sink: i,
        routed: false,
    }
}

fn run(plan: &Plan, src: IdleSource, outs: &[MemSink], ledger: &Ledger) -> RunSummary {
    let summary = execute(
        plan,
        Box::new(src),
        outs.iter()
            .map(|s| Box::new(s.clone()) as Box<dyn RowSink>)
            .collect(),
        ledger,
        RunStart {
            config: b"test".to_vec(),
            engine_version: "test".into(),
            started_at_ms: 0,
        },
        RunOptions {
            workers: 3,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
    let report = ledger
        .verify(&summary.run_id, &VerifyOptions::default())
        .unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    let rec = ledger.run_record(&summary.run_id).unwrap().unwrap();
    assert_eq!(rec.live_tokens, 0, "every token has a terminal outcome");
    assert_eq!(rec.open_states, 0);
    summary
}

fn lineage(ledger: &Ledger, s: &RunSummary, token: &str) -> Lineage {
    ledger
        .lineage(
            &s.run_id,
            &LineageQuery::Token(TokenId::new(token).unwrap()),
        )
        .unwrap()
        .unwrap()
}

/// Fails retryably until a row's `succeed_on` attempt; `succeed_on: 0` never succeeds.
#[derive(Default)]
struct Flaky(Mutex<HashMap<u64, u32>>);

impl Transform for Flaky {
    fn process(&self, row: &Row, _ctx: CallContext) -> Result<Row, TransformError> {
        let key = row["id"].as_u64().unwrap();
        let mut tries = self.0.lock().unwrap();
        let n = tries.entry(key).or_default();
        *n += 1;
        let want = row["succeed_on"].as_u64().unwrap() as u32;
        if want != 0 && *n >= want {
            let mut out = row.clone();
            out.insert("attempts".into(), json!(*n));
            return Ok(out);
        }
        Err(TransformError {
            reason: json!({"reason": "unavailable", "try": *n}),
            retryable: true,
        })
    }
}

#[test]
fn retryable_failures_are_retried_as_new_attempts_until_they_succeed_or_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let plan = Plan {
        source: SourcePlan {
            id: id("source"),
            plugin: "mem".into(),
            config_hash: Hash32::ZERO,
            path: "mem".into(),
            on_success: Target::Node(0),
            on_validation_failure: None,
        },
        nodes: vec![node(
            "flaky",
            NodeKind::Transform,
            NodeExec::Transform {
                plugin: Box::new(Flaky::default()),
                on_success: sink(0),
                on_error: sink(1),
            },
        )],
        sinks: sinks(&["out", "errors"]),
        edges: vec![],
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: 0.01,
            max_delay: 0.05,
            exponential_base: 2.0,
        },
    };
    let outs = [MemSink::default(), MemSink::default()];
    let started = Instant::now();
    let s = run(
        &plan,
        source(vec![
            json!({"id": 0, "succeed_on": 1}),
            json!({"id": 1, "succeed_on": 3}),
            json!({"id": 2, "succeed_on": 0}),
            json!({"id": 3, "succeed_on": 2}),
        ]),
        &outs,
        &ledger,
    );
    assert_eq!(
        outs[0].rows(),
        vec![
            json!({"id": 0, "succeed_on": 1, "attempts": 1}),
            json!({"id": 1, "succeed_on": 3, "attempts": 3}),
            json!({"id": 3, "succeed_on": 2, "attempts": 2}),
        ]
    );
    assert!(
        outs[1].rows().is_empty(),
        "exhausted retries fail the row; they do not go to on_error"
    );
    assert_eq!(s.failed, 1);
    // Row 1 waited twice (at least the initial delay, then initial × base).
    assert!(started.elapsed() >= Duration::from_millis(30));

    let statuses = |token: &str| -> Vec<(u32, String)> {
        lineage(&ledger, &s, token).tokens[0]
            .states
            .iter()
            .map(|st| (st.attempt, st.status.clone()))
            .collect()
    };
    assert_eq!(
        statuses("t1"),
        vec![
            (1, "failed".to_string()),
            (2, "failed".to_string()),
            (3, "completed".to_string())
        ]
    );
    let l = lineage(&ledger, &s, "t2");
    let t = &l.tokens[0];
    assert_eq!(
        t.states.iter().map(|s| s.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(t.states.iter().all(|s| s.status == "failed"));
    assert!(t.states[2].error.as_deref().unwrap().contains("\"try\":3"));
    let outcome = t.outcome.as_ref().unwrap();
    assert_eq!(outcome.outcome, "failed");
    assert!(
        outcome
            .detail
            .as_deref()
            .unwrap()
            .contains("gave up after 3 attempt(s)"),
        "{outcome:?}"
    );
}

fn stats_plan(timeout: Duration) -> Plan {
    Plan {
        source: SourcePlan {
            id: id("source"),
            plugin: "mem".into(),
            config_hash: Hash32::ZERO,
            path: "mem".into(),
            on_success: Target::Node(0),
            on_validation_failure: None,
        },
        nodes: vec![node(
            "stats",
            NodeKind::Aggregation,
            NodeExec::Aggregation {
                plugin: Box::new(BatchStats {
                    value_field: "v".into(),
                    group_by: None,
                    compute_mean: true,
                }),
                trigger: BatchTrigger {
                    count: Some(100),
                    timeout: Some(timeout),
                    condition: None,
                },
                mode: BatchMode::Transform,
                expected_output_count: None,
                on_success: sink(0),
            },
        )],
        sinks: sinks(&["out"]),
        edges: vec![],
        retry: RetryPolicy::default(),
    }
}

#[test]
fn a_batch_is_flushed_by_its_timer_while_the_source_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let plan = stats_plan(Duration::from_millis(200));
    let mut src = source((0..4).map(|i| json!({"v": i + 1})).collect());
    src.pause_before = Some((2, Duration::from_millis(1500)));
    let resumed = src.resumed.clone();
    let out = MemSink::default();
    let s = run(&plan, src, std::slice::from_ref(&out), &ledger);
    assert_eq!(
        out.rows(),
        vec![
            json!({"count": 2, "sum": 3, "batch_size": 2, "mean": 1.5}),
            json!({"count": 2, "sum": 7, "batch_size": 2, "mean": 3.5}),
        ]
    );
    let first_written = out.0.lock().unwrap()[0].0;
    let resumed = resumed.lock().unwrap().unwrap();
    assert!(
        first_written < resumed,
        "the first batch was written {:?} before the source produced its next row",
        resumed - first_written
    );
    let l = lineage(&ledger, &s, "t0");
    assert_eq!(l.batches.len(), 1);
    assert_eq!(l.batches[0].trigger.as_deref(), Some("timeout"));
    assert_eq!(l.batches[0].members, ["t0", "t1"]);
    assert_eq!(
        l.tokens[0].outcome.as_ref().unwrap().outcome,
        "consumed_in_batch"
    );
    let l = lineage(&ledger, &s, "t3");
    assert_eq!(l.batches[0].trigger.as_deref(), Some("end_of_source"));
    assert_eq!(l.batches[0].members, ["t2", "t3"]);
}

#[test]
fn rows_a_sink_cannot_write_are_diverted_to_its_failsink() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut outs_plan = sinks(&["out", "failed_writes", "strict_failsink", "picky", "other"]);
    outs_plan[0].on_write_failure = Some(WriteFailure::Sink(1));
    outs_plan[3].on_write_failure = Some(WriteFailure::Discard);
    outs_plan[4].on_write_failure = Some(WriteFailure::Sink(2));
    // Rows go to `out`, `picky` or `other` by their `to` field.
    struct To;
    impl Condition for To {
        fn route_label(&self, row: &Row) -> Result<String, String> {
            Ok(row["to"].as_str().unwrap().to_string())
        }
    }
    let plan = Plan {
        source: SourcePlan {
            id: id("source"),
            plugin: "mem".into(),
            config_hash: Hash32::ZERO,
            path: "mem".into(),
            on_success: Target::Node(0),
            on_validation_failure: None,
        },
        nodes: vec![node(
            "to",
            NodeKind::Gate,
            NodeExec::Gate {
                condition: Box::new(To),
                routes: vec![
                    ("out".into(), sink(0)),
                    ("picky".into(), sink(3)),
                    ("other".into(), sink(4)),
                ],
            },
        )],
        sinks: outs_plan,
        edges: vec![],
        retry: RetryPolicy::default(),
    };
    let outs = [
        MemSink::default(),
        MemSink(Arc::default(), true),
        MemSink::default(),
        MemSink::default(),
        MemSink::default(),
    ];
    let s = run(
        &plan,
        source(vec![
            json!({"id": 0, "to": "out"}),
            json!({"id": 1, "to": "out", "unwritable": true}),
            json!({"id": 2, "to": "picky", "unwritable": true}),
            json!({"id": 3, "to": "other", "unwritable": true}),
            json!({"id": 4, "to": "out"}),
        ]),
        &outs,
        &ledger,
    );
    assert_eq!(
        outs[0].rows(),
        vec![json!({"id": 0, "to": "out"}), json!({"id": 4, "to": "out"})]
    );
    assert_eq!(
        outs[1].rows(),
        vec![json!({"id": 1, "to": "out", "unwritable": true})]
    );
    assert!(outs[2].rows().is_empty() && outs[3].rows().is_empty());
    assert_eq!((s.failed, s.discarded), (1, 1));
    let outcome = |t: &str| lineage(&ledger, &s, t).tokens[0].outcome.clone().unwrap();
    let o = outcome("t1");
    assert_eq!(o.outcome, "diverted");
    assert_eq!(
        (o.sink.as_deref(), o.ordinal),
        (Some("failed_writes"), Some(0))
    );
    assert!(o.detail.as_deref().unwrap().contains("outside the header"));
    assert_eq!(outcome("t2").outcome, "discarded");
    let o = outcome("t3");
    assert_eq!(o.outcome, "failed");
    assert!(o
        .detail
        .as_deref()
        .unwrap()
        .contains("failsink strict_failsink"));
}

/// Branch `b` waits in a passthrough aggregation that only flushes at the end of the
/// source; the best_effort coalesce times out by its timer and merges branch `a` alone
/// while the source is idle. Row 0's `b` arrives after that merge and ends failed.
#[test]
fn a_coalesce_times_out_by_its_timer_while_a_branch_waits_in_a_batch() {
    struct Same;
    impl BatchTransform for Same {
        fn process_batch(&self, rows: &[Row]) -> Result<Vec<Row>, TransformError> {
            Ok(rows.to_vec())
        }
    }
    struct Always;
    impl Condition for Always {
        fn route_label(&self, _: &Row) -> Result<String, String> {
            Ok("fan".into())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let plan = Plan {
        source: SourcePlan {
            id: id("source"),
            plugin: "mem".into(),
            config_hash: Hash32::ZERO,
            path: "mem".into(),
            on_success: Target::Node(0),
            on_validation_failure: None,
        },
        nodes: vec![
            node(
                "split",
                NodeKind::Gate,
                NodeExec::Gate {
                    condition: Box::new(Always),
                    routes: vec![(
                        "fan".into(),
                        Target::Fork(vec![
                            ForkBranch {
                                name: "a".into(),
                                target: Target::Node(2),
                                coalesce: Some(2),
                            },
                            ForkBranch {
                                name: "b".into(),
                                target: Target::Node(1),
                                coalesce: Some(2),
                            },
                        ]),
                    )],
                },
            ),
            node(
                "hold",
                NodeKind::Aggregation,
                NodeExec::Aggregation {
                    plugin: Box::new(Same),
                    trigger: BatchTrigger {
                        count: Some(1000),
                        ..BatchTrigger::default()
                    },
                    mode: BatchMode::Passthrough,
                    expected_output_count: None,
                    on_success: Target::Node(2),
                },
            ),
            node(
                "join",
                NodeKind::Coalesce,
                NodeExec::Coalesce {
                    branches: vec!["a".into(), "b".into()],
                    policy: CoalescePolicy::BestEffort,
                    merge: MergeStrategy::Nested,
                    timeout: Some(Duration::from_millis(200)),
                    on_success: sink(0),
                },
            ),
        ],
        sinks: sinks(&["out"]),
        edges: vec![],
        retry: RetryPolicy::default(),
    };
    let mut src = source(vec![json!({"id": 0}), json!({"id": 1})]);
    src.pause_before = Some((1, Duration::from_millis(1500)));
    let resumed = src.resumed.clone();
    let out = MemSink::default();
    let s = run(&plan, src, std::slice::from_ref(&out), &ledger);
    // Row 1's group is still waiting at the end of the source, when the batch flushes
    // first (as in ELSPETH): both its branches arrive and merge.
    assert_eq!(
        out.rows(),
        vec![
            json!({"a": {"id": 0}}),
            json!({"a": {"id": 1}, "b": {"id": 1}})
        ]
    );
    let first_written = out.0.lock().unwrap()[0].0;
    assert!(first_written < resumed.lock().unwrap().unwrap());
    let l = lineage(&ledger, &s, "t0+join");
    assert_eq!(
        l.tokens
            .iter()
            .find(|t| t.token == "t0+join")
            .unwrap()
            .parents,
        ["t0.a"]
    );
    let late = lineage(&ledger, &s, "t0.b");
    let late = late.tokens.iter().find(|t| t.token == "t0.b").unwrap();
    let o = late.outcome.as_ref().unwrap();
    assert_eq!(o.outcome, "failed");
    assert!(o
        .detail
        .as_deref()
        .unwrap()
        .contains("after the group was resolved"));
}
