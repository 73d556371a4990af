//! Is re-run work already recorded? A resumed run re-runs every row after its last
//! checkpoint, and the sequencer's work since it. What a stopped run recorded of one such
//! row (or of the sequencer's work) is a **prefix** of what re-running it produces: its
//! commits were applied in the order they were sent, each all or nothing, and the resume's
//! own closes of interrupted states sit where the walk meets them. This compares re-run
//! events with the ledger's projections: the recorded prefix is not committed again, what
//! follows it is; a recorded event that differs, or one recorded after one that is not,
//! is refused, because the run would otherwise record something that did not happen, or
//! disagree with what it recorded.

use crate::calls::{CallBackend, RecordedBackend};
use crate::run::EngineError;
use attest_ledger::projection::{BatchRec, PKey, PVal, StateRec, StateStatus, Terminal, TokenRec};
use attest_ledger::{
    Event, Hash32, Item, Ledger, LedgerError, RunId, StateId, StateResult, Subject, TokenId,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The record of the run being resumed, as the walks that repeat its work consult it.
pub struct Record {
    ledger: Ledger,
    run: RunId,
    /// Answers calls from the record by (state, index), sending nothing.
    answers: Arc<dyn CallBackend>,
}

/// Whose events are compared, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A source row's own walk.
    Row(u64),
    /// The sequencer's aggregations and coalesces, and the walks they release.
    Sequencer,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Row(r) => write!(f, "row {r}"),
            Place::Sequencer => {
                f.write_str("the aggregation and coalesce work after the checkpoint")
            }
        }
    }
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

    /// How many of `items`, from the first, the record holds (see [`recorded_prefix`]).
    pub fn recorded_prefix(&self, place: Place, items: &[Item]) -> Result<usize, EngineError> {
        recorded_prefix(&self.ledger, &self.run, place, items)
    }

    /// Whether the record closed `state` as interrupted.
    pub fn is_interrupted(&self, state: &StateId) -> Result<bool, EngineError> {
        let mut reader = Reader::new(&self.ledger, &self.run);
        Ok(reader
            .state(state)?
            .is_some_and(|s| s.status.is_interrupted()))
    }

    /// A backend answering each call from the record.
    pub fn answers(&self) -> Arc<dyn CallBackend> {
        self.answers.clone()
    }
}

/// What the ledger holds for one event.
enum Found {
    Absent,
    Same,
    /// Recorded with a different content: what was recorded, and what the re-run says.
    Differs(String, String),
}

/// How many of `items` (re-run events of `place`, in order), from the first, are recorded
/// as they are: the rest are not recorded at all.
pub fn recorded_prefix(
    ledger: &Ledger,
    run: &RunId,
    place: Place,
    items: &[Item],
) -> Result<usize, EngineError> {
    let mut reader = Reader::new(ledger, run);
    let mut prefix = 0usize;
    let mut absent = 0usize;
    for item in items {
        let Item::Event(e) = item else {
            return Err(EngineError::Internal(format!(
                "{place}: a re-run produced an allocation, which the walks never make"
            )));
        };
        match reader.find(e)? {
            Found::Absent => absent += 1,
            Found::Same if absent == 0 => prefix += 1,
            Found::Same => {
                return Err(EngineError::Resume(format!(
                    "{place} is recorded only in part, and not up to a point: its {} is \
                     recorded after {absent} of its events that are not; the ledger does not \
                     hold what this run's commits would have left",
                    e.name()
                )))
            }
            Found::Differs(recorded, now) => {
                return Err(EngineError::Resume(format!(
                    "{place} gives a different {} when run again than the run recorded \
                     (recorded {recorded}, now {now}); only pipelines whose plugins give the \
                     same output for the same input can be resumed",
                    e.name()
                )))
            }
        }
    }
    Ok(prefix)
}

struct Reader<'a> {
    ledger: &'a Ledger,
    run: &'a RunId,
    /// Token records read so far (a row's events mostly concern a few tokens).
    tokens: HashMap<TokenId, Option<TokenRec>>,
}

impl<'a> Reader<'a> {
    fn new(ledger: &'a Ledger, run: &'a RunId) -> Reader<'a> {
        Reader {
            ledger,
            run,
            tokens: HashMap::new(),
        }
    }

    fn batch(&self, id: &attest_ledger::BatchId) -> Result<Option<BatchRec>, LedgerError> {
        match self.ledger.projection(self.run, &PKey::Batch(id.clone()))? {
            Some(PVal::Batch(b)) => Ok(Some(b)),
            Some(_) => Err(corrupt(&format!("batch {id}"))),
            None => Ok(None),
        }
    }

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
            Subject::Batch(b) => match self.batch(b)? {
                Some(b) => b.states,
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
            // The sequencer's own events, for its work after the checkpoint.
            Event::BatchOpened { batch, node } => match self.batch(batch)? {
                None => Found::Absent,
                Some(b) => same_or(&b.node, node),
            },
            Event::BatchMemberAdded {
                batch,
                token,
                ordinal,
            } => match self
                .ledger
                .projection(self.run, &PKey::Member(batch.clone(), *ordinal))?
            {
                Some(PVal::Member(t)) => same_or(&t, token),
                Some(_) => return Err(corrupt(&format!("member {ordinal} of {batch}")).into()),
                None => Found::Absent,
            },
            Event::BatchCompleted {
                batch,
                trigger,
                state,
                outputs,
            } => match self.batch(batch)?.and_then(|b| b.completion) {
                None => Found::Absent,
                Some(c) => same_or(
                    &(&c.trigger, &c.state, &c.outputs),
                    &(trigger, state, outputs),
                ),
            },
            Event::TokensCoalesced {
                node: _,
                parents,
                merged,
            } => match self.token(merged)? {
                None => Found::Absent,
                Some(t) => same_or(&t.parents, parents),
            },
            other => {
                return Err(EngineError::Internal(format!(
                    "a re-run walk produced {}, which is recorded only outside walks",
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
