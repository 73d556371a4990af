//! Writes finished rows to their sinks in source order, and records each row's outcome
//! only after the write is durable.
//!
//! Workers finish rows in any order; the sequencer holds them in a reorder buffer keyed by
//! row index and releases them strictly in order. Every `FLUSH_ROWS` rows (or at the end)
//! it fsyncs the sinks it wrote to and then commits, in one commit, the aggregation and
//! coalesce events of the rows released since the last flush, the outcomes of the rows that
//! are now durable (with their sink ordinals) and a checkpoint of each sink's durable
//! position (see `checkpoint`). Flushes happen only between releases, so a checkpoint is a
//! clean cut that `attest resume` continues from. The reorder buffer is bounded by the
//! tickets the source must take before it reads a row, which the sequencer returns as it
//! releases rows.

use super::batch::Batches;
use super::checkpoint::{CheckpointNote, SinkMark, NOTE_VERSION};
use super::coalesce::Coalescer;
use super::interrupted::Interrupted;
use super::io::{RowSink, SinkIoError, WriteError};
use super::resume::applied::{Place, Record};
use super::worker::{Delivery, DeliveryKind, Held, Recording, RowResult, Unanswered, Walker};
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
/// Aggregation and coalesce events gathered before they force a flush: they are committed
/// only with a checkpoint, so that a crash never leaves a decision recorded past the last
/// cut (a resume would have to repeat it exactly). This bounds the memory they hold.
const STRUCTURAL_EVENTS: usize = 16_384;
/// Worker commits that may be outstanding before the sequencer waits for the oldest.
const MAX_UNCONFIRMED: usize = 1024;
/// A slow pipeline still records outcomes at least this often.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Sequencer<'a> {
    plan: &'a Plan,
    run: &'a RunHandle,
    calls: &'a Arc<dyn CallBackend>,
    /// Attempts to walk as the record has them (re-execution of a resumed run).
    interrupted: &'a Interrupted,
    /// A resumed run whose sequencer work since the checkpoint is partly recorded: its
    /// walks repeat it against the record until they meet what the record lacks (see
    /// `catching_up`).
    record: Option<&'a Record>,
    /// A resumed run (its walks' new attempts take interrupted ones' recorded answers).
    resumed: bool,
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
    /// Each sink's last durable position, repeated in every checkpoint.
    marks: Vec<Option<SinkMark>>,
    /// Rows released at the last checkpoint.
    checkpointed: u64,
    /// A walk of the sequencer's sent aggregation or coalesce events before a checkpoint
    /// (to record a calling plugin's state): the next moment between rows checkpoints.
    sent_early: bool,
}

/// Where a resumed run's sequencer starts: the cut of the last checkpoint.
pub struct Restored {
    /// Rows released (the checkpoint's `rows_ingested`).
    pub next: u64,
    /// Rows written to each sink (its next ordinal), in plan order.
    pub written: Vec<u64>,
    pub marks: Vec<Option<SinkMark>>,
    pub failed: u64,
    pub discarded: u64,
    pub quarantined: u64,
    /// Rows the external services left unanswered before the cut.
    pub unanswered: Unanswered,
    /// The open batches, rebuilt.
    pub batches: Batches,
}

impl<'a> Sequencer<'a> {
    pub fn new(
        plan: &'a Plan,
        run: &'a RunHandle,
        calls: &'a Arc<dyn CallBackend>,
        interrupted: &'a Interrupted,
        sinks: Vec<Box<dyn RowSink>>,
        tickets: Sender<()>,
    ) -> Self {
        let n = sinks.len();
        Sequencer {
            plan,
            run,
            calls,
            interrupted,
            record: None,
            resumed: false,
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
            marks: vec![None; n],
            checkpointed: 0,
            sent_early: false,
        }
    }

    /// A sequencer continuing a run from its last checkpoint (`attest resume`). `record`:
    /// the run's record, when the sequencer's work since the checkpoint is partly in it.
    pub fn resume(
        plan: &'a Plan,
        run: &'a RunHandle,
        calls: &'a Arc<dyn CallBackend>,
        sinks: Vec<Box<dyn RowSink>>,
        tickets: Sender<()>,
        restored: Restored,
        record: Option<&'a Record>,
    ) -> Self {
        let mut s = Sequencer::new(plan, run, calls, Interrupted::none(), sinks, tickets);
        s.record = record;
        s.resumed = true;
        s.next = restored.next;
        s.checkpointed = restored.next;
        s.written = restored.written;
        s.marks = restored.marks;
        s.failed = restored.failed;
        s.discarded = restored.discarded;
        s.quarantined = restored.quarantined;
        s.unanswered = restored.unanswered;
        s.batches = restored.batches;
        s
    }

    /// Records, before the first row, where each append-mode sink's file stands (the
    /// content a resume must restore it to): a checkpoint of 0 rows, made durable before
    /// any row is written, so a resume that finds no position for such a sink knows this
    /// run never wrote to it. Runs without append-mode sinks record nothing.
    pub fn record_positions_before_run(&mut self) -> Result<(), EngineError> {
        let mut any = false;
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            let Some(sink) = sink.as_mut() else { continue };
            let pos = sink.position_before_run().map_err(|SinkIoError(e)| {
                EngineError::Sink(format!("sink {}: {e}", self.plan.sinks[i].id))
            })?;
            if let Some(pos) = pos {
                self.marks[i] = Some(mark(&self.plan.sinks[i].path, pos));
                any = true;
            }
        }
        if any {
            let note = self.note();
            self.run.submit(
                Commit::new().event(Event::Checkpoint {
                    rows_ingested: 0,
                    note,
                }),
                Durability::Flushed,
            )?;
        }
        Ok(())
    }

    fn note(&self) -> String {
        CheckpointNote {
            v: NOTE_VERSION,
            sinks: self
                .plan
                .sinks
                .iter()
                .zip(&self.marks)
                .filter_map(|(s, m)| Some((s.id.to_string(), m.clone()?)))
                .collect(),
            failed: self.failed,
            discarded: self.discarded,
            quarantined: self.quarantined,
            unanswered: self.unanswered.rows,
            unanswered_first: self.unanswered.first.clone(),
        }
        .to_json()
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
            self.flush_if_sent_early()?;
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
        let mut w = Walker::new(self.plan, self.run, self.calls).interrupted(self.interrupted);
        if self.resumed {
            w = w.reusing_answers();
        }
        if let Some(record) = self.record {
            w = w.recording(Recording::Resumed {
                record,
                place: Place::Sequencer,
            });
        }
        w.commit = std::mem::take(&mut self.structural);
        w
    }

    /// A resumed run's sequencer repeating work the record holds: it checkpoints only once
    /// it has caught up, since a checkpoint before that point would be followed in the
    /// ledger by recorded work that belongs after it, and the next resume's cut would be
    /// wrong. A run that stops before catching up leaves the old cut in place.
    fn catching_up(&self) -> bool {
        self.record.is_some()
    }

    /// Commits what the sequencer's own walk recorded and writes its rows; returns what
    /// it left held.
    fn absorb(&mut self, w: Walker) -> Result<Vec<Held>, EngineError> {
        if !w.repeating() {
            // The walk met what the record lacks (or never repeated anything).
            self.record = None;
        }
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
        // A walk that reached a calling plugin sent what the sequencer had gathered, so
        // the plugin's state could be recorded before its calls: those commits are checked
        // with the worker commits, before the outcomes that follow. The cut is then no
        // longer the last checkpoint, so a checkpoint follows as soon as the row's release
        // is done (`sent_early`).
        if !unconfirmed.is_empty() {
            self.sent_early = true;
        }
        self.commits.extend(unconfirmed);
        self.unanswered.add(unanswered);
        // Gathered across rows and committed with the next checkpoint: after the commits
        // of the rows it follows (already sent) and before the outcomes that depend on it.
        self.structural.append(commit);
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
            self.flush_if_sent_early()?;
            if self.batches.any_open() {
                continue;
            }
            let mut w = self.walker();
            self.coalesce.close_all(self.plan, &mut w)?;
            let held = self.absorb(w)?;
            self.settle(held)?;
            self.flush_if_sent_early()?;
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

    /// Checkpoints now if a walk sent the sequencer's events early (see `sent_early`).
    /// Called only between releases.
    fn flush_if_sent_early(&mut self) -> Result<(), EngineError> {
        if self.sent_early && !self.catching_up() {
            self.flush()?;
        }
        Ok(())
    }

    fn maybe_flush(&mut self) -> Result<(), EngineError> {
        if self.catching_up() {
            return Ok(());
        }
        let something = !self.pending.is_empty()
            || !self.structural.items.is_empty()
            || self.next > self.checkpointed;
        if self.sent_early
            || self.pending.len() >= FLUSH_ROWS
            || self.structural.items.len() >= STRUCTURAL_EVENTS
            || (something && self.last_flush.elapsed() >= FLUSH_INTERVAL)
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Makes every written row durable, then records, in one commit, the aggregation and
    /// coalesce events since the last flush, the written rows' outcomes and a checkpoint.
    /// Called only between releases, so the checkpoint is a clean cut.
    pub fn flush(&mut self) -> Result<(), EngineError> {
        self.last_flush = std::time::Instant::now();
        // A worker's commit that failed means its row's events are not in the ledger:
        // stop before recording anything that depends on them.
        for p in self.commits.drain(..) {
            p.wait()?;
        }
        if self.pending.is_empty()
            && self.structural.items.is_empty()
            && self.next == self.checkpointed
            && !self.sent_early
        {
            return Ok(());
        }
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
            self.marks[i] = Some(mark(&self.plan.sinks[i].path, pos));
            *dirty = false;
        }
        let note = self.note();
        let mut commit = std::mem::take(&mut self.structural);
        commit
            .items
            .extend(self.pending.drain(..).map(attest_ledger::Item::Event));
        commit.push(Event::Checkpoint {
            rows_ingested: self.next,
            note,
        });
        self.run.submit(commit, Durability::Buffered)?;
        self.checkpointed = self.next;
        self.sent_early = false;
        Ok(())
    }

    /// Flushes, closes every sink and records the artifacts. A resumed run that stops
    /// while still catching up with its record (see `catching_up`) records neither: the
    /// cut stays where it was, and the rows it wrote since are past the recorded durable
    /// point, which the next resume cuts the files back to.
    pub fn finish(mut self) -> Result<SequencerTotals, EngineError> {
        let record = !self.catching_up();
        if record {
            self.flush()?;
        } else {
            for p in self.commits.drain(..) {
                p.wait()?;
            }
        }
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
        // A resumed run may find its artifacts already recorded (the crash came after
        // they were): the same file again is not a second artifact.
        let artifacts = artifacts
            .into_iter()
            .filter(|a| !self.already_recorded(a))
            .collect::<Vec<_>>();
        if record && !artifacts.is_empty() {
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

impl Sequencer<'_> {
    /// Whether `artifact` is the last one its sink has recorded, path, content and all.
    fn already_recorded(&self, artifact: &Event) -> bool {
        use attest_ledger::projection::{PKey, PVal};
        let Event::ArtifactWritten {
            sink,
            path,
            content_hash,
            size,
            rows,
        } = artifact
        else {
            return false;
        };
        let ledger = self.run.ledger();
        let count = match ledger.projection(self.run.id(), &PKey::Node(sink.clone())) {
            Ok(Some(PVal::Node(n))) => n.artifacts,
            _ => return false,
        };
        let Some(last) = count.checked_sub(1) else {
            return false;
        };
        matches!(
            ledger.projection(self.run.id(), &PKey::Artifact(sink.clone(), last)),
            Ok(Some(PVal::Artifact(a)))
                if a.path == *path && a.content_hash == *content_hash && a.size == *size && a.rows == *rows
        )
    }
}

/// A sink's durable position as the checkpoint note records it.
fn mark(path: &str, pos: super::io::SinkPosition) -> SinkMark {
    SinkMark {
        path: path.to_string(),
        bytes: pos.bytes,
        rows: pos.rows,
        hash: pos.hash.to_hex(),
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
