//! Appending with group commit: commits of ~1,000 pipeline-shaped events (with their
//! payloads), each made durable (`Durability::Flushed`).
//!
//! - `flushed_commit_1001_events`: one commit at a time, each durable before the next is
//!   sent: the latency-bound case, where nothing can overlap.
//! - `pipelined_4_in_flight`: the client keeps four such commits in flight, as the engine
//!   keeps its ingestion commits in flight, so the writer prepares one group while the one
//!   before is written and the one before that is made durable. Building the commits is
//!   timed here (the client cannot stop the clock while commits are in flight); it is a
//!   small part.
//!
//! `cargo bench -p attest-ledger --bench append`

mod common;

use attest_ledger::{Durability, Ledger, RunHandle};
use common::{Pipeline, EVENTS_PER_COMMIT, ROWS_PER_COMMIT};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Commits the pipelined client keeps in flight.
const IN_FLIGHT: usize = 4;

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(EVENTS_PER_COMMIT));
    // Each case gets a fresh ledger: sled's cost per key grows with the tree, so cases
    // sharing one would be measured on ledgers of different sizes.
    let (_dir, _ledger, run, mut pipeline) = fresh();
    group.bench_function("flushed_commit_1001_events", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                // Building the events is the engine's work, not the ledger's: untimed.
                let commit = pipeline.commit(ROWS_PER_COMMIT);
                let start = Instant::now();
                run.submit(commit, Durability::Flushed).expect("commit");
                spent += start.elapsed();
            }
            spent
        })
    });
    report(&pipeline);
    let (_dir, _ledger, run, mut pipeline) = fresh();
    group.bench_function("pipelined_4_in_flight", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut in_flight = VecDeque::new();
            for _ in 0..iters {
                let commit = pipeline.commit(ROWS_PER_COMMIT);
                in_flight.push_back(
                    run.submit_nowait(commit, Durability::Flushed)
                        .expect("submit"),
                );
                if in_flight.len() >= IN_FLIGHT {
                    if let Some(p) = in_flight.pop_front() {
                        p.wait().expect("commit");
                    }
                }
            }
            for p in in_flight {
                p.wait().expect("commit");
            }
            start.elapsed()
        })
    });
    report(&pipeline);
    group.finish();
}

fn fresh() -> (tempfile::TempDir, Ledger, RunHandle, Pipeline) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(dir.path()).expect("open ledger");
    let (run, pipeline) = Pipeline::start(&ledger);
    (dir, ledger, run, pipeline)
}

fn report(pipeline: &Pipeline) {
    eprintln!(
        "append: the run holds {} rows ({} events) at the end",
        pipeline.rows(),
        pipeline.rows() * common::EVENTS_PER_ROW
    );
}

criterion_group!(benches, append);
criterion_main!(benches);
