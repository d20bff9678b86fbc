//! Datagram operations: [`SendDatagram`] (`send_to`, `send`) and [`RecvDatagram`] (`recv_from`,
//! `recv`), for UDP and Unix datagram sockets.
//!
//! A datagram is sent whole or not at all: one larger than the socket can carry (over 65,507 bytes of
//! UDP over IPv4, or more than a Unix socket's send buffer) is an `InvalidInput` error saying so
//! (`EMSGSIZE`), never a panic and never a partial send. A datagram larger than the receive buffer is
//! not cut silently: the bytes that fit are delivered and [`RecvMeta::truncated`] says the rest was
//! discarded, with the datagram's full length in [`RecvMeta::datagram_len`].
//!
//! Readiness: one datagram received says nothing about the next, so a receive never marks the socket
//! drained; only the kernel's `EAGAIN` makes an operation wait. A `send_to` that finds a Unix
//! receiver's queue full (`EAGAIN`; the kernel queues only `net.unix.max_dgram_qlen` datagrams) waits
//! for writability, which comes when the receiver consumes one of this socket's datagrams (the kernel
//! then returns their memory to the sender and wakes it). `poll(2)`, level-triggered, reports such a
//! socket writable all along, so on the poll backend the send tries again after a millisecond instead
//! of spinning.

use std::io;
use std::task::Poll;
use std::time::Duration;

use socket2::{MaybeUninitSlice, SockAddr, SockRef};

use super::{Cx, Interest, Operation};
use crate::Backend;
use crate::buf::{IoBuf, IoBufMut};
use crate::endpoint::Endpoint;

/// How long a `send_to` that found a Unix receiver's queue full waits before trying again, on the
/// poll backend (see the module docs).
const UNIX_QUEUE_FULL_RETRY: Duration = Duration::from_millis(1);

/// What a datagram receive reports, besides the bytes themselves (which are in the buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes placed in the buffer (from its start).
    pub len: usize,
    /// The datagram's full length; larger than `len` when it was truncated.
    pub datagram_len: usize,
    /// The datagram did not fit in the buffer: its first `len` bytes were delivered, the rest discarded
    /// (`MSG_TRUNC`).
    pub truncated: bool,
    /// The sender: an IP endpoint, a Unix path or abstract name, or [`Endpoint::Unnamed`] for an
    /// unbound Unix sender.
    pub from: Endpoint,
}

/// Sends one datagram, to a given endpoint or the connected peer. Made by
/// [`DatagramSocket::send_to`](crate::DatagramSocket::send_to) and
/// [`DatagramSocket::send`](crate::DatagramSocket::send).
#[derive(Debug)]
pub struct SendDatagram<B> {
    buf: B,
    to: Option<Box<(SockAddr, Endpoint)>>,
}

impl<B: IoBuf> SendDatagram<B> {
    pub(crate) fn new(buf: B, to: Option<(SockAddr, Endpoint)>) -> Self {
        SendDatagram {
            buf,
            to: to.map(Box::new),
        }
    }

    /// The `EMSGSIZE` error, with the size and destination.
    fn too_large(&self, e: io::Error) -> io::Error {
        let to = match &self.to {
            Some(to) => format!("send_to {}", to.1),
            None => "send".to_owned(),
        };
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{to}: a datagram of {} bytes is too large for this socket (EMSGSIZE: {e})",
                self.buf.bytes_init()
            ),
        )
    }
}

impl<B: IoBuf> Operation for SendDatagram<B> {
    type Output = (io::Result<usize>, B);
    type Value = usize;

    fn interest(&self) -> Interest {
        Interest::Write
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let fd = cx.fd();
        let socket = SockRef::from(&fd);
        loop {
            let data = self.buf.as_slice();
            let sent = match &self.to {
                Some(to) => socket.send_to_with_flags(data, &to.0, libc::MSG_NOSIGNAL),
                None => socket.send_with_flags(data, libc::MSG_NOSIGNAL),
            };
            return match sent {
                Ok(n) => Poll::Ready(Ok(n)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {
                        if self.to.as_ref().is_some_and(|to| to.1.is_unix())
                            && cx.reactor().backend() == Backend::Poll
                        {
                            // poll(2) says writable all along: wait a little instead of spinning.
                            cx.retry_after(UNIX_QUEUE_FULL_RETRY);
                        }
                        Poll::Pending
                    }
                    Some(libc::EMSGSIZE) => {
                        let err = self.too_large(e);
                        Poll::Ready(Err(err))
                    }
                    _ => Poll::Ready(Err(e)),
                },
            };
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        (res, self.buf)
    }
}

/// Receives one datagram and its sender. Made by
/// [`DatagramSocket::recv_from`](crate::DatagramSocket::recv_from) and
/// [`DatagramSocket::recv`](crate::DatagramSocket::recv).
#[derive(Debug)]
pub struct RecvDatagram<B> {
    buf: B,
}

impl<B: IoBufMut> RecvDatagram<B> {
    pub(crate) fn new(buf: B) -> Self {
        RecvDatagram { buf }
    }
}

impl<B: IoBufMut> Operation for RecvDatagram<B> {
    type Output = (io::Result<RecvMeta>, B);
    type Value = RecvMeta;

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let fd = cx.fd();
        let socket = SockRef::from(&fd);
        let total = self.buf.bytes_total();
        loop {
            let mut slices = [MaybeUninitSlice::new(self.buf.as_uninit_mut())];
            // MSG_TRUNC: the kernel reports the datagram's full length, not only what fit.
            match socket.recv_from_vectored_with_flags(&mut slices, libc::MSG_TRUNC) {
                Ok((full, flags, addr)) => {
                    let len = full.min(total);
                    // SAFETY: the kernel wrote `len` bytes from the start of the buffer.
                    unsafe { self.buf.set_init(len) };
                    let from = sender(&addr);
                    let meta = RecvMeta {
                        len,
                        datagram_len: full.max(len),
                        truncated: flags.is_truncated() || full > total,
                        from,
                    };
                    return Poll::Ready(Ok(meta));
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return Poll::Pending,
                    _ => return Poll::Ready(Err(e)),
                },
            }
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        (res, self.buf)
    }
}

/// The sender's endpoint; an unbound Unix sender comes with no address at all (length 0).
fn sender(addr: &SockAddr) -> Endpoint {
    if addr.len() == 0 {
        return Endpoint::Unnamed;
    }
    Endpoint::from_sock_addr(addr).unwrap_or(Endpoint::Unnamed)
}
