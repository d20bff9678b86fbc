//! Operations and the [`Op`] type.
//!
//! Every asynchronous operation of `aio` (a read, a write, an accept, a connect, a readiness wait) is
//! one value, `Op<O>`, that does nothing until it is finished in one of two ways:
//!
//! - `.then(handler)` starts it and calls `handler` exactly once, on the loop, with the result first
//!   (booster's completion handler, without the lifetime rules: the `Op` owns its buffer and the
//!   handler owns whatever it captures, so a session lives exactly as long as it has an operation
//!   pending);
//! - `.await` drives it as a future inside [`spawn`](crate::LocalHandle::spawn) or
//!   [`block_on`](crate::LocalHandle::block_on).
//!
//! The handler never runs inside `then` itself, even when the result is known at once. Dropping an
//! unfinished future cancels the operation.
//!
//! On a readiness backend an operation first tries its syscall (unless the last one on that direction
//! said `EAGAIN` and no event has come since), and waits only when the kernel says `EAGAIN`.

mod accept;
mod connect;
mod datagram;
mod dial_any;
mod fd_passing;
mod read;
mod ready;
pub(crate) mod ring;
mod write;

pub use accept::Accept;
pub use connect::{Connect, Dial};
pub use datagram::{RecvDatagram, RecvMeta, SendDatagram};
pub use dial_any::DialAny;
pub use fd_passing::{MAX_FDS_PER_MESSAGE, ReceivedFds, RecvFds, SendFds};
pub use read::{ReadExact, ReadSome, ReadVectored};
pub use ready::Ready;
pub use write::{WriteAll, WriteSome, WriteVectored};

use std::future::Future;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::LocalHandle;
use crate::driver::Token;
pub use crate::driver::uring::RingEntry;
use crate::service::Job;
use crate::service::source::Waiter;

/// A direction of readiness an operation waits for.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interest {
    Read = 0,
    Write = 1,
}

/// What one try of an operation came to.
#[doc(hidden)]
pub enum Step<O: Operation> {
    /// Finished, with its output.
    Done(O::Output),
    /// The kernel said `EAGAIN`: wait for the direction to become ready, then try again.
    Wait(O),
}

/// What an operation's try may use and report.
#[doc(hidden)]
pub struct Cx<'a> {
    fd: Option<BorrowedFd<'a>>,
    svc: &'a LocalHandle,
    token: Token,
    drained: bool,
    retry_after: Option<Duration>,
}

impl<'a> Cx<'a> {
    /// The fd of an I/O operation's source. Only operations made by fd-backed objects call this, and
    /// those objects' tokens always name fd sources.
    pub(crate) fn fd(&self) -> BorrowedFd<'a> {
        self.fd
            .expect("an fd operation on a source without an fd (a timer or completion)")
    }
    pub(crate) fn svc(&self) -> &'a LocalHandle {
        self.svc
    }
    /// The syscall showed the direction is now empty (a short read): the next operation waits for an
    /// event instead of trying first.
    pub(crate) fn mark_drained(&mut self) {
        self.drained = true;
    }
    /// Do not try again before `delay` has passed, even if no event comes (back-off after `EMFILE`).
    pub(crate) fn retry_after(&mut self, delay: Duration) {
        self.drained = true;
        self.retry_after = Some(delay);
    }
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// The operations [`Op`] can carry: implemented by the types in this module only.
pub trait Operation: sealed::Sealed + Unpin + Sized + 'static {
    /// What the operation completes with; buffers come back inside it.
    type Output;
    #[doc(hidden)]
    fn interest(&self) -> Interest;
    /// Whether a try must wait until the direction is ready (false for a first step, such as the
    /// `connect` call itself, that needs no readiness).
    #[doc(hidden)]
    fn needs_ready(&self) -> bool {
        true
    }
    #[doc(hidden)]
    fn attempt(self, cx: &mut Cx<'_>) -> Step<Self>;
    #[doc(hidden)]
    fn fail(self, err: io::Error) -> Self::Output;
    /// Whether, on the io_uring backend, the operation is done by ring requests ([`prepare`] and
    /// [`complete`]) instead of readiness and [`attempt`].
    ///
    /// [`prepare`]: Operation::prepare
    /// [`complete`]: Operation::complete
    /// [`attempt`]: Operation::attempt
    #[doc(hidden)]
    const RING: bool = false;
    /// The ring request for the next step on `fd`. The memory it points to must live inside the
    /// operation, on the heap (owned buffers, boxed addresses): the operation may move, but is not
    /// dropped, while the request is in flight.
    #[doc(hidden)]
    fn prepare(&mut self, _fd: RawFd) -> Option<RingEntry> {
        None
    }
    /// The kernel's answer to the request made by [`prepare`](Operation::prepare) (`res`: a count
    /// or a negative errno). `Wait` asks for another request (the rest of a `write_all`).
    #[doc(hidden)]
    fn complete(self, res: i32, _cx: &mut Cx<'_>) -> Step<Self> {
        Step::Done(self.fail(io::Error::other(format!(
            "io_uring completion ({res}) for an operation that makes no ring requests"
        ))))
    }
}

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
    svc: LocalHandle,
    token: Token,
    state: State<O>,
    background: bool,
}

enum State<O: Operation> {
    Start(O),
    Failed(O, io::Error),
    Waiting {
        op: O,
        id: u64,
        epoch: u32,
    },
    /// On the io_uring ring, under `key`; the cell holds the operation and then its output.
    Ring {
        cell: Rc<ring::TaskCell<O>>,
        key: u32,
    },
    Done,
}

impl<O: Operation> Op<O> {
    pub(crate) fn new(svc: &LocalHandle, token: Token, op: O) -> Op<O> {
        Op {
            svc: svc.clone(),
            token,
            state: State::Start(op),
            background: false,
        }
    }

    /// An operation that completes with `err` without trying (its object could not be set up).
    pub(crate) fn failed(svc: &LocalHandle, op: O, err: io::Error) -> Op<O> {
        Op {
            svc: svc.clone(),
            token: Token::NONE,
            state: State::Failed(op, err),
            background: false,
        }
    }

    /// Marks the operation as background: when finished with [`then`](Op::then), it does not keep
    /// [`run_until_done`](crate::IoService::run_until_done) running (a signal wait, a housekeeping
    /// timer). It still completes normally if the loop keeps running.
    pub fn background(mut self) -> Self {
        self.background = true;
        self
    }

    /// Starts the operation; `handler` runs exactly once, on the loop, with the result, after this
    /// call has returned. If the `IoService` is dropped first, the handler is dropped without running.
    pub fn then<F>(mut self, handler: F)
    where
        F: FnOnce(O::Output) + 'static,
    {
        let op = match std::mem::replace(&mut self.state, State::Done) {
            State::Start(op) => op,
            State::Waiting { op, id, .. } => {
                self.svc.withdraw(self.token, op.interest(), id);
                op
            }
            State::Failed(op, err) => {
                if !self.svc.is_shut_down() {
                    let counted = !self.background;
                    if counted {
                        self.svc.add_work();
                    }
                    let boxed = self.svc.boxed_op(CallbackOp {
                        token: self.token,
                        slot: Slot::<O>::Finished(op.fail(err)),
                        handler,
                        counted,
                        queued_before: 0,
                    });
                    self.svc.push_job(Job::Op(boxed));
                }
                return;
            }
            State::Ring { cell, key } => {
                // A future already on the ring (polled, then turned into a callback): its handler
                // runs when the kernel answers, from a task that awaits the same request.
                let fut = Op {
                    svc: self.svc.clone(),
                    token: self.token,
                    state: State::Ring { cell, key },
                    background: self.background,
                };
                let run = async move { handler(fut.await) };
                if self.background {
                    drop(self.svc.spawn_background(run));
                } else {
                    drop(self.svc.spawn(run));
                }
                return;
            }
            State::Done => return,
        };
        CallbackOp::start(&self.svc, self.token, op, handler, !self.background);
    }
}

impl<O: Operation> Future for Op<O> {
    type Output = O::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O::Output> {
        let this = self.get_mut();
        let look = match std::mem::replace(&mut this.state, State::Done) {
            State::Start(op) if O::RING && this.svc.ring_mode() => {
                return this.start_on_ring(op, cx);
            }
            State::Ring { cell, key } => {
                return match cell.poll_output(cx.waker()) {
                    Some(out) => Poll::Ready(out),
                    None => {
                        this.state = State::Ring { cell, key };
                        Poll::Pending
                    }
                };
            }
            State::Start(op) => this.svc.look(this.token, op, None, cx.waker()),
            State::Waiting { op, id, epoch } => {
                this.svc.look(this.token, op, Some((id, epoch)), cx.waker())
            }
            State::Failed(op, err) => return Poll::Ready(op.fail(err)),
            State::Done => panic!("aio::Op polled after it completed"),
        };
        let (op, fd) = match look {
            Look::Try(op, fd) => (op, fd),
            Look::Wait(state) => {
                // What it replaces is `Done`: nothing to drop.
                std::mem::forget(std::mem::replace(&mut this.state, state));
                return Poll::Pending;
            }
            Look::Done(out) => return Poll::Ready(out),
        };
        if O::RING && this.svc.ring_mode() {
            // Its turn on the ring came (it waited behind another request of its direction).
            return this.start_on_ring(op, cx);
        }
        match this.svc.try_on(this.token, fd, op) {
            Step::Done(out) => Poll::Ready(out),
            Step::Wait(op) => {
                let id = this.svc.next_waiter_id();
                let waiter = Waiter::Task {
                    id,
                    waker: cx.waker().clone(),
                };
                match this.svc.register(this.token, op.interest(), waiter) {
                    Ok(epoch) => {
                        this.svc.watch_fd(fd);
                        this.state = State::Waiting { op, id, epoch };
                        Poll::Pending
                    }
                    Err(_) => Poll::Ready(op.fail(crate::error::closed())),
                }
            }
        }
    }
}

impl<O: Operation> Op<O> {
    /// Puts an awaited operation on the io_uring ring, or in line behind its direction's request.
    fn start_on_ring(&mut self, op: O, cx: &mut Context<'_>) -> Poll<O::Output> {
        let interest = op.interest();
        let cell = ring::TaskCell::new(op);
        let slot: Rc<dyn ring::TaskSlot> = cell.clone();
        let (slot, closed) =
            match self
                .svc
                .ring_start(self.token, interest, ring::RingOp::Task(slot))
            {
                ring::RingStart::Started(key) => {
                    // Nothing can have finished yet: this only records the waker.
                    let _ = cell.poll_output(cx.waker());
                    self.state = State::Ring { cell, key };
                    return Poll::Pending;
                }
                ring::RingStart::Busy(slot) => (slot, false),
                ring::RingStart::Gone(slot) => (slot, true),
            };
        drop(slot);
        let Some(op) = cell.take_op() else {
            // Unreachable: only the ring takes the operation out, and it never got it.
            return Poll::Pending;
        };
        if closed {
            return Poll::Ready(op.fail(self.svc.gone_error()));
        }
        let id = self.svc.next_waiter_id();
        let waiter = Waiter::Task {
            id,
            waker: cx.waker().clone(),
        };
        match self.svc.register(self.token, interest, waiter) {
            Ok(epoch) => {
                self.state = State::Waiting { op, id, epoch };
                Poll::Pending
            }
            Err(_) => Poll::Ready(op.fail(crate::error::closed())),
        }
    }
}

/// What one look at its source tells a polled future (see `LocalHandle::look`).
enum Look<O: Operation> {
    /// Try the operation now, on this fd.
    Try(O, Option<RawFd>),
    /// Still waiting, or queued to wait now: the future's new state.
    Wait(State<O>),
    /// Failed without trying (source gone, or cancelled).
    Done(O::Output),
}

impl<O: Operation> Drop for Op<O> {
    fn drop(&mut self) {
        match &self.state {
            State::Waiting { op, id, .. } => self.svc.withdraw(self.token, op.interest(), *id),
            // The operation stays in the loop's table until the kernel lets go of it.
            State::Ring { cell, key } if cell.in_flight() => {
                cell.abandon();
                self.svc.ring_cancel(*key);
            }
            _ => {}
        }
    }
}

impl<O: Operation> std::fmt::Debug for Op<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Start(_) | State::Failed(..) => "not started",
            State::Waiting { .. } | State::Ring { .. } => "waiting",
            State::Done => "done",
        };
        f.debug_struct("Op")
            .field("operation", &std::any::type_name::<O>())
            .field("state", &state)
            .finish()
    }
}

/// A callback operation as the loop stores it: in a waiter list, then in the ready queue.
pub(crate) trait ReadyOp {
    /// Tries again after an event made its direction ready, on the fd the loop looked up with that
    /// event (`None` for a virtual source); true once finished (the result is stored for `complete`).
    fn retry(&mut self, svc: &LocalHandle, fd: Option<RawFd>) -> bool;
    /// How many jobs the loop had queued when the operation started (`LocalHandle::jobs_queued`).
    fn queued_before(&self) -> u64;
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

struct CallbackOp<O: Operation, F> {
    token: Token,
    slot: Slot<O>,
    handler: F,
    /// Counted as work for `run_until_done` (not background).
    counted: bool,
    /// The loop's count of queued jobs when the operation started (see `ReadyOp::queued_before`).
    queued_before: u64,
}

enum Slot<O: Operation> {
    Pending(O),
    Finished(O::Output),
    Empty,
}

impl<O: Operation, F: FnOnce(O::Output) + 'static> CallbackOp<O, F> {
    fn start(svc: &LocalHandle, token: Token, op: O, handler: F, counted: bool) {
        if svc.is_shut_down() {
            return;
        }
        if counted {
            svc.add_work();
        }
        if O::RING && svc.ring_mode() {
            let interest = op.interest();
            let boxed = svc.boxed_op(CallbackOp {
                token,
                slot: Slot::Pending(op),
                handler,
                counted,
                queued_before: svc.jobs_queued(),
            });
            ring::start_callback(svc, token, interest, boxed);
            return;
        }
        // One look at the source decides: queue the operation at once when its direction is known not
        // ready (no syscall, no second lookup), or try it.
        let interest = op.interest();
        let queued_before = svc.jobs_queued();
        let (op, handler) = {
            let mut sources = svc.inner.sources.borrow_mut();
            match sources.get_mut(token) {
                None => (Err(op), handler),
                Some(source) => {
                    let fd = source.fd.raw();
                    let dir = source.dir_mut(interest);
                    if op.needs_ready() && !dir.ready {
                        let boxed = svc.boxed_op(CallbackOp {
                            token,
                            slot: Slot::Pending(op),
                            handler,
                            counted,
                            queued_before,
                        });
                        dir.push_waiter(Waiter::Callback(boxed));
                        svc.watch_fd(fd);
                        return;
                    }
                    (Ok((op, fd)), handler)
                }
            }
        };
        let step = match op {
            Ok((op, fd)) => svc.try_on(token, fd, op),
            Err(op) => Step::Done(op.fail(svc.gone_error())),
        };
        match step {
            Step::Done(out) => svc.push_job(Job::Op(svc.boxed_op(CallbackOp {
                token,
                slot: Slot::<O>::Finished(out),
                handler,
                counted,
                queued_before,
            }))),
            Step::Wait(op) => {
                let boxed = svc.boxed_op(CallbackOp {
                    token,
                    slot: Slot::Pending(op),
                    handler,
                    counted,
                    queued_before,
                });
                match svc.register(token, interest, Waiter::Callback(boxed)) {
                    Ok(_) => svc.watch(token),
                    Err(Waiter::Callback(mut boxed)) => {
                        boxed.cancel(crate::error::closed());
                        svc.push_job(Job::Op(boxed));
                    }
                    Err(Waiter::Task { .. }) => {}
                }
            }
        }
    }
}

impl<O: Operation, F> CallbackOp<O, F> {
    /// One step of a pending operation (a try, or the kernel's answer); true once it is finished
    /// (or was already), its result stored for `complete`.
    #[inline]
    fn advance(&mut self, step: impl FnOnce(O) -> Step<O>) -> bool {
        match std::mem::replace(&mut self.slot, Slot::Empty) {
            Slot::Pending(op) => match step(op) {
                Step::Done(out) => {
                    self.slot = Slot::Finished(out);
                    true
                }
                Step::Wait(op) => {
                    self.slot = Slot::Pending(op);
                    false
                }
            },
            other => {
                self.slot = other;
                true
            }
        }
    }
}

impl<O: Operation, F: FnOnce(O::Output) + 'static> ReadyOp for CallbackOp<O, F> {
    fn retry(&mut self, svc: &LocalHandle, fd: Option<RawFd>) -> bool {
        let token = self.token;
        self.advance(|op| svc.try_on(token, fd, op))
    }

    fn queued_before(&self) -> u64 {
        self.queued_before
    }

    fn cancel(&mut self, err: io::Error) {
        if let Slot::Pending(op) = std::mem::replace(&mut self.slot, Slot::Empty) {
            self.slot = Slot::Finished(op.fail(err));
        }
    }

    fn on_ring(&self) -> bool {
        O::RING
    }

    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        match &mut self.slot {
            Slot::Pending(op) => op.prepare(fd),
            _ => None,
        }
    }

    fn on_cqe(&mut self, res: i32, cx: &mut Cx<'_>) -> bool {
        self.advance(|op| op.complete(res, cx))
    }

    fn complete(self: Box<Self>, svc: &LocalHandle) {
        // The block goes back to the loop's pool before the handler runs: the handler typically
        // starts the next operation, which takes it again.
        let this = crate::service::pool::unboxed(&mut svc.inner.op_pool.borrow_mut(), self);
        if this.counted {
            svc.finish_work();
        }
        if let Slot::Finished(out) = this.slot {
            (this.handler)(out);
        }
    }
}

impl LocalHandle {
    /// Boxes a callback operation in a block recycled from an earlier one when the loop has one.
    fn boxed_op<T: ReadyOp + 'static>(&self, op: T) -> Box<dyn ReadyOp> {
        crate::service::pool::boxed(&mut self.inner.op_pool.borrow_mut(), op)
    }

    /// Why an operation on a token that names no source fails.
    fn gone_error(&self) -> io::Error {
        if self.is_shut_down() {
            crate::service::shared::gone()
        } else {
            crate::error::closed()
        }
    }

    /// The try itself, on `fd`, which the caller looked up in `token`'s live source without running
    /// anything since; then the direction is marked not ready if the try said so.
    #[inline]
    pub(crate) fn try_on<O: Operation>(&self, token: Token, fd: Option<RawFd>, op: O) -> Step<O> {
        let interest = op.interest();
        // SAFETY: the caller found the source live with this fd, and a source's fd can only be closed
        // by `remove_source`, which user code calls (close, drop, release) and an operation's try
        // never does; so the fd stays open for the duration of the try. The borrow of the table is
        // released so that a try may register new sources (an accepted socket).
        let fd = fd.map(|raw| unsafe { BorrowedFd::borrow_raw(raw) });
        let mut cx = Cx {
            fd,
            svc: self,
            token,
            drained: false,
            retry_after: None,
        };
        let step = op.attempt(&mut cx);
        let waits = matches!(step, Step::Wait(_));
        if cx.drained || waits {
            if let Some(source) = self.inner.sources.borrow_mut().get_mut(cx.token) {
                // EAGAIN is the kernel's word, and a back-off must hold; a drained hint is only a hint
                // (see `Source::drain_hint_holds`: hang-ups, Unix sockets).
                if waits || cx.retry_after.is_some() || source.drain_hint_holds(interest) {
                    source.dir_mut(interest).ready = false;
                }
            }
        }
        if let Some(delay) = cx.retry_after {
            self.wake_after(token, interest, delay);
        }
        step
    }

    /// Queues a waiter; returns the source's cancel epoch, or the waiter back if the source is gone.
    pub(crate) fn register(
        &self,
        token: Token,
        interest: Interest,
        waiter: Waiter,
    ) -> Result<u32, Waiter> {
        let mut sources = self.inner.sources.borrow_mut();
        match sources.get_mut(token) {
            Some(source) => {
                source.dir_mut(interest).push_waiter(waiter);
                Ok(source.cancel_epoch)
            }
            None => Err(waiter),
        }
    }

    /// Removes a future's waiter (the future was dropped or turned into a callback).
    pub(crate) fn withdraw(&self, token: Token, interest: Interest, id: u64) {
        let mut sources = self.inner.sources.borrow_mut();
        if let Some(source) = sources.get_mut(token) {
            let waiters = &mut source.dir_mut(interest).waiters;
            if let Some(pos) = waiters
                .iter()
                .position(|w| matches!(w, Waiter::Task { id: i, .. } if *i == id))
            {
                waiters.remove(pos);
            }
        }
    }

    /// One look at `token`'s source for a polled future: whether it was woken (`waiting` is its
    /// waiter's id and the cancel epoch it registered under; `None` for a first poll), cancelled, or
    /// still queued (its waker refreshed), and, for one that may go on, whether its direction is known
    /// not ready, in which case its waker is queued at once, without trying.
    fn look<O: Operation>(
        &self,
        token: Token,
        op: O,
        waiting: Option<(u64, u32)>,
        waker: &std::task::Waker,
    ) -> Look<O> {
        let mut sources = self.inner.sources.borrow_mut();
        let Some(source) = sources.get_mut(token) else {
            let err = match waiting {
                Some(_) => crate::error::cancelled(),
                None => self.gone_error(),
            };
            drop(sources);
            return Look::Done(op.fail(err));
        };
        let interest = op.interest();
        if let Some((id, epoch)) = waiting {
            let cancelled = source.cancel_epoch != epoch;
            let waiters = &mut source.dir_mut(interest).waiters;
            let pos = waiters
                .iter()
                .position(|w| matches!(w, Waiter::Task { id: i, .. } if *i == id));
            match (pos, cancelled) {
                (Some(pos), true) => {
                    waiters.remove(pos);
                    drop(sources);
                    return Look::Done(op.fail(crate::error::cancelled()));
                }
                (None, true) => {
                    drop(sources);
                    return Look::Done(op.fail(crate::error::cancelled()));
                }
                (Some(pos), false) => {
                    if let Some(Waiter::Task { waker: w, .. }) = waiters.get_mut(pos) {
                        if !w.will_wake(waker) {
                            *w = waker.clone();
                        }
                    }
                    return Look::Wait(State::Waiting { op, id, epoch });
                }
                (None, false) => {} // woken: go on
            }
        }
        let fd = source.fd.raw();
        let epoch = source.cancel_epoch;
        let dir = source.dir_mut(interest);
        // On the ring, an operation's turn is all it waits for: the kernel waits for readiness.
        if op.needs_ready() && !dir.ready && !(O::RING && self.inner.ring) {
            let id = self.next_waiter_id();
            dir.push_waiter(Waiter::Task {
                id,
                waker: waker.clone(),
            });
            self.watch_fd(fd);
            return Look::Wait(State::Waiting { op, id, epoch });
        }
        Look::Try(op, fd)
    }
}
