//! The record of the run to re-execute, gathered from its events in seq order: fed by
//! verification's walk ([`attest_ledger::Ledger::verify_observing`]) so that the log is
//! decoded once, or by a pass of its own.

use super::compare::{Comparator, Leniency};
use crate::run::interrupted::Interrupted;
use attest_ledger::{Event, FinalStatus, Hash32, Ledger, LedgerError, NodeId, NodeKind, RunId};

/// What re-execution needs to know of one source row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RowInfo {
    pub payload: Hash32,
    /// The seq of its `RowIngested`: where in the run's packs its payload is.
    pub seq: u64,
    /// Its `RowDetail`'s payload and seq.
    pub detail: Option<(Hash32, u64)>,
    /// The validation error the run recorded for it.
    pub quarantined: Option<String>,
}

/// The recorded run, as re-execution uses it.
pub(crate) struct Recorded {
    pub config_hash: Hash32,
    pub started_at_ms: u64,
    /// How the run ended; `None` while running or interrupted.
    pub finished: Option<FinalStatus>,
    pub nodes: Vec<(NodeId, NodeKind)>,
    pub edges: Vec<(NodeId, NodeId, String)>,
    pub rows: Vec<RowInfo>,
    /// External calls the run made.
    pub calls: u64,
    pub events: u64,
    /// Attempts a resume closed as interrupted: re-execution walks them as recorded
    /// (`crate::run::interrupted`).
    pub interrupted: Interrupted,
}

/// Gathers a run's record from its events, fed in seq order: the configuration's hash,
/// the topology, every source row, and every event that states a result (for the
/// comparison).
pub struct Recorder {
    pub(crate) recorded: Recorded,
    pub(crate) expected: Comparator,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            recorded: Recorded {
                config_hash: Hash32::ZERO,
                started_at_ms: 0,
                finished: None,
                nodes: Vec::new(),
                edges: Vec::new(),
                rows: Vec::new(),
                calls: 0,
                events: 0,
                interrupted: Interrupted::default(),
            },
            expected: Comparator::new(Leniency::default()),
        }
    }

    /// Reads `run`'s whole log (when no verification walk fed the recorder).
    pub fn read(ledger: &Ledger, run: &RunId) -> Result<Recorder, LedgerError> {
        let mut recorder = Recorder::new();
        ledger.for_each_event(run, |seq, event| {
            recorder.observe(seq, &event);
            Ok(())
        })?;
        Ok(recorder)
    }

    /// Takes the next event of the record.
    pub fn observe(&mut self, seq: u64, event: &Event) {
        let r = &mut self.recorded;
        r.events = seq + 1;
        self.expected.expect(seq, event);
        match event {
            Event::RunStarted {
                config_hash,
                started_at_ms,
                ..
            } => {
                r.config_hash = *config_hash;
                r.started_at_ms = *started_at_ms;
            }
            Event::NodeRegistered { node, kind, .. } => r.nodes.push((node.clone(), *kind)),
            Event::EdgeRegistered { from, to, label } => {
                r.edges.push((from.clone(), to.clone(), label.clone()))
            }
            // The rules keep rows contiguous from 0, so a row's index is its place here.
            Event::RowIngested { payload, .. } => r.rows.push(RowInfo {
                payload: *payload,
                seq,
                detail: None,
                quarantined: None,
            }),
            Event::RowDetail { row, detail } => {
                if let Some(info) = r.rows.get_mut(*row as usize) {
                    info.detail = Some((*detail, seq));
                }
            }
            Event::ValidationFailed { row, error } => {
                if let Some(info) = r.rows.get_mut(*row as usize) {
                    info.quarantined = Some(error.clone());
                }
            }
            Event::CallAllocated { .. } => r.calls += 1,
            Event::StateClosed { state, result, .. } if result.is_interrupted() => {
                r.interrupted.insert(state.clone())
            }
            Event::RunFinished { status } => r.finished = Some(*status),
            Event::RunInterrupted { .. } | Event::RunResumed { .. } => r.finished = None,
            _ => {}
        }
    }
}
