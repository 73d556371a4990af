//! Pooled-executor benchmark (a bench binary, not a test).
//!
//! `cargo bench -p attest-engine --bench pool` runs issue 7's shape: 1,000 items, each a
//! simulated call of 50 ms, `pool_size` 16, submitted by 16 caller threads one item per
//! `execute_batch` (one row per worker). It reports items/s against the ideal
//! 16 / 0.05 s = 320/s, then the same items as batches of 16 from one caller (the
//! multi-query shape, which uses helper threads), then a standing pool of 16 threads fed
//! through channels, the design the executor does not use, for comparison.
//!
//! `MODE=overhead-pool`, `MODE=overhead-handoff` and `MODE=overhead-batch` run the same
//! shapes with calls that take no time (ITEMS defaults to 20,000), for counting the
//! executor's own instructions under `valgrind --tool=callgrind`.
//!
//! `ITEMS=`, `LATENCY_MS=`, `POOL=` and `CALLERS=` override the defaults.

use attest_engine::config::PoolOptions;
use attest_engine::pool::{ItemError, PoolConfig, PooledExecutor};
use crossbeam_channel::{bounded, unbounded, Sender};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

struct Shape {
    items: usize,
    latency: Duration,
    pool: usize,
    callers: usize,
}

fn call(latency: Duration, row: usize) -> usize {
    if !latency.is_zero() {
        thread::sleep(latency);
    }
    row
}

fn executor(pool: usize) -> PooledExecutor {
    let options = PoolOptions {
        pool_size: pool as u64,
        ..PoolOptions::default()
    };
    match PoolConfig::try_from(&options) {
        Ok(config) => PooledExecutor::new(config),
        Err(e) => {
            eprintln!("bad POOL: {e}");
            std::process::exit(2);
        }
    }
}

/// `callers` threads take row numbers from a shared counter, one `execute_batch` each.
fn rows_through_executor(s: &Shape) -> Duration {
    let exec = Arc::new(executor(s.pool));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..s.callers)
        .map(|_| {
            let (exec, next, latency, items) = (exec.clone(), next.clone(), s.latency, s.items);
            thread::spawn(move || loop {
                let row = next.fetch_add(1, Ordering::Relaxed);
                if row >= items {
                    break;
                }
                let batch =
                    exec.execute_batch(vec![row], |&r, _| Ok::<_, ItemError<()>>(call(latency, r)));
                assert_eq!(batch.results[0], Ok(row));
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    start.elapsed()
}

/// One caller, batches of `pool` items (scoped helper threads run them).
fn batches_through_executor(s: &Shape) -> Duration {
    let exec = executor(s.pool);
    let start = Instant::now();
    let mut row = 0;
    while row < s.items {
        let end = (row + s.pool).min(s.items);
        let batch = exec.execute_batch((row..end).collect(), |&r, _| {
            Ok::<_, ItemError<()>>(call(s.latency, r))
        });
        assert_eq!(batch.results.len(), end - row);
        row = end;
    }
    start.elapsed()
}

/// The alternative: `pool` standing threads fed through a channel; each caller sends its
/// row with a reply channel and waits for the answer.
fn rows_through_handoff(s: &Shape) -> Duration {
    let (jobs, inbox) = unbounded::<(usize, Sender<usize>)>();
    let workers: Vec<_> = (0..s.pool)
        .map(|_| {
            let (inbox, latency) = (inbox.clone(), s.latency);
            thread::spawn(move || {
                for (row, reply) in inbox {
                    let _ = reply.send(call(latency, row));
                }
            })
        })
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..s.callers)
        .map(|_| {
            let (jobs, next, items) = (jobs.clone(), next.clone(), s.items);
            thread::spawn(move || {
                let (reply, answer) = bounded(1);
                loop {
                    let row = next.fetch_add(1, Ordering::Relaxed);
                    if row >= items {
                        break;
                    }
                    if jobs.send((row, reply.clone())).is_err() {
                        break;
                    }
                    assert_eq!(answer.recv(), Ok(row));
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let elapsed = start.elapsed();
    drop(jobs);
    for w in workers {
        let _ = w.join();
    }
    elapsed
}

fn report(what: &str, s: &Shape, elapsed: Duration) {
    let rate = s.items as f64 / elapsed.as_secs_f64();
    let ideal = s.pool as f64 / s.latency.as_secs_f64();
    println!(
        "{what:<44} {:>6} items in {:>7.3} s: {rate:>8.1} items/s ({:.1}% of ideal {ideal:.0}/s), load {}",
        s.items,
        elapsed.as_secs_f64(),
        100.0 * rate / ideal,
        loadavg()
    );
}

fn main() {
    let mode = std::env::var("MODE").unwrap_or_else(|_| "latency".into());
    let overhead = mode.starts_with("overhead");
    let s = Shape {
        items: env_num("ITEMS", if overhead { 20_000 } else { 1_000 }),
        latency: Duration::from_millis(env_num("LATENCY_MS", if overhead { 0 } else { 50 }) as u64),
        pool: env_num("POOL", 16).max(1),
        callers: env_num("CALLERS", 16).max(1),
    };
    println!(
        "pool benchmark: mode {mode}, {} items, {} ms per call, pool_size {}, {} callers; load {}",
        s.items,
        s.latency.as_millis(),
        s.pool,
        s.callers,
        loadavg()
    );
    let run = |what: &str, f: &dyn Fn(&Shape) -> Duration| {
        let elapsed = f(&s);
        if overhead {
            println!(
                "{what}: {:.2} µs per item (wall, includes thread start-up)",
                elapsed.as_secs_f64() * 1e6 / s.items as f64
            );
        } else {
            report(what, &s, elapsed);
        }
    };
    match mode.as_str() {
        "latency" => {
            run(
                "executor, one item per call, 16 callers",
                &rows_through_executor,
            );
            run(
                "executor, batches of pool_size, 1 caller",
                &batches_through_executor,
            );
            run(
                "standing threads + channels, 16 callers",
                &rows_through_handoff,
            );
        }
        "overhead-pool" => run("executor, one item per call", &rows_through_executor),
        "overhead-handoff" => run("standing threads + channels", &rows_through_handoff),
        "overhead-batch" => run("executor, batches of pool_size", &batches_through_executor),
        other => {
            eprintln!("unknown MODE {other}; expected latency or overhead-pool|handoff|batch");
            std::process::exit(2);
        }
    }
}
