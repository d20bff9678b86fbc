//! [`DialAny`]: connecting to the first of several endpoints that accepts, or to a host name.
//!
//! Unlike the other operations, this one spans several sources: a name resolution on a blocking
//! thread, then one socket per endpoint tried. It is written as a local future (resolve, then dial
//! each address in turn) that the operation drives on a virtual source of its own: the future's waker
//! fires that source through the loop, and each firing retries the operation, which polls the future
//! again. So it is an [`Op`](crate::Op) like any other: `.then(handler)` or `.await`, and dropping it
//! (or the `IoService`) drops the sockets it was trying, running their close hooks.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::{Cx, Interest, Op, Operation, sealed};
use crate::LocalHandle;
use crate::driver::Token;
use crate::net::stream::StreamSocket;
use crate::service::shared::Shared;
use crate::service::source::FdSlot;

type DialFuture = Pin<Box<dyn Future<Output = io::Result<StreamSocket>>>>;

/// Connects to the first endpoint that accepts. Made by
/// [`StreamSocket::dial_any`](crate::StreamSocket::dial_any),
/// [`StreamSocket::dial_host`](crate::StreamSocket::dial_host) and the [`Dialer`](crate::Dialer).
pub struct DialAny {
    future: DialFuture,
    waker: Waker,
    _source: VirtualSource,
    started: bool,
}

impl DialAny {
    /// An operation that drives `future` on a virtual source of `svc`.
    pub(crate) fn start(
        svc: &LocalHandle,
        future: impl Future<Output = io::Result<StreamSocket>> + 'static,
    ) -> Op<DialAny> {
        match svc.add_source(FdSlot::Virtual) {
            Ok(token) => {
                let waker = Waker::from(Arc::new(FireWaker {
                    shared: svc.inner.shared.clone(),
                    token,
                }));
                let op = DialAny {
                    future: Box::pin(future),
                    waker,
                    _source: VirtualSource {
                        svc: Some(svc.clone()),
                        token,
                    },
                    started: false,
                };
                Op::new(svc, token, op)
            }
            Err(e) => DialAny::failed(svc, e),
        }
    }

    /// An operation that completes with `err` (a bad target, a loop that is gone).
    pub(crate) fn failed(svc: &LocalHandle, err: io::Error) -> Op<DialAny> {
        let op = DialAny {
            future: Box::pin(std::future::pending()),
            waker: Waker::noop().clone(),
            _source: VirtualSource {
                svc: None,
                token: Token::NONE,
            },
            started: false,
        };
        Op::failed(svc, op, err)
    }
}

impl std::fmt::Debug for DialAny {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialAny")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl sealed::Sealed for DialAny {}

impl Operation for DialAny {
    type Output = io::Result<StreamSocket>;
    type Value = StreamSocket;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn needs_ready(&self) -> bool {
        // The first poll starts the work; later ones wait until the future's waker fired the source.
        self.started
    }

    fn attempt(&mut self, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        self.started = true;
        let waker = self.waker.clone();
        match self.future.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => Poll::Pending,
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}

/// Wakes the operation by firing its virtual source on the loop (from any thread: the blocking
/// resolver wakes it from a pool thread).
struct FireWaker {
    shared: Arc<Shared>,
    token: Token,
}

impl Wake for FireWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let token = self.token;
        // A loop that is gone has dropped the operation already. Firing is the loop's bookkeeping,
        // not a handler of its own (false): the operation's handler runs as a job after it.
        let _ = self.shared.post(Box::new(move |svc: &LocalHandle| {
            svc.fire(token);
            false
        }));
    }
}

/// Removes the operation's virtual source when the operation ends or is dropped.
struct VirtualSource {
    svc: Option<LocalHandle>,
    token: Token,
}

impl Drop for VirtualSource {
    fn drop(&mut self) {
        if let Some(svc) = self.svc.take() {
            drop(svc.remove_source(self.token));
        }
    }
}
