//! Fixtures shared by the crate's unit tests.

use crate::event::{Event, NodeKind};
use crate::ids::{Hash32, NodeId};
use crate::ledger::{Ledger, RunHandle, RunStart};

pub(crate) fn node(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

/// A started run with a csv source `src` and a csv sink `out` registered.
pub(crate) fn source_to_sink_run(ledger: &Ledger) -> RunHandle {
    let run = ledger
        .start_run(RunStart {
            config: b"cfg".to_vec(),
            engine_version: "test".into(),
            started_at_ms: 1,
        })
        .unwrap();
    let register = |name: &str, kind| Event::NodeRegistered {
        node: node(name),
        kind,
        plugin: "csv".into(),
        config_hash: Hash32::ZERO,
    };
    run.append(vec![
        register("src", NodeKind::Source),
        register("out", NodeKind::Sink),
    ])
    .unwrap();
    run
}
