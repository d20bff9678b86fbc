//! Timers on the monotonic clock: [`DeadlineTimer`] (booster's and Asio's `deadline_timer`) and the
//! one-shot [`LocalHandle::after`] / [`LocalHandle::at`].
//!
//! A timer is a source without an fd: its "readiness" comes from the loop's clock instead of the
//! kernel. Pending deadlines sit in a binary heap; cancelling or re-arming leaves the old heap entry
//! behind (O(1)), and the heap is compacted once stale entries outnumber live ones, so millions of
//! timers cost memory in proportion to what is pending. Deadlines are `Instant`s: a change of the wall
//! clock moves nothing. A wait never completes early; it completes on the first turn of the loop at or
//! after its deadline (the wait is rounded up to the next millisecond by the kernel).

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::LocalHandle;
use crate::driver::Token;
use crate::op::{Cx, Interest, Op, Operation, sealed};
use crate::service::source::FdSlot;

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
            token: svc.add_source(FdSlot::Virtual)?,
            expiry: Rc::new(Cell::new(None)),
        })
    }

    /// Sets the expiry to `deadline`; pending waits complete with `ECANCELED` (booster's and Asio's
    /// `expires_at`).
    pub fn expires_at(&self, deadline: Instant) {
        self.svc.cancel_source(self.token);
        self.expiry.set(Some(deadline));
        self.svc.arm_timer(self.token, deadline);
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
            &self.svc,
            self.token,
            TimerWait {
                expiry: self.expiry.clone(),
            },
        )
    }

    /// Completes pending waits with `ECANCELED` and clears the expiry.
    pub fn cancel(&self) {
        self.svc.cancel_source(self.token);
        self.expiry.set(None);
        self.svc.disarm_timer(self.token);
    }

    /// The loop this timer belongs to.
    pub fn service(&self) -> &LocalHandle {
        &self.svc
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        drop(self.svc.remove_source(self.token));
    }
}

impl std::fmt::Debug for DeadlineTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineTimer")
            .field("expiry", &self.expiry.get())
            .finish()
    }
}

/// A wait on a [`DeadlineTimer`]: `Ok(())` at expiry, `ECANCELED` if cancelled first.
#[derive(Debug)]
pub struct TimerWait {
    /// The timer's expiry. A pending wait is cancelled whenever the expiry changes, so a wait that
    /// has started always sees the expiry it started with.
    expiry: Rc<Cell<Option<Instant>>>,
}

impl sealed::Sealed for TimerWait {}

impl Operation for TimerWait {
    type Output = io::Result<()>;
    type Value = ();

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        match self.expiry.get() {
            Some(deadline) if Instant::now() >= deadline => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}

/// A one-shot timer: [`LocalHandle::after`] / [`LocalHandle::at`]. It owns its place in the loop and
/// gives it up when it completes or is dropped.
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    _owner: SleepSource,
}

#[derive(Debug)]
struct SleepSource {
    svc: Option<LocalHandle>,
    token: Token,
}

impl Drop for SleepSource {
    fn drop(&mut self) {
        if let Some(svc) = self.svc.take() {
            drop(svc.remove_source(self.token));
        }
    }
}

impl sealed::Sealed for Sleep {}

impl Operation for Sleep {
    type Output = io::Result<()>;
    type Value = ();

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        if Instant::now() >= self.deadline {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}

impl LocalHandle {
    /// A one-shot wait of `delay`: `Ok(())` once it has passed (never earlier).
    ///
    /// ```
    /// use std::time::Duration;
    /// let svc = aio::IoService::new()?;
    /// let handle = svc.local();
    /// svc.after(Duration::from_millis(5)).then(move |res| {
    ///     res.expect("timer");
    ///     handle.stop();
    /// });
    /// svc.run()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn after(&self, delay: Duration) -> Op<Sleep> {
        self.at(Instant::now() + delay)
    }

    /// A one-shot wait until `deadline`: `Ok(())` once it has passed (never earlier).
    pub fn at(&self, deadline: Instant) -> Op<Sleep> {
        match self.add_source(FdSlot::Virtual) {
            Ok(token) => {
                self.arm_timer(token, deadline);
                let owner = SleepSource {
                    svc: Some(self.clone()),
                    token,
                };
                Op::new(
                    self,
                    token,
                    Sleep {
                        deadline,
                        _owner: owner,
                    },
                )
            }
            Err(e) => {
                let owner = SleepSource {
                    svc: None,
                    token: Token::NONE,
                };
                Op::failed(
                    self,
                    Sleep {
                        deadline,
                        _owner: owner,
                    },
                    e,
                )
            }
        }
    }
}
