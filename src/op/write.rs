//! Writes: `write_some`, `write_all` and vectored writes from owned buffers.
//!
//! Sockets are written with `send(MSG_NOSIGNAL)`: writing to a peer that reset the connection is an
//! `EPIPE` error for the handler, never a SIGPIPE that kills the process (booster dies there).

use std::io::{self, IoSlice};
use std::task::Poll;

use rustix::net::{SendAncillaryBuffer, SendFlags};

use std::os::fd::{BorrowedFd, RawFd};

use io_uring::{opcode, types};

use super::ring::{MsgParts, cqe_result};
use super::{Cx, Interest, Operation, RingEntry, advance, move_all, nonblocking};
use crate::buf::IoBuf;

/// Writes what the socket takes now, at least one byte (unless the buffer is empty). Made by
/// [`StreamSocket::write_some`](crate::StreamSocket::write_some).
#[derive(Debug)]
pub struct WriteSome<B> {
    buf: B,
}

impl<B: IoBuf> WriteSome<B> {
    pub(crate) fn new(buf: B) -> Self {
        WriteSome { buf }
    }
}

impl<B: IoBuf> Operation for WriteSome<B> {
    type Output = (io::Result<usize>, B);
    type Value = usize;

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        Interest::Write
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let res = send(cx.fd(), self.buf.as_slice());
        cx.counted(res, self.buf.bytes_init())
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        (res, self.buf)
    }

    const RING: bool = true;

    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        Some(send_entry(fd, &self.buf, 0))
    }

    fn complete(&mut self, res: i32, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        Poll::Ready(cqe_result(res))
    }
}

/// A ring request sending `buf[offset..bytes_init]` with `MSG_NOSIGNAL`.
fn send_entry<B: IoBuf>(fd: RawFd, buf: &B, offset: usize) -> RingEntry {
    let data = &buf.as_slice()[offset..];
    let len = data.len().min(u32::MAX as usize) as u32;
    RingEntry(
        opcode::Send::new(types::Fd(fd), data.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build(),
    )
}

/// Writes every initialised byte of the buffer, waiting as often as needed (booster's `async_write`).
/// Made by [`StreamSocket::write_all`](crate::StreamSocket::write_all).
#[derive(Debug)]
pub struct WriteAll<B> {
    buf: B,
    written: usize,
}

impl<B: IoBuf> WriteAll<B> {
    pub(crate) fn new(buf: B) -> Self {
        WriteAll { buf, written: 0 }
    }
}

impl<B: IoBuf> Operation for WriteAll<B> {
    type Output = (io::Result<()>, B);
    type Value = ();

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        Interest::Write
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let data = self.buf.as_slice();
        let fd = cx.fd();
        move_all(
            &mut self.written,
            data.len(),
            |written| send(fd, &data[written..]),
            |_| write_zero(),
        )
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        (res, self.buf)
    }

    const RING: bool = true;

    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        Some(send_entry(fd, &self.buf, self.written))
    }

    fn complete(&mut self, res: i32, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let len = self.buf.bytes_init();
        match cqe_result(res) {
            Ok(n) => advance(&mut self.written, len, n, |_| write_zero()),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Writes several buffers in order with one `sendmsg`, as much as the socket takes now. Made by
/// [`StreamSocket::write_vectored`](crate::StreamSocket::write_vectored).
#[derive(Debug)]
pub struct WriteVectored<B> {
    bufs: Vec<B>,
    /// On io_uring: what the request points the kernel at.
    msg: Option<Box<MsgParts>>,
}

impl<B: IoBuf> WriteVectored<B> {
    pub(crate) fn new(bufs: Vec<B>) -> Self {
        WriteVectored { bufs, msg: None }
    }
}

impl<B: IoBuf> Operation for WriteVectored<B> {
    type Output = (io::Result<usize>, Vec<B>);
    type Value = usize;

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        Interest::Write
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let slices: Vec<IoSlice<'_>> = self
            .bufs
            .iter()
            .map(|b| IoSlice::new(b.as_slice()))
            .collect();
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let result = loop {
            match rustix::net::sendmsg(
                cx.fd(),
                &slices,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other,
            }
        };
        drop(slices);
        match result {
            Ok(n) => {
                if n < total {
                    cx.mark_drained();
                }
                Poll::Ready(Ok(n))
            }
            Err(rustix::io::Errno::AGAIN) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        (res, self.bufs)
    }

    const RING: bool = true;

    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        let iov = self
            .bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_slice().as_ptr().cast_mut().cast(),
                iov_len: b.as_slice().len(),
            })
            .collect();
        let msg = self.msg.insert(MsgParts::new(iov));
        Some(RingEntry(
            opcode::SendMsg::new(types::Fd(fd), msg.header())
                .flags(libc::MSG_NOSIGNAL as u32)
                .build(),
        ))
    }

    fn complete(&mut self, res: i32, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        Poll::Ready(cqe_result(res))
    }
}

/// One `send(MSG_NOSIGNAL)`: `Ok(None)` for `EAGAIN`; retries `EINTR`.
#[inline]
pub(crate) fn send(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<Option<usize>> {
    nonblocking(|| rustix::net::send(fd, data, SendFlags::NOSIGNAL))
}

/// The error of a `write_all` whose socket took no byte of what was left.
fn write_zero() -> io::Error {
    io::Error::new(
        io::ErrorKind::WriteZero,
        "the socket accepted no bytes in write_all",
    )
}
