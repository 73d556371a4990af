//! Lineage query latency on a ledger of 1,000,000 events (a bench binary: criterion
//! reports means, and the target is a 99th percentile).
//!
//! Builds (once, in a temp dir) a run of the shared pipeline workload with at least
//! 1,000,000 events, reopens the ledger so no cache is warm from the build, then times
//! random queries by source row and by sink output, and reports p50 / p99 / max.
//!
//! Run: `cargo bench -p attest-ledger --bench lineage` (QUERIES=N overrides 20,000).

mod common;

use attest_ledger::lineage::LineageQuery;
use attest_ledger::*;
use common::{Pipeline, EVENTS_PER_ROW, ROWS_PER_COMMIT};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let queries: usize = std::env::var("QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let target_events = 1_000_000u64;
    let run_id;
    let rows;
    {
        let ledger = Ledger::open(dir.path()).expect("open");
        let (run, mut p) = Pipeline::start(&ledger);
        let started = Instant::now();
        while p.rows() * EVENTS_PER_ROW < target_events {
            run.submit(p.commit(ROWS_PER_COMMIT), Durability::Buffered)
                .expect("commit");
        }
        ledger.flush().expect("flush");
        rows = p.rows();
        run_id = run.id().clone();
        let events = ledger
            .run_record(&run_id)
            .expect("record")
            .expect("run")
            .next_seq;
        println!(
            "built {events} events ({rows} rows) in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    let ledger = Ledger::open_for_reading(dir.path()).expect("reopen");
    let sink = NodeId::new("out").expect("sink id");
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (label, by_output) in [("by row", false), ("by output", true)] {
        let mut times = Vec::with_capacity(queries);
        for _ in 0..queries {
            let n = next() % rows;
            let q = if by_output {
                LineageQuery::Output {
                    sink: sink.clone(),
                    ordinal: n,
                }
            } else {
                LineageQuery::Row(n)
            };
            let t = Instant::now();
            let l = ledger
                .lineage(&run_id, &q)
                .expect("lineage")
                .expect("found");
            times.push(t.elapsed());
            assert!(!l.tokens.is_empty());
        }
        times.sort();
        println!(
            "lineage {label}: {queries} queries, p50 {:.1} us, p99 {:.1} us, max {:.1} us",
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
            times[times.len() - 1].as_secs_f64() * 1e6
        );
    }
}
