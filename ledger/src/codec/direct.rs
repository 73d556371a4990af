//! bincode's `standard` encoding of the writer's most frequent values, written by hand.
//!
//! The writer encodes every event and every projection record a commit group changes;
//! going through serde, a `Hash32` alone is 32 calls (serde sees `[u8; 32]` as a tuple of
//! 32 `u8`s) and every field a trip through bincode's generic encoder: on the 30k-row
//! pipeline, encoding token records took ~14% of the writer's instructions. These
//! functions write the same bytes directly. They cover the events of a row's walk and the
//! token and row records; everything else still goes through serde (`super::encode_into`).
//!
//! The rules of the format (bincode 2.0.1, `config::standard()`, serde): integers as
//! varints (below 251 one byte; else a marker 251/252/253 and 2/4/8 bytes little-endian),
//! `u8` and `bool` as one byte, enum variants by index as a varint, struct fields in
//! declaration order with nothing between, `Option` as 0 or 1 then the value, strings and
//! sequences as a varint length then their items, a `[u8; 32]` as its 32 bytes. The tests
//! in `super` compare every function here with serde's bytes, over generated values.

use crate::event::{Event, Outcome, SinkWrite, StateResult};
use crate::ids::{Hash32, StateId, Subject};
use crate::projection::{
    Origin, PVal, RouteRec, RowRec, StateRec, StateStatus, Terminal, TokenRec,
};

fn varint(out: &mut Vec<u8>, v: u64) {
    if v <= 250 {
        out.push(v as u8);
    } else if v <= u64::from(u16::MAX) {
        out.push(251);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(252);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
pub(super) fn varint_for_tests(out: &mut Vec<u8>, v: u64) {
    varint(out, v)
}

fn str(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn hash(out: &mut Vec<u8>, h: &Hash32) {
    out.extend_from_slice(&h.0);
}

fn flag(out: &mut Vec<u8>, b: bool) {
    out.push(u8::from(b));
}

fn option<T>(out: &mut Vec<u8>, v: &Option<T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match v {
        None => out.push(0),
        Some(x) => {
            out.push(1);
            put(out, x);
        }
    }
}

fn seq<T>(out: &mut Vec<u8>, items: &[T], mut put: impl FnMut(&mut Vec<u8>, &T)) {
    varint(out, items.len() as u64);
    for item in items {
        put(out, item);
    }
}

fn state_id(out: &mut Vec<u8>, s: &StateId) {
    match &s.subject {
        Subject::Token(t) => {
            varint(out, 0);
            str(out, t.as_str());
        }
        Subject::Batch(b) => {
            varint(out, 1);
            str(out, b.as_str());
        }
    }
    str(out, s.node.as_str());
    varint(out, u64::from(s.attempt));
}

fn sink_write(out: &mut Vec<u8>, w: &SinkWrite) {
    str(out, w.sink.as_str());
    varint(out, w.ordinal);
}

fn outcome(out: &mut Vec<u8>, o: &Outcome) {
    match o {
        Outcome::Completed { write } => {
            varint(out, 0);
            sink_write(out, write);
        }
        Outcome::Routed { write } => {
            varint(out, 1);
            sink_write(out, write);
        }
        Outcome::Quarantined { write } => {
            varint(out, 2);
            option(out, write, sink_write);
        }
        Outcome::Diverted { write, error } => {
            varint(out, 3);
            sink_write(out, write);
            str(out, error);
        }
        Outcome::Discarded { reason } => {
            varint(out, 4);
            str(out, reason);
        }
        Outcome::Failed { error } => {
            varint(out, 5);
            str(out, error);
        }
    }
}

/// Encodes the events of a row's walk; `false` (nothing written) for the others.
pub(super) fn event(out: &mut Vec<u8>, e: &Event) -> bool {
    match e {
        Event::RowIngested {
            row,
            source,
            payload,
        } => {
            varint(out, 3);
            varint(out, *row);
            str(out, source.as_str());
            hash(out, payload);
        }
        Event::StateOpened { state, input } => {
            varint(out, 5);
            state_id(out, state);
            hash(out, input);
        }
        Event::StateClosed {
            state,
            result,
            duration_us,
        } => {
            varint(out, 6);
            state_id(out, state);
            match result {
                StateResult::Completed { output } => {
                    varint(out, 0);
                    hash(out, output);
                }
                StateResult::Failed { error, retryable } => {
                    varint(out, 1);
                    str(out, error);
                    flag(out, *retryable);
                }
            }
            varint(out, *duration_us);
        }
        Event::RouteDecided {
            state,
            token,
            label,
            to,
        } => {
            varint(out, 9);
            state_id(out, state);
            str(out, token.as_str());
            str(out, label);
            seq(out, to, |out, n| str(out, n.as_str()));
        }
        Event::TokenOutcome { token, outcome: o } => {
            varint(out, 16);
            str(out, token.as_str());
            outcome(out, o);
        }
        _ => return false,
    }
    true
}

fn state_rec(out: &mut Vec<u8>, s: &StateRec) {
    str(out, s.node.as_str());
    varint(out, u64::from(s.attempt));
    hash(out, &s.input);
    varint(out, s.opened_seq);
    match &s.status {
        StateStatus::Open => varint(out, 0),
        StateStatus::Completed { output } => {
            varint(out, 1);
            hash(out, output);
        }
        StateStatus::Failed { error, retryable } => {
            varint(out, 2);
            str(out, error);
            flag(out, *retryable);
        }
    }
    option(out, &s.closed_seq, |out, v| varint(out, *v));
    varint(out, s.duration_us);
    varint(out, u64::from(s.calls));
}

fn route_rec(out: &mut Vec<u8>, r: &RouteRec) {
    str(out, r.node.as_str());
    varint(out, u64::from(r.attempt));
    str(out, &r.label);
    seq(out, &r.to, |out, n| str(out, n.as_str()));
    varint(out, r.seq);
}

fn terminal(out: &mut Vec<u8>, t: &Terminal) {
    match t {
        Terminal::Outcome(o) => {
            varint(out, 0);
            outcome(out, o);
        }
        Terminal::Forked => varint(out, 1),
        Terminal::Expanded => varint(out, 2),
        Terminal::Coalesced { into } => {
            varint(out, 3);
            str(out, into.as_str());
        }
        Terminal::ConsumedInBatch { batch } => {
            varint(out, 4);
            str(out, batch.as_str());
        }
    }
}

fn token_rec(out: &mut Vec<u8>, t: &TokenRec) {
    option(out, &t.row, |out, r| varint(out, *r));
    match &t.origin {
        Origin::Source => varint(out, 0),
        Origin::Fork { branch } => {
            varint(out, 1);
            str(out, branch);
        }
        Origin::Expand { index } => {
            varint(out, 2);
            varint(out, *index);
        }
        Origin::Coalesce { node } => {
            varint(out, 3);
            str(out, node.as_str());
        }
        Origin::Batch { batch } => {
            varint(out, 4);
            str(out, batch.as_str());
        }
    }
    seq(out, &t.parents, |out, p| str(out, p.as_str()));
    seq(out, &t.children, |out, c| str(out, c.as_str()));
    varint(out, t.created_seq);
    seq(out, &t.states, state_rec);
    seq(out, &t.routes, route_rec);
    seq(out, &t.batches, |out, b| str(out, b.as_str()));
    option(out, &t.buffered_in, |out, b| str(out, b.as_str()));
    option(out, &t.terminal, |out, (term, at)| {
        terminal(out, term);
        varint(out, *at);
    });
}

fn row_rec(out: &mut Vec<u8>, r: &RowRec) {
    str(out, r.source.as_str());
    hash(out, &r.payload);
    varint(out, r.seq);
    option(out, &r.validation_error, |out, e| str(out, e));
}

/// Encodes token and row records; `false` (nothing written) for the others.
pub(super) fn proj(out: &mut Vec<u8>, v: &PVal) -> bool {
    match v {
        PVal::Row(r) => {
            varint(out, 3);
            row_rec(out, r);
        }
        PVal::Token(t) => {
            varint(out, 4);
            token_rec(out, t);
        }
        _ => return false,
    }
    true
}
