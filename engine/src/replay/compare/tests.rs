use super::*;
use attest_ledger::{SinkWrite, Subject};

fn node(n: &str) -> NodeId {
    NodeId::new(n).unwrap()
}

fn state(token: &str, n: &str) -> StateId {
    StateId {
        subject: Subject::Token(TokenId::new(token).unwrap()),
        node: node(n),
        attempt: 1,
    }
}

fn closed(token: &str, n: &str, output: &[u8]) -> Event {
    Event::StateClosed {
        state: state(token, n),
        result: StateResult::Completed {
            output: Hash32::of(output),
        },
        duration_us: 5,
    }
}

fn route(token: &str, label: &str, to: &str) -> Event {
    Event::RouteDecided {
        state: state(token, "gate"),
        token: TokenId::new(token).unwrap(),
        label: label.into(),
        to: vec![node(to)],
    }
}

fn outcome(token: &str, sink: &str, ordinal: u64) -> Event {
    Event::TokenOutcome {
        token: TokenId::new(token).unwrap(),
        outcome: Outcome::Routed {
            write: SinkWrite {
                sink: node(sink),
                ordinal,
            },
        },
    }
}

fn artifact(sink: &str, content: &[u8], rows: u64) -> Event {
    Event::ArtifactWritten {
        sink: node(sink),
        path: format!("{sink}.csv"),
        content_hash: Hash32::of(content),
        size: content.len() as u64,
        rows,
    }
}

/// A small record: two rows through a mapper and a gate into sinks.
fn record() -> Vec<Event> {
    vec![
        closed("t0", "map", b"a0"),
        closed("t1", "map", b"a1"),
        route("t0", "true", "high"),
        route("t1", "false", "low"),
        outcome("t0", "high", 0),
        outcome("t1", "low", 0),
        artifact("high", b"high", 1),
        artifact("low", b"low", 1),
        Event::RunFinished {
            status: FinalStatus::Completed,
        },
    ]
}

fn compare(record: &[Event], reexecuted: &[Event], leniency: Leniency) -> Comparison {
    let mut c = Comparator::new(leniency);
    for (seq, e) in record.iter().enumerate() {
        c.expect(seq as u64 + 10, e);
    }
    c.start_observing();
    for e in reexecuted {
        c.observe(e);
    }
    c.finish(&mut |seq| {
        record
            .get(usize::try_from(seq).ok()?.checked_sub(10)?)
            .cloned()
    })
}

#[test]
fn the_same_events_in_another_order_and_with_other_timings_agree() {
    let mut again = record();
    again.reverse();
    if let Event::StateClosed { duration_us, .. } = &mut again[8] {
        *duration_us = 999;
    }
    let c = compare(&record(), &again, Leniency::default());
    assert_eq!(c.first, None);
    assert_eq!(c.divergences, 0);
    assert_eq!(c.compared, 9);
    assert_eq!(c.states, 2);
    assert_eq!(c.events, 9);
}

#[test]
fn a_changed_output_is_reported_at_its_node_token_and_seq() {
    let mut again = record();
    again[1] = closed("t1", "map", b"other");
    let c = compare(&record(), &again, Leniency::default());
    let d = c.first.unwrap();
    assert_eq!(d.code, DivergenceCode::OutputDiverged);
    assert_eq!(d.seq, Some(11));
    assert_eq!(d.node.as_deref(), Some("map"));
    assert_eq!(d.token.as_deref(), Some("t1"));
    assert_eq!(d.expected, format!("output {}", Hash32::of(b"a1")));
    assert_eq!(d.found, format!("output {}", Hash32::of(b"other")));
}

#[test]
fn the_first_divergence_in_the_records_order_wins_whatever_order_they_are_seen_in() {
    let mut again = record();
    again[5] = outcome("t1", "high", 1);
    again[3] = route("t1", "true", "high");
    // Seen outcome first, route second; the route is earlier in the record.
    again.swap(3, 5);
    let c = compare(&record(), &again, Leniency::default());
    assert_eq!(c.divergences, 2);
    let d = c.first.unwrap();
    assert_eq!(d.code, DivergenceCode::RouteDiverged);
    assert_eq!(d.seq, Some(13));
    assert_eq!(d.node.as_deref(), Some("gate"));
    assert_eq!(d.token.as_deref(), Some("t1"));
    assert_eq!(d.expected, "route \"false\" to low");
    assert_eq!(d.found, "route \"true\" to high");
}

#[test]
fn what_re_execution_did_not_produce_is_a_divergence_at_its_seq() {
    let mut again = record();
    again.remove(4);
    let c = compare(&record(), &again, Leniency::default());
    let d = c.first.unwrap();
    assert_eq!(d.code, DivergenceCode::OutcomeDiverged);
    assert_eq!(d.seq, Some(14));
    assert_eq!(d.token.as_deref(), Some("t0"));
    assert_eq!(d.node.as_deref(), Some("high"));
    assert_eq!(d.found, "nothing");
}

#[test]
fn what_only_re_execution_has_is_reported_without_a_seq_unless_the_record_stops_early() {
    let mut again = record();
    again.push(closed("t2", "map", b"a2"));
    let c = compare(&record(), &again, Leniency::default());
    let d = c.first.unwrap();
    assert_eq!(d.code, DivergenceCode::OutputDiverged);
    assert_eq!(d.seq, None);
    assert_eq!(d.token.as_deref(), Some("t2"));
    assert_eq!(d.expected, "nothing");

    let lenient = Leniency {
        ignore_extras: true,
        ..Leniency::default()
    };
    let c = compare(&record(), &again, lenient);
    assert_eq!(c.first, None);
}

#[test]
fn artifacts_compare_hash_size_and_rows_or_rows_only_where_bytes_cannot_be_reproduced() {
    let mut again = record();
    again[6] = artifact("high", b"HIGH", 1);
    let c = compare(&record(), &again, Leniency::default());
    let d = c.first.unwrap();
    assert_eq!(d.code, DivergenceCode::ArtifactDiverged);
    assert_eq!(d.node.as_deref(), Some("high"));
    assert_eq!(d.seq, Some(16));

    let rows_only = Leniency {
        rows_only: [node("high")].into_iter().collect(),
        ..Leniency::default()
    };
    assert_eq!(compare(&record(), &again, rows_only.clone()).first, None);
    again[6] = artifact("high", b"HIGH", 2);
    let d = compare(&record(), &again, rows_only).first.unwrap();
    assert_eq!(d.code, DivergenceCode::ArtifactDiverged);
}

#[test]
fn a_call_the_record_lacks_is_call_missing_and_another_request_call_diverged() {
    let call = |request: &[u8]| Event::CallAllocated {
        state: state("t0", "map"),
        index: 0,
        kind: "http".into(),
        request: Hash32::of(request),
        served: None,
    };
    let mut with_call = record();
    with_call.insert(0, call(b"req"));
    let d = compare(&record(), &with_call, Leniency::default())
        .first
        .unwrap();
    assert_eq!(d.code, DivergenceCode::CallMissing);
    assert_eq!(d.node.as_deref(), Some("map"));
    assert_eq!(d.token.as_deref(), Some("t0"));

    let mut other = record();
    other.insert(0, call(b"other request"));
    let d = compare(&with_call, &other, Leniency::default())
        .first
        .unwrap();
    assert_eq!(d.code, DivergenceCode::CallDiverged);
    assert_eq!(d.seq, Some(10));

    let d = compare(&with_call, &record(), Leniency::default())
        .first
        .unwrap();
    assert_eq!(d.code, DivergenceCode::CallMissing);
    assert_eq!(d.found, "nothing");
}

#[test]
fn a_run_that_ends_otherwise_is_run_diverged() {
    let mut again = record();
    again[8] = Event::RunFinished {
        status: FinalStatus::Failed,
    };
    let d = compare(&record(), &again, Leniency::default())
        .first
        .unwrap();
    assert_eq!(d.code, DivergenceCode::RunDiverged);
    assert_eq!(
        (d.expected.as_str(), d.found.as_str()),
        ("completed", "failed")
    );
}

#[test]
fn the_display_names_code_seq_node_and_token() {
    let mut again = record();
    again[0] = closed("t0", "map", b"x");
    let d = compare(&record(), &again, Leniency::default())
        .first
        .unwrap();
    let text = d.to_string();
    assert!(
        text.starts_with("OUTPUT_DIVERGED at seq 10, node map, token t0: "),
        "{text}"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Event `i` of a record of `n` rows: for each row, the mapper's state, the gate's
    /// route and the token's outcome.
    fn event(i: usize, salt: u8) -> Event {
        let row = i / 3;
        let token = format!("t{row}");
        match i % 3 {
            0 => closed(&token, "map", &[row as u8, salt]),
            1 => route(
                &token,
                if salt.is_multiple_of(2) {
                    "true"
                } else {
                    "false"
                },
                "out",
            ),
            _ => outcome(&token, "out", row as u64 + u64::from(salt)),
        }
    }

    proptest! {
        /// Whatever order the re-executed events come in, an unchanged record agrees, and
        /// a record with one result changed reports exactly that result's seq and code.
        #[test]
        fn any_one_changed_result_is_the_first_divergence(
            rows in 1usize..40,
            changed in any::<prop::sample::Index>(),
            order in any::<u64>(),
        ) {
            let n = rows * 3;
            let record: Vec<Event> = (0..n).map(|i| event(i, 0)).collect();
            let mut again = record.clone();
            // A deterministic shuffle from `order`.
            let mut x = order | 1;
            for i in (1..again.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                again.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let same = compare(&record, &again, Leniency::default());
            prop_assert_eq!(same.first, None);
            prop_assert_eq!(same.compared, n as u64);

            let k = changed.index(n);
            let pos = again.iter().position(|e| *e == record[k]).unwrap();
            again[pos] = event(k, 1);
            let c = compare(&record, &again, Leniency::default());
            prop_assert_eq!(c.divergences, 1);
            let d = c.first.unwrap();
            prop_assert_eq!(d.seq, Some(k as u64 + 10));
            let code = match k % 3 {
                0 => DivergenceCode::OutputDiverged,
                1 => DivergenceCode::RouteDiverged,
                _ => DivergenceCode::OutcomeDiverged,
            };
            prop_assert_eq!(d.code, code);
            let token = format!("t{}", k / 3);
            prop_assert_eq!(d.token.as_deref(), Some(token.as_str()));
        }
    }
}
