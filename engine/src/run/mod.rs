//! Running a plan on the ledger.
//!
//! Threads: one reads the source, `workers` process rows (each owning its row and its
//! commit), and the calling thread sequences finished rows into the sinks. Rows flow
//! through bounded channels, so memory is bounded by the reorder window, not the input.

mod batch;
pub mod checkpoint;
mod coalesce;
pub mod interrupted;
pub mod io;
pub mod resume;
mod sequencer;
pub mod worker;

use crate::plan::Plan;
use attest_ledger::{
    Commit, Durability, Event, FinalStatus, Hash32, Ledger, LedgerError, NodeKind, RunId, RunStart,
};
use crossbeam_channel::{bounded, unbounded};
use io::{RowSink, RowSource, SourceError};
use sequencer::Sequencer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use worker::RowResult;

/// Rows that may be read ahead of the oldest row not yet written.
const WINDOW: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{}", ledger_context(.0))]
    Ledger(#[from] LedgerError),
    #[error("source: {0}")]
    Source(String),
    #[error("{0}")]
    Sink(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A resumed run found that re-running a row does not give what the run recorded.
    #[error("resume: {0}")]
    Resume(String),
    #[error("external call: {0}")]
    Call(#[from] crate::calls::CallFault),
}

/// A ledger error as a run reports it: prefixed with "ledger: " unless its own words
/// already name the ledger (a storage failure, a lock), so no message says it twice.
fn ledger_context(e: &LedgerError) -> String {
    match e {
        LedgerError::Storage { .. } | LedgerError::Locked { .. } => e.to_string(),
        _ => format!("ledger: {e}"),
    }
}

impl From<SourceError> for EngineError {
    fn from(e: SourceError) -> Self {
        EngineError::Source(e.0)
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Completed,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

pub struct RunOptions {
    /// Worker threads; a plan whose calling transforms need more rows in flight
    /// ([`Plan::call_concurrency`]) gets that many and half as many again instead
    /// (`call_workers`).
    pub workers: usize,
    /// Answers the plugins' external calls: live by default; from a record to re-execute.
    pub calls: Arc<dyn crate::calls::CallBackend>,
    /// Attempts the record closed as interrupted, walked as recorded: for re-executing a
    /// resumed run (`attest replay`). None in a run.
    pub interrupted: Arc<interrupted::Interrupted>,
    /// Set (e.g. by Ctrl-C) to stop reading; finished rows are still written.
    pub interrupt: Arc<AtomicBool>,
    /// Called with the number of rows written so far.
    pub progress: Option<Box<dyn Fn(u64) + Send>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            interrupt: Arc::new(AtomicBool::new(false)),
            progress: None,
            calls: Arc::new(crate::calls::LiveBackend::new()),
            interrupted: Arc::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunSummary {
    pub run_id: RunId,
    pub status: RunStatus,
    pub rows: u64,
    /// Sink name → rows written, in the plan's sink order.
    pub sinks: Vec<(String, u64)>,
    pub quarantined: u64,
    pub failed: u64,
    pub discarded: u64,
    /// Rows that failed because an external service gave no usable answer.
    pub unanswered: worker::Unanswered,
    pub elapsed: Duration,
    pub events: u64,
    pub head: Hash32,
    /// What stopped a failed run.
    pub error: Option<String>,
}

enum Msg {
    Row(Result<RowResult, EngineError>),
    SourceDone {
        rows: u64,
    },
    /// Reading stopped with an error after `rows` rows; those rows are still finished.
    SourceFailed {
        error: EngineError,
        rows: u64,
    },
}

/// Registers the plan's nodes and edges: the run's topology in the ledger.
pub(crate) fn register(plan: &Plan) -> Commit {
    let mut c = Commit::new();
    c.push(Event::NodeRegistered {
        node: plan.source.id.clone(),
        kind: NodeKind::Source,
        plugin: plan.source.plugin.clone(),
        config_hash: plan.source.config_hash,
    });
    for n in &plan.nodes {
        c.push(Event::NodeRegistered {
            node: n.id.clone(),
            kind: n.kind,
            plugin: n.plugin.clone(),
            config_hash: n.config_hash,
        });
    }
    for s in &plan.sinks {
        c.push(Event::NodeRegistered {
            node: s.id.clone(),
            kind: NodeKind::Sink,
            plugin: s.plugin.clone(),
            config_hash: s.config_hash,
        });
    }
    for (from, to, label) in &plan.edges {
        c.push(Event::EdgeRegistered {
            from: from.clone(),
            to: to.clone(),
            label: label.clone(),
        });
    }
    c
}

/// Runs `plan` from `source` into `sinks`, recording everything in a new run of `ledger`.
/// Errors before the run exists are returned; once it exists, failures are recorded and
/// reported in the summary.
pub fn execute(
    plan: &Plan,
    source: Box<dyn RowSource>,
    sinks: Vec<Box<dyn RowSink>>,
    ledger: &Ledger,
    start: RunStart,
    opts: RunOptions,
) -> Result<RunSummary, EngineError> {
    let started = Instant::now();
    let run = ledger.start_run(start)?;
    run.submit(register(plan), Durability::Buffered)?;
    drive(plan, &run, source, Begin::Fresh(sinks), opts, started)
}

/// Where [`drive`] starts: a new run, or a resumed one at its last checkpoint.
pub(crate) enum Begin {
    Fresh(Vec<Box<dyn RowSink>>),
    Resumed {
        sinks: Vec<Box<dyn RowSink>>,
        restored: sequencer::Restored,
        /// Rows below this were ingested before the run stopped: they are not recorded
        /// again, and a worker checks whether each one's events are already recorded.
        ingested: u64,
        /// The sequencer's work since the checkpoint is partly recorded (a walk sent it
        /// early, to record a calling plugin's state): it repeats it against the record.
        sequencer_recorded: bool,
    },
}

/// Runs a started run from `source` to its end. `source` yields the row at the
/// sequencer's starting point first (row 0 for a new run).
/// Workers for a plan whose calling transforms keep up to `in_flight` calls in flight:
/// that many rows waiting on their answers, and half as many again getting their next
/// request ready outside the pool (template, redaction, and the request's durable record,
/// which costs an fsync before it may be sent: `calls::context`). With only `in_flight`
/// workers a permit given back stays idle while its worker prepares the next row, and
/// every row's fsync adds to the cycle; with these extra workers a row's fsync overlaps
/// other rows' calls, and the pool's permits still bound what is in flight.
/// `docs/benchmarks.md` (issue 7) has the figures that chose half. Rounded down, so that
/// a pool of one with `max_workers: 1` still runs one row at a time: the Nth call is then
/// always the same one, which crash reproduction (`tests/e2e/resume_calls.rs`) and anyone
/// debugging a pipeline rely on.
pub(crate) fn call_workers(in_flight: usize) -> usize {
    in_flight.saturating_add(in_flight / 2)
}

pub(crate) fn drive(
    plan: &Plan,
    run: &attest_ledger::RunHandle,
    source: Box<dyn RowSource>,
    begin: Begin,
    opts: RunOptions,
    started: Instant,
) -> Result<RunSummary, EngineError> {
    let run = run.clone();
    let abort = AtomicBool::new(false);
    // Rows waiting on external calls hold their worker: at least `pool_size` of them must
    // be able to wait at once, and a few more must be free to get their requests ready.
    let workers = opts
        .workers
        .max(call_workers(plan.call_concurrency()))
        .max(1);
    let calls = &opts.calls;
    let (ticket_tx, ticket_rx) = bounded::<()>(WINDOW);
    for _ in 0..WINDOW {
        let _ = ticket_tx.try_send(());
    }
    let (work_tx, work_rx) = bounded(workers * 4);
    let (msg_tx, msg_rx) = unbounded::<Msg>();
    let mut failure: Option<EngineError> = None;
    // What the work a resumed run repeats is checked against.
    let record = resume::applied::Record::new(run.ledger().clone(), run.id().clone());
    let interrupted = &*opts.interrupted;
    let (mut sequencer, ingested) = match begin {
        Begin::Fresh(sinks) => {
            let mut s = Sequencer::new(plan, &run, calls, interrupted, sinks, ticket_tx);
            if let Err(e) = s.record_positions_before_run() {
                failure = Some(e);
            }
            (s, 0)
        }
        Begin::Resumed {
            sinks,
            restored,
            ingested,
            sequencer_recorded,
        } => (
            Sequencer::resume(
                plan,
                &run,
                calls,
                sinks,
                ticket_tx,
                restored,
                sequencer_recorded.then_some(&record),
            ),
            ingested,
        ),
    };
    let first_row = sequencer.released();
    if failure.is_some() {
        // Nothing is read: the run ends failed below.
        abort.store(true, Ordering::Relaxed);
    }

    std::thread::scope(|scope| {
        // Source reader: only reads, so that whatever it has read is ingested at once even
        // when the next record is slow to come (an idle source must not hold rows back from
        // the aggregation timers).
        let (rec_tx, rec_rx) = bounded(INGEST_CHUNK * 2);
        {
            let interrupt = opts.interrupt.clone();
            let abort = &abort;
            let mut source = source;
            scope.spawn(move || loop {
                if ticket_rx.recv().is_err()
                    || abort.load(Ordering::Relaxed)
                    || interrupt.load(Ordering::Relaxed)
                {
                    break;
                }
                let Some(item) = source.next_record() else {
                    break;
                };
                let stop = item.is_err();
                if rec_tx.send(item).is_err() || stop {
                    break;
                }
            });
        }
        // Ingestion: records each row read, in order, and hands rows to workers.
        {
            let msg_tx = msg_tx.clone();
            let interrupt = opts.interrupt.clone();
            let abort = &abort;
            let run = &run;
            scope.spawn(move || {
                let r = read_source(
                    plan,
                    run,
                    (first_row, ingested),
                    &rec_rx,
                    &work_tx,
                    abort,
                    &interrupt,
                );
                let _ = msg_tx.send(match r {
                    (rows, None) => Msg::SourceDone { rows },
                    (rows, Some(error)) => Msg::SourceFailed { error, rows },
                });
            });
        }
        // Workers.
        for _ in 0..workers {
            let work_rx = work_rx.clone();
            let msg_tx = msg_tx.clone();
            let run = &run;
            let record = &record;
            let abort = &abort;
            scope.spawn(move || {
                while let Ok((i, rec)) = work_rx.recv() {
                    if abort.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = if i < ingested {
                        worker::reprocess_record(plan, run, calls, record, i, rec)
                    } else {
                        worker::process_record(plan, run, calls, interrupted, i, rec)
                    };
                    if msg_tx.send(Msg::Row(r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(msg_tx);
        drop(work_rx);

        // Sequencer, on this thread. `fatal`: an error after which no more rows are taken.
        let mut total: Option<u64> = None;
        let mut fatal = failure.is_some();
        if fatal {
            total = Some(sequencer.released());
        }
        while total != Some(sequencer.released()) {
            // Open batches and coalesce groups time out by the clock, not only when the
            // next row arrives.
            let msg = match sequencer.deadline() {
                Some(at) if !fatal => match msg_rx.recv_deadline(at) {
                    Ok(m) => m,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        if let Err(e) = sequencer.tick() {
                            failure.get_or_insert(e);
                            fatal = true;
                            abort.store(true, Ordering::Relaxed);
                            total = Some(sequencer.released());
                        }
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                },
                _ => match msg_rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            match msg {
                Msg::Row(Ok(r)) => {
                    if !fatal {
                        if let Err(e) = sequencer.accept(r) {
                            failure.get_or_insert(e);
                            fatal = true;
                            abort.store(true, Ordering::Relaxed);
                            total = Some(sequencer.released());
                        } else if let Some(p) = &opts.progress {
                            p(sequencer.released());
                        }
                    }
                }
                Msg::Row(Err(e)) => {
                    failure.get_or_insert(e);
                    fatal = true;
                    abort.store(true, Ordering::Relaxed);
                    total = Some(sequencer.released());
                }
                // The rows read before the source failed are still processed, written and
                // recorded; the run then ends failed.
                Msg::SourceFailed { error, rows } => {
                    failure.get_or_insert(error);
                    if !fatal {
                        total = Some(rows);
                    }
                }
                Msg::SourceDone { rows } => {
                    if !fatal {
                        total = Some(rows);
                    }
                }
            }
        }
        abort.store(true, Ordering::Relaxed);
        // Unblock a source waiting for a ticket: it sees `abort` and stops.
        sequencer.release_all_tickets();
        drop(msg_rx);
    });
    let interrupted = failure.is_none() && opts.interrupt.load(Ordering::Relaxed);
    // The source is exhausted: batches flush and coalesce groups resolve. An interrupted
    // or failed run leaves them as they are.
    if failure.is_none() && !interrupted {
        if let Err(e) = sequencer.end_of_source() {
            failure.get_or_insert(e);
        }
    }

    // Rows already written are made durable and their outcomes recorded, whatever happened.
    // A failed finish (a sink that cannot flush) loses the sequencer's totals; the rows
    // it released are still the rows the run took in.
    let released = sequencer.released();
    let totals = match sequencer.finish() {
        Ok(t) => Some(t),
        Err(e) => {
            failure.get_or_insert(e);
            None
        }
    };
    let status = if failure.is_some() {
        RunStatus::Failed
    } else if interrupted {
        RunStatus::Interrupted
    } else {
        RunStatus::Completed
    };
    let end = match status {
        RunStatus::Completed => Event::RunFinished {
            status: FinalStatus::Completed,
        },
        RunStatus::Failed => Event::RunFinished {
            status: FinalStatus::Failed,
        },
        RunStatus::Interrupted => Event::RunInterrupted {
            reason: "interrupted by the user".into(),
        },
    };
    let receipt = run.submit(Commit::new().event(end), Durability::Flushed)?;
    let totals = totals.unwrap_or(sequencer::SequencerTotals {
        written: vec![0; plan.sinks.len()],
        failed: 0,
        discarded: 0,
        quarantined: 0,
        released,
        unanswered: Default::default(),
    });
    Ok(RunSummary {
        run_id: run.id().clone(),
        status,
        rows: totals.released,
        sinks: plan
            .sinks
            .iter()
            .zip(&totals.written)
            .map(|(s, n)| (s.id.to_string(), *n))
            .collect(),
        quarantined: totals.quarantined,
        failed: totals.failed,
        discarded: totals.discarded,
        unanswered: totals.unanswered,
        elapsed: started.elapsed(),
        events: receipt.last_seq + 1,
        head: receipt.head,
        error: failure.map(|e| e.to_string()),
    })
}

/// Rows read and recorded per ingestion commit.
const INGEST_CHUNK: usize = 64;
/// Ingestion commits sent but not yet confirmed.
const INGEST_IN_FLIGHT: usize = 8;

/// Records each row read, in source order, and hands rows to workers. Returns the number
/// of rows read. Ingestion commits are sent before their rows are handed on, so the writer
/// sees a row's ingestion before anything a worker records.
///
/// `(first, ingested)`: the first record is row `first`, and rows below `ingested` are
/// already recorded (a resumed run re-reads them; the resume checked them against the
/// ledger before it started).
fn read_source(
    plan: &Plan,
    run: &attest_ledger::RunHandle,
    (first, ingested): (u64, u64),
    records: &crossbeam_channel::Receiver<Result<io::SourceRecord, SourceError>>,
    work: &crossbeam_channel::Sender<(u64, io::SourceRecord)>,
    abort: &AtomicBool,
    interrupt: &AtomicBool,
) -> (u64, Option<EngineError>) {
    let mut rows = first;
    let mut in_flight = std::collections::VecDeque::new();
    let error = read_chunks(
        plan,
        run,
        ingested,
        records,
        work,
        abort,
        interrupt,
        &mut rows,
        &mut in_flight,
    )
    .err();
    // Whatever happened, the ingestions already sent must be confirmed before the run ends.
    let mut error = error;
    for p in in_flight {
        if let Err(e) = p.wait() {
            error.get_or_insert(e.into());
        }
    }
    (rows, error)
}

/// Ingests records in chunks of what is already read (up to `INGEST_CHUNK`): one commit
/// per chunk, and never waiting for a record before handing on the ones it has.
#[allow(clippy::too_many_arguments)]
fn read_chunks(
    plan: &Plan,
    run: &attest_ledger::RunHandle,
    ingested: u64,
    records: &crossbeam_channel::Receiver<Result<io::SourceRecord, SourceError>>,
    work: &crossbeam_channel::Sender<(u64, io::SourceRecord)>,
    abort: &AtomicBool,
    interrupt: &AtomicBool,
    rows: &mut u64,
    in_flight: &mut std::collections::VecDeque<attest_ledger::Pending>,
) -> Result<(), EngineError> {
    let mut done = false;
    let mut failed = None;
    // What re-execution needs of each row beyond its payload (field order, quarantine rows).
    let mut details = crate::replay::detail::DetailRecorder::new();
    while !done {
        let Ok(first) = records.recv() else { break };
        let mut chunk = Vec::with_capacity(INGEST_CHUNK);
        let mut commit = Commit::new();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            if abort.load(Ordering::Relaxed) || interrupt.load(Ordering::Relaxed) {
                done = true;
                break;
            }
            match item {
                Ok(rec) => {
                    let row = *rows + chunk.len() as u64;
                    // A resumed run reads again the rows its first process ingested;
                    // they are recorded once. Its reader records its first row's field
                    // order afresh (`DetailRecorder`).
                    if row >= ingested {
                        worker::ingest(plan, &mut commit, row, &rec)?;
                        details.record(&mut commit, row, &rec)?;
                    }
                    chunk.push(rec);
                }
                Err(e) => {
                    // Hand on the rows read so far, then report the error.
                    failed = Some(EngineError::from(e));
                    done = true;
                    break;
                }
            }
            if chunk.len() < INGEST_CHUNK {
                next = records.try_recv().ok();
            }
        }
        if chunk.is_empty() {
            break;
        }
        if !commit.items.is_empty() {
            in_flight.push_back(run.submit_nowait(commit, Durability::Buffered)?);
        }
        for rec in chunk {
            if work.send((*rows, rec)).is_err() {
                return Ok(());
            }
            *rows += 1;
        }
        while in_flight.len() > INGEST_IN_FLIGHT {
            if let Some(p) = in_flight.pop_front() {
                p.wait()?;
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
