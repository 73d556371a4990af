//! Property test over random DAGs: forks into 2–4 branches with failing transforms (some
//! retryable), a branch held across rows in a passthrough aggregation, every coalesce
//! policy and merge, and a transform-mode aggregation after the merge. Whatever the shape,
//! sizes and error rates: the run completes, every token ends exactly once (the ledger
//! refuses a second outcome; none is left live), every batch member is accounted for, and
//! the ledger verifies.

use attest_engine::plan::*;
use attest_engine::run::io::*;
use attest_engine::run::{execute, RunOptions, RunStatus};
use attest_engine::value::{Row, Value};
use attest_ledger::verify::VerifyOptions;
use attest_ledger::{Hash32, Ledger, NodeId, NodeKind, RunStart};
use proptest::prelude::*;
use serde_json::json;
use std::sync::{Arc, Mutex};

struct VecSource(std::vec::IntoIter<SourceRecord>);
impl RowSource for VecSource {
    fn next_record(&mut self) -> Option<Result<SourceRecord, SourceError>> {
        self.0.next().map(Ok)
    }
}

#[derive(Clone, Default)]
struct MemSink(Arc<Mutex<u64>>);
impl RowSink for MemSink {
    fn write_row(&mut self, _: &Row) -> Result<(), WriteError> {
        *self.0.lock().unwrap() += 1;
        Ok(())
    }
    fn flush_durable(&mut self) -> Result<SinkPosition, SinkIoError> {
        Ok(SinkPosition::default())
    }
    fn finish(self: Box<Self>) -> Result<Option<ArtifactInfo>, SinkIoError> {
        Ok(None)
    }
}

/// Fails rows by a deterministic hash of (row id, salt) at `rate` percent; half of those
/// failures are retryable.
struct Erratic {
    salt: u64,
    rate: u64,
}

fn mix(a: u64, b: u64) -> u64 {
    let h = blake3::hash(&[a.to_le_bytes(), b.to_le_bytes()].concat());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap())
}

impl Transform for Erratic {
    fn process(&self, row: &Row, _ctx: CallContext) -> Result<Row, TransformError> {
        let id = row.get("id").and_then(Value::as_u64).unwrap_or(0);
        let h = mix(id, self.salt);
        if h % 100 < self.rate {
            return Err(TransformError {
                reason: json!({"reason": "erratic"}),
                retryable: h.is_multiple_of(2),
            });
        }
        let mut out = row.clone();
        out.insert(format!("seen_{}", self.salt), json!(true));
        Ok(out)
    }
}

/// One output per member (passthrough), or one summary row; fails batches at `rate`.
struct Batcher {
    passthrough: bool,
    rate: u64,
}
impl BatchTransform for Batcher {
    fn process_batch(&self, rows: &[Row]) -> Result<Vec<Row>, TransformError> {
        let first = rows[0].get("id").and_then(Value::as_u64).unwrap_or(0);
        if mix(first, 99) % 100 < self.rate {
            return Err(TransformError::new(json!({"reason": "batch failed"})));
        }
        if self.passthrough {
            return Ok(rows.to_vec());
        }
        Ok(vec![json!({"n": rows.len()}).as_object().unwrap().clone()])
    }
}

struct Split;
impl Condition for Split {
    fn route_label(&self, row: &Row) -> Result<String, String> {
        let id = row.get("id").and_then(Value::as_u64).unwrap_or(0);
        Ok(if id % 7 == 3 { "direct" } else { "fan" }.into())
    }
}

#[derive(Debug, Clone)]
struct Shape {
    rows: u64,
    branches: usize,
    error_rate: u64,
    error_to_sink: bool,
    held_branch: Option<u64>,
    policy: u8,
    merge: u8,
    after_count: Option<u64>,
    batch_fail_rate: u64,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        1u64..40,
        2usize..5,
        0u64..60,
        any::<bool>(),
        proptest::option::of(1u64..5),
        0u8..4,
        0u8..3,
        proptest::option::of(1u64..6),
        0u64..30,
    )
        .prop_map(
            |(
                rows,
                branches,
                error_rate,
                error_to_sink,
                held_branch,
                policy,
                merge,
                after_count,
                batch_fail_rate,
            )| Shape {
                rows,
                branches,
                error_rate,
                error_to_sink,
                held_branch,
                policy,
                merge,
                after_count,
                batch_fail_rate,
            },
        )
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
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

fn out(sink: usize) -> Target {
    Target::Sink {
        sink,
        routed: false,
    }
}

/// Nodes: 0 split gate, 1..=k branch transforms, then the held aggregation (optional),
/// the coalesce, the after-merge aggregation (optional). Sinks: 0 out, 1 errors.
fn build(s: &Shape) -> Plan {
    let k = s.branches;
    let held = s.held_branch.map(|_| k + 1);
    let coalesce = k + 1 + usize::from(held.is_some());
    let after = s.after_count.map(|_| coalesce + 1);
    let branch_names: Vec<String> = (0..k).map(|i| format!("b{i}")).collect();
    let mut nodes = vec![node(
        "split",
        NodeKind::Gate,
        NodeExec::Gate {
            condition: Box::new(Split),
            routes: vec![
                ("direct".into(), out(0)),
                (
                    "fan".into(),
                    Target::Fork(
                        branch_names
                            .iter()
                            .enumerate()
                            .map(|(i, b)| ForkBranch {
                                name: b.clone(),
                                target: Target::Node(1 + i),
                                coalesce: Some(coalesce),
                            })
                            .collect(),
                    ),
                ),
            ],
        },
    )];
    for i in 0..k {
        let next = match held {
            Some(h) if i == 0 => Target::Node(h),
            _ => Target::Node(coalesce),
        };
        nodes.push(node(
            &format!("t{i}"),
            NodeKind::Transform,
            NodeExec::Transform {
                plugin: Box::new(Erratic {
                    salt: i as u64,
                    rate: s.error_rate,
                }),
                on_success: next,
                on_error: if s.error_to_sink {
                    Target::Sink {
                        sink: 1,
                        routed: true,
                    }
                } else {
                    Target::Discard {
                        reason: "discard".into(),
                    }
                },
            },
        ));
    }
    if let (Some(_), Some(count)) = (held, s.held_branch) {
        nodes.push(node(
            "held",
            NodeKind::Aggregation,
            NodeExec::Aggregation {
                plugin: Box::new(Batcher {
                    passthrough: true,
                    rate: s.batch_fail_rate,
                }),
                trigger: BatchTrigger {
                    count: Some(count),
                    ..BatchTrigger::default()
                },
                mode: BatchMode::Passthrough,
                expected_output_count: None,
                on_success: Target::Node(coalesce),
            },
        ));
    }
    nodes.push(node(
        "join",
        NodeKind::Coalesce,
        NodeExec::Coalesce {
            policy: match s.policy {
                0 => CoalescePolicy::RequireAll,
                1 => CoalescePolicy::First,
                2 => CoalescePolicy::Quorum(2),
                _ => CoalescePolicy::BestEffort,
            },
            merge: match s.merge {
                0 => MergeStrategy::Union,
                1 => MergeStrategy::Nested,
                _ => MergeStrategy::Select(k - 1),
            },
            timeout: None,
            on_success: match after {
                Some(a) => Target::Node(a),
                None => out(0),
            },
            branches: branch_names,
        },
    ));
    if let Some(count) = s.after_count {
        nodes.push(node(
            "after",
            NodeKind::Aggregation,
            NodeExec::Aggregation {
                plugin: Box::new(Batcher {
                    passthrough: false,
                    rate: s.batch_fail_rate,
                }),
                trigger: BatchTrigger {
                    count: Some(count),
                    ..BatchTrigger::default()
                },
                mode: BatchMode::Transform,
                expected_output_count: None,
                on_success: out(0),
            },
        ));
    }
    Plan {
        source: SourcePlan {
            id: id("source"),
            plugin: "mem".into(),
            config_hash: Hash32::ZERO,
            path: "mem".into(),
            on_success: Target::Node(0),
            on_validation_failure: None,
        },
        nodes,
        sinks: ["out", "errors"]
            .iter()
            .map(|n| SinkPlan {
                id: id(n),
                plugin: "mem".into(),
                config_hash: Hash32::ZERO,
                path: "mem".into(),
                on_write_failure: None,
            })
            .collect(),
        edges: vec![],
        retry: RetryPolicy {
            max_attempts: 2,
            initial_delay: 0.0,
            max_delay: 0.001,
            exponential_base: 2.0,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn every_token_ends_once_and_every_ledger_verifies(s in shape()) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let plan = build(&s);
        let records: Vec<SourceRecord> = (0..s.rows)
            .map(|i| {
                let raw = json!({"id": i, "v": i});
                SourceRecord { parsed: Ok(raw.as_object().unwrap().clone()), raw }
            })
            .collect();
        let sinks = [MemSink::default(), MemSink::default()];
        let summary = execute(
            &plan,
            Box::new(VecSource(records.into_iter())),
            sinks.iter().map(|m| Box::new(m.clone()) as Box<dyn RowSink>).collect(),
            &ledger,
            RunStart { config: b"prop".to_vec(), engine_version: "test".into(), started_at_ms: 0 },
            RunOptions { workers: 3, ..RunOptions::default() },
        )
        .unwrap();
        prop_assert_eq!(summary.status, RunStatus::Completed, "{:?} {:?}", summary.error, s);
        let report = ledger.verify(&summary.run_id, &VerifyOptions::default()).unwrap();
        prop_assert!(report.ok(), "{:?}", report.failure);
        let rec = ledger.run_record(&summary.run_id).unwrap().unwrap();
        prop_assert_eq!(rec.live_tokens, 0, "tokens left without an outcome: {:?}", s);
        prop_assert_eq!(rec.open_states, 0);
        prop_assert_eq!(rec.rows, s.rows);
    }
}
