//! Cancelling one operation, not its whole object: by its handle (`op::OpHandle`) or when its
//! deadline passes (`op::TimedOp`).
//!
//! An operation is named by its number (see `Reactor::next_op_id`), and found where it waits: in
//! its direction's line (a callback operation's block), or on the io_uring ring (in the table of
//! operations in flight, as a callback's block or an awaited operation's cell). Found
//! in a line, it is taken out and completes with the error at once. On the ring, the kernel is asked
//! to cancel it and still decides: if it had finished the operation already, that result stands
//! (exactly one outcome, and a buffer the kernel filled is never reported empty). Not found, it has
//! finished already, and nothing happens.

use std::io;
use std::time::Instant;

use super::source::Waiter;
use super::timers::Due;
use super::{Reactor, Token};
use crate::driver::Interest;

impl Reactor {
    /// Cancels the operation numbered `id` on `token`'s `interest` direction with `err`: true if it
    /// was still pending (on the ring: if the kernel was asked to cancel it).
    pub(crate) fn cancel_op(
        &self,
        token: Token,
        interest: Interest,
        id: u32,
        err: io::Error,
    ) -> bool {
        let key = {
            let mut sources = self.sources.borrow_mut();
            let Some(source) = sources.get_mut(token) else {
                return false;
            };
            let line = &mut source.dir_mut(interest).line;
            let queued = line.position(|w| matches!(w, Waiter::Callback(op) if op.id() == id));
            if let Some(waiter) = queued.and_then(|pos| line.remove(pos)) {
                if self.level_triggered {
                    self.sync_watch(source, token, interest);
                }
                drop(sources);
                self.cancel_waiter_with(waiter, err);
                return true;
            }
            match source.dir(interest).inflight() {
                Some(key) => key,
                None => return false,
            }
        };
        {
            let mut inflight = self.inflight.borrow_mut();
            match inflight.get_mut(key as usize) {
                Some(entry) if entry.is(id) && entry.cancelled_with.is_none() => {
                    entry.cancelled_with = Some(err);
                }
                _ => return false,
            }
        }
        self.ring_cancel(key);
        true
    }

    /// Whether the operation numbered `id` still waits on `token`'s `interest` direction.
    pub(crate) fn op_pending(&self, token: Token, interest: Interest, id: u32) -> bool {
        let sources = self.sources.borrow();
        let Some(source) = sources.get(token) else {
            return false;
        };
        let dir = source.dir(interest);
        if dir
            .line
            .position(|w| matches!(w, Waiter::Callback(op) if op.id() == id))
            .is_some()
        {
            return true;
        }
        dir.inflight().is_some_and(|key| {
            self.inflight
                .borrow()
                .get(key as usize)
                .is_some_and(|entry| entry.is(id))
        })
    }

    /// Cancels the operation numbered `id` on `token`'s `interest` direction with
    /// `TimedOut` at `deadline`, if it is still pending then.
    pub(crate) fn set_deadline(
        &self,
        token: Token,
        interest: Interest,
        id: u32,
        deadline: Instant,
    ) {
        self.push_timer(deadline, token, Due::Deadline(interest, id));
    }

    /// A deadline came due (see [`set_deadline`](Reactor::set_deadline)).
    pub(crate) fn deadline_passed(&self, token: Token, interest: Interest, id: u32) {
        self.cancel_op(token, interest, id, crate::error::timed_out());
    }
}
