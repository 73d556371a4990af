//! A pipeline-shaped workload shared by the ledger benchmarks.
//!
//! Each source row goes `src -> enrich (transform) -> triage (gate) -> out (sink)`: the row
//! is ingested with its payload, each node opens and closes a state, the gate records its
//! routing decision, and the token ends routed to the sink. That is [`EVENTS_PER_ROW`]
//! events and two payloads per row (the source row and the transform's output; the gate's
//! output is its input), which is what attest's engine records for such a row.

#![allow(dead_code)] // each bench uses a different part of it

use attest_ledger::*;

pub const EVENTS_PER_ROW: u64 = 7;
/// 143 rows make 1,001 events: commits of ~1,000 events, as the target is stated.
pub const ROWS_PER_COMMIT: u64 = 143;
pub const EVENTS_PER_COMMIT: u64 = EVENTS_PER_ROW * ROWS_PER_COMMIT;

fn n(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

/// The nodes of the benchmark pipeline, registered once per run.
pub struct Pipeline {
    src: NodeId,
    enrich: NodeId,
    triage: NodeId,
    out: NodeId,
    next_row: u64,
}

impl Pipeline {
    /// Starts a run in `ledger` and registers the pipeline's nodes and edges.
    pub fn start(ledger: &Ledger) -> (RunHandle, Pipeline) {
        let run = ledger
            .start_run(RunStart {
                config: b"source: {plugin: csv}\ntransforms: [enrich, triage]\nsinks: {out: csv}"
                    .to_vec(),
                engine_version: "bench".into(),
                started_at_ms: 1,
            })
            .expect("start run");
        let p = Pipeline {
            src: n("src"),
            enrich: n("enrich"),
            triage: n("triage"),
            out: n("out"),
            next_row: 0,
        };
        let nodes = [
            (&p.src, NodeKind::Source, "csv"),
            (&p.enrich, NodeKind::Transform, "field_mapper"),
            (&p.triage, NodeKind::Gate, "gate"),
            (&p.out, NodeKind::Sink, "csv"),
        ];
        let mut events: Vec<Event> = nodes
            .iter()
            .map(|(node, kind, plugin)| Event::NodeRegistered {
                node: (*node).clone(),
                kind: *kind,
                plugin: (*plugin).into(),
                config_hash: Hash32::of(plugin.as_bytes()),
            })
            .collect();
        for (from, to) in [
            (&p.src, &p.enrich),
            (&p.enrich, &p.triage),
            (&p.triage, &p.out),
        ] {
            events.push(Event::EdgeRegistered {
                from: from.clone(),
                to: to.clone(),
                label: "continue".into(),
            });
        }
        run.append(events).expect("register nodes");
        (run, p)
    }

    /// The next `rows` rows as one commit, with every payload they reference.
    pub fn commit(&mut self, rows: u64) -> Commit {
        let mut c = Commit::new();
        for _ in 0..rows {
            let row = self.next_row;
            self.next_row += 1;
            let token = TokenId::for_row(row);
            let subject = Subject::Token(token.clone());
            // Payloads about the size of a CSV row as canonical JSON, each distinct.
            let input = c.payload(
                format!(
                    r#"{{"amount":{}.25,"customer":"customer-{row:08}","id":{row},"region":"north-east"}}"#,
                    row % 9973
                )
                .into_bytes(),
            );
            c.push(Event::RowIngested {
                row,
                source: self.src.clone(),
                payload: input,
            });
            // The transform makes a new value, stored as a payload.
            let enrich = StateId {
                subject: subject.clone(),
                node: self.enrich.clone(),
                attempt: 1,
            };
            c.push(Event::StateOpened {
                state: enrich.clone(),
                input,
            });
            let output = c.payload(
                format!(
                    r#"{{"amount":{}.25,"customer":"customer-{row:08}","id":{row},"region":"north-east","tier":"gold"}}"#,
                    row % 9973
                )
                .into_bytes(),
            );
            c.push(Event::StateClosed {
                state: enrich,
                result: StateResult::Completed { output },
                duration_us: 120 + row % 50,
            });
            // The gate only routes: its output is its input, as the engine records it, so
            // it adds no payload.
            let triage = StateId {
                subject: subject.clone(),
                node: self.triage.clone(),
                attempt: 1,
            };
            c.push(Event::StateOpened {
                state: triage.clone(),
                input: output,
            });
            c.push(Event::StateClosed {
                state: triage,
                result: StateResult::Completed { output },
                duration_us: 15 + row % 7,
            });
            c.push(Event::RouteDecided {
                state: StateId {
                    subject,
                    node: self.triage.clone(),
                    attempt: 1,
                },
                token: token.clone(),
                label: "high".into(),
                to: vec![self.out.clone()],
            });
            c.push(Event::TokenOutcome {
                token,
                outcome: Outcome::Routed {
                    write: SinkWrite {
                        sink: self.out.clone(),
                        ordinal: row,
                    },
                },
            });
        }
        c
    }

    pub fn rows(&self) -> u64 {
        self.next_row
    }
}
