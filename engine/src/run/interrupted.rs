//! Attempts that were interrupted: states a run left open when it stopped (a crash while a
//! node was calling out), which `attest resume` closed as failed with
//! [`StateResult::interrupted`](attest_ledger::StateResult::interrupted) in the commit that
//! records the resume.
//!
//! Such an attempt did not fail: its run stopped. The node runs again as the next attempt
//! (not counted against the retry policy), which is the attempt that decides. Whoever
//! walks the token again walks the interrupted attempt as recorded — opened, then closed
//! interrupted — and goes on with the next: a resumed run (which asks the record itself,
//! `resume::applied::Record::is_interrupted`) and re-execution (`attest replay`, which
//! gathers them from the record it compares with into this set). So both produce, id for
//! id, the states the record holds.

use attest_ledger::StateId;
use std::collections::HashSet;
use std::sync::LazyLock;

/// A set of interrupted attempts (states).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interrupted {
    states: HashSet<StateId>,
}

static NONE: LazyLock<Interrupted> = LazyLock::new(Interrupted::default);

impl Interrupted {
    /// No interrupted attempt: a run that was never resumed.
    pub fn none() -> &'static Interrupted {
        &NONE
    }

    pub fn new(states: impl IntoIterator<Item = StateId>) -> Interrupted {
        Interrupted {
            states: states.into_iter().collect(),
        }
    }

    pub fn insert(&mut self, state: StateId) {
        self.states.insert(state);
    }

    pub fn contains(&self, state: &StateId) -> bool {
        self.states.contains(state)
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }
}
