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

mod callback;
pub(crate) mod completion;
mod connect;
mod datagram;
mod fd_passing;
mod front;
mod handle;
pub(crate) mod local_completion;
// The I/O-trait bridges' waits (`aio::compat`).
#[cfg(any(feature = "futures-io", feature = "tokio-io", feature = "hyper"))]
pub(crate) mod poll_io;
mod read;
pub(crate) mod read_each;
mod read_stream;
mod ready;
pub(crate) mod ring;
mod timeout;
pub(crate) mod timer;
pub(crate) mod write;

pub use completion::{Completer, Completion};
pub use connect::Connect;
pub use datagram::{RecvDatagram, RecvMeta, SendDatagram};
pub use fd_passing::{MAX_FDS_PER_MESSAGE, ReceivedFds, RecvFds, SendFds};
pub use front::Op;
pub use handle::OpHandle;
pub use local_completion::LocalCompletion;
pub use read::{ReadBuf, ReadExact, ReadSome, ReadVectored};
pub use read_stream::{Chunk, NextChunk, ReadStream};
pub use ready::Ready;
pub use timeout::TimedOp;
pub use timer::{Sleep, TimerWait};
pub use write::{WriteAll, WriteSome, WriteVectored};

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::task::Poll;
use std::time::Duration;

pub use crate::driver::Interest;
pub use crate::driver::uring::RingEntry;
use crate::reactor::block::Attempt;
use crate::reactor::source::Source;
use crate::reactor::{Reactor, Token};

/// What an operation's attempt may use and report (see [`Operation::attempt`]).
pub struct Cx<'a> {
    fd: Option<BorrowedFd<'a>>,
    /// `None` for a try made under the source table's borrow (see [`Operation::TRY_USES_LOOP`]).
    reactor: Option<&'a Reactor>,
    drained: bool,
    retry_after: Option<Duration>,
}

impl<'a> Cx<'a> {
    /// The context of a step that makes no syscall of its own: the kernel's answer to a ring
    /// request.
    pub(crate) fn for_completion() -> Cx<'a> {
        Cx {
            fd: None,
            reactor: None,
            drained: false,
            retry_after: None,
        }
    }

    /// The fd of the object the operation was made on.
    ///
    /// # Panics
    /// For an operation on a source without an fd (a timer or a completion): operations made on
    /// sockets and devices always have one.
    #[inline]
    pub fn fd(&self) -> BorrowedFd<'a> {
        self.fd
            .expect("an fd operation on a source without an fd (a timer or completion)")
    }
    /// The loop, for a try that looks at it: only operations whose
    /// [`TRY_USES_LOOP`](Operation::TRY_USES_LOOP) is true may call this.
    pub(crate) fn reactor(&self) -> &'a Reactor {
        self.reactor
            .expect("an operation that uses the loop in its try declares TRY_USES_LOOP")
    }
    /// The syscall showed the direction is now empty (a short read, or a short write that filled
    /// the send buffer): the next operation waits for an event instead of trying first. A hint: the
    /// loop ignores it where it cannot be trusted (a Unix stream socket's reads stop at messages that
    /// carry fds; a peer's shutdown ends the edges).
    #[inline]
    pub fn mark_drained(&mut self) {
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
    /// Do not attempt again before `delay` has passed, events or not (a back-off, such as an
    /// acceptor's after `EMFILE`). The attempt then returns its result as usual.
    pub fn retry_after(&mut self, delay: Duration) {
        self.retry_after = Some(delay);
    }

    /// What the try said, for the source's readiness.
    #[inline(always)]
    fn attempt(&self, would_block: bool) -> Attempt {
        Attempt {
            would_block,
            drained: self.drained,
            backing_off: self.retry_after.is_some(),
        }
    }
}

/// One try of `op` on `fd`, looked up under the borrow of the table that still holds it (an
/// operation whose try does not use the loop: [`Operation::TRY_USES_LOOP`] false): its outcome, and
/// what the syscall said for the source to take in.
#[inline(always)]
pub(crate) fn attempt_on<O: Operation>(
    fd: Option<BorrowedFd<'_>>,
    op: &mut O,
) -> (Poll<io::Result<O::Value>>, Attempt) {
    debug_assert!(!O::TRY_USES_LOOP);
    let mut cx = Cx {
        fd,
        reactor: None,
        drained: false,
        retry_after: None,
    };
    let step = op.attempt(&mut cx);
    let attempt = cx.attempt(step.is_pending());
    (step, attempt)
}

/// [`attempt_on`] `source`'s fd, under the borrow of the table that found it; then the source takes
/// in what the syscall said.
#[inline(always)]
pub(crate) fn attempt_under_borrow<O: Operation>(
    source: &mut Source,
    op: &mut O,
) -> Poll<io::Result<O::Value>> {
    let interest = op.interest();
    let (step, attempt) = attempt_on(source.fd(), op);
    source.after_attempt(interest, attempt);
    step
}

/// One try of `op` on `fd`, which the caller looked up in `token`'s live source without running
/// anything since, outside the table's borrow so that the try may use the loop (an accept registers
/// the new socket); then the source takes in what the syscall said, and a back-off it asked for
/// starts.
#[inline]
pub(crate) fn attempt_with_loop<O: Operation>(
    reactor: &Reactor,
    token: Token,
    fd: Option<RawFd>,
    op: &mut O,
) -> Poll<io::Result<O::Value>> {
    let interest = op.interest();
    // SAFETY: the caller found the source live with this fd, and a source's fd can only be closed
    // by `remove_source`, which user code calls (close, drop, release) and an operation's try
    // never does; so the fd stays open for the duration of the try.
    let fd = fd.map(|raw| unsafe { BorrowedFd::borrow_raw(raw) });
    let mut cx = Cx {
        fd,
        reactor: Some(reactor),
        drained: false,
        retry_after: None,
    };
    let step = op.attempt(&mut cx);
    let attempt = cx.attempt(step.is_pending());
    if attempt.would_block || attempt.drained || attempt.backing_off {
        if let Some(source) = reactor.sources.borrow_mut().get_mut(token) {
            source.after_attempt(interest, attempt);
        }
    }
    if let Some(delay) = cx.retry_after {
        reactor.wake_after(token, interest, delay);
    }
    step
}

/// An operation [`Op`] can carry: aio's own (reads, writes, accepts, timers...) or one of yours.
///
/// # The contract
/// An operation is a state machine over one direction ([`interest`](Operation::interest)) of one
/// object's fd. The loop calls [`attempt`](Operation::attempt) when the direction may be ready: at
/// once when it starts (unless [`needs_ready`](Operation::needs_ready) says a first step must wait),
/// and again after each readiness event. An attempt makes its syscall on [`Cx::fd`] without blocking
/// and returns:
/// - `Poll::Ready(result)` when the operation is done (the value, or the error the handler gets);
/// - `Poll::Pending` when the kernel said `EAGAIN`: the loop waits for the next edge of that
///   direction, then attempts again. An attempt that returns `Pending` without an `EAGAIN` from the
///   kernel waits for an event that may never come: only return `Pending` on `EAGAIN`.
///
/// Then [`finish`](Operation::finish) turns the result into the output and hands the operation's
/// buffers back with it (`finish` runs for cancellations too, with `ECANCELED`). An operation stays
/// in one place while it is pending (inside its `Op`, or in the block the loop keeps for a callback):
/// each attempt works on it by reference, and only the finished operation is consumed.
///
/// A short read or write (less than asked) may say so with [`Cx::mark_drained`]: the next operation
/// on that direction then waits for an edge instead of paying for an `EAGAIN` first.
///
/// Attempts run on the loop's thread, between handlers; they must not block. With
/// [`TRY_USES_LOOP`](Operation::TRY_USES_LOOP) left `true` (the default) an attempt may use the loop
/// (create sockets, spawn, post); `false` lets the loop make it under the lookup that found the fd,
/// which saves a lookup per attempt but forbids touching the loop from it (a `RefCell` would panic).
///
/// The ring members ([`RING`](Operation::RING), [`prepare`](Operation::prepare),
/// [`complete`](Operation::complete)) are for aio's own operations, whose requests point the kernel
/// at memory they own: a [`RingEntry`] cannot be made outside aio, and other operations run by
/// readiness on every backend, io_uring included.
///
/// # Example: an operation aio does not have
/// `MSG_PEEK`: wait until a stream socket has bytes, and copy them without taking them.
///
/// ```
/// use std::io;
/// use std::task::Poll;
/// use aio::op::{Cx, Interest, Operation};
/// use aio::{IoService, StreamSocket};
///
/// /// Peeks at up to `buf.len()` waiting bytes: they stay in the socket for the next read.
/// struct Peek {
///     buf: Vec<u8>,
/// }
///
/// impl Operation for Peek {
///     type Output = (io::Result<usize>, Vec<u8>);
///     type Value = usize;
///
///     fn interest(&self) -> Interest {
///         Interest::Read
///     }
///
///     fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<usize>> {
///         let flags = rustix::net::RecvFlags::PEEK;
///         match rustix::net::recv(cx.fd(), &mut self.buf[..], flags) {
///             Ok((n, _)) => Poll::Ready(Ok(n)),
///             Err(rustix::io::Errno::AGAIN) => Poll::Pending, // wait for the next edge
///             Err(e) => Poll::Ready(Err(e.into())),
///         }
///     }
///
///     fn finish(self, res: io::Result<usize>) -> Self::Output {
///         (res, self.buf)
///     }
/// }
///
/// let svc = IoService::new()?;
/// let (a, b) = StreamSocket::pair(&svc)?;
/// // Started before anything was sent: it waits for readability like any read.
/// let peek = b.op(Peek { buf: vec![0; 16] });
/// let (res, _) = svc.block_on(a.write_all(b"hello".to_vec()));
/// res?;
/// let (res, buf) = svc.block_on(peek);
/// assert_eq!(&buf[..res?], b"hello");
/// // The bytes are still there for a read.
/// let (res, buf) = svc.block_on(b.read_exact(vec![0; 5]));
/// res?;
/// assert_eq!(buf, b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Operation: Unpin + Sized + 'static {
    /// What the operation completes with; buffers come back inside it.
    type Output;
    /// What a finished attempt yields besides the buffers (a count, an accepted socket).
    type Value;
    /// The direction it waits on.
    fn interest(&self) -> Interest;
    /// Whether an attempt must wait until the direction is ready (false for a first step, such as
    /// the `connect` call itself, that needs no readiness).
    fn needs_ready(&self) -> bool {
        true
    }
    /// Whether an attempt may use the loop (register an accepted socket, arm a back-off). One that
    /// does not (a read, a write) is made under the borrow of the source table that found its fd,
    /// and its readiness updated there: one lookup per attempt instead of two.
    const TRY_USES_LOOP: bool = true;
    /// One attempt: `Pending` when the kernel said `EAGAIN` (wait for the direction to become
    /// ready, then attempt again). See the trait's contract.
    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>>;
    /// The output: `res` with the buffers the operation owned.
    fn finish(self, res: io::Result<Self::Value>) -> Self::Output;
    /// Whether, on the io_uring backend, the operation is done by ring requests ([`prepare`] and
    /// [`complete`]) instead of readiness and [`attempt`] (aio's own operations only: see the
    /// trait's docs).
    ///
    /// [`prepare`]: Operation::prepare
    /// [`complete`]: Operation::complete
    /// [`attempt`]: Operation::attempt
    const RING: bool = false;
    /// The ring request for the next step on `fd`. The memory it points to must live inside the
    /// operation, on the heap (owned buffers, boxed addresses): the operation may move, but is not
    /// dropped, while the request is in flight.
    fn prepare(&mut self, _fd: RawFd) -> Option<RingEntry> {
        None
    }
    /// The kernel's answer to the request made by [`prepare`](Operation::prepare) (`res`: a count
    /// or a negative errno). `Pending` asks for another request (the rest of a `write_all`).
    fn complete(&mut self, res: i32, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        Poll::Ready(Err(io::Error::other(format!(
            "io_uring completion ({res}) for an operation that makes no ring requests"
        ))))
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

/// Moves all `total` bytes of an operation (`read_exact`, `write_all`), `done` of them so far, with
/// as many calls of `step` (one syscall at the offset `done`; `Ok(None)` for `EAGAIN`) as it takes:
/// `Pending` when the kernel says `EAGAIN` with bytes left; a step that moves none before the end
/// fails with what `none` makes of the count done.
#[inline]
pub(crate) fn move_all(
    done: &mut usize,
    total: usize,
    mut step: impl FnMut(usize) -> io::Result<Option<usize>>,
    none: impl Fn(usize) -> io::Error,
) -> Poll<io::Result<()>> {
    while *done < total {
        match step(*done) {
            Ok(None) => return Poll::Pending,
            Ok(Some(n)) => {
                if let Poll::Ready(res) = advance(done, total, n, &none) {
                    return Poll::Ready(res);
                }
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

/// Keeps a try's outcome for `complete`: true once finished (`Pending` keeps nothing).
#[inline(always)]
pub(crate) fn keep_outcome<V>(slot: &mut Option<io::Result<V>>, step: Poll<io::Result<V>>) -> bool {
    match step {
        Poll::Ready(res) => {
            *slot = Some(res);
            true
        }
        Poll::Pending => false,
    }
}
