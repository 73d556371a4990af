//! The executor's rounds (`execute_prepared`): every preparation, capacity retries
//! included, happens on the calling thread in item order, so the order in which a state's
//! calls take their indices depends only on the items and on which of them met capacity
//! errors, never on which thread ran what or which call came back first (the replay rule
//! of `calls/mod.rs`).

use attest_engine::config::PoolOptions;
use attest_engine::pool::{
    Attempt, Clock, ItemError, PoolConfig, PoolError, PooledExecutor, Submit, VirtualClock,
};
use proptest::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An executor on the real clock whose back-off stays within a few milliseconds.
fn executor(f: impl FnOnce(&mut PoolOptions)) -> PooledExecutor {
    let mut o = PoolOptions {
        recovery_step_ms: 1,
        max_dispatch_delay_ms: 2,
        ..PoolOptions::default()
    };
    f(&mut o);
    PooledExecutor::new(PoolConfig::try_from(&o).unwrap())
}

/// An item: its name, how many capacity errors it meets before it succeeds, and how long
/// each of its calls takes (so that completions interleave).
#[derive(Clone, Debug)]
struct Item {
    name: usize,
    capacity_errors: u32,
    micros: u64,
}

/// Plays the ledger's per-state allocator: each preparation takes the next index. Logs
/// (index, item, attempt) and the thread that prepared.
struct Allocator {
    next: u32,
    log: Vec<(u32, usize, u32)>,
    threads: Vec<ThreadId>,
}

impl Submit<Item, u32, String> for &mut Allocator {
    fn prepare(&mut self, item: &Item, number: u32) -> Result<u32, String> {
        let index = self.next;
        self.next += 1;
        self.log.push((index, item.name, number));
        self.threads.push(thread::current().id());
        Ok(index)
    }
}

/// The allocation log a run must produce, worked out from the items alone: round 1 is
/// every item in order; round k+1 is, in order, the items that met a capacity error in
/// round k.
fn expected_log(items: &[Item]) -> Vec<(u32, usize, u32)> {
    let mut log = Vec::new();
    let mut index = 0;
    let mut round = 1;
    loop {
        let due: Vec<&Item> = items
            .iter()
            .filter(|i| i.capacity_errors + 1 >= round)
            .collect();
        if due.is_empty() {
            return log;
        }
        for i in due {
            log.push((index, i.name, round));
            index += 1;
        }
        round += 1;
    }
}

fn run(
    exec: &PooledExecutor,
    items: Vec<Item>,
) -> (Allocator, Vec<Result<String, PoolError<String>>>) {
    let mut alloc = Allocator {
        next: 0,
        log: Vec::new(),
        threads: Vec::new(),
    };
    let calls: Vec<AtomicU32> = (0..items.len()).map(|_| AtomicU32::new(0)).collect();
    let batch = exec.execute_prepared(items, &mut alloc, |item: &Item, index: u32, a: Attempt| {
        assert_eq!(a.index, item.name, "the attempt names its own item");
        thread::sleep(Duration::from_micros(item.micros));
        let n = calls[item.name].fetch_add(1, Ordering::SeqCst);
        if n < item.capacity_errors {
            Err(ItemError::Capacity(format!(
                "429 for {} at {index}",
                item.name
            )))
        } else {
            Ok(format!("{} answered at {index}", item.name))
        }
    });
    (alloc, batch.results)
}

#[test]
fn retries_are_prepared_on_the_calling_thread_in_item_order_whatever_finishes_first() {
    // Later items finish first; the first item fails twice, the last once.
    let exec = executor(|o| o.pool_size = 4);
    for _ in 0..20 {
        let items: Vec<Item> = (0..4)
            .map(|name| Item {
                name,
                capacity_errors: [2, 0, 0, 1][name],
                micros: 400 * (4 - name as u64),
            })
            .collect();
        let (alloc, results) = run(&exec, items.clone());
        assert_eq!(
            alloc.log,
            vec![
                (0, 0, 1),
                (1, 1, 1),
                (2, 2, 1),
                (3, 3, 1),
                // Round 2: items 0 and 3, in item order, though 3 failed first.
                (4, 0, 2),
                (5, 3, 2),
                (6, 0, 3),
            ]
        );
        assert_eq!(alloc.log, expected_log(&items));
        let me = thread::current().id();
        assert!(
            alloc.threads.iter().all(|t| *t == me),
            "prepared off the calling thread"
        );
        let got: Vec<String> = results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(
            got,
            [
                "0 answered at 6",
                "1 answered at 1",
                "2 answered at 2",
                "3 answered at 5"
            ]
        );
    }
}

/// A submitter that follows a record instead of the deadline: it retries exactly the
/// attempts listed, and gives up otherwise.
struct Recorded {
    /// (item, attempt) pairs the recorded run retried after.
    retried: Vec<(usize, u32)>,
    attempts: Vec<u32>,
}

impl Submit<usize, (), u16> for Recorded {
    fn prepare(&mut self, item: &usize, number: u32) -> Result<(), u16> {
        self.attempts[*item] = number;
        Ok(())
    }
    fn retry(&mut self, item: &usize, _: &u16, _expired: bool) -> bool {
        self.retried.contains(&(*item, self.attempts[*item]))
    }
}

#[test]
fn the_submitter_may_overrule_the_deadline_both_ways() {
    // A deadline of 1 s, calls of 600 ms, always out of capacity. By the deadline item 0
    // would give up after its second call; the record says it was retried twice more.
    // Item 1 would be retried; the record says it gave up after its first call.
    let clock = Arc::new(VirtualClock::new());
    let mut o = PoolOptions {
        pool_size: 2,
        max_capacity_retry_seconds: 1.0,
        ..PoolOptions::default()
    };
    o.recovery_step_ms = 10;
    let exec = PooledExecutor::with_clock(
        PoolConfig::try_from(&o).unwrap(),
        Arc::clone(&clock) as Arc<dyn Clock>,
    );
    let submit = Recorded {
        retried: vec![(0, 1), (0, 2), (0, 3)],
        attempts: vec![0, 0],
    };
    let batch = exec.execute_prepared(vec![0usize, 1], submit, |_, (), _| {
        clock.advance(ms(600));
        Err::<(), _>(ItemError::Capacity(429u16))
    });
    match &batch.results[..] {
        [Err(PoolError::RetryTimeout { attempts: 4, .. }), Err(PoolError::RetryTimeout { attempts: 1, .. })] =>
            {}
        other => panic!("{other:?}"),
    }
    assert_eq!(batch.stats.capacity_retries, 3);
    let stats = exec.stats();
    assert_eq!((stats.capacity_retries, stats.retry_timeouts), (3, 2));
    assert_eq!(stats.dispatches, 5);
}

#[test]
fn a_preparation_that_fails_ends_its_item_unsent() {
    struct FailSecond;
    impl Submit<usize, usize, String> for FailSecond {
        fn prepare(&mut self, item: &usize, _: u32) -> Result<usize, String> {
            if *item == 1 {
                Err("cannot record the request".into())
            } else {
                Ok(*item * 10)
            }
        }
    }
    let exec = executor(|o| o.pool_size = 3);
    let sent = Mutex::new(Vec::new());
    let batch = exec.execute_prepared(vec![0usize, 1, 2], FailSecond, |&i, p, _| {
        sent.lock().unwrap().push(i);
        Ok::<_, ItemError<String>>(p)
    });
    assert_eq!(
        batch.results,
        [
            Ok(0),
            Err(PoolError::Failed("cannot record the request".into())),
            Ok(20)
        ]
    );
    let mut sent = sent.into_inner().unwrap();
    sent.sort_unstable();
    assert_eq!(sent, [0, 2]);
    assert_eq!(exec.stats().dispatches, 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Whatever the items' capacity errors and timings, and whatever the pool size, the
    /// allocation log is the one the items alone determine: a re-execution that meets the
    /// same capacity errors allocates the same index to the same (item, attempt).
    #[test]
    fn the_allocation_order_depends_only_on_the_items(
        specs in prop::collection::vec((0u32..3, 0u64..600), 1..7),
        pool in 1u64..5,
    ) {
        let items: Vec<Item> = specs
            .iter()
            .enumerate()
            .map(|(name, &(capacity_errors, micros))| Item { name, capacity_errors, micros })
            .collect();
        let exec = executor(|o| o.pool_size = pool);
        let (first, results) = run(&exec, items.clone());
        prop_assert_eq!(&first.log, &expected_log(&items));
        // The same items with other timings (reversed): the same log.
        let mut shuffled = items.clone();
        for (i, it) in shuffled.iter_mut().enumerate() {
            it.micros = specs[specs.len() - 1 - i].1;
        }
        let (second, _) = run(&exec, shuffled);
        prop_assert_eq!(&second.log, &first.log);
        for (name, r) in results.iter().enumerate() {
            let last = first.log.iter().rev().find(|(_, n, _)| *n == name).unwrap().0;
            prop_assert_eq!(r.as_ref().unwrap(), &format!("{name} answered at {last}"));
        }
    }
}
