//! Timers on the monotonic clock: [`DeadlineTimer`] (booster's and Asio's `deadline_timer`) and the
//! one-shot [`LocalHandle::after`] / [`LocalHandle::at`] ([`Sleep`]).
//!
//! A timer is a source without an fd: its "readiness" comes from the loop's clock instead of the
//! kernel. Pending deadlines sit in a binary heap; cancelling or re-arming leaves the old heap entry
//! behind (O(1)), and the heap is compacted once stale entries outnumber live ones, so millions of
//! timers cost memory in proportion to what is pending. Deadlines are `Instant`s: a change of the wall
//! clock moves nothing. A wait never completes early; it completes on the first turn of the loop at or
//! after its deadline (the wait is rounded up to the next millisecond by the kernel).

mod timeout;

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::LocalHandle;
use crate::op::Op;
pub use crate::op::{Sleep, TimerWait};
use crate::reactor::{FdSlot, Token};
pub use timeout::{Elapsed, Timeout, timeout, timeout_at};

/// A re-armable timer bound to a loop.
///
/// Setting a new expiry cancels waits pending on the old one (they complete with `ECANCELED`), as in
/// Asio. A wait on a timer whose expiry has passed completes on the next turn of the loop.
///
/// ```
/// use std::time::{Duration, Instant};
/// use aio::{DeadlineTimer, IoService};
/// let svc = IoService::new()?;
/// let timer = DeadlineTimer::new(&svc)?;
/// let start = Instant::now();
/// timer.expires_after(Duration::from_millis(20));
/// svc.block_on(timer.wait())?;
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct DeadlineTimer {
    svc: LocalHandle,
    token: Token,
    /// Shared with its waits, which read it when they start (a wait made before `expires_at` waits
    /// for the expiry set when it starts, not a stale one).
    expiry: Rc<Cell<Option<Instant>>>,
}

impl DeadlineTimer {
    /// A timer with no expiry set: a wait on it stays pending until an expiry is set or it is
    /// cancelled.
    ///
    /// # Errors
    /// `BrokenPipe` if the `IoService` has been dropped.
    pub fn new(svc: &LocalHandle) -> io::Result<DeadlineTimer> {
        Ok(DeadlineTimer {
            svc: svc.clone(),
            token: svc.reactor().add_source(FdSlot::Virtual)?,
            expiry: Rc::new(Cell::new(None)),
        })
    }

    /// Sets the expiry to `deadline`; pending waits complete with `ECANCELED` (booster's and Asio's
    /// `expires_at`).
    pub fn expires_at(&self, deadline: Instant) {
        let reactor = self.svc.reactor();
        reactor.cancel_source(self.token);
        self.expiry.set(Some(deadline));
        reactor.arm_timer(self.token, deadline);
    }

    /// Sets the expiry to `delay` from now (Asio's `expires_after`, booster's `expires_from_now`).
    pub fn expires_after(&self, delay: Duration) {
        self.expires_at(Instant::now() + delay);
    }

    /// The expiry set last, if any.
    pub fn expiry(&self) -> Option<Instant> {
        self.expiry.get()
    }

    /// Completes with `Ok(())` once the expiry has passed, or `ECANCELED` if the timer is cancelled,
    /// re-armed or dropped first.
    pub fn wait(&self) -> Op<TimerWait> {
        Op::new(
            self.svc.reactor(),
            self.token,
            TimerWait::new(self.expiry.clone()),
        )
    }

    /// Completes pending waits with `ECANCELED` and clears the expiry.
    pub fn cancel(&self) {
        let reactor = self.svc.reactor();
        reactor.cancel_source(self.token);
        self.expiry.set(None);
        reactor.disarm_timer(self.token);
    }

    /// The loop this timer belongs to.
    pub fn service(&self) -> &LocalHandle {
        &self.svc
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        drop(self.svc.reactor().remove_source(self.token));
    }
}

impl std::fmt::Debug for DeadlineTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineTimer")
            .field("expiry", &self.expiry.get())
            .finish()
    }
}
