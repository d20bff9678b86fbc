//! [`TimedOp`]: an operation with a deadline (`Op::timeout`, `Op::deadline`).
//!
//! A deadline is a cancellation that the clock makes: when it passes, the operation is cancelled as
//! [`OpHandle::cancel`] would, but completes with `TimedOut` rather than `ECANCELED`, and gives its
//! buffer back like any cancelled operation. On io_uring the kernel may have finished the operation
//! first: then that result stands, so an operation has exactly one outcome and data it read is never
//! dropped.
//!
//! A callback operation's deadline is an entry in the loop's timer queue that names the operation
//! (no source, no allocation); an awaited one's is a one-shot [`Sleep`] beside it, made only if the
//! operation has to wait at all.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::timer::{Sleep, sleep_until};
use super::{Op, OpHandle, Operation};

/// An [`Op`] with a deadline: finish it with [`then`](TimedOp::then) or `.await`, like the `Op`.
///
/// If the deadline passes first, the operation completes with [`std::io::ErrorKind::TimedOut`] (see
/// [`aio::error::timed_out`](crate::error::timed_out)), with its buffer, as if cancelled.
///
/// ```
/// use std::time::Duration;
/// use aio::{IoService, StreamSocket};
/// let svc = IoService::new()?;
/// let (a, _b) = StreamSocket::pair(&svc)?;
/// // Nothing is ever written to `a`: the read times out and the buffer comes back.
/// let (res, buf) = svc.block_on(a.read_some(vec![0u8; 64]).timeout(Duration::from_millis(10)));
/// assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// assert_eq!(buf.len(), 64);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "an Op does nothing until it is finished with .then(handler) or .await"]
pub struct TimedOp<O: Operation> {
    op: Op<O>,
    /// `None`: so far away that it never comes (a duration too long for the clock).
    deadline: Option<Instant>,
    /// The awaited operation's timer, made at its first wait.
    sleep: Option<Op<Sleep>>,
    /// The deadline passed and the operation was asked to stop: its outcome is all that is left.
    expired: bool,
}

impl<O: Operation> Op<O> {
    /// This operation, cancelled with `TimedOut` if it has not completed `delay` from now (an Asio
    /// operation raced against a `deadline_timer`, in one call).
    ///
    /// ```
    /// use std::time::Duration;
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let (a, b) = StreamSocket::pair(&svc)?;
    /// a.read_exact(vec![0u8; 4])
    ///     .timeout(Duration::from_secs(5))
    ///     .then(|(res, buf)| {
    ///         res.expect("the peer wrote in time");
    ///         assert_eq!(buf, b"ping");
    ///     });
    /// b.write_all(b"ping".to_vec()).then(|(res, _)| res.unwrap());
    /// svc.run_until_done()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn timeout(self, delay: Duration) -> TimedOp<O> {
        TimedOp::new(self, Instant::now().checked_add(delay))
    }

    /// This operation, cancelled with `TimedOut` if it has not completed at `deadline`.
    pub fn deadline(self, deadline: Instant) -> TimedOp<O> {
        TimedOp::new(self, Some(deadline))
    }
}

impl<O: Operation> TimedOp<O> {
    fn new(op: Op<O>, deadline: Option<Instant>) -> TimedOp<O> {
        TimedOp {
            op,
            deadline,
            sleep: None,
            expired: false,
        }
    }

    /// The deadline; `None` if it is too far away to ever come.
    pub fn deadline_at(&self) -> Option<Instant> {
        self.deadline
    }

    /// Starts the operation; `handler` runs exactly once, on the loop, with the result (`TimedOut`
    /// if the deadline came first). The [`OpHandle`] can cancel it before then.
    pub fn then<F>(self, handler: F) -> OpHandle
    where
        F: FnOnce(O::Output) + 'static,
    {
        let TimedOp {
            op,
            deadline,
            sleep,
            expired,
        } = self;
        drop(sleep);
        let handle = op.then(handler);
        match deadline {
            // A future whose deadline passed while on the ring: it was asked to stop already.
            _ if expired => {}
            Some(deadline) => handle.set_deadline(deadline),
            None => {}
        }
        handle
    }
}

impl<O: Operation> Future for TimedOp<O> {
    type Output = O::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = Pin::new(&mut this.op).poll(cx) {
            this.sleep = None;
            return Poll::Ready(out);
        }
        if this.expired {
            return Poll::Pending;
        }
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        let sleep = this
            .sleep
            .get_or_insert_with(|| sleep_until(this.op.reactor(), deadline));
        let err = match Pin::new(sleep).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) => crate::error::timed_out(),
            // The loop is gone: the operation cannot complete either.
            Poll::Ready(Err(e)) => e,
        };
        this.sleep = None;
        this.expired = true;
        this.op.expire(err)
    }
}

impl<O: Operation> std::fmt::Debug for TimedOp<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedOp")
            .field("op", &self.op)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
