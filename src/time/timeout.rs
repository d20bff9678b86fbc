//! [`timeout`] and [`timeout_at`]: a deadline on any future (tokio's `time::timeout`).
//!
//! For one aio operation, prefer [`Op::timeout`](crate::Op::timeout): it cancels the operation in
//! place and gives its buffer back. `timeout` fits what is not one operation: a whole exchange, a
//! future of another crate. On expiry the inner future is dropped, which cancels whatever aio
//! operation it was waiting on.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::LocalHandle;
use crate::op::{Op, Sleep};

/// The error of a [`timeout`] whose deadline passed before its future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    /// `TimedOut`, the kind aio's own deadlines report.
    fn from(_: Elapsed) -> io::Error {
        crate::error::timed_out()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`]: the inner future's output, or [`Elapsed`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        deadline: Option<Instant>,
        // The loop to time on: given, or the one running this future (looked up at its first poll).
        svc: Option<LocalHandle>,
        sleep: Option<Op<Sleep>>,
    }
}

/// Runs `future` with a deadline `delay` from now: its output, or `Err(Elapsed)` if it has not
/// completed by then (and then it is dropped, which cancels the aio operation it waited on).
///
/// The clock is that of the loop that polls it.
///
/// # Panics
/// When polled outside an aio loop (by another executor) without a loop named by
/// [`on`](Timeout::on).
///
/// ```
/// use std::time::Duration;
/// use aio::{IoService, StreamSocket, time};
/// let svc = IoService::new()?;
/// let (a, _b) = StreamSocket::pair(&svc)?;
/// let res = svc.block_on(async {
///     // Two reads that will never complete: the whole exchange times out.
///     time::timeout(Duration::from_millis(10), async {
///         let (res, buf) = a.read_exact(vec![0u8; 2]).await;
///         res?;
///         let (res, _) = a.read_exact(buf).await;
///         res
///     })
///     .await
/// });
/// assert!(res.is_err(), "elapsed");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn timeout<F: IntoFuture>(delay: Duration, future: F) -> Timeout<F::IntoFuture> {
    Timeout::new(
        future.into_future(),
        Instant::now().checked_add(delay),
        None,
    )
}

/// [`timeout`] with a deadline given as an instant.
pub fn timeout_at<F: IntoFuture>(deadline: Instant, future: F) -> Timeout<F::IntoFuture> {
    Timeout::new(future.into_future(), Some(deadline), None)
}

impl<F> Timeout<F> {
    fn new(future: F, deadline: Option<Instant>, svc: Option<LocalHandle>) -> Self {
        Timeout {
            future,
            deadline,
            svc,
            sleep: None,
        }
    }

    /// Times on `svc` rather than on the loop polling it: for a future polled outside any aio loop's
    /// tasks (it can only time out while `svc` runs).
    ///
    /// ```
    /// use std::time::Duration;
    /// use aio::{IoService, time};
    /// let svc = IoService::new()?;
    /// let never = std::future::pending::<()>();
    /// let res = svc.block_on(time::timeout(Duration::from_millis(5), never).on(&svc));
    /// assert_eq!(res, Err(time::Elapsed::default()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn on(mut self, svc: &LocalHandle) -> Self {
        self.svc = Some(svc.clone());
        self
    }

    /// The inner future, given up without waiting for it.
    pub fn into_inner(self) -> F {
        self.future
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            *this.sleep = None;
            return Poll::Ready(Ok(out));
        }
        let Some(deadline) = *this.deadline else {
            return Poll::Pending;
        };
        if this.sleep.is_none() {
            let svc = match this.svc.take().or_else(LocalHandle::current) {
                Some(svc) => svc,
                None => panic!(
                    "aio::time::timeout polled outside an aio loop: name the loop with Timeout::on"
                ),
            };
            *this.sleep = Some(svc.at(deadline));
        }
        let Some(sleep) = this.sleep.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(sleep).poll(cx) {
            Poll::Pending => Poll::Pending,
            // A loop that is gone cannot complete the future either: it has timed out.
            Poll::Ready(_) => {
                *this.sleep = None;
                *this.deadline = None;
                Poll::Ready(Err(Elapsed(())))
            }
        }
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
