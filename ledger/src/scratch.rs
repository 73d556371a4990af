//! A scratch ledger: the ledger's API and integrity rules, in memory, keeping nothing.
//!
//! Re-execution (`attest replay`) runs a recorded pipeline again through the same executor
//! as `attest run`, and that executor writes to a [`Ledger`]. A scratch ledger takes its
//! commits as the real writer does — items resolved (attempt numbers and call indices
//! allocated by the ledger), encoded into records (so the size rule holds) and applied
//! through [`crate::rules::apply`] — but keeps the projections in memory, stores no record
//! and no payload, and hands every event it accepts to an observer instead. Its records
//! are not hashed: they are dropped, and re-execution compares states, routes and
//! outcomes, never a chain (the hashes were 7% of a full replay's instructions), so its
//! run heads are zero. Nothing touches disk,
//! which is what lets re-executing a run cost a fraction of running it (sled's inserts are
//! most of a run).
//!
//! One difference: commits apply in place, not in a transaction (copying every record a
//! commit changes into a transaction and back cost more than the rules themselves). So a
//! commit that breaks a rule is refused as by the real ledger, but the events before the
//! one that broke it stay applied; the scratch ledger then refuses **every** later commit
//! with the same error, so that nothing is ever built on them. The observer never sees an
//! event of a refused commit. (Re-execution stops at the first refused commit anyway.)
//!
//! Reads see an empty ledger: [`Ledger::payload`] finds nothing and [`Ledger::run_record`]
//! knows no run. The executor never reads back what it wrote, so it does not notice.

use crate::codec::Chain;
use crate::error::{LedgerError, Result};
use crate::event::Event;
use crate::ids::RunId;
use crate::ledger::Ledger;
use crate::rules::MemProj;
use crate::writer::{apply_items, Cmd, Item, Receipt};
use crossbeam_channel::{Receiver, Sender};
use hashbrown::HashMap;
use std::thread::JoinHandle;

/// Sees every event a scratch ledger accepts, with its seq, in the order they were applied
/// (the order a real ledger would have recorded them), on the scratch ledger's writer thread.
pub type Observer = Box<dyn FnMut(&RunId, u64, &Event) + Send>;

impl Ledger {
    /// A ledger that applies commits through the integrity rules in memory and passes each
    /// accepted event to `observer`; see the module documentation.
    pub fn scratch(observer: Observer) -> Result<Ledger> {
        let store = crate::store::Store::temporary()?;
        Ledger::with_writer(store, true, |_| spawn(observer))
    }
}

/// Starts the scratch ledger's writer thread.
fn spawn(observer: Observer) -> Result<(Sender<Cmd>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let writer = Scratch {
        runs: HashMap::new(),
        refused: None,
        segment: Vec::new(),
        events: Vec::new(),
        observer,
    };
    let handle = std::thread::Builder::new()
        .name("attest-ledger-scratch".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| LedgerError::Storage {
            path: "(scratch ledger)".into(),
            message: e.to_string(),
        })?;
    Ok((tx, handle))
}

struct Scratch {
    runs: HashMap<RunId, MemProj>,
    /// Why a commit was refused: every later commit is refused for it too.
    refused: Option<String>,
    /// Records are encoded (unhashed) and then dropped.
    segment: Vec<u8>,
    events: Vec<Event>,
    observer: Observer,
}

impl Scratch {
    fn run(mut self, rx: Receiver<Cmd>) {
        for cmd in rx {
            match cmd {
                Cmd::Commit {
                    run, items, reply, ..
                } => {
                    let _ = reply.send(self.commit(&run, items));
                }
                Cmd::Flush { reply } => {
                    let _ = reply.send(Ok(()));
                }
                Cmd::ClearCache { reply } => {
                    let _ = reply.send(());
                }
            }
        }
    }

    fn commit(&mut self, run: &RunId, items: Vec<Item>) -> Result<Receipt> {
        if let Some(why) = &self.refused {
            return Err(LedgerError::WriterGone(format!(
                "the scratch ledger refused an earlier commit: {why}"
            )));
        }
        let proj = self.runs.entry(run.clone()).or_default();
        self.segment.clear();
        self.events.clear();
        let applied = apply_items(
            proj,
            run,
            items,
            &mut self.segment,
            Some(&mut self.events),
            Chain::Skipped,
        );
        match applied {
            Ok((receipt, _)) => {
                for (i, event) in self.events.iter().enumerate() {
                    (self.observer)(run, receipt.first_seq + i as u64, event);
                }
                Ok(receipt)
            }
            Err(e) => {
                self.refused = Some(e.to_string());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NodeKind, Outcome, SinkWrite};
    use crate::ids::{Hash32, NodeId, Subject, TokenId};
    use crate::ledger::{Commit, RunStart};
    use crate::writer::Durability;
    use std::sync::{Arc, Mutex};

    fn node(n: &str) -> NodeId {
        NodeId::new(n).unwrap()
    }

    /// Every event observed, with its seq.
    type Seen = Arc<Mutex<Vec<(u64, Event)>>>;

    fn observed() -> (Observer, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let obs: Observer = Box::new(move |_, seq, e| s.lock().unwrap().push((seq, e.clone())));
        (obs, seen)
    }

    fn start(ledger: &Ledger) -> crate::RunHandle {
        let run = ledger
            .start_run(RunStart {
                config: b"pipeline".to_vec(),
                engine_version: "test".into(),
                started_at_ms: 1,
            })
            .unwrap();
        let mut c = Commit::new();
        c.push(Event::NodeRegistered {
            node: node("src"),
            kind: NodeKind::Source,
            plugin: "csv".into(),
            config_hash: Hash32::ZERO,
        });
        c.push(Event::NodeRegistered {
            node: node("out"),
            kind: NodeKind::Sink,
            plugin: "csv".into(),
            config_hash: Hash32::ZERO,
        });
        run.submit(c, Durability::Buffered).unwrap();
        run
    }

    /// Accepted events reach the observer in order with contiguous seqs, and the ledger
    /// allocates attempt numbers as the real one does.
    #[test]
    fn events_reach_the_observer_and_attempts_are_allocated() {
        let (obs, seen) = observed();
        let ledger = Ledger::scratch(obs).unwrap();
        let run = start(&ledger);
        let payload = ledger.put_payload(b"row").unwrap();
        assert_eq!(payload, Hash32::of(b"row"));
        assert_eq!(ledger.payload(&payload).unwrap(), None, "nothing is stored");
        run.append(vec![Event::RowIngested {
            row: 0,
            source: node("src"),
            payload,
        }])
        .unwrap();
        let first = run
            .open_state(Subject::Token(TokenId::for_row(0)), node("out"), payload)
            .unwrap();
        assert_eq!(first.attempt(), 1);
        first
            .close(
                crate::StateResult::Failed {
                    error: "x".into(),
                    retryable: true,
                },
                0,
            )
            .unwrap();
        let second = run
            .open_state(Subject::Token(TokenId::for_row(0)), node("out"), payload)
            .unwrap();
        assert_eq!(second.attempt(), 2);
        ledger.flush().unwrap();
        let seen = seen.lock().unwrap();
        let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        assert!(matches!(seen[0].1, Event::RunStarted { .. }));
        assert!(matches!(
            seen.last().unwrap().1,
            Event::StateOpened { ref state, .. } if state.attempt == 2
        ));
    }

    /// A commit that breaks a rule is refused with the rule's error, the observer sees
    /// none of its events (not even those before the one that broke it), and every later
    /// commit is refused too.
    #[test]
    fn a_rule_violation_is_refused_not_observed_and_ends_the_scratch_ledger() {
        let (obs, seen) = observed();
        let ledger = Ledger::scratch(obs).unwrap();
        let run = start(&ledger);
        let before = seen.lock().unwrap().len();
        let mut c = Commit::new();
        c.push(Event::RowIngested {
            row: 0,
            source: node("src"),
            payload: Hash32::ZERO,
        });
        // Row 5 was never ingested.
        c.push(Event::TokenOutcome {
            token: TokenId::for_row(5),
            outcome: Outcome::Completed {
                write: SinkWrite {
                    sink: node("out"),
                    ordinal: 0,
                },
            },
        });
        let err = run.submit(c, Durability::Buffered).unwrap_err();
        assert!(matches!(err, LedgerError::Rule(_)), "{err}");
        assert_eq!(seen.lock().unwrap().len(), before);
        // Nothing more is accepted, not even a commit that keeps every rule.
        let err = run
            .append(vec![Event::Checkpoint {
                rows_ingested: 0,
                note: String::new(),
            }])
            .unwrap_err();
        assert!(
            err.to_string().contains("refused an earlier commit"),
            "{err}"
        );
        assert_eq!(seen.lock().unwrap().len(), before);
    }
}
