//! Readiness waits on any object's fd: booster's `on_readable` / `on_writeable`.
//!
//! The library does no I/O on the fd itself, so each try asks the kernel with a zero-timeout `poll`:
//! a wait completes only when the fd really is ready, even if the owner consumed an earlier event.

use std::io;
use std::task::Poll;

use rustix::event::{PollFd, PollFlags};

use super::{Cx, Interest, Operation};

/// Waits until the fd is readable or writable (or has an error or hang-up to report). Made by
/// `readable()` and `writable()` of every object: [`IoDevice::readable`](crate::IoDevice::readable),
/// [`StreamSocket::readable`](crate::StreamSocket::readable),
/// [`DatagramSocket::readable`](crate::DatagramSocket::readable),
/// [`Acceptor::readable`](crate::Acceptor::readable) and their `writable()`.
#[derive(Debug)]
pub struct Ready {
    interest: Interest,
}

impl Ready {
    pub(crate) fn new(interest: Interest) -> Ready {
        Ready { interest }
    }
}

impl Operation for Ready {
    type Output = io::Result<()>;
    type Value = ();

    const TRY_USES_LOOP: bool = false;

    fn interest(&self) -> Interest {
        self.interest
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let wanted = match self.interest {
            Interest::Read => PollFlags::IN | PollFlags::PRI,
            Interest::Write => PollFlags::OUT,
        };
        let fd = cx.fd();
        let mut fds = [PollFd::from_borrowed_fd(fd, wanted)];
        loop {
            match rustix::event::poll(&mut fds, Some(&rustix::time::Timespec::default())) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        let revents = fds[0].revents();
        if revents.contains(PollFlags::NVAL) {
            return Poll::Ready(Err(io::Error::from_raw_os_error(libc::EBADF)));
        }
        if revents.intersects(wanted | PollFlags::ERR | PollFlags::HUP) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}
