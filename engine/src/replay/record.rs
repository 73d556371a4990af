//! Reading the record of the run to re-execute: one pass over its log, in seq order.

use super::compare::Comparator;
use attest_ledger::{Event, FinalStatus, Hash32, Ledger, LedgerError, NodeId, NodeKind, RunId};

/// What re-execution needs to know of one source row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RowInfo {
    pub payload: Hash32,
    pub detail: Option<Hash32>,
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
    pub source: Option<NodeId>,
    pub rows: Vec<RowInfo>,
    /// External calls the run made.
    pub calls: u64,
    pub events: u64,
}

/// Reads `run`'s log once: the configuration's hash, the topology, every source row, and
/// every event that states a result into `expected`.
pub(crate) fn read(
    ledger: &Ledger,
    run: &RunId,
    expected: &mut Comparator,
) -> Result<Recorded, LedgerError> {
    let mut r = Recorded {
        config_hash: Hash32::ZERO,
        started_at_ms: 0,
        finished: None,
        nodes: Vec::new(),
        edges: Vec::new(),
        source: None,
        rows: Vec::new(),
        calls: 0,
        events: 0,
    };
    ledger.for_each_event(run, |seq, event| {
        r.events = seq + 1;
        expected.expect(seq, &event);
        match event {
            Event::RunStarted {
                config_hash,
                started_at_ms,
                ..
            } => {
                r.config_hash = config_hash;
                r.started_at_ms = started_at_ms;
            }
            Event::NodeRegistered { node, kind, .. } => {
                if kind == NodeKind::Source {
                    r.source = Some(node.clone());
                }
                r.nodes.push((node, kind));
            }
            Event::EdgeRegistered { from, to, label } => r.edges.push((from, to, label)),
            Event::RowIngested { row, payload, .. } => {
                // The rules keep rows contiguous from 0, so the row is the next index.
                debug_assert_eq!(row, r.rows.len() as u64);
                r.rows.push(RowInfo {
                    payload,
                    detail: None,
                    quarantined: None,
                });
            }
            Event::RowDetail { row, detail } => {
                if let Some(info) = r.rows.get_mut(row as usize) {
                    info.detail = Some(detail);
                }
            }
            Event::ValidationFailed { row, error } => {
                if let Some(info) = r.rows.get_mut(row as usize) {
                    info.quarantined = Some(error);
                }
            }
            Event::CallAllocated { .. } => r.calls += 1,
            Event::RunFinished { status } => r.finished = Some(status),
            Event::RunInterrupted { .. } | Event::RunResumed { .. } => r.finished = None,
            _ => {}
        }
        Ok(())
    })?;
    Ok(r)
}
