//! Reads: `read_some`, `read_buf`, `read_exact` and vectored reads into owned buffers.

use std::io;
use std::task::Poll;

use std::os::fd::RawFd;

use io_uring::{opcode, types};

use super::ring::{MsgParts, cqe_result};
use super::{Cx, Interest, Operation, RingEntry, advance, move_all, nonblocking};
use crate::buf::{GrowableBuf, IoBufMut, Slice};

/// Reads whatever is available into the buffer from its start, up to its
/// [`bytes_total`](crate::IoBuf::bytes_total) (overwriting what was there): `Ok(0)` means end of
/// stream. Made by [`StreamSocket::read_some`](crate::StreamSocket::read_some).
#[derive(Debug)]
pub struct ReadSome<B> {
    buf: B,
}

impl<B: IoBufMut> ReadSome<B> {
    pub(crate) fn new(buf: B) -> Self {
        ReadSome { buf }
    }

    /// The buffer, with what the last read put at its start.
    pub(crate) fn buf(&self) -> &B {
        &self.buf
    }
}

impl<B: IoBufMut> Operation for ReadSome<B> {
    type Output = (io::Result<usize>, B);
    type Value = usize;

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let total = self.buf.bytes_total();
        let res = read_into(cx, &mut self.buf, 0);
        cx.counted(res, total)
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        (res, self.buf)
    }

    const RING: bool = true;

    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        Some(read_entry(fd, &mut self.buf, 0))
    }

    fn complete(&mut self, res: i32, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let out = cqe_result(res).inspect(|&n| {
            // SAFETY: the kernel wrote `n` bytes at the start of the buffer.
            unsafe { self.buf.set_init(n) }
        });
        Poll::Ready(out)
    }
}

/// How much [`ReadBuf`] reserves when the buffer has no spare capacity.
pub(crate) const READ_BUF_RESERVE: usize = 8 * 1024;

/// Reads whatever is available into the spare capacity of a growable buffer, after its initialised
/// bytes, and raises its length by the count read: `Ok(0)` means end of stream. Made by
/// [`StreamSocket::read_buf`](crate::StreamSocket::read_buf).
///
/// It is a [`ReadSome`] of the spare capacity (`buf.slice(len..capacity)`), whose buffer comes back
/// whole: the same syscall or ring request, no copy.
#[derive(Debug)]
pub struct ReadBuf<B> {
    inner: ReadSome<Slice<B>>,
}

impl<B: GrowableBuf> ReadBuf<B> {
    /// Reads after `buf`'s length, reserving [`READ_BUF_RESERVE`] bytes first if it has no room.
    pub(crate) fn new(mut buf: B) -> Self {
        if buf.bytes_total() == buf.bytes_init() {
            buf.reserve(READ_BUF_RESERVE);
        }
        let len = buf.bytes_init();
        ReadBuf {
            inner: ReadSome::new(buf.slice(len..)),
        }
    }
}

impl<B: GrowableBuf> Operation for ReadBuf<B> {
    type Output = (io::Result<usize>, B);
    type Value = usize;

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        self.inner.attempt(cx)
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        let (res, spare) = self.inner.finish(res);
        (res, spare.into_inner())
    }

    const RING: bool = true;

    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        self.inner.prepare(fd)
    }

    fn complete(&mut self, res: i32, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        self.inner.complete(res, cx)
    }
}

/// A ring request receiving into `buf[offset..bytes_total]`. Tried at once when submitted (not
/// `POLL_FIRST`), so that data already there completes in the same turn of the loop.
fn read_entry<B: IoBufMut>(fd: RawFd, buf: &mut B, offset: usize) -> RingEntry {
    let total = buf.bytes_total();
    // SAFETY: `offset <= bytes_total`, so the pointer stays within (or one past) the buffer.
    let ptr = unsafe { buf.stable_mut_ptr().add(offset) };
    let len = (total - offset).min(u32::MAX as usize) as u32;
    RingEntry(opcode::Recv::new(types::Fd(fd), ptr, len).build())
}

/// Fills the whole buffer ([`bytes_total`](IoBufMut) bytes); end of stream first is
/// `UnexpectedEof`, with what did arrive left in the buffer. Made by
/// [`StreamSocket::read_exact`](crate::StreamSocket::read_exact).
#[derive(Debug)]
pub struct ReadExact<B> {
    buf: B,
    filled: usize,
}

impl<B: IoBufMut> ReadExact<B> {
    pub(crate) fn new(buf: B) -> Self {
        ReadExact { buf, filled: 0 }
    }
}

impl<B: IoBufMut> Operation for ReadExact<B> {
    type Output = (io::Result<()>, B);
    type Value = ();

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let total = self.buf.bytes_total();
        let buf = &mut self.buf;
        move_all(
            &mut self.filled,
            total,
            |filled| read_into(cx, buf, filled),
            |filled| early_eof(filled, total),
        )
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        (res, self.buf)
    }

    const RING: bool = true;

    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        Some(read_entry(fd, &mut self.buf, self.filled))
    }

    fn complete(&mut self, res: i32, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let total = self.buf.bytes_total();
        match cqe_result(res) {
            Ok(n) => {
                let step = advance(&mut self.filled, total, n, |filled| {
                    early_eof(filled, total)
                });
                // SAFETY: the kernel wrote `n` bytes after the `filled` ones before (none when
                // the stream ended: `filled` is unchanged then).
                unsafe { self.buf.set_init(self.filled) };
                step
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Reads into several buffers in order with one `readv`. Made by
/// [`StreamSocket::read_vectored`](crate::StreamSocket::read_vectored).
#[derive(Debug)]
pub struct ReadVectored<B> {
    bufs: Vec<B>,
    /// On io_uring: what the request points the kernel at.
    msg: Option<Box<MsgParts>>,
}

impl<B: IoBufMut> ReadVectored<B> {
    pub(crate) fn new(bufs: Vec<B>) -> Self {
        ReadVectored { bufs, msg: None }
    }

    /// One iovec per buffer, over its whole capacity.
    fn iovecs(&mut self) -> Vec<libc::iovec> {
        self.bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.stable_mut_ptr().cast(),
                iov_len: b.bytes_total(),
            })
            .collect()
    }

    /// The kernel wrote `n` bytes, filling the buffers in order.
    fn filled(&mut self, n: usize) {
        let mut left = n;
        for b in &mut self.bufs {
            let here = left.min(b.bytes_total());
            // SAFETY: the kernel wrote these bytes (the first `n` over the buffers in order).
            unsafe { b.set_init(here) };
            left -= here;
        }
    }
}

impl<B: IoBufMut> Operation for ReadVectored<B> {
    type Output = (io::Result<usize>, Vec<B>);
    type Value = usize;

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let iovecs = self.iovecs();
        let total: usize = iovecs.iter().map(|v| v.iov_len).sum();
        let count = iovecs.len().min(libc::c_int::MAX as usize) as libc::c_int;
        loop {
            // SAFETY: each iovec covers `bytes_total` writable bytes of a buffer this operation owns
            // (the IoBufMut contract), and the buffers stay put for the duration of the call.
            let n = unsafe {
                libc::readv(
                    std::os::fd::AsRawFd::as_raw_fd(&cx.fd()),
                    iovecs.as_ptr(),
                    count,
                )
            };
            if n >= 0 {
                self.filled(n as usize);
                if (n as usize) < total {
                    cx.mark_drained();
                }
                return Poll::Ready(Ok(n as usize));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Poll::Pending,
                _ => return Poll::Ready(Err(err)),
            }
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        (res, self.bufs)
    }

    const RING: bool = true;

    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        let iov = self.iovecs();
        let msg = self.msg.insert(MsgParts::new(iov));
        Some(RingEntry(
            opcode::RecvMsg::new(types::Fd(fd), msg.header()).build(),
        ))
    }

    fn complete(&mut self, res: i32, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        self.msg = None;
        let out = cqe_result(res).inspect(|&n| self.filled(n));
        Poll::Ready(out)
    }
}

/// One `read` into `buf[offset..bytes_total]`: `Ok(None)` for `EAGAIN`; retries `EINTR`.
fn read_into<B: IoBufMut>(cx: &Cx<'_>, buf: &mut B, offset: usize) -> io::Result<Option<usize>> {
    let fd = cx.fd();
    let target = &mut buf.as_uninit_mut()[offset..];
    let n = nonblocking(|| rustix::io::read(fd, &mut *target).map(|(filled, _)| filled.len()))?;
    if let Some(n) = n {
        // SAFETY: the kernel initialised `n` bytes after `offset`.
        unsafe { buf.set_init(offset + n) };
    }
    Ok(n)
}

/// The error of a `read_exact` whose stream ended after `filled` of its `total` bytes.
fn early_eof(filled: usize, total: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("end of stream after {filled} of {total} bytes in read_exact"),
    )
}
