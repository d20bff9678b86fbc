//! The I/O traits of other crates for aio's stream sockets: futures-io's `AsyncRead` /
//! `AsyncWrite` (feature `futures-io`), tokio's (feature `tokio-io`) and hyper's `rt::Read` /
//! `rt::Write` (feature `hyper`), all on one wrapper, [`Io`].
//!
//! Those traits hand a poll a buffer it may use only during that call, where an aio operation owns
//! its buffer until it completes. `Io` bridges the two without copying: each poll makes its
//! non-blocking syscall straight into (or out of) the caller's buffer, and only when the kernel says
//! `EAGAIN` does the task wait, its waker in the loop's own line for that direction of the socket
//! (the line where awaited operations wait), until the loop sees the direction ready. The same
//! readiness-style path runs on every backend: on io_uring the fd's poll request on the ring says
//! when to try again.
//!
//! # Why a wrapper
//! A waiting poll leaves its waker in the socket's line and must find it again on the next poll, or
//! take it out when nobody will poll any more. That takes a little state per direction, which a
//! [`StreamSocket`] (shared through `&self`, by handlers and tasks alike) does not carry: `Io` holds
//! it, takes its wakers out of line when dropped, and keeps idle sockets that never meet these
//! traits as small as they are. Reading and writing wait apart (one line each), so the halves of
//! `futures::io::split` or `tokio::io::split` polled by two tasks each get their own wake-ups.
//!
//! `Io<S>` works with any `S` that borrows a socket: `Io<StreamSocket>` owns it
//! ([`StreamSocket::compat`]), `Io<&StreamSocket>` and `Io<Rc<StreamSocket>>` share it with other
//! code of the loop. Writes never raise `SIGPIPE`; closing (`poll_close`, `poll_shutdown`) shuts the
//! writing side down, which the peer reads as the end of the stream; flushing has nothing to do.
//!
//! ```
//! # #[cfg(feature = "futures-io")] {
//! use futures::io::{AsyncReadExt, AsyncWriteExt};
//! use aio::{IoService, StreamSocket};
//!
//! let svc = IoService::new()?;
//! let (a, b) = StreamSocket::pair(&svc)?;
//! let (mut a, mut b) = (a.compat(), b.compat());
//! let reply = svc.block_on(async move {
//!     a.write_all(b"ping").await?;
//!     a.close().await?; // end of stream for `b`
//!     let mut got = Vec::new();
//!     b.read_to_end(&mut got).await?;
//!     Ok::<_, std::io::Error>(got)
//! })?;
//! assert_eq!(reply, b"ping");
//! # }
//! # Ok::<(), std::io::Error>(())
//! ```

#[cfg(feature = "futures-io")]
mod futures_io;
#[cfg(feature = "hyper")]
mod hyper_rt;
#[cfg(feature = "tokio-io")]
mod tokio_io;

#[cfg(feature = "hyper")]
pub use hyper_rt::{LocalExec, LoopTimer};

use std::borrow::Borrow;
use std::io::{self, IoSlice};
use std::mem::{ManuallyDrop, MaybeUninit};
use std::net::Shutdown;
use std::task::{Context, Poll};

use rustix::net::{SendAncillaryBuffer, SendFlags};

use crate::net::stream::StreamSocket;
use crate::op::Interest;
use crate::op::nonblocking;
use crate::op::poll_io::DirectionWait;
use crate::op::write::send;

/// A stream socket with the I/O traits of futures-io, tokio and hyper (each behind its feature):
/// see the [module docs](self).
pub struct Io<S: Borrow<StreamSocket> = StreamSocket> {
    socket: S,
    read: DirectionWait,
    write: DirectionWait,
}

impl StreamSocket {
    /// This socket with the I/O traits of futures-io, tokio and hyper (those whose features are
    /// on): [`Io::new(self)`](Io::new).
    pub fn compat(self) -> Io<StreamSocket> {
        Io::new(self)
    }
}

impl<S: Borrow<StreamSocket>> Io<S> {
    /// Wraps `socket` (owned, borrowed or shared: anything that borrows a [`StreamSocket`]).
    pub fn new(socket: S) -> Io<S> {
        Io {
            socket,
            read: DirectionWait::new(Interest::Read),
            write: DirectionWait::new(Interest::Write),
        }
    }

    /// The socket, for its other methods (options, endpoints, aio's own operations).
    pub fn get_ref(&self) -> &StreamSocket {
        self.socket.borrow()
    }

    /// The socket back, with any waker this wrapper left in its lines taken out.
    pub fn into_inner(self) -> S {
        let mut this = ManuallyDrop::new(self);
        this.withdraw();
        // SAFETY: `this` is never used or dropped again, so the socket is moved out exactly once;
        // the other fields own nothing that needs dropping (their wakers were just withdrawn).
        unsafe { std::ptr::read(&this.socket) }
    }

    fn withdraw(&mut self) {
        let socket = self.socket.borrow();
        if self.read.is_waiting() {
            socket.end_wait(&mut self.read);
        }
        if self.write.is_waiting() {
            socket.end_wait(&mut self.write);
        }
    }

    /// Reads what is there into `buf`, or waits for the socket to become readable.
    #[cfg_attr(not(feature = "futures-io"), allow(dead_code))]
    pub(crate) fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let len = buf.len();
        self.socket.borrow().poll_io(&mut self.read, cx, len, |fd| {
            nonblocking(|| rustix::io::read(fd, &mut *buf))
        })
    }

    /// Reads what is there into `buf`, which need not be initialised (the kernel writes what it
    /// reads, and those bytes are the count's), or waits for the socket to become readable.
    #[cfg_attr(not(any(feature = "tokio-io", feature = "hyper")), allow(dead_code))]
    pub(crate) fn poll_read_uninit(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        let len = buf.len();
        self.socket.borrow().poll_io(&mut self.read, cx, len, |fd| {
            nonblocking(|| rustix::io::read(fd, &mut *buf).map(|(filled, _)| filled.len()))
        })
    }

    /// Writes what the socket takes of `data`, or waits for it to become writable.
    pub(crate) fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.socket
            .borrow()
            .poll_io(&mut self.write, cx, data.len(), |fd| send(fd, data))
    }

    /// Writes what the socket takes of `bufs`, in order, with one `sendmsg` (`writev` that never
    /// raises `SIGPIPE`), or waits for it to become writable.
    pub(crate) fn poll_write_vectored_from(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum();
        self.socket
            .borrow()
            .poll_io(&mut self.write, cx, total, |fd| {
                nonblocking(|| {
                    rustix::net::sendmsg(
                        fd,
                        bufs,
                        &mut SendAncillaryBuffer::default(),
                        SendFlags::NOSIGNAL,
                    )
                })
            })
    }

    /// Shuts the writing side down: the peer reads the end of the stream.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        self.socket.borrow().shutdown(Shutdown::Write)
    }
}

impl<S: Borrow<StreamSocket>> Drop for Io<S> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

impl<S: Borrow<StreamSocket>> std::fmt::Debug for Io<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("socket", self.get_ref())
            .field("read_waiting", &self.read.is_waiting())
            .field("write_waiting", &self.write.is_waiting())
            .finish()
    }
}
