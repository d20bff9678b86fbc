//! tokio's `AsyncRead` / `AsyncWrite` for [`Io`] (feature `tokio-io`): the traits only, polled by
//! aio's own loop; no tokio runtime is started.

use std::borrow::Borrow;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::ReadBuf;

use super::Io;
use crate::net::stream::StreamSocket;

impl<S: Borrow<StreamSocket> + Unpin> tokio::io::AsyncRead for Io<S> {
    /// Reads straight into the unfilled part of `buf` (left uninitialised until the kernel writes
    /// it); nothing added means end of stream. Otherwise waits, in the socket's read line, for it
    /// to become readable.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the read only writes bytes into the slice (the kernel copies into it), never
        // de-initialises any.
        let unfilled = unsafe { buf.unfilled_mut() };
        let n = ready!(self.get_mut().poll_read_uninit(cx, unfilled))?;
        // SAFETY: the kernel wrote the first `n` bytes of the unfilled part.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: Borrow<StreamSocket> + Unpin> tokio::io::AsyncWrite for Io<S> {
    /// Writes what the socket takes of `buf`; waits in the socket's write line when it takes
    /// nothing. Never raises `SIGPIPE`.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, buf)
    }

    /// One `sendmsg` of every buffer, in order.
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

    /// Nothing is buffered here: always ready.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the writing side down (`shutdown(Write)`): the peer reads the end of the stream. The
    /// socket stays open for reading.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().shutdown_write())
    }
}
