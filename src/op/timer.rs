//! Timer waits: [`TimerWait`] on a `DeadlineTimer`, and the one-shot [`Sleep`] of
//! `LocalHandle::after` / `LocalHandle::at`.
//!
//! A timer is a source without an fd: its "readiness" comes from the loop's clock instead of the
//! kernel (see `reactor::timers`). A wait never completes early; it completes on the first turn of
//! the loop at or after its deadline.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use super::{Cx, Interest, Op, Operation};
use crate::reactor::Reactor;
use crate::reactor::registry::OwnedSource;

/// A wait on a `DeadlineTimer`: `Ok(())` at expiry, `ECANCELED` if cancelled first.
#[derive(Debug)]
pub struct TimerWait {
    /// The timer's expiry. A pending wait is cancelled whenever the expiry changes, so a wait that
    /// has started always sees the expiry it started with.
    expiry: Rc<Cell<Option<Instant>>>,
}

impl TimerWait {
    pub(crate) fn new(expiry: Rc<Cell<Option<Instant>>>) -> TimerWait {
        TimerWait { expiry }
    }
}

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

/// A one-shot timer: `LocalHandle::after` / `LocalHandle::at`. It owns its place in the loop and
/// gives it up when it completes or is dropped.
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    _source: Option<OwnedSource>,
}

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

/// A one-shot wait until `deadline` on `reactor`'s clock.
pub(crate) fn sleep_until(reactor: &Rc<Reactor>, deadline: Instant) -> Op<Sleep> {
    match OwnedSource::new_virtual(reactor) {
        Ok(source) => {
            let token = source.token();
            reactor.arm_timer(token, deadline);
            let sleep = Sleep {
                deadline,
                _source: Some(source),
            };
            Op::new(reactor, token, sleep)
        }
        Err(e) => {
            let sleep = Sleep {
                deadline,
                _source: None,
            };
            Op::failed(reactor, sleep, e)
        }
    }
}
