//! Model checking of the executor's reorder and permit logic with shuttle, which runs the
//! real code on its own threads, locks and atomics (see `sync.rs`) and explores many
//! interleavings of them, seeded and replayable. Run with
//! `cargo test -p attest-engine --features shuttle --lib pool::model_check`.

use super::{Clock, ItemError, PoolConfig, PooledExecutor, Submit, VirtualClock};
use crate::config::PoolOptions;
use shuttle::sync::atomic::{AtomicUsize, Ordering};
use shuttle::thread;
use std::sync::Arc;

/// Schedules per check: enough for shuttle to vary every interleaving point here many
/// times, small enough for a test run.
const ITERATIONS: usize = 3_000;

fn executor(pool_size: u64) -> PooledExecutor {
    let options = PoolOptions {
        pool_size,
        ..PoolOptions::default()
    };
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new());
    PooledExecutor::with_clock(PoolConfig::try_from(&options).unwrap(), clock)
}

/// Two callers, three items each, two permits: each caller gets exactly its own results,
/// in order, and no more than two calls are ever inside the function at once. Shuttle
/// also fails the run if any schedule deadlocks (a caller that never gets a permit).
fn two_batches_on_one_executor() {
    const POOL: usize = 2;
    let exec = Arc::new(executor(POOL as u64));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let over_bound = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..2)
        .map(|caller| {
            let (exec, in_flight, over_bound) =
                (exec.clone(), in_flight.clone(), over_bound.clone());
            thread::spawn(move || {
                let items: Vec<(usize, usize)> = (0..3).map(|i| (caller, i)).collect();
                let batch = exec.execute_batch(items, |&(c, i), _| {
                    if in_flight.fetch_add(1, Ordering::SeqCst) + 1 > POOL {
                        over_bound.fetch_add(1, Ordering::SeqCst);
                    }
                    // A scheduling point inside the call, so completions interleave.
                    thread::yield_now();
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, ItemError<()>>((c, i))
                });
                let got: Vec<(usize, usize)> = batch
                    .results
                    .into_iter()
                    .map(|r| r.unwrap_or((usize::MAX, usize::MAX)))
                    .collect();
                assert_eq!(got, vec![(caller, 0), (caller, 1), (caller, 2)]);
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
    assert_eq!(over_bound.load(Ordering::SeqCst), 0);
}

#[test]
fn batches_stay_isolated_and_bounded_random() {
    shuttle::check_random(two_batches_on_one_executor, ITERATIONS);
}

#[test]
fn batches_stay_isolated_and_bounded_pct() {
    // PCT favours the rare orderings a uniform random scheduler tends to miss.
    shuttle::check_pct(two_batches_on_one_executor, ITERATIONS, 3);
}

/// One permit, three single-item callers, each twice: the permit is never held twice and
/// every caller finishes (no lost wake-up in the ticket queue).
fn one_permit_three_callers() {
    let exec = Arc::new(executor(1));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let over_bound = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..3)
        .map(|caller| {
            let (exec, in_flight, over_bound) =
                (exec.clone(), in_flight.clone(), over_bound.clone());
            thread::spawn(move || {
                for round in 0..2 {
                    let batch = exec.execute_batch(vec![(caller, round)], |&item, _| {
                        if in_flight.fetch_add(1, Ordering::SeqCst) > 0 {
                            over_bound.fetch_add(1, Ordering::SeqCst);
                        }
                        thread::yield_now();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, ItemError<()>>(item)
                    });
                    assert_eq!(batch.results, vec![Ok((caller, round))]);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
    assert_eq!(over_bound.load(Ordering::SeqCst), 0);
    assert_eq!(exec.stats().dispatches, 6);
}

#[test]
fn a_single_permit_is_shared_fairly_random() {
    shuttle::check_random(one_permit_three_callers, ITERATIONS);
}

#[test]
fn a_single_permit_is_shared_fairly_pct() {
    shuttle::check_pct(one_permit_three_callers, ITERATIONS, 3);
}

/// Two permits, four single-item callers. The first two calls hold their permits until
/// released; the last two callers start while they do, so they queue, and must then be in
/// flight *together* (each waits inside the call for the other). A freed permit left
/// unclaimed while a caller waits in line (a missed hand-on in the ticket queue) deadlocks
/// here, and shuttle reports it.
fn freed_permits_are_handed_on() {
    use shuttle::sync::{Condvar, Mutex};

    #[derive(Default)]
    struct Stage {
        early_inside: usize,
        released: bool,
        late_inside: usize,
    }
    let exec = Arc::new(executor(2));
    let stage = Arc::new((Mutex::new(Stage::default()), Condvar::new()));
    let call = |caller: usize| {
        let (exec, stage) = (exec.clone(), stage.clone());
        thread::spawn(move || {
            let batch = exec.execute_batch(vec![caller], |&caller, _| {
                let (lock, cv) = &*stage;
                let mut s = lock.lock().unwrap();
                if caller < 2 {
                    s.early_inside += 1;
                    cv.notify_all();
                    while !s.released {
                        s = cv.wait(s).unwrap();
                    }
                } else {
                    s.late_inside += 1;
                    cv.notify_all();
                    while s.late_inside < 2 {
                        s = cv.wait(s).unwrap();
                    }
                }
                Ok::<_, ItemError<()>>(caller)
            });
            assert_eq!(batch.results, vec![Ok(caller)]);
        })
    };
    let mut callers = vec![call(0), call(1)];
    let (lock, cv) = &*stage;
    let mut s = lock.lock().unwrap();
    while s.early_inside < 2 {
        s = cv.wait(s).unwrap();
    }
    drop(s);
    callers.push(call(2));
    callers.push(call(3));
    lock.lock().unwrap().released = true;
    cv.notify_all();
    for caller in callers {
        caller.join().unwrap();
    }
}

#[test]
fn freed_permits_are_handed_on_random() {
    shuttle::check_random(freed_permits_are_handed_on, ITERATIONS);
}

#[test]
fn freed_permits_are_handed_on_pct() {
    shuttle::check_pct(freed_permits_are_handed_on, ITERATIONS, 3);
}

/// Counts preparations the way the ledger allocates call indices, and notes the thread.
struct Allocator {
    next: u32,
    log: Vec<(u32, usize, u32)>,
    owner: thread::ThreadId,
}

impl Submit<usize, u32, ()> for &mut Allocator {
    fn prepare(&mut self, item: &usize, number: u32) -> Result<u32, ()> {
        assert_eq!(
            thread::current().id(),
            self.owner,
            "prepared off the caller"
        );
        let index = self.next;
        self.next += 1;
        self.log.push((index, *item, number));
        Ok(index)
    }
}

/// Two callers, three items each, two permits; item 0 and item 2 of each caller meet one
/// capacity error. Whatever the interleaving, each caller's preparations happen on its own
/// thread and allocate the same indices to the same (item, attempt): round 1 in item
/// order, then the retries of items 0 and 2, in item order.
fn capacity_retries_are_prepared_in_order() {
    let exec = Arc::new(executor(2));
    let callers: Vec<_> = (0..2)
        .map(|caller| {
            let exec = exec.clone();
            thread::spawn(move || {
                let mut alloc = Allocator {
                    next: 0,
                    log: Vec::new(),
                    owner: thread::current().id(),
                };
                let failed = [
                    AtomicUsize::new(0),
                    AtomicUsize::new(0),
                    AtomicUsize::new(0),
                ];
                let batch =
                    exec.execute_prepared(vec![0usize, 1, 2], &mut alloc, |&i, index, _| {
                        thread::yield_now();
                        if i != 1 && failed[i].fetch_add(1, Ordering::SeqCst) == 0 {
                            Err(ItemError::Capacity(()))
                        } else {
                            Ok((caller, i, index))
                        }
                    });
                let got: Vec<_> = batch.results.into_iter().map(|r| r.ok()).collect();
                assert_eq!(
                    got,
                    vec![
                        Some((caller, 0, 3)),
                        Some((caller, 1, 1)),
                        Some((caller, 2, 4))
                    ]
                );
                assert_eq!(
                    alloc.log,
                    vec![(0, 0, 1), (1, 1, 1), (2, 2, 1), (3, 0, 2), (4, 2, 2)]
                );
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
}

#[test]
fn capacity_retries_are_prepared_in_order_random() {
    shuttle::check_random(capacity_retries_are_prepared_in_order, ITERATIONS);
}

#[test]
fn capacity_retries_are_prepared_in_order_pct() {
    shuttle::check_pct(capacity_retries_are_prepared_in_order, ITERATIONS, 3);
}
