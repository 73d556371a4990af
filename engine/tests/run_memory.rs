//! The executor on in-memory sources and sinks: source order under concurrency, the
//! ledger's record of each row, and failures that stay with their row.

use attest_engine::plan::*;
use attest_engine::run::io::*;
use attest_engine::run::{execute, RunOptions, RunStatus};
use attest_engine::value::{Row, Value};
use attest_ledger::lineage::LineageQuery;
use attest_ledger::verify::VerifyOptions;
use attest_ledger::{Hash32, Ledger, NodeId, NodeKind, RunStart};
use serde_json::json;
use std::sync::{Arc, Mutex};

struct VecSource(std::vec::IntoIter<SourceRecord>);
impl RowSource for VecSource {
    fn next_record(&mut self) -> Option<Result<SourceRecord, SourceError>> {
        self.0.next().map(Ok)
    }
}

#[derive(Clone, Default)]
struct MemSink(Arc<Mutex<Vec<Row>>>);
impl RowSink for MemSink {
    fn write_row(&mut self, row: &Row) -> Result<(), WriteError> {
        if row.contains_key("unwritable") {
            return Err(RowWriteError("field unwritable is outside the header".into()).into());
        }
        self.0.lock().unwrap().push(row.clone());
        Ok(())
    }
    fn flush_durable(&mut self) -> Result<SinkPosition, SinkIoError> {
        Ok(SinkPosition {
            rows: self.0.lock().unwrap().len() as u64,
            ..SinkPosition::default()
        })
    }
    fn finish(self: Box<Self>) -> Result<Option<ArtifactInfo>, SinkIoError> {
        let rows = self.0.lock().unwrap().len() as u64;
        Ok((rows > 0).then(|| ArtifactInfo {
            path: "mem".into(),
            content_hash: Hash32::ZERO,
            size: 0,
            rows,
        }))
    }
}

/// Sleeps a pseudo-random time so workers finish out of order, then doubles `score`.
struct Jittery;
impl Transform for Jittery {
    fn process(&self, row: &Row, _ctx: CallContext) -> Result<Row, TransformError> {
        let id = row.get("id").and_then(Value::as_u64).unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_micros((id * 7919) % 300));
        let Some(score) = row.get("score").and_then(Value::as_i64) else {
            return Err(TransformError::new(
                json!({"reason": "missing_field", "field": "score"}),
            ));
        };
        let mut out = row.clone();
        out.insert("score".into(), json!(score * 2));
        Ok(out)
    }
}

struct Threshold;
impl Condition for Threshold {
    fn route_label(&self, row: &Row) -> Result<String, String> {
        match row.get("score").and_then(Value::as_i64) {
            Some(s) => Ok((s > 100).to_string()),
            None => Err("row['score'] is missing".into()),
        }
    }
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn plan() -> Plan {
    Plan {
        source: SourcePlan {
            id: id("source"),
            plugin: "mem".into(),
            config_hash: Hash32::ZERO,
            path: "mem".into(),
            on_success: Target::Node(0),
            on_validation_failure: Some(2),
        },
        nodes: vec![
            NodePlan {
                id: id("double"),
                kind: NodeKind::Transform,
                plugin: "jittery".into(),
                config_hash: Hash32::ZERO,
                exec: NodeExec::Transform {
                    plugin: Box::new(Jittery),
                    on_success: Target::Node(1),
                    on_error: Target::Sink {
                        sink: 2,
                        routed: true,
                    },
                },
            },
            NodePlan {
                id: id("gate"),
                kind: NodeKind::Gate,
                plugin: "gate".into(),
                config_hash: Hash32::ZERO,
                exec: NodeExec::Gate {
                    condition: Box::new(Threshold),
                    routes: vec![
                        (
                            "true".into(),
                            Target::Sink {
                                sink: 0,
                                routed: true,
                            },
                        ),
                        (
                            "false".into(),
                            Target::Sink {
                                sink: 1,
                                routed: false,
                            },
                        ),
                    ],
                },
            },
        ],
        sinks: ["high", "normal", "errors"]
            .iter()
            .map(|s| SinkPlan {
                id: id(s),
                plugin: "mem".into(),
                config_hash: Hash32::ZERO,
                path: "mem".into(),
                on_write_failure: None,
            })
            .collect(),
        edges: vec![
            (id("source"), id("double"), "on_success".into()),
            (id("double"), id("gate"), "on_success".into()),
        ],
        retry: RetryPolicy::default(),
    }
}

fn record(i: u64) -> SourceRecord {
    let raw = json!({"id": i, "score": i});
    let parsed = if i % 50 == 7 {
        Err(Quarantine {
            row: raw.as_object().unwrap().clone(),
            error: "score: not an int".into(),
        })
    } else if i % 50 == 9 {
        Ok(json!({"id": i}).as_object().unwrap().clone())
    } else {
        Ok(raw.as_object().unwrap().clone())
    };
    SourceRecord { raw, parsed }
}

#[test]
fn rows_reach_sinks_in_source_order_and_every_token_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let sinks: Vec<MemSink> = (0..3).map(|_| MemSink::default()).collect();
    let n = 600u64;
    let summary = execute(
        &plan(),
        Box::new(VecSource(
            (0..n).map(record).collect::<Vec<_>>().into_iter(),
        )),
        sinks
            .iter()
            .map(|s| Box::new(s.clone()) as Box<dyn RowSink>)
            .collect(),
        &ledger,
        RunStart {
            config: b"test".to_vec(),
            engine_version: "test".into(),
            started_at_ms: 0,
        },
        RunOptions {
            workers: 4,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
    assert_eq!(summary.rows, n);
    let ids = |s: &MemSink| -> Vec<u64> {
        s.0.lock()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    };
    let (high, normal, errors) = (ids(&sinks[0]), ids(&sinks[1]), ids(&sinks[2]));
    let expect_err: Vec<u64> = (0..n).filter(|i| i % 50 == 7 || i % 50 == 9).collect();
    let expect_high: Vec<u64> = (0..n)
        .filter(|i| !expect_err.contains(i) && i * 2 > 100)
        .collect();
    let expect_normal: Vec<u64> = (0..n)
        .filter(|i| !expect_err.contains(i) && i * 2 <= 100)
        .collect();
    assert_eq!(high, expect_high, "source order in the high sink");
    assert_eq!(normal, expect_normal);
    assert_eq!(
        errors, expect_err,
        "quarantined and on_error rows share a sink, in source order"
    );
    assert_eq!(summary.quarantined, 12);
    assert_eq!(
        summary.sinks,
        vec![
            ("high".into(), expect_high.len() as u64),
            ("normal".into(), expect_normal.len() as u64),
            ("errors".into(), 24)
        ]
    );

    let report = ledger
        .verify(&summary.run_id, &VerifyOptions::default())
        .unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    let rec = ledger.run_record(&summary.run_id).unwrap().unwrap();
    assert_eq!(rec.rows, n);
    assert_eq!(rec.live_tokens, 0);

    // The 10th row written to `high` is traced back to its source row, through both nodes.
    let l = ledger
        .lineage(
            &summary.run_id,
            &LineageQuery::Output {
                sink: id("high"),
                ordinal: 10,
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(l.source_rows[0].row, expect_high[10]);
    let t = &l.tokens[0];
    assert_eq!(
        t.states.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(),
        ["double", "gate"]
    );
    assert_eq!(t.routes[0].label, "true");
    assert_eq!(
        t.states[0].output.as_ref().unwrap()["score"],
        json!(expect_high[10] * 2)
    );
}
