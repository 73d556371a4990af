//! What the sequencer held at the last checkpoint, rebuilt: each aggregation's count of
//! batches formed, and the batch still open, with its members.
//!
//! The ledger records an open batch's members (`BatchMemberAdded`) but not the rows they
//! carry, and rows are stored only in canonical form (sorted keys), which is not the order
//! a sink writes them in. So each member's row is rebuilt by running its source row again
//! through the row-local nodes, exactly as a worker did, up to the aggregation; the events
//! of that walk must be the ones recorded. A member this cannot reproduce (one that came
//! through another aggregation) or one that a coalesce still waits for (a fork branch held
//! in the batch) is refused: the coalesce's waiting group is not in the ledger.

use super::applied::{self, Place};
use super::tail::Tail;
use super::ResumeError;
use crate::plan::{NodeExec, Plan};
use crate::run::batch::Batches;
use crate::run::io::SourceRecord;
use crate::run::worker::{self, Held, Token};
use attest_ledger::projection::{PKey, PVal};
use attest_ledger::{BatchId, Ledger, RunId, TokenId};
use std::collections::{BTreeMap, BTreeSet};

/// An aggregation's state at the cut, as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregationState {
    /// Index into [`Plan::nodes`].
    pub node: usize,
    /// Batches formed so far (the next batch's number).
    pub formed: u64,
    /// The last batch, if it is still open: its id and its members with their source rows.
    pub open: Option<(BatchId, Vec<(TokenId, u64)>)>,
}

/// Reads each aggregation's state at the cut from the ledger: its projections, less what
/// the sequencer recorded after the checkpoint (`tail`; see `tail.rs`).
pub fn find(
    plan: &Plan,
    ledger: &Ledger,
    run: &RunId,
    tail: &Tail,
) -> Result<Vec<AggregationState>, ResumeError> {
    let mut out = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        if !matches!(n.exec, NodeExec::Aggregation { .. }) {
            continue;
        }
        let exists = |k: u64| -> Result<Option<attest_ledger::projection::BatchRec>, ResumeError> {
            match ledger.projection(run, &PKey::Batch(BatchId::for_node(&n.id, k)))? {
                Some(PVal::Batch(b)) => Ok(Some(b)),
                Some(_) => Err(inconsistent(run, "a batch record holds the wrong kind")),
                None => Ok(None),
            }
        };
        // Batches are numbered from 0 in order, so those opened after the cut are last.
        let opened_after = tail
            .batches_opened
            .iter()
            .filter(|b| b.as_str().rsplit_once("#b").map(|(node, _)| node) == Some(n.id.as_str()))
            .count() as u64;
        let formed = count(|k| Ok(exists(k)?.is_some()))?
            .checked_sub(opened_after)
            .ok_or_else(|| inconsistent(run, "more batches opened after the cut than exist"))?;
        let mut open = None;
        if let Some(last) = formed.checked_sub(1) {
            let id = BatchId::for_node(&n.id, last);
            let rec =
                exists(last)?.ok_or_else(|| inconsistent(run, &format!("batch {id} vanished")))?;
            if rec.completion.is_none() || tail.batches_completed.contains(&id) {
                let at_cut = rec
                    .members
                    .checked_sub(tail.members_added.get(&id).copied().unwrap_or(0))
                    .ok_or_else(|| {
                        inconsistent(run, &format!("batch {id} gained more members than it has"))
                    })?;
                let mut members = Vec::with_capacity(at_cut as usize);
                for k in 0..at_cut {
                    let token = match ledger.projection(run, &PKey::Member(id.clone(), k))? {
                        Some(PVal::Member(t)) => t,
                        _ => {
                            return Err(inconsistent(run, &format!("batch {id} lacks member {k}")))
                        }
                    };
                    let row = match ledger.projection(run, &PKey::Token(token.clone()))? {
                        Some(PVal::Token(t)) => t.row,
                        _ => return Err(inconsistent(run, &format!("token {token} is missing"))),
                    };
                    let Some(row) = row else {
                        return Err(ResumeError::Refused(format!(
                            "run {run} cannot be resumed: batch {id} of aggregation `{}` holds \
                             token {token}, which was made from several source rows (by another \
                             aggregation); resume rebuilds an open batch from its members' \
                             source rows and cannot rebuild this one",
                            n.id
                        )));
                    };
                    members.push((token, row));
                }
                open = Some((id, members));
            }
        }
        out.push(AggregationState {
            node: i,
            formed,
            open,
        });
    }
    Ok(out)
}

/// The source rows whose records [`rebuild`] needs.
pub fn rows_needed(states: &[AggregationState]) -> BTreeSet<u64> {
    states
        .iter()
        .filter_map(|s| s.open.as_ref())
        .flat_map(|(_, members)| members.iter().map(|(_, row)| *row))
        .collect()
}

/// Rebuilds the sequencer's batches: each open batch's members are found again by running
/// their source rows (`records`) through the row-local nodes.
pub fn rebuild(
    plan: &Plan,
    ledger: &Ledger,
    run: &RunId,
    states: &[AggregationState],
    records: &BTreeMap<u64, SourceRecord>,
) -> Result<Batches, ResumeError> {
    let mut batches = Batches::new(plan);
    // Each row is walked once, however many of its tokens wait in batches.
    let mut walked: BTreeMap<u64, Vec<Held>> = BTreeMap::new();
    for state in states {
        let node = &plan.nodes[state.node];
        let Some((id, members)) = &state.open else {
            batches.restore(state.node, state.formed, None);
            continue;
        };
        let mut tokens = Vec::with_capacity(members.len());
        for (token, row) in members {
            if !walked.contains_key(row) {
                let record = records.get(row).cloned().ok_or_else(|| {
                    inconsistent(
                        run,
                        &format!("source row {row} was not kept for batch {id}"),
                    )
                })?;
                walked.insert(*row, walk_again(plan, ledger, run, *row, record)?);
            }
            let arrived = walked.get(row).and_then(|held| {
                held.iter().find_map(|h| match h {
                    Held::Arrived { node: n, token: t } if *n == state.node && t.id == *token => {
                        Some(t.clone())
                    }
                    _ => None,
                })
            });
            let Some(t) = arrived else {
                return Err(ResumeError::Refused(format!(
                    "run {run} cannot be resumed: batch {id} of aggregation `{}` holds token \
                     {token}, which running source row {row} again does not bring there (it \
                     came through another aggregation or a coalesce); resume cannot rebuild \
                     this batch",
                    node.id
                )));
            };
            if let Some(c) = waiting_coalesce(plan, &t) {
                return Err(ResumeError::Refused(format!(
                    "run {run} cannot be resumed: batch {id} of aggregation `{}` holds token \
                     {token}, a fork branch that coalesce `{c}` is still waiting for; the \
                     coalesce's waiting group is not in the ledger, so resume cannot rebuild it",
                    node.id
                )));
            }
            tokens.push(t);
        }
        batches.restore(state.node, state.formed, Some((id.clone(), tokens)));
    }
    Ok(batches)
}

/// Runs source row `row` again through the row-local nodes; what it recorded must be what
/// the ledger holds. Returns the tokens it left at aggregations and coalesces.
fn walk_again(
    plan: &Plan,
    ledger: &Ledger,
    run: &RunId,
    row: u64,
    record: SourceRecord,
) -> Result<Vec<Held>, ResumeError> {
    let handle = ledger.run(run)?;
    let (commit, result) = worker::walk_record(plan, &handle, row, record)
        .map_err(|e| ResumeError::Refused(format!("source row {row}: {e}")))?;
    // A row whose token waits in a batch recorded nothing of its own only when it went
    // straight there; otherwise all of it is recorded.
    match applied::recorded_prefix(ledger, run, Place::Row(row), &commit.items) {
        Ok(n) if n == commit.items.len() => Ok(result.held),
        Ok(_) => Err(inconsistent(
            run,
            &format!("row {row} waits in a batch but its own events are not all recorded"),
        )),
        Err(e) => Err(ResumeError::Refused(format!(
            "run {run} cannot be resumed: {e}"
        ))),
    }
}

/// The coalesce a token is (still) a branch for, if any.
fn waiting_coalesce<'p>(plan: &'p Plan, t: &Token) -> Option<&'p attest_ledger::NodeId> {
    t.forks
        .iter()
        .find_map(|f| f.coalesce)
        .and_then(|c| plan.nodes.get(c))
        .map(|n| &n.id)
}

/// The number of batches formed: ids are `node#b0, #b1, ...` without gaps, so the count
/// is the first number without a batch (found with O(log n) lookups).
fn count(exists: impl Fn(u64) -> Result<bool, ResumeError>) -> Result<u64, ResumeError> {
    if !exists(0)? {
        return Ok(0);
    }
    // exists(lo) and, once found, !exists(hi).
    let (mut lo, mut hi) = (0u64, 1u64);
    while exists(hi)? {
        lo = hi;
        hi = hi.saturating_mul(2);
        if hi == u64::MAX {
            break;
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if exists(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

pub(super) fn inconsistent(run: &RunId, what: &str) -> ResumeError {
    ResumeError::Refused(format!(
        "run {run} cannot be resumed: its ledger is inconsistent ({what})"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn count_finds_the_first_missing_number() {
        for n in [0u64, 1, 2, 3, 4, 5, 7, 8, 9, 100, 1023, 1024, 1025] {
            let probes = std::cell::Cell::new(0);
            let got = super::count(|k| {
                probes.set(probes.get() + 1);
                Ok(k < n)
            });
            assert_eq!(got.ok(), Some(n), "{n}");
            assert!(probes.get() <= 2 * 64, "{n}: {} probes", probes.get());
        }
    }
}
