//! The pool's bound on work in flight: a counting semaphore that admits waiters strictly
//! in arrival order. FIFO matters because the executor's threads release a permit and ask
//! again straight away; with an unfair lock one busy batch could keep taking the permit a
//! waiting caller was woken for, and that caller would stall. With tickets, every waiter is
//! admitted after at most the waiters that arrived before it.

use super::sync::{lock, wait, Condvar, Mutex};

pub(crate) struct Permits {
    capacity: usize,
    state: Mutex<Tickets>,
    turn: Condvar,
}

struct Tickets {
    /// The ticket the next arrival takes.
    next: u64,
    /// The ticket whose turn it is.
    serving: u64,
    in_use: usize,
    peak_in_use: usize,
}

/// A held permit; dropping it gives the permit back.
pub(crate) struct Permit<'a> {
    permits: &'a Permits,
}

impl Permits {
    /// `capacity` ≥ 1 (a [`super::PoolConfig`] guarantees it).
    pub(crate) fn new(capacity: usize) -> Permits {
        Permits {
            capacity,
            state: Mutex::new(Tickets {
                next: 0,
                serving: 0,
                in_use: 0,
                peak_in_use: 0,
            }),
            turn: Condvar::new(),
        }
    }

    /// Waits for this caller's turn and a free permit.
    pub(crate) fn acquire(&self) -> Permit<'_> {
        let mut s = lock(&self.state);
        let ticket = s.next;
        s.next += 1;
        while !(s.serving == ticket && s.in_use < self.capacity) {
            s = wait(&self.turn, &self.state, s);
        }
        s.serving += 1;
        s.in_use += 1;
        s.peak_in_use = s.peak_in_use.max(s.in_use);
        drop(s);
        // The next ticket may also fit now.
        self.turn.notify_all();
        Permit { permits: self }
    }

    pub(crate) fn peak_in_use(&self) -> usize {
        lock(&self.state).peak_in_use
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = lock(&self.permits.state);
        s.in_use -= 1;
        drop(s);
        self.permits.turn.notify_all();
    }
}
