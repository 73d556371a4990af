//! attest-ledger: the event-sourced, hash-chained audit ledger.
//!
//! - [`event`]: the audit domain's events.
//! - [`codec`]: the only place bytes are made (bincode 2.0.1, record framing, hash rule).
//! - [`rules`]: the integrity rules, one `apply` for live appends and verification.
//! - [`ledger`]: the API — [`Ledger`], [`RunHandle`], [`StateHandle`].
//! - [`verify`]: chain, sequence, projection and payload verification.
//! - [`lineage`]: how an output came to be, from indexes.
//! - [`export`]: a run's chain as JSON lines, checkable without the ledger.
//! - [`head`]: heads kept outside the ledger, signed with ed25519.
//! - [`packs`], [`payload_index`]: payloads stored a commit group at a time, found by hash;
//!   [`payload_cursor`] reads a run's in seq order.
//! - [`purge`]: purging payload bytes, recorded in a hash-chained purge log.
//! - [`scratch`]: a ledger that applies the rules in memory and keeps nothing (re-execution).
//!
//! The on-disk format is specified in `docs/ledger-format.md`.

pub mod bucket;
pub mod canonical;
pub mod codec;
pub mod error;
pub mod event;
pub mod export;
pub mod head;
pub mod ids;
pub mod ledger;
pub mod lineage;
pub mod packs;
mod payload_check;
pub mod payload_cursor;
pub mod payload_index;
pub mod projection;
pub mod purge;
mod records;
pub mod rules;
pub mod scratch;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod verify;
mod writer;

pub use error::{LedgerError, Result, Rule, RuleViolation};
pub use event::*;
pub use ids::*;
pub use ledger::{CallHandle, Commit, Ledger, Pending, RunHandle, RunStart, StateHandle};
pub use writer::{Durability, Item, Receipt};
