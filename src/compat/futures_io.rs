//! futures-io's `AsyncRead` / `AsyncWrite` for [`Io`] (feature `futures-io`).

use std::borrow::Borrow;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Io;
use crate::net::stream::StreamSocket;

impl<S: Borrow<StreamSocket> + Unpin> futures_io::AsyncRead for Io<S> {
    /// Reads straight into `buf` when the socket has bytes (`Ok(0)`: end of stream); otherwise
    /// waits, in the socket's read line, for it to become readable.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_into(cx, buf)
    }
}

impl<S: Borrow<StreamSocket> + Unpin> futures_io::AsyncWrite for Io<S> {
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

    /// Nothing is buffered here: always ready.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts the writing side down (`shutdown(Write)`): the peer reads the end of the stream. The
    /// socket stays open for reading.
    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().shutdown_write())
    }
}
