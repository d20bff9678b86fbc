//! Passing file descriptors over Unix stream sockets (`SCM_RIGHTS`): [`SendFds`] and [`RecvFds`].
//!
//! The fds travel as ancillary data with the first bytes of a `sendmsg`; the receiver gets new fds
//! (close-on-exec, `MSG_CMSG_CLOEXEC`) for the same open files. A Unix stream socket stops a read at
//! the message that carries fds, so a [`RecvFds`] read may be short while more data is queued: it never
//! marks the socket drained (the next read tries the syscall first instead of waiting for an edge).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::Poll;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::{Cx, Interest, Operation};
use crate::buf::{IoBuf, IoBufMut};

/// The most fds one message may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// What [`RecvFds`] received.
#[derive(Debug)]
pub struct ReceivedFds {
    /// Bytes read into the buffer; 0 is the end of the stream.
    pub len: usize,
    /// The fds that came with those bytes (close-on-exec), in the order they were sent.
    pub fds: Vec<OwnedFd>,
    /// More fds came than `max_fds`: only the first `max_fds` are here, the rest were closed.
    pub fds_truncated: bool,
}

/// Fails unless `fd` is a Unix socket: fds can only be passed over those.
fn check_unix(fd: BorrowedFd<'_>, what: &str) -> io::Result<()> {
    let domain = socket2::SockRef::from(&fd).domain()?;
    if domain == socket2::Domain::UNIX {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{what}: file descriptors can only be passed over Unix sockets, not {domain:?}"
            ),
        ))
    }
}

/// Writes a whole buffer with fds attached to its first bytes. Made by
/// [`StreamSocket::send_fds`](crate::StreamSocket::send_fds).
#[derive(Debug)]
pub struct SendFds<B> {
    buf: B,
    /// Still to send; emptied (closed) once they went out with the first bytes.
    fds: Vec<OwnedFd>,
    written: usize,
    checked: bool,
}

impl<B: IoBuf> SendFds<B> {
    pub(crate) fn new(buf: B, fds: Vec<OwnedFd>) -> Self {
        SendFds {
            buf,
            fds,
            written: 0,
            checked: false,
        }
    }

    fn check(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        if self.fds.len() > MAX_FDS_PER_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "send_fds: {} fds given, at most {MAX_FDS_PER_MESSAGE} fit in one message",
                    self.fds.len()
                ),
            ));
        }
        if self.buf.bytes_init() == 0 && !self.fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "send_fds: the buffer is empty, but fds travel only with at least one byte of data",
            ));
        }
        check_unix(fd, "send_fds")
    }

    /// One `sendmsg` of `buf[written..]`, with the fds while they are not sent yet.
    fn send_once(&self, fd: BorrowedFd<'_>) -> rustix::io::Result<usize> {
        let data = [IoSlice::new(&self.buf.as_slice()[self.written..])];
        if self.fds.is_empty() {
            let mut control = SendAncillaryBuffer::default();
            return rustix::net::sendmsg(fd, &data, &mut control, SendFlags::NOSIGNAL);
        }
        let borrowed: Vec<BorrowedFd<'_>> = self.fds.iter().map(AsFd::as_fd).collect();
        let mut space =
            vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let pushed = control.push(SendAncillaryMessage::ScmRights(&borrowed));
        debug_assert!(pushed, "the control buffer was sized for these fds");
        rustix::net::sendmsg(fd, &data, &mut control, SendFlags::NOSIGNAL)
    }
}

impl<B: IoBuf> Operation for SendFds<B> {
    type Output = (io::Result<usize>, B);
    type Value = usize;

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        Interest::Write
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let fd = cx.fd();
        if !self.checked {
            self.checked = true;
            if let Err(e) = self.check(fd) {
                return Poll::Ready(Err(e));
            }
        }
        let len = self.buf.bytes_init();
        while self.written < len {
            match self.send_once(fd) {
                Ok(0) => {
                    let err = io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the socket accepted no bytes in send_fds",
                    );
                    return Poll::Ready(Err(err));
                }
                Ok(n) => {
                    // The fds went out with these bytes: our copies close now.
                    self.fds.clear();
                    self.written += n;
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        Poll::Ready(Ok(len))
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        (res, self.buf)
    }
}

/// Reads what is available and the fds that came with it. Made by
/// [`StreamSocket::recv_fds`](crate::StreamSocket::recv_fds).
#[derive(Debug)]
pub struct RecvFds<B> {
    buf: B,
    max_fds: usize,
    checked: bool,
}

impl<B: IoBufMut> RecvFds<B> {
    pub(crate) fn new(buf: B, max_fds: usize) -> Self {
        RecvFds {
            buf,
            max_fds: max_fds.min(MAX_FDS_PER_MESSAGE),
            checked: false,
        }
    }

    /// One `recvmsg`.
    fn recv_once(&mut self, fd: BorrowedFd<'_>) -> rustix::io::Result<ReceivedFds> {
        let total = self.buf.bytes_total();
        let init = self.buf.bytes_init().min(total);
        // `recvmsg` takes initialised slices: zero what is not initialised yet (nothing for a buffer
        // made with `vec![0; n]`).
        for byte in &mut self.buf.as_uninit_mut()[init..] {
            byte.write(0);
        }
        // SAFETY: all `total` bytes at `stable_mut_ptr` are initialised now (the first `init` were,
        // the rest were just zeroed), writable (the IoBufMut contract), and borrowed only here.
        let data = unsafe { std::slice::from_raw_parts_mut(self.buf.stable_mut_ptr(), total) };
        let mut iov = [IoSliceMut::new(data)];
        let space_len = if self.max_fds == 0 {
            0
        } else {
            rustix::cmsg_space!(ScmRights(self.max_fds))
        };
        let mut space = vec![MaybeUninit::<u8>::uninit(); space_len];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = rustix::net::recvmsg(fd, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        // The control buffer is rounded up for alignment and may have taken more than `max_fds`.
        let mut fds_truncated = msg.flags.contains(ReturnFlags::CTRUNC);
        if fds.len() > self.max_fds {
            fds.truncate(self.max_fds); // closes the extra ones
            fds_truncated = true;
        }
        let len = msg.bytes.min(total);
        // SAFETY: the kernel wrote `len` bytes from the start of the buffer.
        unsafe { self.buf.set_init(len) };
        Ok(ReceivedFds {
            len,
            fds,
            fds_truncated,
        })
    }
}

impl<B: IoBufMut> Operation for RecvFds<B> {
    type Output = (io::Result<ReceivedFds>, B);
    type Value = ReceivedFds;

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let fd = cx.fd();
        if !self.checked {
            self.checked = true;
            if let Err(e) = check_unix(fd, "recv_fds") {
                return Poll::Ready(Err(e));
            }
        }
        loop {
            match self.recv_once(fd) {
                Ok(received) => return Poll::Ready(Ok(received)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        (res, self.buf)
    }
}
