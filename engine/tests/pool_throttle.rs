//! The AIMD throttle through the executor, on a virtual clock: the delay sequence of a
//! scripted run, a burst of capacity errors, the capacity deadline, and errors that are
//! not about capacity. Time is exact and nothing sleeps for real.

use attest_engine::config::PoolOptions;
use attest_engine::pool::{
    Attempt, Clock, ItemError, PoolConfig, PoolError, PooledExecutor, VirtualClock,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn executor(clock: &Arc<VirtualClock>, f: impl FnOnce(&mut PoolOptions)) -> PooledExecutor {
    let mut options = PoolOptions::default();
    f(&mut options);
    let config = PoolConfig::try_from(&options).unwrap();
    PooledExecutor::with_clock(config, Arc::clone(clock) as Arc<dyn Clock>)
}

/// A far side that answers from a script: `c` out of capacity (HTTP 429), `s` success,
/// `x` a non-capacity failure (HTTP 400). Records when each call was dispatched.
struct Server {
    script: Mutex<VecDeque<char>>,
    dispatched: Mutex<Vec<Duration>>,
}

impl Server {
    fn new(script: &str) -> Server {
        Server {
            script: Mutex::new(script.chars().collect()),
            dispatched: Mutex::new(Vec::new()),
        }
    }

    fn call(&self, attempt: Attempt) -> Result<&'static str, ItemError<u16>> {
        self.dispatched.lock().unwrap().push(attempt.dispatched_at);
        match self.script.lock().unwrap().pop_front() {
            Some('c') => Err(ItemError::Capacity(429)),
            Some('x') => Err(ItemError::Other(400)),
            Some(_) => Ok("ok"),
            None => panic!("the script ran out"),
        }
    }

    fn dispatched_ms(&self) -> Vec<u64> {
        let d = self.dispatched.lock().unwrap();
        d.iter().map(|t| t.as_millis() as u64).collect()
    }
}

#[test]
fn scripted_run_follows_the_aimd_rule() {
    // Defaults: min 0, max 5000, ×2, step 50. One row at a time through a pool of one.
    // With calls that take no time, the gap before each dispatch is the delay in force.
    let clock = Arc::new(VirtualClock::new());
    let exec = executor(&clock, |_| {});
    let server = Server::new("cccssss" /* rows 1-4 */);
    let mut results = Vec::new();
    for row in 0..4 {
        let batch = exec.execute_batch(vec![row], |_, a| server.call(a));
        results.push(batch);
    }
    // Row 0: 429 (delay → 50), 429 (→ 100), 429 (→ 200), success (→ 150).
    // Rows 1-3: success each, spaced by 150, 100, 50; the delay ends at 0.
    assert_eq!(server.dispatched_ms(), [0, 50, 150, 350, 500, 600, 650]);
    assert_eq!(exec.stats().current_delay, ms(0));
    assert_eq!(results[0].stats.capacity_retries, 3);
    assert_eq!(results[0].stats.peak_delay, ms(200));
    // Backing off 50 + 100 + 200; the gate added nothing on top.
    assert_eq!(results[0].stats.throttled, ms(350));
    // The next rows met the delays the first row left behind.
    let per_row: Vec<_> = results[1..]
        .iter()
        .map(|b| {
            (
                b.stats.capacity_retries,
                b.stats.peak_delay,
                b.stats.throttled,
            )
        })
        .collect();
    assert_eq!(
        per_row,
        [
            (0, ms(150), ms(150)),
            (0, ms(100), ms(100)),
            (0, ms(50), ms(50))
        ]
    );

    // A capacity error after full recovery starts over at the step.
    let server = Server::new("cs");
    let batch = exec.execute_batch(vec![()], |_, a| server.call(a));
    assert_eq!(server.dispatched_ms(), [650, 700]);
    assert_eq!(batch.stats.peak_delay, ms(50));

    let stats = exec.stats();
    assert_eq!(stats.capacity_retries, 4);
    assert_eq!(stats.dispatches, 9);
    assert_eq!(stats.successes, 5);
    assert_eq!(stats.peak_delay, ms(200));
    assert_eq!(stats.throttled, ms(350 + 300 + 50));
}

#[test]
fn a_burst_of_capacity_errors_ends_with_every_item_succeeding() {
    // Twelve rows through a pool of four; the far side refuses the first 20 calls it
    // gets, whoever makes them, then accepts everything. Each call takes 50 ms.
    const REFUSED: usize = 20;
    let clock = Arc::new(VirtualClock::new());
    let exec = Arc::new(executor(&clock, |o| o.pool_size = 4));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..3)
        .map(|caller| {
            let (exec, calls, clock) = (exec.clone(), calls.clone(), clock.clone());
            std::thread::spawn(move || {
                let items: Vec<usize> = (0..4).map(|i| caller * 4 + i).collect();
                exec.execute_batch(items, |&row, _| {
                    clock.advance(ms(50));
                    if calls.fetch_add(1, Ordering::SeqCst) < REFUSED {
                        Err(ItemError::Capacity(429))
                    } else {
                        Ok(row)
                    }
                })
            })
        })
        .collect();
    let mut retries = 0;
    for (caller, h) in callers.into_iter().enumerate() {
        let batch = h.join().unwrap();
        let rows: Vec<usize> = batch.results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(rows, (0..4).map(|i| caller * 4 + i).collect::<Vec<_>>());
        retries += batch.stats.capacity_retries;
        if batch.stats.capacity_retries > 0 {
            assert!(batch.stats.peak_delay >= ms(50), "{:?}", batch.stats);
            assert!(batch.stats.throttled >= ms(50), "{:?}", batch.stats);
        }
    }
    // Every refusal was retried, and the per-batch figures add up to the executor's.
    assert_eq!(retries, REFUSED as u64);
    let stats = exec.stats();
    assert_eq!(stats.capacity_retries, REFUSED as u64);
    assert_eq!(stats.successes, 12);
    assert_eq!(stats.retry_timeouts, 0);
    assert_eq!(stats.dispatches, 12 + REFUSED as u64);
    // Twenty errors doubled the delay from 50 ms up to the 5 s ceiling at some point
    // (successes only ever take 50 ms off).
    assert!(stats.peak_delay > ms(1000), "{stats:?}");
    assert!(stats.peak_delay <= ms(5000), "{stats:?}");
}

#[test]
fn the_capacity_deadline_turns_into_retry_timeout() {
    // Always out of capacity; each call takes 100 ms; give up 1 s after the first call.
    let clock = Arc::new(VirtualClock::new());
    let exec = executor(&clock, |o| o.max_capacity_retry_seconds = 1.0);
    let attempts = AtomicUsize::new(0);
    let batch = exec.execute_batch(vec!["row"], |_, a: Attempt| {
        attempts.fetch_add(1, Ordering::SeqCst);
        assert_eq!(a.number as usize, attempts.load(Ordering::SeqCst));
        clock.advance(ms(100));
        Err::<(), _>(ItemError::Capacity(503))
    });
    // Dispatches at 0, 150, 350, 650, 1150 (each error at +100, then backing off 50, 100,
    // 200, 400); the error at 1250 is past the deadline.
    assert_eq!(
        batch.results,
        [Err(PoolError::RetryTimeout {
            last: 503,
            attempts: 5,
            elapsed: ms(1250)
        })]
    );
    assert_eq!(
        batch.results[0].as_ref().unwrap_err().reason(),
        "retry_timeout"
    );
    assert_eq!(batch.stats.capacity_retries, 4);
    assert_eq!(batch.stats.peak_delay, ms(800));
    let stats = exec.stats();
    assert_eq!(stats.retry_timeouts, 1);
    // The last capacity error still backed the throttle off, for everyone else.
    assert_eq!(stats.current_delay, ms(800));
}

#[test]
fn errors_that_are_not_about_capacity_are_returned_at_once() {
    let clock = Arc::new(VirtualClock::new());
    let exec = executor(&clock, |_| {});
    let server = Server::new("x");
    let batch = exec.execute_batch(vec![()], |_, a| server.call(a));
    assert_eq!(batch.results, [Err(PoolError::Failed(400))]);
    assert_eq!(server.dispatched_ms(), [0], "called once, not retried");
    assert_eq!(batch.stats.capacity_retries, 0);
    // Not a capacity signal: the delay is where it was.
    assert_eq!(exec.stats().current_delay, ms(0));

    // A capacity error, then a non-capacity one: the retry's failure is returned as is.
    let server = Server::new("cx");
    let batch = exec.execute_batch(vec![()], |_, a| server.call(a));
    assert_eq!(batch.results, [Err(PoolError::Failed(400))]);
    assert_eq!(server.dispatched_ms(), [0, 50]);
    assert_eq!(batch.stats.capacity_retries, 1);
}

#[test]
fn the_delay_spaces_dispatches_across_all_callers() {
    // A 100 ms floor: however many callers dispatch at once, no two calls of this executor
    // go out less than 100 ms apart (ELSPETH let each worker sleep on its own, so they
    // woke and called together).
    let clock = Arc::new(VirtualClock::new());
    let exec = Arc::new(executor(&clock, |o| {
        o.pool_size = 4;
        o.min_dispatch_delay_ms = 100;
    }));
    let server = Arc::new(Server::new(&"s".repeat(12)));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (exec, server) = (exec.clone(), server.clone());
            std::thread::spawn(move || {
                let batch = exec.execute_batch(vec![(); 3], |_, a| server.call(a));
                assert!(batch.results.iter().all(|r| r.is_ok()));
            })
        })
        .collect();
    for h in callers {
        h.join().unwrap();
    }
    let mut at = server.dispatched_ms();
    at.sort_unstable();
    assert_eq!(at.len(), 12);
    for pair in at.windows(2) {
        assert!(pair[1] - pair[0] >= 100, "dispatches too close: {at:?}");
    }
    assert!(exec.stats().throttled >= ms(100 * 11));
}
