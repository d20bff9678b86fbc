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
pub(crate) mod read_each;
mod ready;
pub(crate) mod ring;
pub(crate) mod write;

pub use accept::Accept;
pub use connect::{Connect, Dial};
pub use datagram::{RecvDatagram, RecvMeta, SendDatagram};
pub use dial_any::DialAny;
pub use fd_passing::{MAX_FDS_PER_MESSAGE, ReceivedFds, RecvFds, SendFds};
pub use read::{ReadExact, ReadSome, ReadVectored};
pub use ready::Ready;
pub use write::{WriteAll, WriteSome, WriteVectored};

use std::cell::RefMut;
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
use crate::service::run::Serving;
use crate::service::source::{Source, Waiter};

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
            waker: cx.waker().clone(),
        };
        match self.svc.register(self.token, interest, waiter) {
            Ok(epoch) => {
                self.svc.watch_fd(fd);
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

/// What one look at its source tells a polled future (see `LocalHandle::look`).
enum Look<V> {
    /// Try the operation now, on this fd.
    Try(Option<RawFd>),
    /// Tried inside the look (an operation whose try does not use the loop): finished.
    Done(io::Result<V>),
    /// Its waker waits (still, or queued now), under this id and cancel epoch.
    Wait(u64, u32),
    /// Finish without trying (source gone, or cancelled).
    Fail(io::Error),
}

impl<O: Operation> Drop for Op<O> {
    fn drop(&mut self) {
        match &self.state {
            State::Waiting { id, .. } => {
                if let Some(op) = &self.op {
                    self.svc.withdraw(self.token, op.interest(), *id);
                }
            }
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

/// A callback operation: boxed once when it starts, it stays in that block (tried in place) until
/// its handler runs.
struct CallbackOp<O: Operation, F> {
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
    fn boxed(
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

    fn start(svc: &LocalHandle, token: Token, op: O, handler: F, counted: bool) {
        let interest = op.interest();
        let needs_ready = op.needs_ready();
        let Some(boxed) = Self::boxed(svc, token, op, handler, counted, None) else {
            return;
        };
        if O::RING && svc.ring_mode() {
            ring::start_callback(svc, token, interest, boxed);
            return;
        }
        start_boxed(svc, token, interest, needs_ready, None, boxed);
    }
}

/// Starts a boxed callback operation on a readiness backend. One look at the source decides: the
/// operation is queued at once when its direction is known not ready (no syscall, no second
/// lookup), or tried; its handler never runs here (a finished try queues it as a job).
///
/// `epoch`: the source's cancel epoch the operation belongs to, for one that starts again after its
/// handler ran (a persistent read): if `cancel()` or `close()` came meanwhile, it completes with
/// `ECANCELED` instead.
#[inline(always)]
pub(crate) fn start_boxed<T: ReadyOp + 'static>(
    svc: &LocalHandle,
    token: Token,
    interest: Interest,
    needs_ready: bool,
    epoch: Option<u32>,
    mut boxed: Box<T>,
) {
    let fd = {
        let mut sources = svc.inner.sources.borrow_mut();
        let source = match sources.get_mut(token) {
            Some(source) if epoch.is_none_or(|e| e == source.cancel_epoch) => source,
            found => {
                let cancelled = found.is_some() || epoch.is_some();
                drop(sources);
                boxed.cancel(if cancelled {
                    crate::error::cancelled()
                } else {
                    svc.gone_error()
                });
                svc.push_job(Job::Op(boxed));
                return;
            }
        };
        let fd = source.raw_fd();
        let dir = source.dir_mut(interest);
        if needs_ready && !dir.ready {
            dir.push_waiter(Waiter::Callback(boxed));
            drop(sources);
            svc.watch_fd(fd);
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
                svc.watch_fd(fd);
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
        Ok(_) => svc.watch_fd(fd),
        Err(Waiter::Callback(mut boxed)) => {
            boxed.cancel(crate::error::closed());
            svc.push_job(Job::Op(boxed));
        }
        Err(Waiter::Task { .. }) => {}
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

impl LocalHandle {
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
    pub(crate) fn try_on<O: Operation>(
        &self,
        token: Token,
        fd: Option<RawFd>,
        op: &mut O,
    ) -> Poll<io::Result<O::Value>> {
        let interest = op.interest();
        // SAFETY: the caller found the source live with this fd, and a source's fd can only be closed
        // by `remove_source`, which user code calls (close, drop, release) and an operation's try
        // never does; so the fd stays open for the duration of the try. The borrow of the table is
        // released so that a try may register new sources (an accepted socket).
        let fd = fd.map(|raw| unsafe { BorrowedFd::borrow_raw(raw) });
        let mut cx = Cx {
            fd,
            svc: Some(self),
            token,
            drained: false,
            retry_after: None,
        };
        let step = op.attempt(&mut cx);
        let waits = step.is_pending();
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

    /// [`try_on`](LocalHandle::try_on) for an operation whose try does not use the loop
    /// ([`Operation::TRY_USES_LOOP`] false), under the borrow of the table that found `source`.
    #[inline]
    pub(crate) fn try_in<O: Operation>(
        token: Token,
        source: &mut Source,
        op: &mut O,
    ) -> Poll<io::Result<O::Value>> {
        debug_assert!(!O::TRY_USES_LOOP);
        let interest = op.interest();
        let (step, drained) = {
            let mut cx = Cx {
                fd: source.fd(),
                svc: None,
                token,
                drained: false,
                retry_after: None,
            };
            let step = op.attempt(&mut cx);
            (step, cx.drained)
        };
        if step.is_pending() || (drained && source.drain_hint_holds(interest)) {
            source.dir_mut(interest).ready = false;
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
            if let Some(pos) = waiters.position_of_task(id) {
                waiters.remove(pos);
            }
        }
    }

    /// One look at `token`'s source for a polled future: whether it was woken (`waiting` is its
    /// waiter's id and the cancel epoch it registered under; `None` for a first poll), cancelled, or
    /// still queued (its waker refreshed), and, for one that may go on, whether its direction is known
    /// not ready (and `needs_ready`), in which case its waker is queued at once, without trying.
    ///
    /// With `try_here` (an operation whose try does not use the loop), one that may go on and whose
    /// direction may be ready is tried right there, under the same borrow, and queued there if the
    /// kernel says `EAGAIN`.
    #[inline(always)]
    fn look<O: Operation>(
        &self,
        token: Token,
        interest: Interest,
        needs_ready: bool,
        waiting: Option<(u64, u32)>,
        waker: &std::task::Waker,
        try_here: Option<&mut O>,
    ) -> Look<O::Value> {
        let mut sources = self.inner.sources.borrow_mut();
        let Some(source) = sources.get_mut(token) else {
            drop(sources);
            return Look::Fail(match waiting {
                Some(_) => crate::error::cancelled(),
                None => self.gone_error(),
            });
        };
        if let Some((id, epoch)) = waiting {
            let cancelled = source.cancel_epoch != epoch;
            let waiters = &mut source.dir_mut(interest).waiters;
            match (waiters.position_of_task(id), cancelled) {
                (Some(pos), true) => {
                    waiters.remove(pos);
                    return Look::Fail(crate::error::cancelled());
                }
                (None, true) => return Look::Fail(crate::error::cancelled()),
                (Some(pos), false) => {
                    if let Some(Waiter::Task { waker: w, .. }) = waiters.get_mut(pos) {
                        if !w.will_wake(waker) {
                            *w = waker.clone();
                        }
                    }
                    return Look::Wait(id, epoch);
                }
                (None, false) => {} // woken: go on
            }
        }
        let fd = source.raw_fd();
        let epoch = source.cancel_epoch;
        let must_wait = match try_here {
            _ if needs_ready && !source.dir(interest).ready => true,
            Some(op) => match Self::try_in(token, source, op) {
                Poll::Ready(res) => return Look::Done(res),
                Poll::Pending => true,
            },
            None => false,
        };
        if !must_wait {
            return Look::Try(fd);
        }
        let id = self.next_waiter_id();
        source.dir_mut(interest).push_waiter(Waiter::Task {
            id,
            waker: waker.clone(),
        });
        self.watch_fd(fd);
        Look::Wait(id, epoch)
    }
}
