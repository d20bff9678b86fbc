//! A task's place in one direction's line, for I/O polled by the caller rather than made by an
//! operation: the `poll_read` / `poll_write` of the futures-io, tokio and hyper traits
//! (`aio::compat`).
//!
//! An [`Op`](super::Op) owns its buffer; a trait's `poll_read` is handed a buffer it may only use
//! during that call. So the caller's syscall is made in the poll itself, straight into that buffer
//! (no copy), and only the wait outlives the call: on `EAGAIN` the task's waker joins the direction's
//! line like an awaited operation's, and its id is kept here until the loop takes it out (an event)
//! or the owner withdraws it (dropped). No extra `poll(2)` per try: the direction's readiness is the
//! loop's own, as for every operation, on io_uring too (there the fd's poll request on the ring
//! reports it).

use std::io;
use std::os::fd::BorrowedFd;
use std::task::{Context, Poll};

use super::Interest;
use crate::reactor::{Reactor, Token};

/// Where one direction's poller waits, if it does: its waiter's id and the cancel epoch it
/// registered under. The owner calls [`withdraw`](DirectionWait::withdraw) before it goes away.
#[derive(Debug)]
pub(crate) struct DirectionWait {
    interest: Interest,
    waiting: Option<(u32, u32)>,
}

impl DirectionWait {
    pub(crate) const fn new(interest: Interest) -> DirectionWait {
        DirectionWait {
            interest,
            waiting: None,
        }
    }

    /// Makes `io` (a non-blocking syscall on the fd: `Ok(None)` for `EAGAIN`, asked for `requested`
    /// bytes) when the direction may be ready, or waits for it with `cx`'s waker.
    #[inline]
    pub(crate) fn poll(
        &mut self,
        reactor: &Reactor,
        token: Token,
        cx: &mut Context<'_>,
        requested: usize,
        io: impl FnOnce(BorrowedFd<'_>) -> io::Result<Option<usize>>,
    ) -> Poll<io::Result<usize>> {
        reactor.poll_io(
            token,
            self.interest,
            &mut self.waiting,
            cx.waker(),
            requested,
            io,
        )
    }

    /// Takes the waiter out of its line, if it is still there.
    pub(crate) fn withdraw(&mut self, reactor: &Reactor, token: Token) {
        if let Some((id, _)) = self.waiting.take() {
            reactor.withdraw(token, self.interest, id);
        }
    }

    /// Whether a waker waits in line.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }
}
