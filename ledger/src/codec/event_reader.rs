//! A decoder of [`Event`]s straight from their stored bytes, without serde.
//!
//! Verification decodes every event of a run, and through serde bincode reads a `Hash32`
//! one byte at a time (32 calls through the generic deserializer per hash) and walks every
//! struct field through a visitor: decoding was the largest single part of the log walk.
//! This reads the same bytes the same way, field by field in declaration order, with the
//! fixed-size fields copied straight from the slice.
//!
//! It must accept exactly what bincode's `standard` configuration accepts and produce the
//! same value: the stored bytes are hashed, not this reader's view of them, but a reader
//! that accepted more (or decoded differently) would let verification pass a record the
//! rest of the ledger reads otherwise. So it follows bincode 2.0.1 rule for rule:
//!
//! - integers above `u8` are varints: a first byte below 251 is the value; 251, 252 and
//!   253 announce a little-endian `u16`, `u32` or `u64` (bincode does not insist on the
//!   shortest form, so neither does this); a prefix wider than the type is an error;
//! - `u8`, `bool` (0 or 1) and an `Option`'s tag (0 or 1) are one byte;
//! - enum variants are a `u32` varint, in declaration order;
//! - strings and sequences are a `u64` varint length, then the contents; strings must be
//!   UTF-8;
//! - a `[u8; 32]` is its 32 bytes.
//!
//! bincode also refuses a value that claims more than [`super::DECODE_LIMIT`] bytes in
//! memory; every field here claims at most eight times the bytes it is encoded in, so for
//! inputs up to an eighth of the limit that refusal cannot happen, and longer inputs are
//! left to bincode by the caller. Errors carry no detail: the caller asks bincode for its
//! message, so every error reads as it always has.
//!
//! `codec::tests` and `ledger/tests/event_reader.rs` check it against bincode on generated
//! events and on corrupted bytes.

use crate::event::{
    BatchOutputs, CallOutcome, Event, FinalStatus, ForkChild, NodeKind, Outcome, SinkWrite,
    StateResult,
};
use crate::ids::{BatchId, Hash32, NodeId, RunId, StateId, Subject, TokenId};

/// The bytes could not be read as an event; bincode says why.
pub(super) struct Invalid;

type R<T> = Result<T, Invalid>;

/// The longest input this reader takes: past it, bincode's own limit could apply.
pub(super) const MAX_INPUT: usize = super::DECODE_LIMIT / 8;

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn bytes(&mut self, n: usize) -> R<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Invalid);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> R<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    #[inline(always)]
    fn u8(&mut self) -> R<u8> {
        let (&b, tail) = self.rest.split_first().ok_or(Invalid)?;
        self.rest = tail;
        Ok(b)
    }

    /// A varint whose type is `bits` wide (16, 32 or 64).
    #[inline(always)]
    fn varint(&mut self, bits: u32) -> R<u64> {
        match self.u8()? {
            b @ 0..=250 => Ok(u64::from(b)),
            251 => Ok(u64::from(u16::from_le_bytes(self.array()?))),
            252 if bits >= 32 => Ok(u64::from(u32::from_le_bytes(self.array()?))),
            253 if bits >= 64 => Ok(u64::from_le_bytes(self.array()?)),
            _ => Err(Invalid),
        }
    }

    fn u16(&mut self) -> R<u16> {
        u16::try_from(self.varint(16)?).map_err(|_| Invalid)
    }

    fn u32(&mut self) -> R<u32> {
        u32::try_from(self.varint(32)?).map_err(|_| Invalid)
    }

    fn u64(&mut self) -> R<u64> {
        self.varint(64)
    }

    fn variant(&mut self) -> R<u32> {
        self.u32()
    }

    fn len(&mut self) -> R<usize> {
        usize::try_from(self.u64()?).map_err(|_| Invalid)
    }

    fn bool(&mut self) -> R<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Invalid),
        }
    }

    /// An `Option`'s tag: whether a value follows.
    fn some(&mut self) -> R<bool> {
        self.bool()
    }

    fn hash(&mut self) -> R<Hash32> {
        Ok(Hash32(self.array()?))
    }

    fn string(&mut self) -> R<String> {
        let n = self.len()?;
        let bytes = self.bytes(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Invalid)
    }

    fn node(&mut self) -> R<NodeId> {
        Ok(NodeId::decoded(self.string()?))
    }

    fn token(&mut self) -> R<TokenId> {
        Ok(TokenId::decoded(self.string()?))
    }

    fn batch(&mut self) -> R<BatchId> {
        Ok(BatchId::decoded(self.string()?))
    }

    /// A sequence; its length is not trusted for the allocation: every element takes at
    /// least one byte, so what is left bounds it, and past a few thousand the vector grows
    /// as elements actually decode.
    fn seq<T>(&mut self, mut item: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        const UPFRONT: usize = 4096;
        let n = self.len()?;
        let mut out = Vec::with_capacity(n.min(self.rest.len()).min(UPFRONT));
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }

    fn state(&mut self) -> R<StateId> {
        let subject = match self.variant()? {
            0 => Subject::Token(self.token()?),
            1 => Subject::Batch(self.batch()?),
            _ => return Err(Invalid),
        };
        Ok(StateId {
            subject,
            node: self.node()?,
            attempt: self.u32()?,
        })
    }

    fn sink_write(&mut self) -> R<SinkWrite> {
        Ok(SinkWrite {
            sink: self.node()?,
            ordinal: self.u64()?,
        })
    }

    fn node_kind(&mut self) -> R<NodeKind> {
        Ok(match self.variant()? {
            0 => NodeKind::Source,
            1 => NodeKind::Transform,
            2 => NodeKind::Gate,
            3 => NodeKind::Aggregation,
            4 => NodeKind::Coalesce,
            5 => NodeKind::Sink,
            _ => return Err(Invalid),
        })
    }

    fn outcome(&mut self) -> R<Outcome> {
        Ok(match self.variant()? {
            0 => Outcome::Completed {
                write: self.sink_write()?,
            },
            1 => Outcome::Routed {
                write: self.sink_write()?,
            },
            2 => Outcome::Quarantined {
                write: if self.some()? {
                    Some(self.sink_write()?)
                } else {
                    None
                },
            },
            3 => Outcome::Diverted {
                write: self.sink_write()?,
                error: self.string()?,
            },
            4 => Outcome::Discarded {
                reason: self.string()?,
            },
            5 => Outcome::Failed {
                error: self.string()?,
            },
            _ => return Err(Invalid),
        })
    }

    fn state_result(&mut self) -> R<StateResult> {
        Ok(match self.variant()? {
            0 => StateResult::Completed {
                output: self.hash()?,
            },
            1 => StateResult::Failed {
                error: self.string()?,
                retryable: self.bool()?,
            },
            _ => return Err(Invalid),
        })
    }

    fn call_outcome(&mut self) -> R<CallOutcome> {
        Ok(match self.variant()? {
            0 => CallOutcome::Responded {
                status: if self.some()? {
                    Some(self.u16()?)
                } else {
                    None
                },
            },
            1 => CallOutcome::Errored {
                error: self.string()?,
                retryable: self.bool()?,
            },
            _ => return Err(Invalid),
        })
    }

    fn batch_outputs(&mut self) -> R<BatchOutputs> {
        Ok(match self.variant()? {
            0 => BatchOutputs::Transform {
                outputs: self.seq(Self::token)?,
            },
            1 => BatchOutputs::Passthrough,
            2 => BatchOutputs::Failed {
                error: self.string()?,
            },
            _ => return Err(Invalid),
        })
    }

    fn final_status(&mut self) -> R<FinalStatus> {
        Ok(match self.variant()? {
            0 => FinalStatus::Completed,
            1 => FinalStatus::Failed,
            _ => return Err(Invalid),
        })
    }

    /// The variants in declaration order: the index is the position in `Event`.
    fn event(&mut self) -> R<Event> {
        Ok(match self.variant()? {
            0 => Event::RunStarted {
                run: RunId::decoded(self.string()?),
                config_hash: self.hash()?,
                engine_version: self.string()?,
                started_at_ms: self.u64()?,
            },
            1 => Event::NodeRegistered {
                node: self.node()?,
                kind: self.node_kind()?,
                plugin: self.string()?,
                config_hash: self.hash()?,
            },
            2 => Event::EdgeRegistered {
                from: self.node()?,
                to: self.node()?,
                label: self.string()?,
            },
            3 => Event::RowIngested {
                row: self.u64()?,
                source: self.node()?,
                payload: self.hash()?,
            },
            4 => Event::ValidationFailed {
                row: self.u64()?,
                error: self.string()?,
            },
            5 => Event::StateOpened {
                state: self.state()?,
                input: self.hash()?,
            },
            6 => Event::StateClosed {
                state: self.state()?,
                result: self.state_result()?,
                duration_us: self.u64()?,
            },
            7 => Event::CallAllocated {
                state: self.state()?,
                index: self.u32()?,
                kind: self.string()?,
                request: self.hash()?,
                served: if self.some()? {
                    Some(self.token()?)
                } else {
                    None
                },
            },
            8 => Event::CallCompleted {
                state: self.state()?,
                index: self.u32()?,
                outcome: self.call_outcome()?,
                response: if self.some()? {
                    Some(self.hash()?)
                } else {
                    None
                },
                latency_us: self.u64()?,
            },
            9 => Event::RouteDecided {
                state: self.state()?,
                token: self.token()?,
                label: self.string()?,
                to: self.seq(Self::node)?,
            },
            10 => Event::TokenForked {
                parent: self.token()?,
                children: self.seq(|r| {
                    Ok(ForkChild {
                        token: r.token()?,
                        branch: r.string()?,
                    })
                })?,
            },
            11 => Event::TokenExpanded {
                parent: self.token()?,
                children: self.seq(Self::token)?,
            },
            12 => Event::TokensCoalesced {
                node: self.node()?,
                parents: self.seq(Self::token)?,
                merged: self.token()?,
            },
            13 => Event::BatchOpened {
                batch: self.batch()?,
                node: self.node()?,
            },
            14 => Event::BatchMemberAdded {
                batch: self.batch()?,
                token: self.token()?,
                ordinal: self.u32()?,
            },
            15 => Event::BatchCompleted {
                batch: self.batch()?,
                trigger: self.string()?,
                state: self.state()?,
                outputs: self.batch_outputs()?,
            },
            16 => Event::TokenOutcome {
                token: self.token()?,
                outcome: self.outcome()?,
            },
            17 => Event::ArtifactWritten {
                sink: self.node()?,
                path: self.string()?,
                content_hash: self.hash()?,
                size: self.u64()?,
                rows: self.u64()?,
            },
            18 => Event::Checkpoint {
                rows_ingested: self.u64()?,
                note: self.string()?,
            },
            19 => Event::RunInterrupted {
                reason: self.string()?,
            },
            20 => Event::RunResumed {
                reason: self.string()?,
            },
            21 => Event::RunFinished {
                status: self.final_status()?,
            },
            22 => Event::RowDetail {
                row: self.u64()?,
                detail: self.hash()?,
            },
            23 => Event::PoolStats {
                state: self.state()?,
                capacity_retries: self.u64()?,
                peak_delay_us: self.u64()?,
                throttled_us: self.u64()?,
            },
            _ => return Err(Invalid),
        })
    }
}

/// Decodes one event that fills `bytes` exactly. The caller keeps inputs within
/// [`MAX_INPUT`].
pub(super) fn read_event(bytes: &[u8]) -> R<Event> {
    let mut r = Reader { rest: bytes };
    let event = r.event()?;
    if !r.rest.is_empty() {
        return Err(Invalid);
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    //! The reader against bincode: on every kind of event it must give bincode's value, and
    //! on corrupted bytes it must refuse exactly what bincode refuses.

    use super::*;
    use crate::codec::arb::event;
    use crate::codec::{decode, encode};
    use proptest::prelude::*;

    /// One way of corrupting an encoding, biased to the bytes that mean most to bincode:
    /// varint prefixes, tags, small lengths.
    #[derive(Debug, Clone)]
    enum Damage {
        Set(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
        Append(u8),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        let byte = prop_oneof![0u8..=3, 250u8..=255, Just(0x80), Just(0xC3), any::<u8>()];
        prop_oneof![
            3 => (any::<usize>(), byte.clone()).prop_map(|(i, b)| Damage::Set(i, b)),
            1 => (any::<usize>(), byte.clone()).prop_map(|(i, b)| Damage::Insert(i, b)),
            1 => any::<usize>().prop_map(Damage::Remove),
            1 => any::<usize>().prop_map(Damage::Truncate),
            1 => byte.prop_map(Damage::Append),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, d: &Damage) {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match *d {
            Damage::Set(i, b) if !bytes.is_empty() => {
                let i = at(i, bytes.len());
                bytes[i] = b;
            }
            Damage::Insert(i, b) => bytes.insert(at(i, bytes.len() + 1), b),
            Damage::Remove(i) if !bytes.is_empty() => {
                bytes.remove(at(i, bytes.len()));
            }
            Damage::Truncate(i) => bytes.truncate(at(i, bytes.len() + 1)),
            Damage::Append(b) => bytes.push(b),
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Every event bincode encodes, the reader decodes itself, to the same value.
        #[test]
        fn reads_every_event_as_bincode_does(ev in event()) {
            let bytes = encode(&ev).unwrap();
            let read = read_event(&bytes).map_err(|_| "refused");
            prop_assert_eq!(read, Ok(ev));
        }

        /// Corrupted bytes: the reader refuses exactly what bincode refuses, and where both
        /// accept, they agree on the value.
        #[test]
        fn refuses_exactly_what_bincode_refuses(
            ev in event(),
            damages in proptest::collection::vec(damage(), 1..4),
        ) {
            let mut bytes = encode(&ev).unwrap();
            for d in &damages {
                apply(&mut bytes, d);
            }
            let ours = read_event(&bytes).ok();
            let theirs = decode::<Event>(&bytes).ok();
            prop_assert_eq!(ours, theirs);
        }
    }

    /// Non-shortest varints are accepted, as bincode accepts them, and widths beyond the
    /// field's type are refused, as bincode refuses them.
    #[test]
    fn varint_forms_follow_bincode() {
        // RowDetail { row, detail }: variant 22, then row as a u64 varint.
        let detail = [7u8; 32];
        let with_row = |row: &[u8]| [&[22u8][..], row, &detail].concat();
        for row in [
            vec![5u8],
            vec![251, 5, 0],
            vec![252, 5, 0, 0, 0],
            vec![253, 5, 0, 0, 0, 0, 0, 0, 0],
            vec![254, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![255],
        ] {
            let bytes = with_row(&row);
            let theirs = decode::<Event>(&bytes).ok();
            assert_eq!(read_event(&bytes).ok(), theirs, "row bytes {row:?}");
            assert_eq!(theirs.is_some(), row[0] < 254, "row bytes {row:?}");
        }
        // The variant index is a u32: a u64-wide prefix is refused even for a small value.
        let bytes = [&[253u8, 22, 0, 0, 0, 0, 0, 0, 0, 5][..], &detail].concat();
        assert!(decode::<Event>(&bytes).is_err());
        assert!(read_event(&bytes).is_err());
        let bytes = [&[252u8, 22, 0, 0, 0, 5][..], &detail].concat();
        assert!(decode::<Event>(&bytes).is_ok());
        assert!(read_event(&bytes).is_ok());
    }
}
