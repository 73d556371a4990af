//! `attest resume`: continuing a run that was interrupted (Ctrl-C) or that died (SIGKILL,
//! power loss: the run is left `running` with no end event), in the same run and chain.
//!
//! **The cut.** The newest `Checkpoint` in the ledger is where the run continues from. It
//! was committed with everything the sequencer did for the rows before it (outcomes of the
//! rows written, aggregation and coalesce events), after the sinks were fsynced; its note
//! gives each sink's durable position and content hash (see `checkpoint`). Nothing the
//! sequencer does is recorded between checkpoints (but for the events a calling node's
//! state takes with it, below), so everything after the cut is redone and nothing before
//! it is.
//!
//! **Resuming** (each step refuses, changing nothing, when it finds the run cannot go on):
//! 1. [`find_stop`]: the run is `running` or `interrupted`, the pipeline registers the same
//!    nodes and connections with the same canonical configuration, and the last
//!    checkpoint's sink positions agree with the sink outcomes recorded.
//! 2. [`prepare`]: the input is read again up to the rows the run had read, each checked
//!    against its recorded payload hash; open batches are rebuilt (`held`).
//! 3. The sinks are opened at their durable positions (`open::open_sinks`): a file whose
//!    durable bytes differ from the recorded hash is refused; a torn tail is cut off.
//! 4. [`resume`]: `RunResumed` is recorded and the run goes on from the cut. Rows after
//!    the cut are processed again; a row whose events were already recorded (it was
//!    processed but not written when the run stopped, or in part: up to a calling node) is
//!    checked against them and not recorded twice (`applied`). The resumed run ends like
//!    any run.
//!
//! **External calls.** A node that calls out has its state recorded before its first
//! call, and each request made durable before it is sent, so a crash can leave a state open
//! with calls recorded, some answered. [`find_stop`] finds such states (`tail`); [`resume`]
//! completes their unanswered calls as `interrupted` and closes them failed, retryable,
//! with `StateResult::interrupted`, in the commit that records `RunResumed`. The re-run
//! walks meet the closed attempt (`Walker::skip_interrupted`), run the node as the next
//! attempt, and answer its calls from the interrupted attempt's recorded responses where
//! there are any (`crate::calls::ReusingBackend`), sending only the rest. A walk of the
//! sequencer's that reached a calling node sent the sequencer's events since the
//! checkpoint early (with the state): those are past the cut, and the resumed sequencer
//! repeats them against the record (`tail`, `applied::Place::Sequencer`). See
//! `docs/reliability.md`, *External calls*.

pub(crate) mod applied;
mod held;
mod prefix;
mod tail;
mod topology;

use super::checkpoint::CheckpointNote;
use super::io::{RowSink, RowSource};
use super::sequencer::Restored;
use super::{drive, register, Begin, EngineError, RunOptions, RunSummary};
use crate::formats::DurablePoint;
use crate::plan::Plan;
use attest_ledger::projection::{PKey, PVal, RunStatus as LedgerStatus};
use attest_ledger::{Commit, Durability, Event, Hash32, Ledger, LedgerError, RunId};
use std::time::Instant;

pub use held::AggregationState;

/// Why a run cannot be resumed. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The run, the pipeline or the input is not one this run can continue with.
    #[error("{0}")]
    Refused(String),
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
}

/// Where a run stopped, as its ledger says.
#[derive(Debug)]
pub struct Stopped {
    pub run: RunId,
    /// `running` (it died) or `interrupted`.
    pub status: LedgerStatus,
    /// Rows released at the last checkpoint: the row the run continues from.
    pub released: u64,
    /// Rows the run had read.
    pub ingested: u64,
    /// Each sink's durable position, in plan order; `None` for a sink the run has not
    /// made durable (it is opened as new).
    pub points: Vec<Option<DurablePoint>>,
    written: Vec<u64>,
    note: CheckpointNote,
    aggregations: Vec<AggregationState>,
    /// The run stopped before its registration reached the disk.
    unregistered: bool,
    /// What it recorded after the cut: the states it left open, the sequencer's work.
    tail: tail::Tail,
}

impl Stopped {
    /// States the run left open (a node was calling out when it stopped), which the
    /// resume closes as interrupted.
    pub fn open_states(&self) -> &[attest_ledger::StateId] {
        &self.tail.open
    }
}

/// Reads where `run` stopped and checks that `plan` can continue it. Reads only the
/// ledger.
pub fn find_stop(plan: &Plan, ledger: &Ledger, run: &RunId) -> Result<Stopped, ResumeError> {
    let rec = ledger.run_record(run)?.ok_or_else(|| {
        ResumeError::Refused(format!(
            "no run {run} in the ledger at {}",
            ledger.path().display()
        ))
    })?;
    match rec.status {
        LedgerStatus::Completed => {
            return Err(ResumeError::Refused(format!(
                "run {run} already completed: there is nothing to resume"
            )))
        }
        LedgerStatus::Failed => {
            return Err(ResumeError::Refused(format!(
                "run {run} failed, and a failed run is final; start a new run with `attest run`"
            )))
        }
        LedgerStatus::Running | LedgerStatus::Interrupted => {}
    }
    let unregistered = topology::check(plan, ledger, run)?;
    let (checkpoint_seq, released, note) = match ledger.find_last_event(run, |e| match e {
        Event::Checkpoint {
            rows_ingested,
            note,
        } => Some((*rows_ingested, note.clone())),
        _ => None,
    })? {
        None => (
            None,
            0,
            CheckpointNote {
                v: super::checkpoint::NOTE_VERSION,
                ..CheckpointNote::default()
            },
        ),
        Some((seq, (rows, note))) => (
            Some(seq),
            rows,
            CheckpointNote::parse(&note)
                .map_err(|e| ResumeError::Refused(format!("run {run} cannot be resumed: {e}")))?,
        ),
    };
    let tail = tail::read(
        ledger,
        run,
        checkpoint_seq,
        released,
        rec.rows,
        rec.open_states,
    )?;
    let mut points = Vec::with_capacity(plan.sinks.len());
    let mut written = Vec::with_capacity(plan.sinks.len());
    for sink in &plan.sinks {
        let recorded = match ledger.projection(run, &PKey::Node(sink.id.clone()))? {
            Some(PVal::Node(n)) => n.next_ordinal,
            _ => 0,
        };
        let point = match note.sinks.get(sink.id.as_str()) {
            None => None,
            Some(m) => {
                if m.path != sink.path {
                    return Err(ResumeError::Refused(format!(
                        "sink {}: run {run} wrote it to {}, the pipeline now writes it to {}; \
                         resume with the pipeline's paths as they were",
                        sink.id, m.path, sink.path
                    )));
                }
                let hash = m.hash().ok_or_else(|| {
                    held::inconsistent(run, &format!("sink {}'s recorded hash", sink.id))
                })?;
                Some(DurablePoint {
                    bytes: m.bytes,
                    rows: m.rows,
                    hash: hash.0,
                })
            }
        };
        let durable_rows = point.map_or(0, |p| p.rows);
        if durable_rows != recorded {
            return Err(held::inconsistent(
                run,
                &format!(
                    "sink {} has {recorded} rows recorded as written, its last checkpoint says {durable_rows}",
                    sink.id
                ),
            ));
        }
        points.push(point);
        written.push(recorded);
    }
    let aggregations = held::find(plan, ledger, run, &tail)?;
    Ok(Stopped {
        run: run.clone(),
        status: rec.status,
        released,
        ingested: rec.rows,
        points,
        written,
        note,
        aggregations,
        unregistered,
        tail,
    })
}

/// A run ready to go on: the input positioned at the cut, the sequencer's state rebuilt.
pub struct Prepared {
    pub stopped: Stopped,
    source: Box<dyn RowSource>,
    restored: Restored,
}

/// Reads the input again up to where the run stopped (checking it is the same input) and
/// rebuilds what the sequencer held. Changes nothing.
pub fn prepare(
    plan: &Plan,
    ledger: &Ledger,
    stopped: Stopped,
    source: Box<dyn RowSource>,
) -> Result<Prepared, ResumeError> {
    let needed = held::rows_needed(&stopped.aggregations);
    let prefix = prefix::read(
        ledger,
        &stopped.run,
        source,
        stopped.ingested,
        stopped.released,
        &needed,
    )?;
    let batches = held::rebuild(
        plan,
        ledger,
        &stopped.run,
        &stopped.aggregations,
        &prefix.kept,
    )?;
    let restored = Restored {
        next: stopped.released,
        written: stopped.written.clone(),
        marks: plan
            .sinks
            .iter()
            .map(|s| stopped.note.sinks.get(s.id.as_str()).cloned())
            .collect(),
        failed: stopped.note.failed,
        discarded: stopped.note.discarded,
        quarantined: stopped.note.quarantined,
        unanswered: super::worker::Unanswered {
            rows: stopped.note.unanswered,
            first: stopped.note.unanswered_first.clone(),
        },
        batches,
    };
    Ok(Prepared {
        stopped,
        source: prefix.source,
        restored,
    })
}

/// Records the resume and runs the rest of the run into `sinks` (opened at the prepared
/// durable points). Like [`super::execute`], failures once the resume is recorded are
/// recorded and reported in the summary.
pub fn resume(
    plan: &Plan,
    ledger: &Ledger,
    prepared: Prepared,
    sinks: Vec<Box<dyn RowSink>>,
    opts: RunOptions,
) -> Result<RunSummary, EngineError> {
    let started = Instant::now();
    let Prepared {
        stopped,
        source,
        restored,
    } = prepared;
    let run = ledger.run(&stopped.run)?;
    let how = match stopped.status {
        LedgerStatus::Interrupted => "after an interruption",
        _ => "after the run stopped without an end event (crash or power loss)",
    };
    let reason = format!(
        "resumed {how}, from the checkpoint at row {} of {} read",
        stopped.released, stopped.ingested
    );
    run.submit(
        interruptions(
            ledger,
            &stopped,
            Commit::new().event(Event::RunResumed { reason }),
        )?,
        Durability::Flushed,
    )?;
    if stopped.unregistered {
        run.submit(register(plan), Durability::Buffered)?;
    }
    drive(
        plan,
        &run,
        source,
        Begin::Resumed {
            sinks,
            restored,
            ingested: stopped.ingested,
            sequencer_recorded: stopped.tail.sequencer_events > 0,
        },
        opts,
        started,
    )
}

/// Adds to the resume's commit the close of every state the run left open: each of its
/// calls that has no answer recorded gets one saying the run stopped and the request may
/// or may not have gone out (its next attempt sends it again), then the state is closed
/// as interrupted, retryable (`StateResult::interrupted`). The walks of the resumed run
/// then find these attempts interrupted and go on with the next (`super::interrupted`).
fn interruptions(
    ledger: &Ledger,
    stopped: &Stopped,
    mut commit: Commit,
) -> Result<Commit, EngineError> {
    let failure = crate::calls::CallFailure::interrupted();
    let bytes = attest_ledger::canonical::to_canonical_bytes(&failure.to_record())
        .map_err(|e| EngineError::Ledger(e.into()))?;
    for state in &stopped.tail.open {
        let unanswered = tail::unanswered_calls(ledger, &stopped.run, state)
            .map_err(|e| EngineError::Resume(e.to_string()))?;
        for index in unanswered {
            let response = commit.payload(bytes.clone());
            commit.push(Event::CallCompleted {
                state: state.clone(),
                index,
                outcome: attest_ledger::CallOutcome::Errored {
                    error: failure.to_string(),
                    retryable: true,
                },
                response: Some(response),
                latency_us: 0,
            });
        }
        commit.push(Event::StateClosed {
            state: state.clone(),
            result: attest_ledger::StateResult::interrupted(),
            duration_us: 0,
        });
    }
    Ok(commit)
}

/// The configuration a run recorded when it started (the payload of its genesis event),
/// for resuming without naming the pipeline file. `None` when the bytes were purged.
pub fn recorded_config(
    ledger: &Ledger,
    run: &RunId,
) -> Result<(Hash32, Option<Vec<u8>>), ResumeError> {
    let rec = ledger.run_record(run)?.ok_or_else(|| {
        ResumeError::Refused(format!(
            "no run {run} in the ledger at {}",
            ledger.path().display()
        ))
    })?;
    Ok((rec.config_hash, ledger.payload(&rec.config_hash)?))
}
