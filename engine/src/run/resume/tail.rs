//! What a stopped run recorded after its cut, read from the newest event back: the states
//! it left open, and the sequencer's work it recorded after the checkpoint.
//!
//! Both come from external calls. A node that calls out has its state recorded before its
//! first call, so a crash while it waits leaves the state open, with the calls made so far
//! (and the answers that came back). And when that node runs in a walk of the sequencer's
//! (after an aggregation or a coalesce, or an `llm_batch` aggregation's own batch state),
//! the sequencer's events gathered since the checkpoint are sent with the state, ahead of
//! the next checkpoint: those are the only sequencer events ever recorded past a cut
//! (`sequencer::sent_early`), and the resumed sequencer repeats them against the record.
//!
//! Where the scan stops: every event of a row the run continues from (rows from the cut
//! on) follows that row's `RowIngested`, and every sequencer event past the cut follows
//! the checkpoint; so once both are behind, nothing earlier matters.

use super::held::inconsistent;
use super::ResumeError;
use attest_ledger::projection::{PKey, PVal};
use attest_ledger::{BatchId, Event, Ledger, RunId, StateId};
use std::collections::{HashMap, HashSet};

/// What the run recorded after its cut.
#[derive(Debug, Default)]
pub struct Tail {
    /// States left open, oldest first: each was calling out when the run stopped.
    pub open: Vec<StateId>,
    /// The sequencer's events after the checkpoint (batch and coalesce events).
    pub sequencer_events: u64,
    /// Batches opened after the checkpoint: not formed at the cut.
    pub batches_opened: HashSet<BatchId>,
    /// Members added after the checkpoint, by batch: not members at the cut.
    pub members_added: HashMap<BatchId, u32>,
    /// Batches completed after the checkpoint: still open at the cut.
    pub batches_completed: HashSet<BatchId>,
}

/// Reads the tail of `run`: back to its last checkpoint (at `checkpoint_seq`, if any) and
/// to the ingestion of row `cut` (if the run read it).
pub fn read(
    ledger: &Ledger,
    run: &RunId,
    checkpoint_seq: Option<u64>,
    cut: u64,
    ingested: u64,
    open_states: u64,
) -> Result<Tail, ResumeError> {
    let mut tail = Tail::default();
    let mut closed: HashSet<StateId> = HashSet::new();
    let mut past_checkpoint = checkpoint_seq.is_none();
    let mut past_cut_row = cut >= ingested;
    ledger.scan_events_rev(run, |seq, event| {
        let after_checkpoint = checkpoint_seq.is_none_or(|c| seq > c);
        if checkpoint_seq == Some(seq) {
            past_checkpoint = true;
        }
        match event {
            Event::StateClosed { state, .. } => {
                closed.insert(state.clone());
            }
            Event::StateOpened { state, .. } if !closed.contains(state) => {
                tail.open.push(state.clone());
            }
            Event::RowIngested { row, .. } if *row == cut => past_cut_row = true,
            Event::BatchOpened { batch, .. } if after_checkpoint => {
                tail.sequencer_events += 1;
                tail.batches_opened.insert(batch.clone());
            }
            Event::BatchMemberAdded { batch, .. } if after_checkpoint => {
                tail.sequencer_events += 1;
                *tail.members_added.entry(batch.clone()).or_default() += 1;
            }
            Event::BatchCompleted { batch, .. } if after_checkpoint => {
                tail.sequencer_events += 1;
                tail.batches_completed.insert(batch.clone());
            }
            Event::TokensCoalesced { .. } if after_checkpoint => tail.sequencer_events += 1,
            _ => {}
        }
        Ok(!(past_checkpoint && past_cut_row))
    })?;
    tail.open.reverse();
    if tail.open.len() as u64 != open_states {
        return Err(inconsistent(
            run,
            &format!(
                "{open_states} state(s) are open, and {} of them were opened after the cut",
                tail.open.len()
            ),
        ));
    }
    Ok(tail)
}

/// The calls of `state` that have no completion: allocated, perhaps sent, never answered
/// in the record.
pub fn unanswered_calls(
    ledger: &Ledger,
    run: &RunId,
    state: &StateId,
) -> Result<Vec<u32>, ResumeError> {
    let calls = match &state.subject {
        attest_ledger::Subject::Token(t) => {
            match ledger.projection(run, &PKey::Token(t.clone()))? {
                Some(PVal::Token(t)) => t.states,
                _ => return Err(inconsistent(run, &format!("state {state} has no token"))),
            }
        }
        attest_ledger::Subject::Batch(b) => {
            match ledger.projection(run, &PKey::Batch(b.clone()))? {
                Some(PVal::Batch(b)) => b.states,
                _ => return Err(inconsistent(run, &format!("state {state} has no batch"))),
            }
        }
    }
    .into_iter()
    .find(|s| s.node == state.node && s.attempt == state.attempt)
    .map(|s| s.calls)
    .ok_or_else(|| inconsistent(run, &format!("state {state} is not recorded")))?;
    let mut out = Vec::new();
    for index in 0..calls {
        let rec = ledger
            .call_record(run, state, index)?
            .ok_or_else(|| inconsistent(run, &format!("call {index} of {state} is missing")))?;
        if rec.completion.is_none() {
            out.push(index);
        }
    }
    Ok(out)
}
