//! The pooled executor under real threads: batch isolation (ELSPETH seed 000), context
//! snapshots (seed 001), submission order whatever the completion order, cross-row
//! concurrency bounded by `pool_size`, and failures that stay with their item.

use attest_engine::config::PoolOptions;
use attest_engine::pool::{Attempt, ItemError, PoolConfig, PoolError, PooledExecutor};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// A hang guard, not a timing assertion: far beyond anything the tests need.
const HANG: Duration = Duration::from_secs(120);

fn executor(pool_size: u64) -> PooledExecutor {
    let options = PoolOptions {
        pool_size,
        ..PoolOptions::default()
    };
    PooledExecutor::new(PoolConfig::try_from(&options).unwrap())
}

/// Runs `f` on another thread and fails the test if it has not finished within [`HANG`].
fn within_hang_guard<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .expect("the executor stalled (or the test body panicked)")
}

/// A small deterministic generator for the interleaving delays (seeded per round).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn seed_000_concurrent_batches_each_get_exactly_their_own_results_in_order() {
    const ROUNDS: u64 = 150;
    const CALLERS: usize = 5;
    const ITEMS: usize = 7;
    within_hang_guard(|| {
        for round in 0..ROUNDS {
            // Fewer permits than items in flight, so batches contend and interleave.
            let exec = Arc::new(executor(4));
            let start = Arc::new(Barrier::new(CALLERS));
            let callers: Vec<_> = (0..CALLERS)
                .map(|caller| {
                    let exec = Arc::clone(&exec);
                    let start = Arc::clone(&start);
                    thread::spawn(move || {
                        let mut seed = round * 1000 + caller as u64 + 1;
                        // Marker items: (caller, index, a delay in microseconds).
                        let items: Vec<(usize, usize, u64)> = (0..ITEMS)
                            .map(|i| (caller, i, xorshift(&mut seed) % 1500))
                            .collect();
                        start.wait();
                        let batch = exec.execute_batch(items, |&(c, i, micros), _| {
                            thread::sleep(Duration::from_micros(micros));
                            Ok::<_, ItemError<()>>((c, i))
                        });
                        (caller, batch.results)
                    })
                })
                .collect();
            for handle in callers {
                let (caller, results) = handle.join().unwrap();
                let got: Vec<(usize, usize)> = results.into_iter().map(|r| r.unwrap()).collect();
                let expected: Vec<(usize, usize)> = (0..ITEMS).map(|i| (caller, i)).collect();
                assert_eq!(got, expected, "round {round}: caller {caller}");
            }
        }
    });
}

/// ELSPETH's scenario: one context variable, changed for every row straight after that
/// row is handed over, while the rows' calls are still running.
#[derive(Clone, Debug, PartialEq)]
struct Ctx {
    token: String,
    state: String,
    attempt: u32,
}

#[test]
fn seed_001_each_call_sees_its_own_snapshot_while_the_caller_changes_its_context() {
    const ROWS: usize = 40;
    const ROUNDS: usize = 20;
    within_hang_guard(|| {
        for round in 0..ROUNDS {
            let exec = Arc::new(executor(8));
            let mut ctx = Ctx {
                token: String::new(),
                state: String::new(),
                attempt: 0,
            };
            let mut rows = Vec::new();
            for row in 0..ROWS {
                // The caller reuses and changes the same variable for each row...
                ctx.token = format!("tok-{round}-{row}");
                ctx.state = format!("state-{round}-{row}");
                ctx.attempt = row as u32;
                let snapshot = ctx.clone();
                let exec = Arc::clone(&exec);
                rows.push(thread::spawn(move || {
                    exec.execute_batch(vec![snapshot], |c: &Ctx, _| {
                        // ...while this call is in flight: read the context late.
                        thread::sleep(Duration::from_micros(300));
                        Ok::<_, ItemError<()>>(c.clone())
                    })
                }));
                // ...and straight after submitting, moves on to a bogus value.
                ctx.token = "changed-after-submit".into();
                ctx.state = "changed-after-submit".into();
            }
            for (row, handle) in rows.into_iter().enumerate() {
                let batch = handle.join().unwrap();
                let seen = batch.results.into_iter().next().unwrap().unwrap();
                assert_eq!(
                    seen,
                    Ctx {
                        token: format!("tok-{round}-{row}"),
                        state: format!("state-{round}-{row}"),
                        attempt: row as u32,
                    }
                );
            }
        }
    });
}

#[test]
fn multi_item_batch_keeps_each_items_snapshot() {
    // One row, several queries: each item is its own context even though the caller built
    // them all from one mutable variable.
    let exec = executor(4);
    let mut ctx = Ctx {
        token: "tok-1".into(),
        state: "state-1".into(),
        attempt: 1,
    };
    let mut items = Vec::new();
    for query in 0..6 {
        ctx.state = format!("state-q{query}");
        items.push(ctx.clone());
    }
    ctx.state = "changed".into();
    let batch = exec.execute_batch(items, |c: &Ctx, a: Attempt| {
        thread::sleep(Duration::from_micros(200 * (6 - a.index as u64)));
        Ok::<_, ItemError<()>>(c.state.clone())
    });
    let got: Vec<String> = batch.results.into_iter().map(|r| r.unwrap()).collect();
    let expected: Vec<String> = (0..6).map(|q| format!("state-q{q}")).collect();
    assert_eq!(got, expected);
}

/// Makes items finish in a chosen order: item `i` may finish only once every item ranked
/// before it has.
struct CompletionOrder {
    finished: Mutex<usize>,
    turn: Condvar,
}

impl CompletionOrder {
    fn wait_for_rank(&self, rank: usize) {
        let mut finished = self.finished.lock().unwrap();
        while *finished != rank {
            let (guard, timeout) = self.turn.wait_timeout(finished, HANG).unwrap();
            assert!(!timeout.timed_out(), "completion order stalled at {rank}");
            finished = guard;
        }
    }

    fn done(&self) {
        *self.finished.lock().unwrap() += 1;
        self.turn.notify_all();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every completion order gives submission order back.
    #[test]
    fn random_completion_orders_still_give_submission_order(
        ranks in (1usize..9).prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle())
    ) {
        let n = ranks.len();
        // Every item must be running at once for any completion order to be possible.
        let exec = executor(n as u64);
        let order = CompletionOrder { finished: Mutex::new(0), turn: Condvar::new() };
        let items: Vec<(usize, usize)> = ranks.iter().copied().enumerate().collect();
        let completed = Mutex::new(Vec::new());
        let batch = exec.execute_batch(items, |&(index, rank), _| {
            order.wait_for_rank(rank);
            completed.lock().unwrap().push(index);
            order.done();
            Ok::<_, ItemError<()>>(index * 10)
        });
        // The items really did finish in the generated order...
        let mut by_rank = vec![0; n];
        for (index, &rank) in ranks.iter().enumerate() {
            by_rank[rank] = index;
        }
        prop_assert_eq!(completed.into_inner().unwrap(), by_rank);
        // ...and came back in submission order.
        let got: Vec<usize> = batch.results.into_iter().map(|r| r.unwrap()).collect();
        prop_assert_eq!(got, (0..n).map(|i| i * 10).collect::<Vec<_>>());
    }
}

/// Counts calls inside the function: how many are in flight now, and the most ever.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl InFlight {
    fn enter(&self) -> usize {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        now
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn rows_from_different_callers_are_in_flight_together_up_to_pool_size() {
    // N callers, one item each (one row per worker): all N calls must be inside the
    // function at once. Each call waits until it sees N in flight, so an executor that
    // bounded concurrency below N would stall here (and the hang guard would fail it).
    const N: usize = 8;
    within_hang_guard(|| {
        for _ in 0..20 {
            let exec = Arc::new(executor(N as u64));
            let in_flight = Arc::new(InFlight::default());
            let all_in = Arc::new((Mutex::new(0usize), Condvar::new()));
            let callers: Vec<_> = (0..N)
                .map(|row| {
                    let (exec, in_flight, all_in) = (
                        Arc::clone(&exec),
                        Arc::clone(&in_flight),
                        Arc::clone(&all_in),
                    );
                    thread::spawn(move || {
                        exec.execute_batch(vec![row], |&row, _| {
                            in_flight.enter();
                            let (count, cv) = &*all_in;
                            let mut c = count.lock().unwrap();
                            *c += 1;
                            cv.notify_all();
                            while *c < N {
                                c = cv.wait(c).unwrap();
                            }
                            drop(c);
                            in_flight.leave();
                            Ok::<_, ItemError<()>>(row)
                        })
                    })
                })
                .collect();
            for (row, h) in callers.into_iter().enumerate() {
                assert_eq!(h.join().unwrap().results[0].as_ref().unwrap(), &row);
            }
            assert_eq!(in_flight.peak.load(Ordering::SeqCst), N);
            assert_eq!(exec.stats().peak_in_flight, N);
        }
    });
}

#[test]
fn never_more_than_pool_size_in_flight_across_callers_and_batches() {
    const POOL: usize = 3;
    within_hang_guard(|| {
        let exec = Arc::new(executor(POOL as u64));
        let in_flight = Arc::new(InFlight::default());
        let over = Arc::new(AtomicUsize::new(0));
        // Single-item and multi-item callers mixed, four times as many as permits.
        let callers: Vec<_> = (0..4 * POOL)
            .map(|caller| {
                let (exec, in_flight, over) =
                    (Arc::clone(&exec), Arc::clone(&in_flight), Arc::clone(&over));
                thread::spawn(move || {
                    for round in 0..15 {
                        let items: Vec<usize> = (0..1 + (caller + round) % 5).collect();
                        let batch = exec.execute_batch(items, |&i, _| {
                            if in_flight.enter() > POOL {
                                over.fetch_add(1, Ordering::SeqCst);
                            }
                            thread::sleep(Duration::from_micros(200));
                            in_flight.leave();
                            Ok::<_, ItemError<()>>(i)
                        });
                        let got: Vec<usize> =
                            batch.results.into_iter().map(|r| r.unwrap()).collect();
                        assert_eq!(got, (0..got.len()).collect::<Vec<_>>());
                    }
                })
            })
            .collect();
        for h in callers {
            h.join().unwrap();
        }
        assert_eq!(over.load(Ordering::SeqCst), 0, "more than {POOL} in flight");
        // And the bound was actually reached, so the check above meant something.
        assert_eq!(in_flight.peak.load(Ordering::SeqCst), POOL);
        assert_eq!(exec.stats().peak_in_flight, POOL);
    });
}

#[test]
fn a_panic_or_error_stays_with_its_item() {
    within_hang_guard(|| {
        let exec = executor(4);
        for _ in 0..20 {
            let items: Vec<usize> = (0..10).collect();
            let batch = exec.execute_batch(items, |&i, _| {
                thread::sleep(Duration::from_micros(100 * (10 - i as u64)));
                match i {
                    3 => panic!("item three broke"),
                    5 => Err(ItemError::Other(format!("bad request for {i}"))),
                    _ => Ok(i * 100),
                }
            });
            assert_eq!(batch.results.len(), 10);
            for (i, r) in batch.results.iter().enumerate() {
                match i {
                    3 => assert_eq!(
                        r,
                        &Err(PoolError::Panicked {
                            message: "item three broke".into()
                        })
                    ),
                    5 => assert_eq!(r, &Err(PoolError::Failed("bad request for 5".into()))),
                    _ => assert_eq!(r, &Ok(i * 100)),
                }
            }
        }
        // The panics gave their permits back: a full-width batch still runs all at once.
        let in_flight = InFlight::default();
        let gate = Barrier::new(4);
        let batch = exec.execute_batch(vec![0, 1, 2, 3], |&i, _| {
            in_flight.enter();
            gate.wait();
            Ok::<_, ItemError<()>>(i)
        });
        assert!(batch.results.iter().all(|r| r.is_ok()));
        assert_eq!(in_flight.peak.load(Ordering::SeqCst), 4);
    });
}

#[test]
fn an_empty_batch_returns_nothing() {
    let exec = executor(2);
    let batch = exec.execute_batch(Vec::<u8>::new(), |_, _| Ok::<u8, ItemError<()>>(0));
    assert!(batch.results.is_empty());
    assert_eq!(exec.stats().dispatches, 0);
}
