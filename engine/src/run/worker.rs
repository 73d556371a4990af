//! Processing one source record: everything a row does between the source and the sinks.
//!
//! A worker owns the row it processes and everything it records about it; the only shared
//! things are the immutable plan and the ledger handle. The row's events are gathered into
//! one commit (the plugins here make no external calls, so no state needs to be visible in
//! the ledger before the row's work is done) and the rows bound for sinks are handed back
//! for the sequencer to write in source order.

use super::io::{Quarantine, SourceRecord};
use super::EngineError;
use crate::plan::{NodeExec, Plan, Target};
use crate::value::Row;
use attest_ledger::{
    Commit, Durability, Event, Hash32, Outcome, RunHandle, StateId, StateResult, Subject, TokenId,
};
use std::time::Instant;

/// How a delivered row counts at its sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    Completed,
    Routed,
    Quarantined,
}

/// A token's row bound for a sink.
#[derive(Debug)]
pub struct Delivery {
    pub token: TokenId,
    pub sink: usize,
    pub kind: DeliveryKind,
    pub row: Row,
}

/// What one source record came to.
#[derive(Default)]
pub struct RowResult {
    pub row_index: u64,
    /// The row's commit, sent but not awaited: the writer applies commits in the order
    /// they were sent, and the sequencer only records this row's outcomes after it has
    /// received this result, so they always follow the row's own events. The sequencer
    /// checks the result before it records anything more.
    pub commit: Option<attest_ledger::Pending>,
    pub deliveries: Vec<Delivery>,
    pub failed: u64,
    pub discarded: u64,
    pub quarantined: u64,
}

/// Stores a row's canonical bytes in the payload store unless it is the value stored last.
///
/// Payloads are written by the worker itself, before it sends the commit that references
/// them: they are content-addressed (writing one twice changes nothing), the write happens
/// before the commit reaches the writer so storage orders it first, and it keeps the one
/// writer thread free for the log and projections.
struct Payloads<'a> {
    ledger: &'a attest_ledger::Ledger,
    last: Option<Hash32>,
}

impl Payloads<'_> {
    fn store_row(&mut self, row: &Row) -> Result<Hash32, EngineError> {
        let bytes = attest_ledger::canonical::object_to_canonical_bytes(row)
            .map_err(|e| EngineError::Ledger(e.into()))?;
        let hash = Hash32::of(&bytes);
        if self.last != Some(hash) {
            self.ledger.put_payload(&bytes)?;
            self.last = Some(hash);
        }
        Ok(hash)
    }
}

/// Adds the ingestion of a source record to `commit`. The source reader records rows
/// itself, in source order, so row indices in the ledger are contiguous and a gap would
/// mean a lost row.
pub fn ingest(
    plan: &Plan,
    ledger: &attest_ledger::Ledger,
    commit: &mut Commit,
    row_index: u64,
    record: &SourceRecord,
) -> Result<(), EngineError> {
    let bytes = attest_ledger::canonical::to_canonical_bytes(&record.raw)
        .map_err(|e| EngineError::Ledger(e.into()))?;
    let payload = ledger.put_payload(&bytes)?;
    commit.push(Event::RowIngested {
        row: row_index,
        source: plan.source.id.clone(),
        payload,
    });
    Ok(())
}

/// Runs one ingested record through the plan and commits what happened.
pub fn process_record(
    plan: &Plan,
    run: &RunHandle,
    row_index: u64,
    record: SourceRecord,
) -> Result<RowResult, EngineError> {
    let mut commit = Commit::new();
    let mut payloads = Payloads {
        ledger: run.ledger(),
        last: None,
    };
    let mut result = RowResult {
        row_index,
        ..RowResult::default()
    };
    let token = TokenId::for_row(row_index);
    match record.parsed {
        Err(Quarantine { row, error }) => {
            commit.push(Event::ValidationFailed {
                row: row_index,
                error,
            });
            result.quarantined += 1;
            match plan.source.on_validation_failure {
                Some(sink) => result.deliveries.push(Delivery {
                    token,
                    sink,
                    kind: DeliveryKind::Quarantined,
                    row,
                }),
                None => commit.push(Event::TokenOutcome {
                    token,
                    outcome: Outcome::Quarantined { write: None },
                }),
            }
        }
        Ok(row) => walk(
            plan,
            &mut commit,
            &mut payloads,
            &mut result,
            token,
            row,
            plan.source.on_success.clone(),
        )?,
    }
    result.commit = Some(run.submit_nowait(commit, Durability::Buffered)?);
    Ok(result)
}

/// Follows one token from `target` until it reaches a sink or ends.
fn walk(
    plan: &Plan,
    commit: &mut Commit,
    payloads: &mut Payloads,
    result: &mut RowResult,
    token: TokenId,
    mut row: Row,
    mut target: Target,
) -> Result<(), EngineError> {
    let mut input = None;
    loop {
        match target {
            Target::Sink { sink, routed } => {
                result.deliveries.push(Delivery {
                    token,
                    sink,
                    kind: if routed {
                        DeliveryKind::Routed
                    } else {
                        DeliveryKind::Completed
                    },
                    row,
                });
                return Ok(());
            }
            Target::Discard { reason } => {
                commit.push(Event::TokenOutcome {
                    token,
                    outcome: Outcome::Discarded { reason },
                });
                result.discarded += 1;
                return Ok(());
            }
            Target::Node(i) => {
                let node = plan
                    .nodes
                    .get(i)
                    .ok_or_else(|| EngineError::Internal(format!("plan has no node {i}")))?;
                let in_hash = match input {
                    Some(h) => h,
                    None => payloads.store_row(&row)?,
                };
                // A token visits each node of the DAG once; retries (not yet configured
                // here) would count further attempts.
                let state = StateId {
                    subject: Subject::Token(token.clone()),
                    node: node.id.clone(),
                    attempt: 1,
                };
                commit.push(Event::StateOpened {
                    state: state.clone(),
                    input: in_hash,
                });
                let started = Instant::now();
                match &node.exec {
                    NodeExec::Transform {
                        plugin,
                        on_success,
                        on_error,
                    } => match plugin.process(&row) {
                        Ok(out) => {
                            let out_hash = payloads.store_row(&out)?;
                            commit.push(Event::StateClosed {
                                state,
                                result: StateResult::Completed { output: out_hash },
                                duration_us: elapsed_us(started),
                            });
                            row = out;
                            input = Some(out_hash);
                            target = on_success.clone();
                        }
                        Err(e) => {
                            commit.push(Event::StateClosed {
                                state: state.clone(),
                                result: StateResult::Failed {
                                    error: e.message(),
                                    retryable: e.retryable,
                                },
                                duration_us: elapsed_us(started),
                            });
                            // ELSPETH sends the unchanged input row to on_error.
                            if let Some(to) = target_node(plan, on_error) {
                                commit.push(Event::RouteDecided {
                                    state,
                                    token: token.clone(),
                                    label: "on_error".into(),
                                    to: vec![to],
                                });
                            }
                            input = Some(in_hash);
                            target = on_error.clone();
                        }
                    },
                    NodeExec::Gate { condition, routes } => {
                        let label = condition.route_label(&row);
                        let chosen = label.as_ref().map_err(|e| e.clone()).and_then(|l| {
                            routes
                                .iter()
                                .find(|(name, _)| name == l)
                                .map(|(_, t)| t.clone())
                                .ok_or_else(|| {
                                    format!(
                                        "no route for label {l:?} (routes: {})",
                                        route_names(routes)
                                    )
                                })
                        });
                        match chosen {
                            Ok(next) => {
                                commit.push(Event::StateClosed {
                                    state: state.clone(),
                                    result: StateResult::Completed { output: in_hash },
                                    duration_us: elapsed_us(started),
                                });
                                commit.push(Event::RouteDecided {
                                    state,
                                    token: token.clone(),
                                    label: label.unwrap_or_default(),
                                    to: target_node(plan, &next).into_iter().collect(),
                                });
                                input = Some(in_hash);
                                target = next;
                            }
                            Err(error) => {
                                let error = format!("gate {}: {error}", node.id);
                                commit.push(Event::StateClosed {
                                    state,
                                    result: StateResult::Failed {
                                        error: error.clone(),
                                        retryable: false,
                                    },
                                    duration_us: elapsed_us(started),
                                });
                                commit.push(Event::TokenOutcome {
                                    token,
                                    outcome: Outcome::Failed { error },
                                });
                                result.failed += 1;
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The ledger node a target names (sinks are nodes too); none for discard.
fn target_node(plan: &Plan, target: &Target) -> Option<attest_ledger::NodeId> {
    match target {
        Target::Node(i) => plan.nodes.get(*i).map(|n| n.id.clone()),
        Target::Sink { sink, .. } => plan.sinks.get(*sink).map(|s| s.id.clone()),
        Target::Discard { .. } => None,
    }
}

fn route_names(routes: &[(String, Target)]) -> String {
    routes
        .iter()
        .map(|(l, _)| l.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn elapsed_us(since: Instant) -> u64 {
    since.elapsed().as_micros().min(u128::from(u64::MAX)) as u64
}
