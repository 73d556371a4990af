//! Writes finished rows to their sinks in source order, and records each row's outcome
//! only after the write is durable.
//!
//! Workers finish rows in any order; the sequencer holds them in a reorder buffer keyed by
//! row index and releases them strictly in order. Every `FLUSH_ROWS` rows (or at the end)
//! it fsyncs the sinks it wrote to and then commits the outcomes of the rows that are now
//! durable, with their sink ordinals, together with a checkpoint of each sink's durable
//! position. The reorder buffer is bounded by the tickets the source must take before it
//! reads a row, which the sequencer returns as it releases rows.

use super::batch::Batches;
use super::coalesce::Coalescer;
use super::io::{RowSink, SinkIoError, WriteError};
use super::worker::{Delivery, DeliveryKind, Held, RowResult, Unanswered, Walker};
use super::EngineError;
use crate::calls::CallBackend;
use crate::plan::{NodeExec, Plan, WriteFailure};
use attest_ledger::{Commit, Durability, Event, Outcome, RunHandle, SinkWrite};
use crossbeam_channel::Sender;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Rows written between two durable flushes. Each flush is an fsync per sink written to,
/// so this trades the cost of fsyncs against how much is written but not yet recorded
/// (which a resume would truncate and redo).
const FLUSH_ROWS: usize = 8192;
/// Sequencer events gathered before they are sent as one commit.
const STRUCTURAL_EVENTS: usize = 4096;
/// Worker commits that may be outstanding before the sequencer waits for the oldest.
const MAX_UNCONFIRMED: usize = 1024;
/// A slow pipeline still records outcomes at least this often.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Sequencer<'a> {
    plan: &'a Plan,
    run: &'a RunHandle,
    calls: &'a Arc<dyn CallBackend>,
    sinks: Vec<Option<Box<dyn RowSink>>>,
    tickets: Sender<()>,
    reorder: BTreeMap<u64, RowResult>,
    next: u64,
    /// Outcomes of rows written since the last durable flush.
    pending: Vec<Event>,
    /// Workers' commits for the rows released since the last flush, checked before the
    /// outcomes that follow them are recorded.
    commits: Vec<attest_ledger::Pending>,
    dirty: Vec<bool>,
    last_flush: std::time::Instant,
    /// Rows written to each sink (the next ordinal).
    pub written: Vec<u64>,
    pub failed: u64,
    pub discarded: u64,
    pub quarantined: u64,
    pub unanswered: Unanswered,
    batches: Batches,
    coalesce: Coalescer,
    /// Events of the aggregations, coalesces and the walks they release, not yet sent.
    structural: Commit,
}

impl<'a> Sequencer<'a> {
    pub fn new(
        plan: &'a Plan,
        run: &'a RunHandle,
        calls: &'a Arc<dyn CallBackend>,
        sinks: Vec<Box<dyn RowSink>>,
        tickets: Sender<()>,
    ) -> Self {
        let n = sinks.len();
        Sequencer {
            plan,
            run,
            calls,
            sinks: sinks.into_iter().map(Some).collect(),
            tickets,
            reorder: BTreeMap::new(),
            next: 0,
            pending: Vec::new(),
            commits: Vec::new(),
            dirty: vec![false; n],
            last_flush: std::time::Instant::now(),
            written: vec![0; n],
            failed: 0,
            discarded: 0,
            quarantined: 0,
            unanswered: Unanswered::default(),
            batches: Batches::new(plan),
            coalesce: Coalescer::default(),
            structural: Commit::new(),
        }
    }

    /// Fills the ticket channel so a source blocked waiting for one wakes up (and, seeing
    /// the run is stopping, stops).
    pub fn release_all_tickets(&self) {
        while self.tickets.try_send(()).is_ok() {}
    }

    /// Rows released so far.
    pub fn released(&self) -> u64 {
        self.next
    }

    pub fn accept(&mut self, result: RowResult) -> Result<(), EngineError> {
        self.reorder.insert(result.row_index, result);
        while let Some(r) = self.reorder.remove(&self.next) {
            self.release(r)?;
            self.next += 1;
            // The source may read one more row. A closed channel means the source has
            // stopped, which is fine.
            let _ = self.tickets.try_send(());
        }
        self.maybe_flush()
    }

    fn release(&mut self, mut r: RowResult) -> Result<(), EngineError> {
        self.commits.append(&mut r.earlier);
        if let Some(p) = r.commit.take() {
            self.commits.push(p);
        }
        // Bound how far workers' commits may run ahead of the writer (and so the memory
        // the writer's queue holds): wait for the oldest once many are outstanding.
        if self.commits.len() >= MAX_UNCONFIRMED {
            for p in self.commits.drain(..MAX_UNCONFIRMED / 2) {
                p.wait()?;
            }
        }
        self.failed += r.failed;
        self.discarded += r.discarded;
        self.quarantined += r.quarantined;
        self.unanswered.add(r.unanswered);
        for d in r.deliveries {
            self.deliver(d)?;
        }
        self.settle(r.held)
    }

    /// Feeds held tokens to the aggregations and coalesces, in order, and follows whatever
    /// they release until nothing more moves.
    fn settle(&mut self, mut held: Vec<Held>) -> Result<(), EngineError> {
        let plan = self.plan;
        while !held.is_empty() {
            let mut w = self.walker();
            for h in held.drain(..) {
                match h {
                    Held::Arrived { node, token } => match plan.nodes.get(node).map(|n| &n.exec) {
                        Some(NodeExec::Aggregation { .. }) => {
                            self.batches.arrive(plan, node, token, &mut w)?
                        }
                        Some(NodeExec::Coalesce { .. }) => {
                            self.coalesce.arrive(plan, node, token, &mut w)?
                        }
                        _ => {
                            return Err(EngineError::Internal(format!(
                                "token {} held at node {node}, which holds nothing",
                                token.id
                            )))
                        }
                    },
                    Held::Lost {
                        coalesce,
                        parent,
                        branch,
                        outer,
                    } => self
                        .coalesce
                        .lose(plan, coalesce, parent, &branch, outer, &mut w)?,
                }
            }
            held = self.absorb(w)?;
        }
        Ok(())
    }

    /// A walk for the sequencer's own tokens. It starts from the events the sequencer has
    /// not sent yet, so that a walk reaching a calling plugin sends them first, in order
    /// (see `worker.rs`); [`Sequencer::absorb`] takes back whatever is left unsent.
    fn walker(&mut self) -> Walker<'a> {
        let mut w = Walker::new(self.plan, self.run, self.calls);
        w.commit = std::mem::take(&mut self.structural);
        w
    }

    /// Commits what the sequencer's own walk recorded and writes its rows; returns what
    /// it left held.
    fn absorb(&mut self, w: Walker) -> Result<Vec<Held>, EngineError> {
        let Walker {
            commit,
            unconfirmed,
            deliveries,
            held,
            failed,
            discarded,
            unanswered,
            ..
        } = w;
        // Sent before anything that follows from this walk (a calling plugin's state and
        // completions): checked with the worker commits, before the outcomes that follow.
        self.commits.extend(unconfirmed);
        self.unanswered.add(unanswered);
        // Gathered across rows and sent in groups: always after the commits of the rows
        // it follows (already sent), and always before the outcomes that depend on it
        // (`flush` sends it first); checked before those outcomes, like a worker's.
        self.structural.append(commit);
        if self.structural.items.len() >= STRUCTURAL_EVENTS {
            self.send_structural()?;
        }
        self.failed += failed;
        self.discarded += discarded;
        for d in deliveries {
            self.deliver(d)?;
        }
        Ok(held)
    }

    /// The next moment the timer must look at open batches and coalesce groups.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        match (
            self.batches.deadline(self.plan),
            self.coalesce.deadline(self.plan),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timer fired: flush what has timed out, even while no row arrives.
    pub fn tick(&mut self) -> Result<(), EngineError> {
        let now = std::time::Instant::now();
        let mut w = self.walker();
        self.batches.expire(self.plan, now, &mut w)?;
        self.coalesce.expire(self.plan, now, &mut w)?;
        let held = self.absorb(w)?;
        self.settle(held)?;
        self.maybe_flush()
    }

    /// The source is exhausted and every row released: flush every batch (plan order),
    /// then resolve every waiting coalesce group, until nothing is held.
    pub fn end_of_source(&mut self) -> Result<(), EngineError> {
        while self.batches.any_open() || self.coalesce.waiting() {
            let mut w = self.walker();
            self.batches.flush_all(self.plan, &mut w)?;
            let held = self.absorb(w)?;
            self.settle(held)?;
            if self.batches.any_open() {
                continue;
            }
            let mut w = self.walker();
            self.coalesce.close_all(self.plan, &mut w)?;
            let held = self.absorb(w)?;
            self.settle(held)?;
        }
        Ok(())
    }

    /// Writes one row to its sink; a row the sink cannot take goes to its failsink.
    fn deliver(&mut self, d: Delivery) -> Result<(), EngineError> {
        let error = match self.write(d.sink, &d.row)? {
            Ok(write) => {
                let outcome = match d.kind {
                    DeliveryKind::Completed => Outcome::Completed { write },
                    DeliveryKind::Routed => Outcome::Routed { write },
                    DeliveryKind::Quarantined => Outcome::Quarantined { write: Some(write) },
                };
                self.pending.push(Event::TokenOutcome {
                    token: d.token,
                    outcome,
                });
                return Ok(());
            }
            Err(e) => format!("sink {}: {e}", self.plan.sinks[d.sink].id),
        };
        let outcome = match self.plan.sinks[d.sink].on_write_failure.clone() {
            None => Outcome::Failed { error },
            Some(WriteFailure::Discard) => Outcome::Discarded { reason: error },
            Some(WriteFailure::Sink(f)) => match self.write(f, &d.row)? {
                Ok(write) => Outcome::Diverted { write, error },
                Err(e2) => Outcome::Failed {
                    error: format!("{error}; failsink {}: {e2}", self.plan.sinks[f].id),
                },
            },
        };
        match outcome {
            Outcome::Failed { .. } => self.failed += 1,
            Outcome::Discarded { .. } => self.discarded += 1,
            _ => {}
        }
        self.pending.push(Event::TokenOutcome {
            token: d.token,
            outcome,
        });
        Ok(())
    }

    /// Writes `row` to sink `i`: the write's ordinal, or why this row cannot be written
    /// there. A failing sink (not row) stops the run.
    fn write(
        &mut self,
        i: usize,
        row: &crate::value::Row,
    ) -> Result<Result<SinkWrite, String>, EngineError> {
        let sink = self
            .sinks
            .get_mut(i)
            .and_then(|s| s.as_mut())
            .ok_or_else(|| EngineError::Internal(format!("no open sink {i}")))?;
        match sink.write_row(row) {
            Ok(()) => {
                let write = SinkWrite {
                    sink: self.plan.sinks[i].id.clone(),
                    ordinal: self.written[i],
                };
                self.written[i] += 1;
                self.dirty[i] = true;
                Ok(Ok(write))
            }
            Err(WriteError::Io(SinkIoError(e))) => Err(EngineError::Sink(format!(
                "sink {}: {e}",
                self.plan.sinks[i].id
            ))),
            Err(WriteError::Row(e)) => Ok(Err(e.to_string())),
        }
    }

    fn maybe_flush(&mut self) -> Result<(), EngineError> {
        if self.pending.len() >= FLUSH_ROWS
            || (!self.pending.is_empty() && self.last_flush.elapsed() >= FLUSH_INTERVAL)
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Makes every written row durable, then records their outcomes.
    fn send_structural(&mut self) -> Result<(), EngineError> {
        if !self.structural.items.is_empty() {
            let commit = std::mem::take(&mut self.structural);
            self.commits
                .push(self.run.submit_nowait(commit, Durability::Buffered)?);
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), EngineError> {
        self.last_flush = std::time::Instant::now();
        self.send_structural()?;
        // A worker's commit that failed means its row's events are not in the ledger:
        // stop before recording anything that depends on them.
        for p in self.commits.drain(..) {
            p.wait()?;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut positions = serde_json::Map::new();
        for (i, dirty) in self.dirty.iter_mut().enumerate() {
            if !*dirty {
                continue;
            }
            let sink = self.sinks[i]
                .as_mut()
                .ok_or_else(|| EngineError::Internal(format!("sink {i} already finished")))?;
            let pos = sink.flush_durable().map_err(|SinkIoError(e)| {
                EngineError::Sink(format!("sink {}: {e}", self.plan.sinks[i].id))
            })?;
            positions.insert(
                self.plan.sinks[i].id.to_string(),
                serde_json::json!({"bytes": pos.bytes, "rows": pos.rows}),
            );
            *dirty = false;
        }
        let mut commit = Commit::new();
        commit
            .items
            .extend(self.pending.drain(..).map(attest_ledger::Item::Event));
        commit.push(Event::Checkpoint {
            rows_ingested: self.next,
            note: serde_json::Value::Object(positions).to_string(),
        });
        self.run.submit(commit, Durability::Buffered)?;
        Ok(())
    }

    /// Flushes, closes every sink and records the artifacts.
    pub fn finish(mut self) -> Result<SequencerTotals, EngineError> {
        self.flush()?;
        let mut artifacts = Vec::new();
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            let Some(sink) = sink.take() else { continue };
            let id = self.plan.sinks[i].id.clone();
            let info = sink
                .finish()
                .map_err(|SinkIoError(e)| EngineError::Sink(format!("sink {id}: {e}")))?;
            if let Some(a) = info {
                artifacts.push(Event::ArtifactWritten {
                    sink: id,
                    path: a.path,
                    content_hash: a.content_hash,
                    size: a.size,
                    rows: a.rows,
                });
            }
        }
        if !artifacts.is_empty() {
            self.run.append(artifacts)?;
        }
        Ok(SequencerTotals {
            written: self.written,
            failed: self.failed,
            discarded: self.discarded,
            quarantined: self.quarantined,
            released: self.next,
            unanswered: self.unanswered,
        })
    }
}

pub struct SequencerTotals {
    pub written: Vec<u64>,
    pub failed: u64,
    pub discarded: u64,
    pub quarantined: u64,
    pub released: u64,
    pub unanswered: Unanswered,
}
