//! hyper 1.x on aio (feature `hyper`): `rt::Read` / `rt::Write` for [`Io`], an executor that spawns
//! hyper's tasks on the loop ([`LocalExec`]), and a timer backed by the loop's timers
//! ([`LoopTimer`]), so that hyper's timeouts (header reads, HTTP/2 keep-alive pings) really fire.
//!
//! ```
//! use std::convert::Infallible;
//! use aio::compat::{LocalExec, LoopTimer};
//! use aio::{Acceptor, IoService, StreamSocket};
//!
//! let svc = IoService::new()?;
//! let acceptor = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
//! let addr = acceptor.local_endpoint()?;
//! // A server task: one connection, HTTP/1.1.
//! svc.spawn(async move {
//!     let (socket, _) = acceptor.accept().await.expect("accept");
//!     let service = hyper::service::service_fn(|_req| async {
//!         Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
//!             bytes::Bytes::from("Hello"),
//!         )))
//!     });
//!     let _ = hyper::server::conn::http1::Builder::new()
//!         .timer(LoopTimer::current())
//!         .serve_connection(socket.compat(), service)
//!         .await;
//! });
//! // A client on the same loop.
//! let status = svc.block_on({
//!     let svc = svc.local();
//!     async move {
//!         let socket = StreamSocket::dial(&svc, &addr).await?;
//!         let (mut sender, conn) = hyper::client::conn::http1::handshake(socket.compat())
//!             .await
//!             .map_err(std::io::Error::other)?;
//!         svc.spawn(conn);
//!         let req = hyper::Request::get("/")
//!             .header("host", "localhost")
//!             .body(http_body_util::Empty::<bytes::Bytes>::new())
//!             .map_err(std::io::Error::other)?;
//!         let res = sender.send_request(req).await.map_err(std::io::Error::other)?;
//!         Ok::<_, std::io::Error>(res.status())
//!     }
//! })?;
//! assert_eq!(status, 200);
//! let _ = LocalExec; // for HTTP/2: `http2::Builder::new(LocalExec)`
//! # Ok::<(), std::io::Error>(())
//! ```

use std::borrow::Borrow;
use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use hyper::rt::ReadBufCursor;

use super::Io;
use crate::net::stream::StreamSocket;
use crate::{Handle, LocalHandle, OpHandle};

impl<S: Borrow<StreamSocket> + Unpin> hyper::rt::Read for Io<S> {
    /// Reads straight into the cursor's unfilled part, left uninitialised until the kernel writes
    /// it; otherwise waits, in the socket's read line, for it to become readable.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the read only writes bytes into the slice (the kernel copies into it), never
        // de-initialises any.
        let unfilled = unsafe { buf.as_mut() };
        let n = ready!(self.get_mut().poll_read_uninit(cx, unfilled))?;
        // SAFETY: the kernel wrote the first `n` bytes of the unfilled part.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl<S: Borrow<StreamSocket> + Unpin> hyper::rt::Write for Io<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_vectored_from(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().shutdown_write())
    }
}

/// hyper's executor on aio: spawns each future hyper hands it (HTTP/2 streams, a client's
/// connection) as a task of the loop running on this thread ([`LocalHandle::current`]), so the
/// futures need not be `Send`. Pass it to `http2::Builder::new(LocalExec)` (server or client) or to
/// hyper-util's `auto::Builder::new(LocalExec)`.
///
/// # Panics
/// `execute` panics when no loop runs on the calling thread: hyper calls it while a task of the
/// loop polls a connection, so that only happens with hyper driven outside aio.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        let svc = LocalHandle::current().expect(
            "aio::compat::LocalExec used outside a running aio loop (no loop on this thread)",
        );
        // Detached: the task runs to its end on the loop.
        drop(svc.spawn(fut));
    }
}

/// hyper's timer on aio: each sleep is a background timer of the loop (it never keeps
/// `run_until_done` running), armed on the loop's thread, cancelled when the sleep is dropped.
///
/// hyper wants a timer and sleeps that are `Send + Sync`: the timer holds the loop's [`Handle`],
/// and a sleep shares a small locked cell with the loop's timer, which marks it fired and wakes
/// whoever polls it. Made on the loop's thread (as hyper does, while polling a connection), a sleep
/// arms its timer at once; made elsewhere, it posts the arming to the loop.
#[derive(Debug, Clone)]
pub struct LoopTimer {
    handle: Handle,
}

impl LoopTimer {
    /// The timer of `svc`'s loop.
    pub fn new(svc: &LocalHandle) -> LoopTimer {
        LoopTimer {
            handle: svc.handle(),
        }
    }

    /// The timer of the loop running on this thread.
    ///
    /// # Panics
    /// When no loop runs on this thread.
    pub fn current() -> LoopTimer {
        LoopTimer::new(
            &LocalHandle::current()
                .expect("aio::compat::LoopTimer::current(): no loop on this thread"),
        )
    }
}

/// What a sleep and its loop timer share.
#[derive(Default)]
struct Shared {
    state: Mutex<SleepState>,
}

#[derive(Default)]
struct SleepState {
    fired: bool,
    waker: Option<Waker>,
    /// The loop timer's entry in this thread's [`ARMED`] table, once armed.
    armed: Option<(usize, u64)>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SleepState> {
        // A panic while locked leaves nothing half-done here: go on with the state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fire(&self) {
        let waker = {
            let mut state = self.lock();
            state.fired = true;
            state.armed = None;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The armed loop timers of this thread's loops, so that a dropped sleep can cancel its own: the
/// [`OpHandle`]s (not `Send`) stay on the loop's thread, and a sleep keeps only its entry's key and
/// number.
#[derive(Default)]
struct Armed {
    handles: slab::Slab<(u64, OpHandle)>,
    next: u64,
}

thread_local! {
    static ARMED: RefCell<Armed> = RefCell::new(Armed::default());
}

/// Takes entry `key` numbered `number` out of [`ARMED`] when it is still that entry.
struct Unlist(usize, u64);

impl Drop for Unlist {
    fn drop(&mut self) {
        let _ = ARMED.try_with(|armed| {
            let mut armed = armed.borrow_mut();
            if armed.handles.get(self.0).is_some_and(|(n, _)| *n == self.1) {
                armed.handles.remove(self.0);
            }
        });
    }
}

/// Arms `shared`'s loop timer on `svc` (on its thread) for `deadline`.
fn arm(svc: &LocalHandle, deadline: Instant, shared: Arc<Shared>) {
    let (key, number) = ARMED.with(|armed| {
        let mut armed = armed.borrow_mut();
        armed.next += 1;
        (armed.handles.vacant_key(), armed.next)
    });
    let unlist = Unlist(key, number);
    let fired = shared.clone();
    // `then` never runs the handler inside this call, so the table is not touched before the
    // insert below takes the key it promised.
    let handle = svc.at(deadline).background().then(move |res| {
        drop(unlist);
        if res.is_ok() {
            fired.fire();
        }
    });
    ARMED.with(|armed| {
        let inserted = armed.borrow_mut().handles.insert((number, handle));
        debug_assert_eq!(inserted, key);
    });
    let mut state = shared.lock();
    if !state.fired {
        state.armed = Some((key, number));
    }
}

/// Cancels the armed loop timer `key` numbered `number` (on its loop's thread).
fn disarm(key: usize, number: u64) {
    let _ = ARMED.try_with(|armed| {
        if let Some((n, handle)) = armed.borrow().handles.get(key) {
            if *n == number {
                // Its handler runs later, as a job, and takes the entry out.
                handle.cancel();
            }
        }
    });
}

impl hyper::rt::Timer for LoopTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let shared = Arc::new(Shared::default());
        match LocalHandle::current() {
            Some(svc) if svc.handle().same_loop(&self.handle) => {
                arm(&svc, deadline, shared.clone());
            }
            _ => {
                let cell = shared.clone();
                let posted = self.handle.post(move || {
                    if let Some(svc) = LocalHandle::current() {
                        arm(&svc, deadline, cell);
                    }
                });
                if posted.is_err() {
                    // The loop is gone: nothing would ever wake this sleep, so it is over now.
                    shared.fire();
                }
            }
        }
        Box::pin(LoopSleep {
            shared,
            handle: self.handle.clone(),
        })
    }
}

/// A sleep of [`LoopTimer`]: `Send + Sync`, completed by the loop's timer.
struct LoopSleep {
    shared: Arc<Shared>,
    handle: Handle,
}

impl Future for LoopSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.shared.lock();
        if state.fired {
            return Poll::Ready(());
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for LoopSleep {}

impl Drop for LoopSleep {
    fn drop(&mut self) {
        let armed = self.shared.lock().armed.take();
        let Some((key, number)) = armed else {
            return; // fired, or not armed yet (a posted arming finds nobody waiting and just expires)
        };
        match LocalHandle::current() {
            Some(svc) if svc.handle().same_loop(&self.handle) => disarm(key, number),
            _ => {
                let _ = self.handle.post(move || disarm(key, number));
            }
        }
    }
}
