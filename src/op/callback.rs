//! Callback operations as the loop stores them: one boxed block per operation, tried in place
//! in its direction's line, then queued (or run at once by the loop) to call its handler.

use std::cell::RefMut;
use std::io;
use std::os::fd::RawFd;

use super::{Cx, Interest, Operation, RingEntry, ring, settle};
use crate::LocalHandle;
use crate::driver::Token;
use crate::service::Job;
use crate::service::run::Serving;
use crate::service::source::{Source, Waiter};

/// A callback operation as the loop stores it: in a waiter list, then in the ready queue.
pub(crate) trait ReadyOp {
    /// Tries again after an event made its direction ready, on the fd the loop looked up with that
    /// event (`None` for a virtual source); true once finished (the result is stored for `complete`).
    fn retry(&mut self, svc: &LocalHandle, fd: Option<RawFd>) -> bool;
    /// [`retry`](ReadyOp::retry) under the borrow of the table that found `source`, for an
    /// operation whose try does not use the loop; `None` (nothing tried) for one whose try does.
    fn retry_in(&mut self, source: &mut Source) -> Option<bool>;
    /// How many jobs the loop had queued when the operation started (`LocalHandle::jobs_queued`).
    fn queued_before(&self) -> u64;
    /// Serves the operation, just taken from the head of its line with `source` still borrowed:
    /// [`LocalHandle::serve_op`] for its type (one dynamic call for the try, the checks and the
    /// handler). True when others wait behind it and it did not have to wait again.
    fn serve(
        self: Box<Self>,
        svc: &LocalHandle,
        source: RefMut<'_, Source>,
        serving: Serving,
    ) -> bool;
    /// Stores `err` as the result (cancellation).
    fn cancel(&mut self, err: io::Error);
    /// Calls the handler with the stored result.
    fn complete(self: Box<Self>, svc: &LocalHandle);
    /// Whether it is done by ring requests on the io_uring backend.
    fn on_ring(&self) -> bool;
    /// The ring request for its next step (see [`Operation::prepare`]).
    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry>;
    /// The kernel's answer; true once finished (the result is stored for `complete`).
    fn on_cqe(&mut self, res: i32, cx: &mut Cx<'_>) -> bool;
}

/// A callback operation: boxed once when it starts, it stays in that block (tried in place) until
/// its handler runs.
pub(super) struct CallbackOp<O: Operation, F> {
    token: Token,
    /// Counted as work for `run_until_done` (not background).
    counted: bool,
    /// The loop's count of queued jobs when the operation started (see `ReadyOp::queued_before`).
    queued_before: u64,
    /// The operation and the handler: taken out only to run the handler, so that the block goes
    /// back to the pool without being copied.
    op: Option<O>,
    handler: Option<F>,
    /// Set once finished (or cancelled).
    result: Option<io::Result<O::Value>>,
}

impl<O: Operation, F: FnOnce(O::Output) + 'static> CallbackOp<O, F> {
    /// The operation and its handler in one block (recycled when the loop has one), counted as
    /// work unless background; `None` once the loop is shut down (the handler is dropped).
    #[inline(always)]
    pub(super) fn boxed(
        svc: &LocalHandle,
        token: Token,
        op: O,
        handler: F,
        counted: bool,
        result: Option<io::Result<O::Value>>,
    ) -> Option<Box<CallbackOp<O, F>>> {
        if svc.is_shut_down() {
            return None;
        }
        if counted {
            svc.add_work();
        }
        let op = CallbackOp {
            token,
            counted,
            queued_before: svc.jobs_queued(),
            op: Some(op),
            handler: Some(handler),
            result,
        };
        Some(crate::service::pool::boxed(
            &mut svc.inner.op_pool.borrow_mut(),
            op,
        ))
    }

    pub(super) fn start(svc: &LocalHandle, token: Token, op: O, handler: F, counted: bool) {
        let interest = op.interest();
        let needs_ready = op.needs_ready();
        let Some(boxed) = Self::boxed(svc, token, op, handler, counted, None) else {
            return;
        };
        if O::RING && svc.ring_mode() {
            ring::start_callback(svc, token, interest, boxed);
            return;
        }
        start_boxed(svc, token, interest, needs_ready, boxed);
    }
}

/// Starts a boxed callback operation on a readiness backend. One look at the source decides: the
/// operation is queued at once when its direction is known not ready (no syscall, no second
/// lookup), or tried; its handler never runs here (a finished try queues it as a job).
#[inline(always)]
fn start_boxed<T: ReadyOp + 'static>(
    svc: &LocalHandle,
    token: Token,
    interest: Interest,
    needs_ready: bool,
    mut boxed: Box<T>,
) {
    let fd = {
        let mut sources = svc.inner.sources.borrow_mut();
        let Some(source) = sources.get_mut(token) else {
            drop(sources);
            boxed.cancel(svc.gone_error());
            svc.push_job(Job::Op(boxed));
            return;
        };
        let fd = source.raw_fd();
        let dir = source.dir_mut(interest);
        if needs_ready && (!dir.ready || dir.waiters.held()) {
            dir.push_waiter(Waiter::Callback(boxed));
            drop(sources);
            svc.watch_fd(token, fd, interest);
            return;
        }
        match boxed.retry_in(source) {
            Some(true) => {
                drop(sources);
                svc.push_job(Job::Op(boxed));
                return;
            }
            Some(false) => {
                source
                    .dir_mut(interest)
                    .push_waiter(Waiter::Callback(boxed));
                drop(sources);
                svc.watch_fd(token, fd, interest);
                return;
            }
            None => fd,
        }
    };
    if boxed.retry(svc, fd) {
        svc.push_job(Job::Op(boxed));
        return;
    }
    match svc.register(token, interest, Waiter::Callback(boxed)) {
        Ok(_) => svc.watch_fd(token, fd, interest),
        Err(Waiter::Callback(mut boxed)) => {
            boxed.cancel(crate::error::closed());
            svc.push_job(Job::Op(boxed));
        }
        Err(_) => {}
    }
}

impl<O: Operation, F: FnOnce(O::Output) + 'static> ReadyOp for CallbackOp<O, F> {
    #[inline]
    fn retry(&mut self, svc: &LocalHandle, fd: Option<RawFd>) -> bool {
        let (None, Some(op)) = (&self.result, &mut self.op) else {
            return true;
        };
        let step = svc.try_on(self.token, fd, op);
        settle(&mut self.result, step)
    }

    #[inline]
    fn retry_in(&mut self, source: &mut Source) -> Option<bool> {
        if O::TRY_USES_LOOP {
            return None;
        }
        let (None, Some(op)) = (&self.result, &mut self.op) else {
            return Some(true);
        };
        let step = LocalHandle::try_in(self.token, source, op);
        Some(settle(&mut self.result, step))
    }

    fn queued_before(&self) -> u64 {
        self.queued_before
    }

    fn serve(
        self: Box<Self>,
        svc: &LocalHandle,
        source: RefMut<'_, Source>,
        serving: Serving,
    ) -> bool {
        svc.serve_op(self, source, serving)
    }

    fn cancel(&mut self, err: io::Error) {
        if self.result.is_none() {
            self.result = Some(Err(err));
        }
    }

    fn on_ring(&self) -> bool {
        O::RING
    }

    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        match (&self.result, &mut self.op) {
            (None, Some(op)) => op.prepare(fd),
            _ => None,
        }
    }

    fn on_cqe(&mut self, res: i32, cx: &mut Cx<'_>) -> bool {
        let (None, Some(op)) = (&self.result, &mut self.op) else {
            return true;
        };
        let step = op.complete(res, cx);
        settle(&mut self.result, step)
    }

    fn complete(mut self: Box<Self>, svc: &LocalHandle) {
        let (op, handler, res) = (self.op.take(), self.handler.take(), self.result.take());
        let counted = self.counted;
        // The block goes back to the loop's pool before the handler runs: the handler typically
        // starts the next operation, which takes it again.
        crate::service::pool::recycle(&mut svc.inner.op_pool.borrow_mut(), self);
        if counted {
            svc.finish_work();
        }
        if let (Some(op), Some(handler)) = (op, handler) {
            // Always set by the time the loop completes an operation; a closed error otherwise, so
            // that the handler still runs exactly once.
            handler(op.finish(res.unwrap_or_else(|| Err(crate::error::closed()))));
        }
    }
}
