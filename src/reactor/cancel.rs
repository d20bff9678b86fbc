//! Cancelling one operation, not its whole object: by its handle (`op::OpHandle`) or when its
//! deadline passes (`op::TimedOp`).
//!
//! An operation is found where it waits: in its direction's line (a callback operation's block,
//! recognised by its number), or on the io_uring ring (in the table of operations in flight). Found
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

/// Which operation of a direction to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A callback operation's block, by its number (see `Reactor::next_op_id`).
    Block(u32),
    /// An awaited operation on the ring that was turned into a callback, by its cell's address
    /// (compared only with cells in the table, which keeps them alive).
    Cell(*const ()),
}

impl Reactor {
    /// Cancels the operation `target` of `token`'s `interest` direction with `err`: true if it was
    /// still pending (on the ring: if the kernel was asked to cancel it).
    pub(crate) fn cancel_op(
        &self,
        token: Token,
        interest: Interest,
        target: Target,
        err: io::Error,
    ) -> bool {
        let key = {
            let mut sources = self.sources.borrow_mut();
            let Some(source) = sources.get_mut(token) else {
                return false;
            };
            let line = &mut source.dir_mut(interest).line;
            let queued = match target {
                Target::Block(id) => {
                    line.position(|w| matches!(w, Waiter::Callback(op) if op.id() == id))
                }
                Target::Cell(_) => None,
            };
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
                Some(entry) if entry.is(&target) && entry.cancelled_with.is_none() => {
                    entry.cancelled_with = Some(err);
                }
                _ => return false,
            }
        }
        self.ring_cancel(key);
        true
    }

    /// Whether the callback operation numbered `id` still waits on `token`'s `interest` direction.
    pub(crate) fn op_pending(&self, token: Token, interest: Interest, id: u32) -> bool {
        let target = Target::Block(id);
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
                .is_some_and(|entry| entry.is(&target))
        })
    }

    /// Cancels the callback operation numbered `id` on `token`'s `interest` direction with
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
        self.cancel_op(
            token,
            interest,
            Target::Block(id),
            crate::error::timed_out(),
        );
    }
}
