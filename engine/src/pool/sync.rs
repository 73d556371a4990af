//! The threads, locks and atomics the pool is built from, in one place so that the
//! model-checking tests (feature `shuttle`) can swap in shuttle's controlled versions and
//! explore their interleavings. Everything else in the pool imports from here, never from
//! `std::sync` or `std::thread` directly.

#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(feature = "shuttle"))]
pub(crate) use std::thread::{scope, Scope, ScopedJoinHandle};

#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::{Mutex, MutexGuard};
#[cfg(feature = "shuttle")]
pub(crate) use shuttle::thread::{scope, Scope, ScopedJoinHandle};

/// Locks, ignoring poisoning: every critical section in the pool only updates plain
/// counters and cannot leave them half-changed, and item panics are caught before they
/// could unwind through a lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on `cv`, ignoring poisoning for the reason given at [`lock`]. `mutex` is the one
/// `guard` locks (the shuttle version needs it to lock again).
#[cfg(not(feature = "shuttle"))]
pub(crate) fn wait<'a, T>(
    cv: &Condvar,
    _mutex: &'a Mutex<T>,
    guard: MutexGuard<'a, T>,
) -> MutexGuard<'a, T> {
    cv.wait(guard)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(feature = "shuttle")]
pub(crate) use model::{wait, Condvar};

/// Under shuttle, a condition variable made of park/unpark.
///
/// shuttle 0.9's scoped threads wake the scope's owner when its last scoped thread ends,
/// even if the owner is blocked elsewhere, and its `Condvar` treats such a wake-up as
/// impossible and panics. The executor's calling thread does wait for permits while its
/// helpers run, so it meets that case. Parking may wake spuriously by definition, and the
/// pool already re-checks its condition after every wake-up, so this version stays faithful
/// where it matters: a notification sent before the waiter parks is not lost (the unpark
/// token is kept), and one never sent leaves the waiter blocked, which shuttle reports.
#[cfg(feature = "shuttle")]
mod model {
    use super::{lock, Mutex, MutexGuard};
    use shuttle::thread::{self, Thread};

    pub(crate) struct Condvar {
        waiters: std::sync::Mutex<Vec<Thread>>,
    }

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar {
                waiters: std::sync::Mutex::new(Vec::new()),
            }
        }

        pub(crate) fn notify_all(&self) {
            let waiters = std::mem::take(
                &mut *self
                    .waiters
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            for waiter in waiters {
                waiter.unpark();
            }
        }
    }

    pub(crate) fn wait<'a, T>(
        cv: &Condvar,
        mutex: &'a Mutex<T>,
        guard: MutexGuard<'a, T>,
    ) -> MutexGuard<'a, T> {
        cv.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(thread::current());
        drop(guard);
        thread::park();
        lock(mutex)
    }
}

/// Starts a helper thread in `scope`, or returns `None` when the system refuses one (the
/// caller then does the work itself, more slowly, instead of panicking).
#[cfg(not(feature = "shuttle"))]
pub(crate) fn spawn_helper<'scope, 'env, T, F>(
    scope: &'scope Scope<'scope, 'env>,
    f: F,
) -> Option<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    std::thread::Builder::new()
        .name("attest-pool".into())
        .spawn_scoped(scope, f)
        .ok()
}

#[cfg(feature = "shuttle")]
pub(crate) fn spawn_helper<'scope, 'env, T, F>(
    scope: &'scope Scope<'scope, 'env>,
    f: F,
) -> Option<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    Some(scope.spawn(f))
}
