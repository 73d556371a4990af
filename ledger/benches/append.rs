//! Appending with group commit: commits of ~1,000 pipeline-shaped events (with their
//! payloads), each made durable (`Durability::Flushed`, one fsync) before the next is sent.
//!
//! `cargo bench -p attest-ledger --bench append`

mod common;

use attest_ledger::{Durability, Ledger};
use common::{Pipeline, EVENTS_PER_COMMIT, ROWS_PER_COMMIT};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(dir.path()).expect("open ledger");
    let (run, mut pipeline) = Pipeline::start(&ledger);

    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(EVENTS_PER_COMMIT));
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
    group.finish();
    eprintln!(
        "append: the run holds {} rows ({} events) at the end",
        pipeline.rows(),
        pipeline.rows() * common::EVENTS_PER_ROW
    );
}

criterion_group!(benches, append);
criterion_main!(benches);
