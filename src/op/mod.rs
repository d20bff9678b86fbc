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
mod callback;
mod connect;
mod datagram;
mod dial_any;
mod fd_passing;
mod read;
pub(crate) mod read_each;
mod read_stream;
mod ready;
pub(crate) mod ring;
mod source_access;
pub(crate) mod write;

pub use accept::Accept;
pub use connect::{Connect, Dial};
pub use datagram::{RecvDatagram, RecvMeta, SendDatagram};
pub use dial_any::DialAny;
pub use fd_passing::{MAX_FDS_PER_MESSAGE, ReceivedFds, RecvFds, SendFds};
pub use read::{ReadExact, ReadSome, ReadVectored};
pub use read_stream::{Chunk, NextChunk, ReadStream};
pub use ready::Ready;
pub use write::{WriteAll, WriteSome, WriteVectored};

use callback::CallbackOp;
pub(crate) use callback::ReadyOp;
pub(crate) use read_each::PersistentOp;
use source_access::Look;

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

/// What an operation's try may use and report.
#[doc(hidden)]
pub struct Cx<'a> {
    fd: Option<BorrowedFd<'a>>,
    /// `None` for a try made under the source table's borrow (see [`Operation::TRY_USES_LOOP`]).
    svc: Option<&'a LocalHandle>,
    token: Token,
    drained: bool,
    retry_after: Option<Duration>,
}

impl<'a> Cx<'a> {
    /// The fd of an I/O operation's source. Only operations made by fd-backed objects call this, and
    /// those objects' tokens always name fd sources.
    #[inline]
    pub(crate) fn fd(&self) -> BorrowedFd<'a> {
        self.fd
            .expect("an fd operation on a source without an fd (a timer or completion)")
    }
    /// The loop, for a try that registers sources or timers: only operations whose
    /// [`TRY_USES_LOOP`](Operation::TRY_USES_LOOP) is true may call this.
    pub(crate) fn svc(&self) -> &'a LocalHandle {
        self.svc
            .expect("an operation that uses the loop in its try declares TRY_USES_LOOP")
    }
    /// The syscall showed the direction is now empty (a short read): the next operation waits for an
    /// event instead of trying first.
    #[inline]
    pub(crate) fn mark_drained(&mut self) {
        self.drained = true;
    }
    /// The outcome of one read or write of up to `requested` bytes (`Ok(None)`: `EAGAIN`). A short
    /// count emptied the receive queue (or filled the send buffer): the next operation waits for an
    /// edge instead of paying for an `EAGAIN` (unless the peer has shut down: see
    /// `Direction::closed`).
    #[inline]
    pub(crate) fn counted(
        &mut self,
        res: io::Result<Option<usize>>,
        requested: usize,
    ) -> Poll<io::Result<usize>> {
        match res {
            Ok(None) => Poll::Pending,
            Ok(Some(n)) => {
                if n < requested {
                    self.mark_drained();
                }
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(e)),
        }
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
///
/// An operation stays in one place while it is pending (inside its `Op`, or in the block the loop
/// keeps for a callback): each try works on it by reference, and only the finished operation is
/// consumed, by [`finish`](Operation::finish), to hand its buffers back with the result.
pub trait Operation: sealed::Sealed + Unpin + Sized + 'static {
    /// What the operation completes with; buffers come back inside it.
    type Output;
    /// What a finished try yields besides the buffers (a count, an accepted socket).
    #[doc(hidden)]
    type Value;
    #[doc(hidden)]
    fn interest(&self) -> Interest;
    /// Whether a try must wait until the direction is ready (false for a first step, such as the
    /// `connect` call itself, that needs no readiness).
    #[doc(hidden)]
    fn needs_ready(&self) -> bool {
        true
    }
    /// Whether a try may use the loop (register an accepted socket, arm a back-off). One that does
    /// not (a read, a write) is tried under the borrow of the source table that found its fd, and
    /// its readiness updated there: one lookup per try instead of two.
    #[doc(hidden)]
    const TRY_USES_LOOP: bool = true;
    /// One try: `Pending` when the kernel said `EAGAIN` (wait for the direction to become ready,
    /// then try again).
    #[doc(hidden)]
    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>>;
    /// The output: `res` with the buffers the operation owned.
    #[doc(hidden)]
    fn finish(self, res: io::Result<Self::Value>) -> Self::Output;
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
    /// or a negative errno). `Pending` asks for another request (the rest of a `write_all`).
    #[doc(hidden)]
    fn complete(&mut self, res: i32, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        Poll::Ready(Err(io::Error::other(format!(
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
    /// The operation while this future holds it: `None` once finished, and while the ring's cell
    /// holds it. Tries work on it in place.
    op: Option<O>,
    state: State<O>,
    background: bool,
}

enum State<O: Operation> {
    /// Not started, or woken and about to try again.
    Idle,
    /// Made by an object that could not be set up: completes with this error without trying.
    Failed(io::Error),
    /// Its waker waits on the direction under `id`, registered under the source's cancel `epoch`.
    Waiting { id: u64, epoch: u32 },
    /// On the io_uring ring, under `key`; the cell holds the operation and then its output.
    Ring {
        cell: Rc<ring::TaskCell<O>>,
        key: u32,
    },
}

impl<O: Operation> Op<O> {
    pub(crate) fn new(svc: &LocalHandle, token: Token, op: O) -> Op<O> {
        Op {
            svc: svc.clone(),
            token,
            op: Some(op),
            state: State::Idle,
            background: false,
        }
    }

    /// An operation that completes with `err` without trying (its object could not be set up).
    pub(crate) fn failed(svc: &LocalHandle, op: O, err: io::Error) -> Op<O> {
        Op {
            svc: svc.clone(),
            token: Token::NONE,
            op: Some(op),
            state: State::Failed(err),
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
    #[inline]
    pub fn then<F>(mut self, handler: F)
    where
        F: FnOnce(O::Output) + 'static,
    {
        // The common case first, small enough to inline: a fresh operation starts as a callback.
        if matches!(self.state, State::Idle) {
            if let Some(op) = self.op.take() {
                CallbackOp::start(&self.svc, self.token, op, handler, !self.background);
                return;
            }
        }
        self.then_otherwise(handler);
    }

    /// [`then`](Op::then) for an operation that was polled or failed before.
    #[inline(never)]
    fn then_otherwise<F>(mut self, handler: F)
    where
        F: FnOnce(O::Output) + 'static,
    {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let counted = !self.background;
        let Some(op) = self.op.take() else {
            if let State::Ring { cell, key } = state {
                // A future already on the ring (polled, then turned into a callback): its handler
                // runs when the kernel answers, from a task that awaits the same request.
                let fut = Op {
                    svc: self.svc.clone(),
                    token: self.token,
                    op: None,
                    state: State::Ring { cell, key },
                    background: self.background,
                };
                let run = async move { handler(fut.await) };
                if counted {
                    drop(self.svc.spawn(run));
                } else {
                    drop(self.svc.spawn_background(run));
                }
            }
            return; // finished already: its output went to the poll that finished it
        };
        match state {
            State::Waiting { id, .. } => self.svc.withdraw(self.token, op.interest(), id),
            State::Failed(err) => {
                if let Some(boxed) =
                    CallbackOp::boxed(&self.svc, Token::NONE, op, handler, counted, Some(Err(err)))
                {
                    self.svc.push_job(Job::Op(boxed));
                }
                return;
            }
            // The ring's cell holds the operation while it is `Ring`: not this case.
            State::Idle | State::Ring { .. } => {}
        }
        CallbackOp::start(&self.svc, self.token, op, handler, counted);
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
        match std::mem::replace(&mut this.state, State::Idle) {
            State::Idle => this.poll_try(None, cx),
            State::Waiting { id, epoch } => this.poll_try(Some((id, epoch)), cx),
            State::Failed(err) => Poll::Ready(this.take_op().finish(Err(err))),
            State::Ring { cell, key } => match cell.poll_output(cx.waker()) {
                Some(out) => Poll::Ready(out),
                None => {
                    this.state = State::Ring { cell, key };
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
    fn poll_try(&mut self, waiting: Option<(u64, u32)>, cx: &mut Context<'_>) -> Poll<O::Output> {
        let Some(op) = self.op.as_mut() else {
            panic!("aio::Op polled after it completed")
        };
        let interest = op.interest();
        let on_ring = O::RING && self.svc.ring_mode();
        if on_ring && waiting.is_none() {
            return self.start_on_ring(cx);
        }
        // On the ring, an operation's turn is all it waits for: the kernel waits for readiness.
        let needs_ready = op.needs_ready() && !on_ring;
        // A read or write is tried inside the look, under one borrow of the table.
        let try_here = (!O::TRY_USES_LOOP && !on_ring).then_some(&mut *op);
        let fd = match self.svc.look(
            self.token,
            interest,
            needs_ready,
            waiting,
            cx.waker(),
            try_here,
        ) {
            Look::Try(fd) => fd,
            Look::Done(res) => return Poll::Ready(self.take_op().finish(res)),
            Look::Wait(id, epoch) => {
                self.state = State::Waiting { id, epoch };
                return Poll::Pending;
            }
            Look::Fail(err) => return Poll::Ready(self.take_op().finish(Err(err))),
        };
        if on_ring {
            // Its turn on the ring came (it waited behind another request of its direction).
            return self.start_on_ring(cx);
        }
        match self.svc.try_on(self.token, fd, op) {
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
        let id = self.svc.next_waiter_id();
        let waiter = Waiter::Task {
            id,
            wake: self.svc.task_wake(cx.waker()),
        };
        match self.svc.register(self.token, interest, waiter) {
            Ok(epoch) => {
                self.svc.watch_fd(self.token, fd, interest);
                self.state = State::Waiting { id, epoch };
                Poll::Pending
            }
            Err(_) => Poll::Ready(self.take_op().finish(Err(crate::error::closed()))),
        }
    }

    /// Puts an awaited operation on the io_uring ring, or in line behind its direction's request.
    fn start_on_ring(&mut self, cx: &mut Context<'_>) -> Poll<O::Output> {
        let op = self.take_op();
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
            return Poll::Ready(op.finish(Err(self.svc.gone_error())));
        }
        // Its turn comes when the direction's request finishes: no readiness to watch.
        self.op = Some(op);
        self.wait_on(interest, None, cx)
    }
}

impl<O: Operation> Drop for Op<O> {
    #[inline]
    fn drop(&mut self) {
        // A finished or never-started operation (the common drop, right after its result came)
        // has nothing to undo: the rest stays out of line.
        if matches!(self.state, State::Waiting { .. } | State::Ring { .. }) {
            self.abandon();
        }
    }
}

impl<O: Operation> Op<O> {
    /// Takes an unfinished operation's waiter out of its line, or asks the kernel to cancel its
    /// request on the ring (the operation stays in the loop's table until the kernel lets go).
    #[cold]
    #[inline(never)]
    fn abandon(&mut self) {
        match &self.state {
            State::Waiting { id, .. } => {
                if let Some(op) = &self.op {
                    self.svc.withdraw(self.token, op.interest(), *id);
                }
            }
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
        let state = match (&self.state, &self.op) {
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

/// A syscall on a non-blocking fd, made again when a signal interrupted it: `Ok(None)` when the
/// kernel says `EAGAIN`.
#[inline]
pub(crate) fn nonblocking<T>(
    mut call: impl FnMut() -> rustix::io::Result<T>,
) -> io::Result<Option<T>> {
    loop {
        match call() {
            Ok(v) => return Ok(Some(v)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Counts `n` more bytes of an operation that moves all `total` of them in as many syscalls as it
/// takes (`read_exact`, `write_all`): `Pending` while some are left; a step that moved none before
/// the end fails with what `none` makes of the count done so far.
#[inline]
pub(crate) fn advance(
    done: &mut usize,
    total: usize,
    n: usize,
    none: impl FnOnce(usize) -> io::Error,
) -> Poll<io::Result<()>> {
    if n == 0 && *done < total {
        return Poll::Ready(Err(none(*done)));
    }
    *done += n;
    if *done < total {
        Poll::Pending
    } else {
        Poll::Ready(Ok(()))
    }
}

/// Keeps a try's outcome for `complete`: true once finished (`Pending` keeps nothing).
#[inline(always)]
pub(crate) fn settle<V>(slot: &mut Option<io::Result<V>>, step: Poll<io::Result<V>>) -> bool {
    match step {
        Poll::Ready(res) => {
            *slot = Some(res);
            true
        }
        Poll::Pending => false,
    }
}
