//! Verification of a run of ≥ 1,000,000 pipeline-shaped events: chain links, sequence
//! contiguity, projections rebuilt and compared, every referenced payload re-hashed.
//!
//! `cargo bench -p attest-ledger --bench verify`
//!
//! With the allocator the `attest` binary uses (mimalloc, `cli/src/allocator.rs`), so that
//! the figure is verification as shipped: with the system allocator, malloc's own
//! bookkeeping was about a sixth of the samples (`docs/benchmarks.md`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use attest_ledger::verify::VerifyOptions;
use attest_ledger::{Durability, Ledger};
use common::{Pipeline, EVENTS_PER_ROW, ROWS_PER_COMMIT};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

/// At least a million events in the verified run.
const MIN_EVENTS: u64 = 1_000_000;

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open_for_reading(dir.path()).expect("open ledger");
    let (run, mut pipeline) = Pipeline::start(&ledger);
    let built = Instant::now();
    let mut pending = None;
    while pipeline.rows() * EVENTS_PER_ROW < MIN_EVENTS {
        // Keep one commit in flight so building the next overlaps the writer.
        let next = run
            .submit_nowait(pipeline.commit(ROWS_PER_COMMIT), Durability::Buffered)
            .expect("submit");
        if let Some(p) = pending.replace(next) {
            p.wait().expect("commit");
        }
    }
    if let Some(p) = pending {
        p.wait().expect("commit");
    }
    ledger.flush().expect("flush");
    let events = ledger
        .run_record(run.id())
        .expect("run record")
        .expect("run exists")
        .next_seq;
    eprintln!(
        "verify: built a run of {events} events in {:.1?}",
        built.elapsed()
    );

    let mut group = c.benchmark_group("verify");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(events));
    group.bench_function("full_run", |b| {
        b.iter(|| {
            let report = ledger
                .verify(run.id(), &VerifyOptions::default())
                .expect("verify");
            assert!(report.ok(), "{:?}", report.failure);
            assert_eq!(report.events, events);
            report
        })
    });
    group.bench_function("skip_payloads", |b| {
        b.iter(|| {
            let opts = VerifyOptions {
                skip_payloads: true,
                ..VerifyOptions::default()
            };
            let report = ledger.verify(run.id(), &opts).expect("verify");
            assert!(report.ok(), "{:?}", report.failure);
            report
        })
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
