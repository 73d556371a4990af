//! Aggregation nodes (ELSPETH-CONFIG §7): buffer tokens into batches and process each
//! batch once, in one state.
//!
//! The sequencer owns the buffers and feeds them in source order. Members are recorded as
//! they join (`BatchMemberAdded`); a flush opens exactly one state for the batch, and the
//! batch's completion names that state and the trigger that fired. Timeouts are checked by
//! the sequencer's timer as well as when rows arrive, so an idle source does not hold a
//! batch back.

use super::worker::{elapsed_us, Token, Walker};
use super::EngineError;
use crate::plan::{BatchMode, BatchTrigger, NodeExec, Plan};
use crate::value::{Row, Value};
use attest_ledger::{
    BatchId, BatchOutputs, Event, Outcome, StateId, StateResult, Subject, TokenId,
};
use std::time::{Duration, Instant};

/// How often an open batch with a condition trigger is re-checked while no row arrives
/// (its `batch_age_seconds` keeps growing).
const CONDITION_POLL: Duration = Duration::from_millis(50);

struct Open {
    id: BatchId,
    members: Vec<Token>,
    opened: Instant,
}

/// Open batches of every aggregation node, by plan node index.
#[derive(Default)]
pub struct Batches {
    open: Vec<Option<Open>>,
    /// Batches formed so far per node: the next batch's sequence number.
    formed: Vec<u64>,
}

fn trigger_of(plan: &Plan, node: usize) -> Result<&BatchTrigger, EngineError> {
    match plan.nodes.get(node).map(|n| &n.exec) {
        Some(NodeExec::Aggregation { trigger, .. }) => Ok(trigger),
        _ => Err(EngineError::Internal(format!(
            "node {node} is not an aggregation"
        ))),
    }
}

impl Batches {
    pub fn new(plan: &Plan) -> Batches {
        Batches {
            open: plan.nodes.iter().map(|_| None).collect(),
            formed: vec![0; plan.nodes.len()],
        }
    }

    /// A token reached aggregation `node`: an expired batch flushes first (ELSPETH checks the
    /// timeout before buffering), then the token joins, then count and condition are checked.
    pub fn arrive(
        &mut self,
        plan: &Plan,
        node: usize,
        token: Token,
        w: &mut Walker,
    ) -> Result<(), EngineError> {
        let trigger = trigger_of(plan, node)?;
        if let (Some(b), Some(t)) = (&self.open[node], trigger.timeout) {
            if b.opened.elapsed() >= t {
                self.flush(plan, node, "timeout", w)?;
            }
        }
        let slot = &mut self.open[node];
        let b = match slot {
            Some(b) => b,
            None => {
                let id = BatchId::for_node(&plan.nodes[node].id, self.formed[node]);
                self.formed[node] += 1;
                w.commit.push(Event::BatchOpened {
                    batch: id.clone(),
                    node: plan.nodes[node].id.clone(),
                });
                slot.insert(Open {
                    id,
                    members: Vec::new(),
                    opened: Instant::now(),
                })
            }
        };
        w.commit.push(Event::BatchMemberAdded {
            batch: b.id.clone(),
            token: token.id.clone(),
            ordinal: b.members.len() as u32,
        });
        b.members.push(token);
        if trigger.count.is_some_and(|c| b.members.len() as u64 >= c) {
            return self.flush(plan, node, "count", w);
        }
        self.check_condition(plan, node, w)
    }

    /// Flushes the batch of `node` if its condition now holds.
    fn check_condition(
        &mut self,
        plan: &Plan,
        node: usize,
        w: &mut Walker,
    ) -> Result<(), EngineError> {
        let Some(cond) = &trigger_of(plan, node)?.condition else {
            return Ok(());
        };
        let Some(b) = &self.open[node] else {
            return Ok(());
        };
        let mut probe = Row::new();
        probe.insert("batch_count".into(), Value::from(b.members.len() as u64));
        let age = serde_json::Number::from_f64(b.opened.elapsed().as_secs_f64())
            .map(Value::Number)
            .unwrap_or(Value::Null);
        probe.insert("batch_age_seconds".into(), age);
        match cond.holds(&probe) {
            Ok(true) => self.flush(plan, node, "condition", w),
            Ok(false) => Ok(()),
            // A condition that cannot be evaluated flushes the batch rather than holding
            // its rows forever; the reason is the trigger recorded with the batch.
            Err(e) => self.flush(plan, node, &format!("condition error: {e}"), w),
        }
    }

    /// The next moment a timer must look at the open batches.
    pub fn deadline(&self, plan: &Plan) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for (node, b) in self.open.iter().enumerate() {
            let Some(b) = b else { continue };
            let Ok(t) = trigger_of(plan, node) else {
                continue;
            };
            let mut candidates = Vec::new();
            if let Some(timeout) = t.timeout {
                candidates.push(b.opened + timeout);
            }
            if t.condition.is_some() {
                candidates.push(Instant::now() + CONDITION_POLL);
            }
            for c in candidates {
                next = Some(next.map_or(c, |n| n.min(c)));
            }
        }
        next
    }

    /// The timer fired: flush batches whose timeout has passed or whose condition holds.
    pub fn expire(&mut self, plan: &Plan, now: Instant, w: &mut Walker) -> Result<(), EngineError> {
        for node in 0..self.open.len() {
            let Some(b) = &self.open[node] else { continue };
            let t = trigger_of(plan, node)?;
            if t.timeout.is_some_and(|timeout| b.opened + timeout <= now) {
                self.flush(plan, node, "timeout", w)?;
            } else {
                self.check_condition(plan, node, w)?;
            }
        }
        Ok(())
    }

    /// End of source: every non-empty buffer flushes, in plan order.
    pub fn flush_all(&mut self, plan: &Plan, w: &mut Walker) -> Result<(), EngineError> {
        for node in 0..self.open.len() {
            if self.open[node].is_some() {
                self.flush(plan, node, "end_of_source", w)?;
            }
        }
        Ok(())
    }

    /// A resumed run's state of aggregation `node`: `formed` batches were formed so far,
    /// and `open`, when given, is the last of them, still open, with its members (in
    /// order, carrying the rows they arrived with). Its timeout counts from now: the time
    /// before the interruption is not known.
    pub fn restore(&mut self, node: usize, formed: u64, open: Option<(BatchId, Vec<Token>)>) {
        if let Some(f) = self.formed.get_mut(node) {
            *f = formed;
        }
        if let Some(slot) = self.open.get_mut(node) {
            *slot = open.map(|(id, members)| Open {
                id,
                members,
                opened: Instant::now(),
            });
        }
    }

    pub fn any_open(&self) -> bool {
        self.open.iter().any(Option::is_some)
    }

    /// Processes the open batch of `node` in one state and sends its results on.
    fn flush(
        &mut self,
        plan: &Plan,
        node: usize,
        trigger: &str,
        w: &mut Walker,
    ) -> Result<(), EngineError> {
        let Some(batch) = self.open[node].take() else {
            return Ok(());
        };
        let n = &plan.nodes[node];
        let NodeExec::Aggregation {
            plugin,
            mode,
            expected_output_count,
            on_success,
            ..
        } = &n.exec
        else {
            return Err(EngineError::Internal(format!(
                "node {} is not an aggregation",
                n.id
            )));
        };
        let rows: Vec<Row> = batch.members.iter().map(|t| t.row.clone()).collect();
        let input = w.store_value(&Value::Array(
            rows.iter().cloned().map(Value::Object).collect(),
        ))?;
        // One attempt: aggregations are not retried. An attempt the record closed as
        // interrupted (its run stopped while the batch was calling out) is walked as
        // recorded, and the batch is processed as the next one.
        let mut interrupted = Vec::new();
        let state = loop {
            let state = StateId {
                subject: Subject::Batch(batch.id.clone()),
                node: n.id.clone(),
                attempt: interrupted.len() as u32 + 1,
            };
            w.commit.push(Event::StateOpened {
                state: state.clone(),
                input,
            });
            if !w.skip_interrupted(&state)? {
                break state;
            }
            interrupted.push(state);
        };
        let started = Instant::now();
        let result = match plugin.calls() {
            None => plugin.process_batch(&rows),
            Some(spec) => {
                let members: Vec<TokenId> = batch.members.iter().map(|t| t.id.clone()).collect();
                w.with_calls(spec, &state, &interrupted, |ctx| {
                    plugin.process_batch_calling(&rows, &members, ctx)
                })?
            }
        };
        let result =
            result
                .map_err(|e| e.message())
                .and_then(|out| match (mode, expected_output_count) {
                    (BatchMode::Passthrough, _) if out.len() != rows.len() => Err(format!(
                        "passthrough mode needs one output row per input row: {} in, {} out",
                        rows.len(),
                        out.len()
                    )),
                    (BatchMode::Transform, Some(e)) if out.len() as u64 != *e => Err(format!(
                        "expected_output_count is {e}, the batch produced {}",
                        out.len()
                    )),
                    _ => Ok(out),
                });
        match result {
            Ok(out) => {
                let output = w.store_value(&Value::Array(
                    out.iter().cloned().map(Value::Object).collect(),
                ))?;
                w.commit.push(Event::StateClosed {
                    state: state.clone(),
                    result: StateResult::Completed { output },
                    duration_us: elapsed_us(started),
                });
                match mode {
                    BatchMode::Transform => {
                        let ids: Vec<TokenId> = (0..out.len() as u64)
                            .map(|i| TokenId::batch_output(&batch.id, i))
                            .collect();
                        w.commit.push(Event::BatchCompleted {
                            batch: batch.id.clone(),
                            trigger: trigger.into(),
                            state,
                            outputs: BatchOutputs::Transform {
                                outputs: ids.clone(),
                            },
                        });
                        // A fork branch consumed here does not reach its coalesce as itself.
                        for m in &batch.members {
                            w.lost(&m.forks);
                        }
                        for (id, row) in ids.into_iter().zip(out) {
                            w.run(Token::new(id, row), on_success.clone())?;
                        }
                    }
                    BatchMode::Passthrough => {
                        w.commit.push(Event::BatchCompleted {
                            batch: batch.id.clone(),
                            trigger: trigger.into(),
                            state,
                            outputs: BatchOutputs::Passthrough,
                        });
                        for (m, row) in batch.members.into_iter().zip(out) {
                            let t = Token { row, ..m };
                            w.run(t, on_success.clone())?;
                        }
                    }
                }
            }
            Err(error) => {
                let error = format!("aggregation {}: {error}", n.id);
                w.commit.push(Event::StateClosed {
                    state: state.clone(),
                    result: StateResult::Failed {
                        error: error.clone(),
                        retryable: false,
                    },
                    duration_us: elapsed_us(started),
                });
                w.commit.push(Event::BatchCompleted {
                    batch: batch.id.clone(),
                    trigger: trigger.into(),
                    state,
                    outputs: BatchOutputs::Failed {
                        error: error.clone(),
                    },
                });
                // ELSPETH: every member of a failed batch ends FAILED (not on_error).
                for m in &batch.members {
                    w.end(
                        m,
                        Outcome::Failed {
                            error: error.clone(),
                        },
                    );
                }
            }
        }
        Ok(())
    }
}
