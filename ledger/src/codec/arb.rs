//! Generated values for the codec's property tests: every event variant and the
//! projection records, with integers on both sides of each varint boundary and strings
//! on both sides of the one-byte length. Ids are built unchecked (`decoded`), as decoding
//! builds them, so they include what no id may be (empty, NUL): encoding and decoding do
//! not check ids. Shared by the hand-written encoder's tests (`codec`) and decoder's
//! (`event_reader`), so both are held to the same values.

use crate::event::*;
use crate::ids::{BatchId, Hash32, NodeId, RunId, StateId, Subject, TokenId};
use crate::projection::*;
use proptest::prelude::*;

/// Any string, including what no id may be (empty, NUL): decoding does not check ids.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9#./+]{0,12}",
        1 => any::<String>(),
        1 => Just(String::new()),
        1 => "[a-z]{0,3}\0[a-z]{0,3}",
        // Across the one-byte varint length.
        1 => ".{240,300}",
    ]
}

/// Integers around every varint boundary as often as anywhere else.
pub(crate) fn num() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=260,
        Just(250u64),
        Just(251u64),
        Just(u64::from(u16::MAX)),
        Just(u64::from(u16::MAX) + 1),
        Just(u64::from(u32::MAX)),
        Just(u64::from(u32::MAX) + 1),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

pub(crate) fn num32() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..=260, Just(u32::from(u16::MAX) + 1), any::<u32>()]
}

pub(crate) fn hash() -> impl Strategy<Value = Hash32> {
    any::<[u8; 32]>().prop_map(Hash32)
}

pub(crate) fn node() -> impl Strategy<Value = NodeId> {
    text().prop_map(NodeId::decoded)
}

pub(crate) fn token() -> impl Strategy<Value = TokenId> {
    text().prop_map(TokenId::decoded)
}

pub(crate) fn batch() -> impl Strategy<Value = BatchId> {
    text().prop_map(BatchId::decoded)
}

pub(crate) fn state() -> impl Strategy<Value = StateId> {
    (
        prop_oneof![
            token().prop_map(Subject::Token),
            batch().prop_map(Subject::Batch)
        ],
        node(),
        num32(),
    )
        .prop_map(|(subject, node, attempt)| StateId {
            subject,
            node,
            attempt,
        })
}

pub(crate) fn sink_write() -> impl Strategy<Value = SinkWrite> {
    (node(), num()).prop_map(|(sink, ordinal)| SinkWrite { sink, ordinal })
}

pub(crate) fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        sink_write().prop_map(|write| Outcome::Completed { write }),
        sink_write().prop_map(|write| Outcome::Routed { write }),
        proptest::option::of(sink_write()).prop_map(|write| Outcome::Quarantined { write }),
        (sink_write(), text()).prop_map(|(write, error)| Outcome::Diverted { write, error }),
        text().prop_map(|reason| Outcome::Discarded { reason }),
        text().prop_map(|error| Outcome::Failed { error }),
    ]
}

pub(crate) fn state_result() -> impl Strategy<Value = StateResult> {
    prop_oneof![
        hash().prop_map(|output| StateResult::Completed { output }),
        (text(), any::<bool>())
            .prop_map(|(error, retryable)| StateResult::Failed { error, retryable }),
    ]
}

pub(crate) fn call_outcome() -> impl Strategy<Value = CallOutcome> {
    prop_oneof![
        proptest::option::of(any::<u16>()).prop_map(|status| CallOutcome::Responded { status }),
        (text(), any::<bool>())
            .prop_map(|(error, retryable)| CallOutcome::Errored { error, retryable }),
    ]
}

pub(crate) fn node_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        Just(NodeKind::Source),
        Just(NodeKind::Transform),
        Just(NodeKind::Gate),
        Just(NodeKind::Aggregation),
        Just(NodeKind::Coalesce),
        Just(NodeKind::Sink),
    ]
}

pub(crate) fn tokens() -> impl Strategy<Value = Vec<TokenId>> {
    proptest::collection::vec(token(), 0..4)
}

/// Every variant of [`Event`], with every field drawn.
pub(crate) fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (text(), hash(), text(), num()).prop_map(|(run, config_hash, v, at)| {
            Event::RunStarted {
                run: RunId::decoded(run),
                config_hash,
                engine_version: v,
                started_at_ms: at,
            }
        }),
        (node(), node_kind(), text(), hash()).prop_map(|(node, kind, plugin, config_hash)| {
            Event::NodeRegistered {
                node,
                kind,
                plugin,
                config_hash,
            }
        }),
        (node(), node(), text()).prop_map(|(from, to, label)| Event::EdgeRegistered {
            from,
            to,
            label
        }),
        (num(), node(), hash()).prop_map(|(row, source, payload)| Event::RowIngested {
            row,
            source,
            payload
        }),
        (num(), text()).prop_map(|(row, error)| Event::ValidationFailed { row, error }),
        (state(), hash()).prop_map(|(state, input)| Event::StateOpened { state, input }),
        (state(), state_result(), num()).prop_map(|(state, result, duration_us)| {
            Event::StateClosed {
                state,
                result,
                duration_us,
            }
        }),
        (
            state(),
            num32(),
            text(),
            hash(),
            proptest::option::of(token())
        )
            .prop_map(|(state, index, kind, request, served)| {
                Event::CallAllocated {
                    state,
                    index,
                    kind,
                    request,
                    served,
                }
            }),
        (
            state(),
            num32(),
            call_outcome(),
            proptest::option::of(hash()),
            num()
        )
            .prop_map(|(state, index, outcome, response, latency_us)| {
                Event::CallCompleted {
                    state,
                    index,
                    outcome,
                    response,
                    latency_us,
                }
            }),
        (
            state(),
            token(),
            text(),
            proptest::collection::vec(node(), 0..4)
        )
            .prop_map(|(state, token, label, to)| Event::RouteDecided {
                state,
                token,
                label,
                to,
            }),
        (token(), proptest::collection::vec((token(), text()), 0..4)).prop_map(
            |(parent, children)| Event::TokenForked {
                parent,
                children: children
                    .into_iter()
                    .map(|(token, branch)| ForkChild { token, branch })
                    .collect(),
            }
        ),
        (token(), tokens())
            .prop_map(|(parent, children)| Event::TokenExpanded { parent, children }),
        (node(), tokens(), token()).prop_map(|(node, parents, merged)| {
            Event::TokensCoalesced {
                node,
                parents,
                merged,
            }
        }),
        (batch(), node()).prop_map(|(batch, node)| Event::BatchOpened { batch, node }),
        (batch(), token(), num32()).prop_map(|(batch, token, ordinal)| {
            Event::BatchMemberAdded {
                batch,
                token,
                ordinal,
            }
        }),
        (
            batch(),
            text(),
            state(),
            prop_oneof![
                tokens().prop_map(|outputs| BatchOutputs::Transform { outputs }),
                Just(BatchOutputs::Passthrough),
                text().prop_map(|error| BatchOutputs::Failed { error }),
            ]
        )
            .prop_map(|(batch, trigger, state, outputs)| Event::BatchCompleted {
                batch,
                trigger,
                state,
                outputs,
            }),
        (token(), outcome()).prop_map(|(token, outcome)| Event::TokenOutcome { token, outcome }),
        (node(), text(), hash(), num(), num()).prop_map(
            |(sink, path, content_hash, size, rows)| Event::ArtifactWritten {
                sink,
                path,
                content_hash,
                size,
                rows,
            }
        ),
        (num(), text()).prop_map(|(rows_ingested, note)| Event::Checkpoint {
            rows_ingested,
            note
        }),
        text().prop_map(|reason| Event::RunInterrupted { reason }),
        text().prop_map(|reason| Event::RunResumed { reason }),
        prop_oneof![Just(FinalStatus::Completed), Just(FinalStatus::Failed)]
            .prop_map(|status| Event::RunFinished { status }),
        (num(), hash()).prop_map(|(row, detail)| Event::RowDetail { row, detail }),
        (state(), num(), num(), num()).prop_map(|(state, a, b, c)| Event::PoolStats {
            state,
            capacity_retries: a,
            peak_delay_us: b,
            throttled_us: c,
        }),
    ]
}

pub(crate) fn status() -> BoxedStrategy<StateStatus> {
    prop_oneof![
        Just(StateStatus::Open),
        hash().prop_map(|output| StateStatus::Completed { output }),
        (text(), any::<bool>())
            .prop_map(|(error, retryable)| StateStatus::Failed { error, retryable }),
    ]
    .boxed()
}

pub(crate) fn state_rec() -> BoxedStrategy<StateRec> {
    (
        (node(), num32(), hash(), num()),
        (status(), proptest::option::of(num()), num(), num32()),
    )
        .prop_map(
            |((node, attempt, input, opened_seq), (status, closed_seq, duration_us, calls))| {
                StateRec {
                    node,
                    attempt,
                    input,
                    opened_seq,
                    status,
                    closed_seq,
                    duration_us,
                    calls,
                }
            },
        )
        .boxed()
}

pub(crate) fn route_rec() -> BoxedStrategy<RouteRec> {
    (
        node(),
        num32(),
        text(),
        prop::collection::vec(node(), 0..3),
        num(),
    )
        .prop_map(|(node, attempt, label, to, seq)| RouteRec {
            node,
            attempt,
            label,
            to,
            seq,
        })
        .boxed()
}

pub(crate) fn origin() -> BoxedStrategy<Origin> {
    prop_oneof![
        Just(Origin::Source),
        text().prop_map(|branch| Origin::Fork { branch }),
        num().prop_map(|index| Origin::Expand { index }),
        node().prop_map(|node| Origin::Coalesce { node }),
        batch().prop_map(|batch| Origin::Batch { batch }),
    ]
    .boxed()
}

pub(crate) fn terminal() -> BoxedStrategy<Terminal> {
    prop_oneof![
        outcome().prop_map(Terminal::Outcome),
        Just(Terminal::Forked),
        Just(Terminal::Expanded),
        token().prop_map(|into| Terminal::Coalesced { into }),
        batch().prop_map(|batch| Terminal::ConsumedInBatch { batch }),
    ]
    .boxed()
}

pub(crate) fn token_rec() -> BoxedStrategy<TokenRec> {
    let ids = || prop::collection::vec(token(), 0..3);
    (
        (proptest::option::of(num()), origin(), ids(), ids(), num()),
        (
            prop::collection::vec(state_rec(), 0..4),
            prop::collection::vec(route_rec(), 0..3),
            prop::collection::vec(batch(), 0..3),
            proptest::option::of(batch()),
            proptest::option::of((terminal(), num())),
        ),
    )
        .prop_map(
            |(
                (row, origin, parents, children, created_seq),
                (states, routes, batches, buffered_in, terminal),
            )| TokenRec {
                row,
                origin,
                parents,
                children,
                created_seq,
                states,
                routes,
                batches,
                buffered_in,
                terminal,
            },
        )
        .boxed()
}

/// The records `direct` encodes, and one it leaves to serde.
pub(crate) fn proj() -> BoxedStrategy<PVal> {
    prop_oneof![
        token_rec().prop_map(PVal::Token),
        (node(), hash(), num(), proptest::option::of(text())).prop_map(
            |(source, payload, seq, validation_error)| PVal::Row(RowRec {
                source,
                payload,
                seq,
                validation_error,
            })
        ),
        prop::collection::vec(token(), 0..4).prop_map(PVal::SinkChunk),
    ]
    .boxed()
}
