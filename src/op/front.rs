//! [`Op`]: one operation, finished with `.then(handler)` or `.await`.

use std::future::Future;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::handle::OpHandle;
use super::ring::TaskCell;
use super::{Interest, Operation, attempt_under_borrow, attempt_with_loop, callback};
use crate::reactor::attempt::AtSource;
use crate::reactor::ring::{RingOp, RingStart, TaskSlot};
use crate::reactor::{Reactor, Token};

/// One asynchronous operation: finish it with [`then`](Op::then) or `.await`.
///
/// ```
/// use aio::{IoService, StreamSocket};
/// let svc = IoService::new()?;
/// let (a, b) = StreamSocket::pair(&svc)?;
/// // Callback style: the handler gets the result first, then the buffer back.
/// a.write_all(b"ping".to_vec()).then(|(res, _buf)| res.expect("write"));
/// // Future style: the same kind of value, awaited.
/// let (res, buf) = svc.block_on(b.read_exact(vec![0u8; 4]));
/// res?;
/// assert_eq!(buf, b"ping");
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "an Op does nothing until it is finished with .then(handler) or .await"]
pub struct Op<O: Operation> {
    reactor: Rc<Reactor>,
    token: Token,
    /// The operation while this future holds it: `None` once finished, and while the ring's cell
    /// holds it. Tries work on it in place. Dropped by hand (see `Drop`), as is `state`, so that
    /// dropping a finished operation, the common drop, costs one check.
    op: ManuallyDrop<Option<O>>,
    state: ManuallyDrop<State<O>>,
    background: bool,
}

enum State<O: Operation> {
    /// Not started, or woken and about to try again.
    Idle,
    /// Made by an object that could not be set up: completes with this error without trying.
    Failed(io::Error),
    /// Its waker waits on the direction under `id`, registered under the source's cancel `epoch`.
    Waiting { id: u32, epoch: u32 },
    /// On the io_uring ring, under `key`; the cell holds the operation and then its output.
    Ring { cell: Rc<TaskCell<O>>, key: u32 },
}

impl<O: Operation> Op<O> {
    pub(crate) fn new(reactor: &Rc<Reactor>, token: Token, op: O) -> Op<O> {
        Op {
            reactor: reactor.clone(),
            token,
            op: ManuallyDrop::new(Some(op)),
            state: ManuallyDrop::new(State::Idle),
            background: false,
        }
    }

    /// An operation that completes with `err` without trying (its object could not be set up).
    pub(crate) fn failed(reactor: &Rc<Reactor>, op: O, err: io::Error) -> Op<O> {
        Op {
            reactor: reactor.clone(),
            token: Token::NONE,
            op: ManuallyDrop::new(Some(op)),
            state: ManuallyDrop::new(State::Failed(err)),
            background: false,
        }
    }

    /// Marks the operation as background: when finished with [`then`](Op::then), it does not keep
    /// [`run_until_done`](crate::IoService::run_until_done) running (a signal wait, a housekeeping
    /// timer). It still completes normally if the loop keeps running.
    #[must_use = "an Op does nothing until it is finished with .then(handler) or .await"]
    pub fn background(mut self) -> Self {
        self.background = true;
        self
    }

    /// Starts the operation; `handler` runs exactly once, on the loop, with the result, after this
    /// call has returned. If the `IoService` is dropped first, the handler is dropped without running.
    ///
    /// The [`OpHandle`] returned can cancel this operation alone; dropping it does nothing.
    #[inline]
    pub fn then<F>(self, handler: F) -> OpHandle
    where
        F: FnOnce(O::Output) + 'static,
    {
        // The common case, small enough to inline: a fresh operation starts as a callback. Taken
        // apart in place (nothing of a fresh operation is left to undo, so its `Drop` has nothing
        // to do), so that what `new` just wrote is read back without being moved around first.
        let this = ManuallyDrop::new(self);
        if let (State::Idle, Some(_)) = (&*this.state, &*this.op) {
            // SAFETY: the reactor and the operation are moved out exactly once, and `this` is never
            // used or dropped again (its state, `Idle`, owns nothing); `op` was just seen `Some`.
            let (reactor, op) = unsafe {
                (
                    std::ptr::read(&this.reactor),
                    ManuallyDrop::into_inner(std::ptr::read(&this.op)).unwrap_unchecked(),
                )
            };
            let interest = op.interest();
            let id = callback::start(&reactor, this.token, op, handler, !this.background);
            return OpHandle::new(reactor, this.token, interest, id);
        }
        let (reactor, token, op, state, background) = ManuallyDrop::into_inner(this).into_parts();
        Op::then_otherwise(reactor, token, op, state, background, handler)
    }

    /// The parts of the operation, taken apart without running its `Drop` (nothing of it is left to
    /// undo: whoever takes the parts takes that on).
    fn into_parts(self) -> (Rc<Reactor>, Token, Option<O>, State<O>, bool) {
        let this = ManuallyDrop::new(self);
        // SAFETY: each field is moved out exactly once, and `this` is never used or dropped again.
        unsafe {
            (
                std::ptr::read(&this.reactor),
                this.token,
                ManuallyDrop::into_inner(std::ptr::read(&this.op)),
                ManuallyDrop::into_inner(std::ptr::read(&this.state)),
                this.background,
            )
        }
    }

    /// [`then`](Op::then) for an operation that was polled or failed before.
    #[inline(never)]
    fn then_otherwise<F>(
        reactor: Rc<Reactor>,
        token: Token,
        op: Option<O>,
        state: State<O>,
        background: bool,
        handler: F,
    ) -> OpHandle
    where
        F: FnOnce(O::Output) + 'static,
    {
        let counted = !background;
        let Some(op) = op else {
            if let State::Ring { cell, .. } = state {
                // A future already on the ring (polled, then turned into a callback): its handler
                // runs when the kernel answers.
                let interest = cell.interest();
                cell.then(&reactor, Box::new(handler), counted);
                return match interest {
                    Some(interest) => OpHandle::new(reactor, token, interest, cell.id),
                    None => OpHandle::finished(reactor),
                };
            }
            // Finished already: its output went to the poll that finished it.
            return OpHandle::finished(reactor);
        };
        let interest = op.interest();
        match state {
            State::Waiting { id, .. } => reactor.withdraw(token, interest, id),
            State::Failed(err) => {
                callback::fail(&reactor, op, handler, counted, err);
                return OpHandle::finished(reactor);
            }
            // The ring's cell holds the operation while it is `Ring`: not this case.
            State::Idle | State::Ring { .. } => {}
        }
        let id = callback::start(&reactor, token, op, handler, counted);
        OpHandle::new(reactor, token, interest, id)
    }

    /// The loop the operation belongs to.
    pub(super) fn reactor(&self) -> &Rc<Reactor> {
        &self.reactor
    }

    /// Ends a pending awaited operation with `err` (its deadline passed): at once if it waits in its
    /// direction's line; on the ring, the kernel is asked to cancel it, and its answer (that error,
    /// or the result it had already) comes through the next polls.
    pub(super) fn expire(&mut self, err: io::Error) -> Poll<O::Output> {
        match std::mem::replace(&mut *self.state, State::Idle) {
            State::Waiting { id, .. } => {
                let op = self.take_op();
                self.reactor.withdraw(self.token, op.interest(), id);
                Poll::Ready(op.finish(Err(err)))
            }
            State::Ring { cell, key } => {
                if let Some(interest) = cell.interest() {
                    self.reactor.cancel_op(self.token, interest, cell.id, err);
                }
                *self.state = State::Ring { cell, key };
                Poll::Pending
            }
            State::Failed(failed) => Poll::Ready(self.take_op().finish(Err(failed))),
            State::Idle => Poll::Ready(self.take_op().finish(Err(err))),
        }
    }

    /// The operation, to finish it: only called while this future holds it.
    fn take_op(&mut self) -> O {
        self.op.take().expect("aio::Op polled after it completed")
    }
}

impl<O: Operation> Future for Op<O> {
    type Output = O::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O::Output> {
        let this = self.get_mut();
        match std::mem::replace(&mut *this.state, State::Idle) {
            State::Idle => this.poll_try(None, cx),
            State::Waiting { id, epoch } => this.poll_try(Some((id, epoch)), cx),
            State::Failed(err) => Poll::Ready(this.take_op().finish(Err(err))),
            State::Ring { cell, key } => match cell.poll_output(cx.waker()) {
                Some(out) => Poll::Ready(out),
                None => {
                    *this.state = State::Ring { cell, key };
                    Poll::Pending
                }
            },
        }
    }
}

impl<O: Operation> Op<O> {
    /// A poll that may try the operation: the first (`waiting` is `None`), or one after its waker
    /// was queued (its id and cancel epoch).
    #[inline(always)]
    fn poll_try(&mut self, waiting: Option<(u32, u32)>, cx: &mut Context<'_>) -> Poll<O::Output> {
        let Some(op) = self.op.as_mut() else {
            panic!("aio::Op polled after it completed")
        };
        let interest = op.interest();
        let on_ring = O::RING && self.reactor.ring_mode();
        if on_ring && waiting.is_none() {
            return self.start_on_ring(cx);
        }
        // On the ring, an operation's turn is all it waits for: the kernel waits for readiness.
        let needs_ready = op.needs_ready() && !on_ring;
        // A read or write is tried inside the look, under one borrow of the table.
        let attempt = (!O::TRY_USES_LOOP && !on_ring)
            .then_some(|source: &mut _| attempt_under_borrow(source, &mut *op));
        let fd = match self.reactor.poll_at_source(
            self.token,
            interest,
            needs_ready,
            waiting,
            cx.waker(),
            attempt,
        ) {
            AtSource::Try(fd) => fd,
            AtSource::Done(res) => return Poll::Ready(self.take_op().finish(res)),
            AtSource::Wait(id, epoch) => {
                *self.state = State::Waiting { id, epoch };
                return Poll::Pending;
            }
            AtSource::Fail(err) => return Poll::Ready(self.take_op().finish(Err(err))),
        };
        if on_ring {
            // Its turn on the ring came (it waited behind another request of its direction).
            return self.start_on_ring(cx);
        }
        let Some(op) = self.op.as_mut() else {
            panic!("aio::Op polled after it completed")
        };
        match attempt_with_loop(&self.reactor, self.token, fd, op) {
            Poll::Ready(res) => Poll::Ready(self.take_op().finish(res)),
            Poll::Pending => self.wait_on(interest, fd, cx),
        }
    }

    /// Queues this future's waker on its direction, behind the others (its try said `EAGAIN`, or
    /// its turn on the ring is still to come), and has `fd` watched when it is given; finishes the
    /// operation with a closed error if the source is gone.
    fn wait_on(
        &mut self,
        interest: Interest,
        fd: Option<RawFd>,
        cx: &mut Context<'_>,
    ) -> Poll<O::Output> {
        match self.reactor.wait_in_line(self.token, interest, cx.waker()) {
            Some((id, epoch)) => {
                self.reactor.watch_fd(self.token, fd, interest);
                *self.state = State::Waiting { id, epoch };
                Poll::Pending
            }
            None => Poll::Ready(self.take_op().finish(Err(crate::error::closed()))),
        }
    }

    /// Puts an awaited operation on the io_uring ring, or in line behind its direction's request.
    fn start_on_ring(&mut self, cx: &mut Context<'_>) -> Poll<O::Output> {
        let op = self.take_op();
        let interest = op.interest();
        let cell = TaskCell::new(op, self.reactor.next_op_id());
        let slot: Rc<dyn TaskSlot> = cell.clone();
        let (slot, closed) = match self
            .reactor
            .ring_start(self.token, interest, RingOp::Task(slot))
        {
            RingStart::Started(key) => {
                // Nothing can have finished yet: this only records the waker.
                let _ = cell.poll_output(cx.waker());
                *self.state = State::Ring { cell, key };
                return Poll::Pending;
            }
            RingStart::Busy(slot) => (slot, false),
            RingStart::Gone(slot) => (slot, true),
        };
        drop(slot);
        let Some(op) = cell.take_op() else {
            // Unreachable: only the ring takes the operation out, and it never got it.
            return Poll::Pending;
        };
        if closed {
            return Poll::Ready(op.finish(Err(self.reactor.gone_error())));
        }
        // Its turn comes when the direction's request finishes: no readiness to watch.
        *self.op = Some(op);
        self.wait_on(interest, None, cx)
    }
}

impl<O: Operation> Drop for Op<O> {
    #[inline(always)]
    fn drop(&mut self) {
        // A finished operation (the common drop, right after its result came) holds nothing and has
        // nothing to undo: one check, inlined where the future is dropped.
        if self.op.is_some() || !matches!(*self.state, State::Idle) {
            self.drop_unfinished();
        }
    }
}

impl<O: Operation> Op<O> {
    /// Takes an unfinished operation's waiter out of its line, or asks the kernel to cancel its
    /// request on the ring (the operation stays in the loop's table until the kernel lets go), then
    /// drops what it holds. Only from `drop`.
    #[cold]
    #[inline(never)]
    fn drop_unfinished(&mut self) {
        match &*self.state {
            State::Waiting { id, .. } => {
                if let Some(op) = &*self.op {
                    self.reactor.withdraw(self.token, op.interest(), *id);
                }
            }
            State::Ring { cell, key } if cell.in_flight() => {
                cell.abandon();
                self.reactor.ring_cancel(*key);
            }
            _ => {}
        }
        // SAFETY: called once, from `drop`: neither field is used again.
        unsafe {
            ManuallyDrop::drop(&mut self.op);
            ManuallyDrop::drop(&mut self.state);
        }
    }
}

impl<O: Operation> std::fmt::Debug for Op<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match (&*self.state, &*self.op) {
            (State::Waiting { .. } | State::Ring { .. }, _) => "waiting",
            (_, Some(_)) => "not started",
            (_, None) => "done",
        };
        f.debug_struct("Op")
            .field("operation", &std::any::type_name::<O>())
            .field("state", &state)
            .finish()
    }
}
