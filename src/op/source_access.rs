//! How an operation's try meets the source table: the try on a looked-up fd, the try under the
//! table's borrow, a future's waiter queued and withdrawn, and the one look a polled future takes.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::task::Poll;

use super::{Cx, Interest, Operation};
use crate::LocalHandle;
use crate::driver::{Driver, Token};
use crate::service::source::{Source, Waiter};

/// What one look at its source tells a polled future (see `LocalHandle::look`).
pub(super) enum Look<V> {
    /// Try the operation now, on this fd.
    Try(Option<RawFd>),
    /// Tried inside the look (an operation whose try does not use the loop): finished.
    Done(io::Result<V>),
    /// Its waker waits (still, or queued now), under this id and cancel epoch.
    Wait(u64, u32),
    /// Finish without trying (source gone, or cancelled).
    Fail(io::Error),
}

impl LocalHandle {
    /// Why an operation on a token that names no source fails.
    pub(crate) fn gone_error(&self) -> io::Error {
        if self.is_shut_down() {
            crate::service::shared::gone()
        } else {
            crate::error::closed()
        }
    }

    /// The try itself, on `fd`, which the caller looked up in `token`'s live source without running
    /// anything since; then the direction is marked not ready if the try said so.
    #[inline]
    pub(crate) fn try_on<O: Operation>(
        &self,
        token: Token,
        fd: Option<RawFd>,
        op: &mut O,
    ) -> Poll<io::Result<O::Value>> {
        let interest = op.interest();
        // SAFETY: the caller found the source live with this fd, and a source's fd can only be closed
        // by `remove_source`, which user code calls (close, drop, release) and an operation's try
        // never does; so the fd stays open for the duration of the try. The borrow of the table is
        // released so that a try may register new sources (an accepted socket).
        let fd = fd.map(|raw| unsafe { BorrowedFd::borrow_raw(raw) });
        let mut cx = Cx {
            fd,
            svc: Some(self),
            token,
            drained: false,
            retry_after: None,
        };
        let step = op.attempt(&mut cx);
        let waits = step.is_pending();
        if cx.drained || waits {
            if let Some(source) = self.inner.sources.borrow_mut().get_mut(cx.token) {
                // EAGAIN is the kernel's word, and a back-off must hold; a drained hint is only a hint
                // (see `Source::drain_hint_holds`: hang-ups, Unix sockets).
                if waits || cx.retry_after.is_some() || source.drain_hint_holds(interest) {
                    source.dir_mut(interest).ready = false;
                }
            }
        }
        if let Some(delay) = cx.retry_after {
            self.wake_after(token, interest, delay);
        }
        step
    }

    /// [`try_on`](LocalHandle::try_on) for an operation whose try does not use the loop
    /// ([`Operation::TRY_USES_LOOP`] false), under the borrow of the table that found `source`.
    #[inline]
    pub(crate) fn try_in<O: Operation>(
        token: Token,
        source: &mut Source,
        op: &mut O,
    ) -> Poll<io::Result<O::Value>> {
        debug_assert!(!O::TRY_USES_LOOP);
        let interest = op.interest();
        let (step, drained) = {
            let mut cx = Cx {
                fd: source.fd(),
                svc: None,
                token,
                drained: false,
                retry_after: None,
            };
            let step = op.attempt(&mut cx);
            (step, cx.drained)
        };
        if step.is_pending() || (drained && source.drain_hint_holds(interest)) {
            source.dir_mut(interest).ready = false;
        }
        step
    }

    /// A waiter was just queued on `interest` of `token`, whose fd is `fd`: makes sure the backend
    /// reports that direction's next edge. On io_uring that arms the fd's poll request. On epoll an fd
    /// is registered for reading only, and for writing as well once a write first has to wait: most
    /// sockets never do, and their events then carry no write half for the dispatch to settle. The
    /// table may be borrowed (only the driver is).
    #[inline(always)]
    pub(crate) fn watch_fd(&self, token: Token, fd: Option<RawFd>, interest: Interest) {
        if self.inner.ring {
            self.watch_ring_fd(fd);
        } else if interest == Interest::Write {
            self.watch_writes(token, fd);
        }
    }

    #[inline(never)]
    fn watch_writes(&self, token: Token, fd: Option<RawFd>) {
        let Some(fd) = fd else {
            return;
        };
        // SAFETY: every caller looked `fd` up in `token`'s live source and ran no user code since (a
        // source's fd closes only through `remove_source`, which user code calls), so it is open.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        self.inner.driver.borrow_mut().watch_writes(fd, token);
    }

    /// Queues a waiter; returns the source's cancel epoch, or the waiter back if the source is gone.
    pub(crate) fn register(
        &self,
        token: Token,
        interest: Interest,
        waiter: Waiter,
    ) -> Result<u32, Waiter> {
        let mut sources = self.inner.sources.borrow_mut();
        match sources.get_mut(token) {
            Some(source) => {
                source.dir_mut(interest).push_waiter(waiter);
                Ok(source.cancel_epoch)
            }
            None => Err(waiter),
        }
    }

    /// Removes a future's waiter (the future was dropped or turned into a callback).
    pub(crate) fn withdraw(&self, token: Token, interest: Interest, id: u64) {
        let mut sources = self.inner.sources.borrow_mut();
        if let Some(source) = sources.get_mut(token) {
            let waiters = &mut source.dir_mut(interest).waiters;
            if let Some(pos) = waiters.position_of_task(id) {
                waiters.remove(pos);
            }
        }
    }

    /// One look at `token`'s source for a polled future: whether it was woken (`waiting` is its
    /// waiter's id and the cancel epoch it registered under; `None` for a first poll), cancelled, or
    /// still queued (its waker refreshed), and, for one that may go on, whether its direction is known
    /// not ready (and `needs_ready`), in which case its waker is queued at once, without trying.
    ///
    /// With `try_here` (an operation whose try does not use the loop), one that may go on and whose
    /// direction may be ready is tried right there, under the same borrow, and queued there if the
    /// kernel says `EAGAIN`.
    #[inline(always)]
    pub(super) fn look<O: Operation>(
        &self,
        token: Token,
        interest: Interest,
        needs_ready: bool,
        waiting: Option<(u64, u32)>,
        waker: &std::task::Waker,
        try_here: Option<&mut O>,
    ) -> Look<O::Value> {
        let mut sources = self.inner.sources.borrow_mut();
        let Some(source) = sources.get_mut(token) else {
            drop(sources);
            return Look::Fail(match waiting {
                Some(_) => crate::error::cancelled(),
                None => self.gone_error(),
            });
        };
        if let Some((id, epoch)) = waiting {
            let cancelled = source.cancel_epoch != epoch;
            let waiters = &mut source.dir_mut(interest).waiters;
            match (waiters.position_of_task(id), cancelled) {
                (Some(pos), true) => {
                    waiters.remove(pos);
                    return Look::Fail(crate::error::cancelled());
                }
                (None, true) => return Look::Fail(crate::error::cancelled()),
                (Some(pos), false) => {
                    if let Some(Waiter::Task { wake, .. }) = waiters.get_mut(pos) {
                        if !self.still_wakes(wake, waker) {
                            *wake = self.task_wake(waker);
                        }
                    }
                    return Look::Wait(id, epoch);
                }
                (None, false) => {} // woken: go on
            }
        }
        let fd = source.raw_fd();
        let epoch = source.cancel_epoch;
        let must_wait = match try_here {
            _ if needs_ready
                && (!source.dir(interest).ready
                    || (waiting.is_none() && source.dir(interest).waiters.held())) =>
            {
                true
            }
            Some(op) => match Self::try_in(token, source, op) {
                Poll::Ready(res) => return Look::Done(res),
                Poll::Pending => true,
            },
            None => false,
        };
        if !must_wait {
            return Look::Try(fd);
        }
        let id = self.next_waiter_id();
        source.dir_mut(interest).push_waiter(Waiter::Task {
            id,
            wake: self.task_wake(waker),
        });
        self.watch_fd(token, fd, interest);
        Look::Wait(id, epoch)
    }
}
