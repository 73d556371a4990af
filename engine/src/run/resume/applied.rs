//! Is a re-run row already recorded? A resumed run re-runs every row after its last
//! checkpoint; a row's events are one atomic commit, so each such row is either wholly in
//! the ledger (it was processed before the run stopped, but not yet written) or not at all
//! (it was read but not processed). This compares the re-run's events with the ledger's
//! projections: all absent, the row is committed now; all present and equal, nothing is
//! committed again; anything else is refused, because the run would otherwise record
//! something that did not happen, or disagree with what it recorded.

use crate::calls::{CallBackend, RecordedBackend};
use crate::run::EngineError;
use attest_ledger::projection::{PKey, PVal, StateRec, StateStatus, Terminal, TokenRec};
use attest_ledger::{
    Event, Hash32, Item, Ledger, LedgerError, RunId, StateId, StateResult, Subject, TokenId,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The record of the run being resumed, as the walks of its re-run rows consult it.
pub struct Record {
    ledger: Ledger,
    run: RunId,
    /// Answers calls from the record by (state, index), sending nothing.
    answers: Arc<dyn CallBackend>,
}

impl Record {
    pub fn new(ledger: Ledger, run: RunId) -> Record {
        let answers = Arc::new(RecordedBackend::new(ledger.clone(), run.clone()));
        Record {
            ledger,
            run,
            answers,
        }
    }

    /// Whether the events of re-run row `row` are recorded (see [`compare`]).
    pub fn compare(&self, row: u64, items: &[Item]) -> Result<Recorded, EngineError> {
        compare(&self.ledger, &self.run, row, items)
    }

    /// A backend answering each call from the record.
    pub fn answers(&self) -> Arc<dyn CallBackend> {
        self.answers.clone()
    }
}

/// Whether a row's events are in the ledger.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// None of them: the row was read but not processed before the run stopped.
    No,
    /// All of them, as re-run.
    Yes,
}

/// What the ledger holds for one event.
enum Found {
    Absent,
    Same,
    /// Recorded with a different content: what was recorded, and what the re-run says.
    Differs(String, String),
}

/// Compares the events of re-run row `row` with the ledger.
pub fn compare(
    ledger: &Ledger,
    run: &RunId,
    row: u64,
    items: &[Item],
) -> Result<Recorded, EngineError> {
    let mut reader = Reader {
        ledger,
        run,
        tokens: HashMap::new(),
    };
    let (mut absent, mut same) = (0usize, 0usize);
    for item in items {
        let Item::Event(e) = item else {
            return Err(EngineError::Internal(format!(
                "row {row}: a re-run produced an allocation, which rows without external calls never make"
            )));
        };
        match reader.find(e)? {
            Found::Absent => absent += 1,
            Found::Same => same += 1,
            Found::Differs(recorded, now) => {
                return Err(EngineError::Resume(format!(
                    "row {row} gives a different {} when run again than the run recorded \
                     (recorded {recorded}, now {now}); only pipelines whose plugins give the \
                     same output for the same input can be resumed",
                    e.name()
                )))
            }
        }
    }
    match (absent, same) {
        (_, 0) => Ok(Recorded::No),
        (0, _) => Ok(Recorded::Yes),
        _ => Err(EngineError::Resume(format!(
            "row {row} is recorded only in part ({same} of {} events); a row's events are \
             committed together unless a node made external calls, which this build cannot \
             resume",
            absent + same
        ))),
    }
}

struct Reader<'a> {
    ledger: &'a Ledger,
    run: &'a RunId,
    /// Token records read so far (a row's events mostly concern a few tokens).
    tokens: HashMap<TokenId, Option<TokenRec>>,
}

impl Reader<'_> {
    fn token(&mut self, id: &TokenId) -> Result<Option<&TokenRec>, LedgerError> {
        if !self.tokens.contains_key(id) {
            let rec = match self.ledger.projection(self.run, &PKey::Token(id.clone()))? {
                Some(PVal::Token(t)) => Some(t),
                Some(_) => return Err(corrupt(&format!("token {id}"))),
                None => None,
            };
            self.tokens.insert(id.clone(), rec);
        }
        Ok(self.tokens.get(id).and_then(Option::as_ref))
    }

    /// The recorded state `id`, if it was opened.
    fn state(&mut self, id: &StateId) -> Result<Option<StateRec>, LedgerError> {
        let states = match &id.subject {
            Subject::Token(t) => match self.token(t)? {
                Some(t) => t.states.clone(),
                None => return Ok(None),
            },
            Subject::Batch(b) => match self.ledger.projection(self.run, &PKey::Batch(b.clone()))? {
                Some(PVal::Batch(b)) => b.states,
                Some(_) => return Err(corrupt(&format!("batch {b}"))),
                None => return Ok(None),
            },
        };
        Ok(states
            .into_iter()
            .find(|s| s.node == id.node && s.attempt == id.attempt))
    }

    fn find(&mut self, e: &Event) -> Result<Found, EngineError> {
        Ok(match e {
            Event::ValidationFailed { row, error } => {
                match self.ledger.projection(self.run, &PKey::Row(*row))? {
                    Some(PVal::Row(r)) => match r.validation_error {
                        None => Found::Absent,
                        Some(rec) => same_or(&rec, error),
                    },
                    _ => Found::Absent,
                }
            }
            Event::StateOpened { state, input } => match self.state(state)? {
                None => Found::Absent,
                Some(s) => same_or(&s.input, input),
            },
            Event::StateClosed { state, result, .. } => match self.state(state)? {
                None => Found::Absent,
                Some(s) => match (&s.status, result) {
                    (StateStatus::Open, _) => Found::Absent,
                    (
                        StateStatus::Completed { output: a },
                        StateResult::Completed { output: b },
                    ) => same_or(a, b),
                    (
                        StateStatus::Failed { error, retryable },
                        StateResult::Failed {
                            error: e2,
                            retryable: r2,
                        },
                    ) => same_or(&(error, retryable), &(e2, r2)),
                    (recorded, now) => {
                        Found::Differs(format!("{recorded:?} at {state}"), format!("{now:?}"))
                    }
                },
            },
            Event::RouteDecided {
                state,
                token,
                label,
                to,
            } => match self.token(token)? {
                None => Found::Absent,
                Some(t) => match t
                    .routes
                    .iter()
                    .find(|r| r.node == state.node && r.attempt == state.attempt)
                {
                    None => Found::Absent,
                    Some(r) => same_or(&(&r.label, &r.to), &(label, to)),
                },
            },
            Event::TokenForked { parent, children } => {
                let kids: Vec<TokenId> = children.iter().map(|c| c.token.clone()).collect();
                self.spawned(parent, &kids, |t| matches!(t, Terminal::Forked))?
            }
            Event::TokenExpanded { parent, children } => {
                self.spawned(parent, children, |t| matches!(t, Terminal::Expanded))?
            }
            Event::TokenOutcome { token, outcome } => match self.token(token)? {
                Some(TokenRec {
                    terminal: Some((term, _)),
                    ..
                }) => match term {
                    Terminal::Outcome(o) => same_or(o, outcome),
                    other => Found::Differs(other.name().into(), outcome.name().into()),
                },
                _ => Found::Absent,
            },
            Event::CallAllocated {
                state,
                index,
                request,
                ..
            } => match self.call(state, *index)? {
                None => Found::Absent,
                Some((recorded, _)) => same_or(&recorded, request),
            },
            Event::CallCompleted {
                state,
                index,
                response,
                ..
            } => match self.call(state, *index)? {
                Some((_, Some(recorded))) => same_or(&recorded, response),
                _ => Found::Absent,
            },
            // A pool's statistics are timings: a re-run cannot repeat them, and only their
            // presence is compared (the decisions they stand for are the calls).
            Event::PoolStats { state, .. } => {
                match self
                    .ledger
                    .projection(self.run, &PKey::Pool(state.clone()))?
                {
                    Some(_) => Found::Same,
                    None => Found::Absent,
                }
            }
            other => {
                return Err(EngineError::Internal(format!(
                    "a row's walk produced {}, which only the sequencer records",
                    other.name()
                )))
            }
        })
    }

    /// A fork or expansion: absent while the parent is live, the same when it ended by
    /// spawning exactly these children.
    fn spawned(
        &mut self,
        parent: &TokenId,
        children: &[TokenId],
        kind: impl Fn(&Terminal) -> bool,
    ) -> Result<Found, EngineError> {
        Ok(match self.token(parent)? {
            None | Some(TokenRec { terminal: None, .. }) => Found::Absent,
            Some(TokenRec {
                terminal: Some((term, _)),
                children: recorded,
                ..
            }) if kind(term) => same_or(recorded, &children.to_vec()),
            Some(TokenRec {
                terminal: Some((term, _)),
                ..
            }) => Found::Differs(term.name().into(), format!("children {children:?}")),
        })
    }

    /// A recorded call: its request hash, and its response hash once completed.
    #[allow(clippy::type_complexity)]
    fn call(
        &mut self,
        state: &StateId,
        index: u32,
    ) -> Result<Option<(Hash32, Option<Option<Hash32>>)>, LedgerError> {
        Ok(
            match self
                .ledger
                .projection(self.run, &PKey::Call(state.clone(), index))?
            {
                Some(PVal::Call(c)) => Some((c.request, c.completion.map(|c| c.response))),
                Some(_) => return Err(corrupt(&format!("call {index} of {state}"))),
                None => None,
            },
        )
    }
}

fn same_or<T: PartialEq + std::fmt::Debug>(recorded: &T, now: &T) -> Found {
    if recorded == now {
        Found::Same
    } else {
        Found::Differs(format!("{recorded:?}"), format!("{now:?}"))
    }
}

fn corrupt(what: &str) -> LedgerError {
    LedgerError::Corrupt(format!("the projection of {what} holds the wrong kind"))
}
