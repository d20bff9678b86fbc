//! Callback operations: what `.then(handler)` writes into its block (see `reactor::block`).
//!
//! The operation and its handler live in one pool block from the start until the handler runs; the
//! reactor tries the operation in place (under the lookup that found its source, for a read or a
//! write), and its handler runs from the loop: right where the loop finds it finished when nothing
//! queued before it is still waiting, otherwise from the ready queue.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use super::{Cx, Operation, RingEntry, attempt_on, attempt_with_loop, keep_outcome};
use crate::reactor::block::{Attempt, Job, TypedBlock, Waiting};
use crate::reactor::{Reactor, Token};

/// A callback operation in its block.
pub(super) struct CallbackOp<O: Operation, F> {
    op: O,
    handler: F,
    /// Set once finished (or cancelled).
    result: Option<io::Result<O::Value>>,
}

/// Starts `op` with `handler`: one block for both (recycled when the loop has one), counted as work
/// unless background; returns the operation's number (for its handle). Once the loop is shut down
/// the handler is dropped unrun.
#[inline(always)]
pub(super) fn start<O, F>(reactor: &Reactor, token: Token, op: O, handler: F, counted: bool) -> u32
where
    O: Operation,
    F: FnOnce(O::Output) + 'static,
{
    let interest = op.interest();
    let needs_ready = op.needs_ready();
    let id = reactor.next_op_id();
    let Some(block) = block(reactor, op, handler, counted, None, id) else {
        return id;
    };
    if O::RING && reactor.ring_mode() {
        reactor.ring_start_callback(token, interest, block.into_op());
        return id;
    }
    reactor.start_op(token, interest, needs_ready, block);
    id
}

/// Completes `op` with `err` without trying it (its object could not be set up): its handler is
/// queued.
pub(super) fn fail<O, F>(reactor: &Reactor, op: O, handler: F, counted: bool, err: io::Error)
where
    O: Operation,
    F: FnOnce(O::Output) + 'static,
{
    if let Some(block) = block(reactor, op, handler, counted, Some(Err(err)), 0) {
        reactor.push_job(block.into_job());
    }
}

/// The block of a callback operation, counted as work unless background; `None` once the loop is
/// shut down (the handler is dropped unrun).
#[inline(always)]
fn block<O, F>(
    reactor: &Reactor,
    op: O,
    handler: F,
    counted: bool,
    result: Option<io::Result<O::Value>>,
    id: u32,
) -> Option<TypedBlock<CallbackOp<O, F>>>
where
    O: Operation,
    F: FnOnce(O::Output) + 'static,
{
    if reactor.is_shut_down() {
        return None;
    }
    if counted {
        reactor.add_work();
    }
    let body = CallbackOp {
        op,
        handler,
        result,
    };
    Some(reactor.alloc_op(body, reactor.seq(), counted, id))
}

impl<O: Operation, F: FnOnce(O::Output) + 'static> Job for CallbackOp<O, F> {
    #[inline(always)]
    fn run(self, _reactor: &Reactor) -> bool {
        // Always set by the time the loop runs an operation's handler; a closed error otherwise, so
        // that the handler still runs exactly once.
        let res = self.result.unwrap_or_else(|| Err(crate::error::closed()));
        (self.handler)(self.op.finish(res));
        true
    }
}

impl<O: Operation, F: FnOnce(O::Output) + 'static> Waiting for CallbackOp<O, F> {
    const TRIES_UNDER_TABLE: bool = !O::TRY_USES_LOOP;
    const RING: bool = O::RING;

    #[inline]
    fn retry(&mut self, reactor: &Reactor, token: Token, fd: Option<RawFd>) -> bool {
        if self.result.is_some() {
            return true;
        }
        let step = attempt_with_loop(reactor, token, fd, &mut self.op);
        keep_outcome(&mut self.result, step)
    }

    #[inline(always)]
    fn retry_under_borrow(&mut self, fd: Option<BorrowedFd<'_>>) -> (bool, Attempt) {
        if self.result.is_some() {
            return (true, Attempt::default());
        }
        let (step, attempt) = attempt_on(fd, &mut self.op);
        (keep_outcome(&mut self.result, step), attempt)
    }

    fn cancel(&mut self, err: io::Error) {
        if self.result.is_none() {
            self.result = Some(Err(err));
        }
    }

    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        match self.result {
            None => self.op.prepare(fd),
            Some(_) => None,
        }
    }

    fn on_cqe(&mut self, res: i32) -> (bool, Option<Duration>) {
        if self.result.is_some() {
            return (true, None);
        }
        let mut cx = Cx::for_completion();
        let step = self.op.complete(res, &mut cx);
        (keep_outcome(&mut self.result, step), cx.retry_after)
    }
}
