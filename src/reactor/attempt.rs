//! Operations meeting their source: a callback operation started, a future's look when polled, a
//! waiter queued or withdrawn, and the driver told what to watch.
//!
//! The rule everywhere: an operation whose direction is known not ready waits in line without a
//! syscall; one whose direction may be ready is tried first, under the same lookup when its try does
//! not use the loop, and waits only when the kernel says `EAGAIN`.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::block::{TypedBlock, Waiting};
use super::source::Source;
use super::source::{PersistentOp, Waiter};
use super::{Reactor, Token};
use crate::driver::{Driver, Interest};

/// What one look at its source tells a polled future (see [`Reactor::poll_at_source`]).
pub(crate) enum AtSource<V> {
    /// Try the operation now, on this fd.
    Try(Option<RawFd>),
    /// Tried inside the look: finished.
    Done(io::Result<V>),
    /// Its waker waits (still, or queued now), under this id and cancel epoch.
    Wait(u32, u32),
    /// Finish without trying (source gone, or cancelled).
    Fail(io::Error),
}

impl Reactor {
    /// Starts a callback operation on a readiness backend. One look at the source decides: the
    /// operation is queued at once when its direction is known not ready (no syscall, no second
    /// lookup), or tried; its handler never runs here (a finished try queues it as a job).
    #[inline(always)]
    pub(crate) fn start_op<T: Waiting>(
        &self,
        token: Token,
        interest: Interest,
        needs_ready: bool,
        mut block: TypedBlock<T>,
    ) {
        let fd = {
            let mut sources = self.sources.borrow_mut();
            let Some(source) = sources.get_mut(token) else {
                drop(sources);
                block.body_mut().cancel(self.gone_error());
                self.push_job(block.into_job());
                return;
            };
            let fd = source.raw_fd();
            let waits = if source.dir(interest).must_wait(needs_ready) {
                true
            } else if T::TRIES_UNDER_TABLE {
                let (done, attempt) = block.body_mut().retry_under_borrow(source.fd());
                source.after_attempt(interest, attempt);
                if done {
                    drop(sources);
                    self.push_job(block.into_job());
                    return;
                }
                true
            } else {
                false
            };
            if waits {
                let line = &mut source.dir_mut(interest).line;
                line.push_back(Waiter::Callback(block.into_op()));
                drop(sources);
                self.watch_fd(token, fd, interest);
                return;
            }
            fd
        };
        // A try that uses the loop (an accept registers the new socket): outside the borrow.
        if block.body_mut().retry(self, token, fd) {
            self.push_job(block.into_job());
            return;
        }
        match self.register(token, interest, Waiter::Callback(block.into_op())) {
            Ok(_) => self.watch_fd(token, fd, interest),
            Err(waiter) => self.cancel_waiter_with(waiter, crate::error::closed()),
        }
    }

    /// One look at `token`'s source for a polled future: whether it was woken (`waiting` is its
    /// waiter's id and the cancel epoch it registered under; `None` for a first poll), cancelled, or
    /// still queued (its waker refreshed), and, for one that may go on, whether its direction is known
    /// not ready (and `needs_ready`), in which case its waker is queued at once, without trying.
    ///
    /// With `attempt` (an operation whose try does not use the loop), one that may go on and whose
    /// direction may be ready is tried right there, under the same borrow, and queued there if the
    /// kernel says `EAGAIN`.
    #[inline(always)]
    pub(crate) fn poll_at_source<V>(
        &self,
        token: Token,
        interest: Interest,
        needs_ready: bool,
        waiting: Option<(u32, u32)>,
        waker: &Waker,
        attempt: Option<impl FnOnce(&mut Source) -> Poll<io::Result<V>>>,
    ) -> AtSource<V> {
        let mut sources = self.sources.borrow_mut();
        let Some(source) = sources.get_mut(token) else {
            drop(sources);
            return AtSource::Fail(match waiting {
                Some(_) => crate::error::cancelled(),
                None => self.gone_error(),
            });
        };
        if let Some((id, epoch)) = waiting {
            let cancelled = source.cancel_epoch != epoch;
            let line = &mut source.dir_mut(interest).line;
            match (line.position_of_task(id), cancelled) {
                (Some(pos), true) => {
                    line.remove(pos);
                    return AtSource::Fail(crate::error::cancelled());
                }
                (None, true) => return AtSource::Fail(crate::error::cancelled()),
                (Some(pos), false) => {
                    if let Some(Waiter::Task { wake, .. }) = line.get_mut(pos) {
                        if !self.still_wakes(wake, waker) {
                            *wake = self.task_wake(waker);
                        }
                    }
                    return AtSource::Wait(id, epoch);
                }
                (None, false) => {} // woken: go on
            }
        }
        let fd = source.raw_fd();
        let epoch = source.cancel_epoch;
        // A future woken from its line goes on even when a persistent read holds the line now.
        let dir = source.dir(interest);
        let must_wait = match attempt {
            _ if needs_ready
                && (!dir.ready || (waiting.is_none() && dir.line.held_by_persistent())) =>
            {
                true
            }
            Some(attempt) => match attempt(source) {
                Poll::Ready(res) => return AtSource::Done(res),
                Poll::Pending => true,
            },
            None => false,
        };
        if !must_wait {
            return AtSource::Try(fd);
        }
        let id = self.next_waiter_id();
        source.dir_mut(interest).line.push_back(Waiter::Task {
            id,
            seq: self.seq(),
            wake: self.task_wake(waker),
        });
        drop(sources);
        self.watch_fd(token, fd, interest);
        AtSource::Wait(id, epoch)
    }

    /// Queues a future's waker behind the others (its try said `EAGAIN`, or its turn on the ring is
    /// still to come): its id and the source's cancel epoch, or `None` if the source is gone.
    pub(crate) fn wait_in_line(
        &self,
        token: Token,
        interest: Interest,
        waker: &Waker,
    ) -> Option<(u32, u32)> {
        let id = self.next_waiter_id();
        let waiter = Waiter::Task {
            id,
            seq: self.seq(),
            wake: self.task_wake(waker),
        };
        self.register(token, interest, waiter)
            .ok()
            .map(|epoch| (id, epoch))
    }

    /// Queues a waiter; returns the source's cancel epoch, or the waiter back if the source is gone.
    pub(crate) fn register(
        &self,
        token: Token,
        interest: Interest,
        waiter: Waiter,
    ) -> Result<u32, Waiter> {
        let mut sources = self.sources.borrow_mut();
        match sources.get_mut(token) {
            Some(source) => {
                source.dir_mut(interest).line.push_back(waiter);
                Ok(source.cancel_epoch)
            }
            None => Err(waiter),
        }
    }

    /// Removes a future's waiter (the future was dropped or turned into a callback).
    pub(crate) fn withdraw(&self, token: Token, interest: Interest, id: u32) {
        let mut sources = self.sources.borrow_mut();
        if let Some(source) = sources.get_mut(token) {
            let line = &mut source.dir_mut(interest).line;
            if let Some(pos) = line.position_of_task(id) {
                line.remove(pos);
            }
        }
    }

    /// A waiter was just queued on `interest` of `token`, whose fd is `fd`: makes sure the driver
    /// reports that direction's next edge. On epoll an fd is watched for reading from its
    /// registration on, and for writing once a write first has to wait: most sockets never do, and
    /// their events then carry no write half for the dispatch to keep_outcome. On io_uring this arms the
    /// fd's poll request; on poll it puts the direction in the pollfd set (where a back-off may mute
    /// it). The table may be borrowed (only the driver is).
    #[inline(always)]
    pub(crate) fn watch_fd(&self, token: Token, fd: Option<RawFd>, interest: Interest) {
        if self.ring || self.level_triggered || interest == Interest::Write {
            self.tell_driver_to_watch(token, fd, interest);
        }
    }

    #[inline(never)]
    fn tell_driver_to_watch(&self, token: Token, fd: Option<RawFd>, interest: Interest) {
        let Some(fd) = fd else {
            return;
        };
        // SAFETY: every caller looked `fd` up in `token`'s live source and ran no user code since (a
        // source's fd closes only through `remove_source`, which user code calls), so it is open.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        self.driver.borrow_mut().watch(fd, token, interest);
    }
}

/// Whether `op`, a waiter of a line, is the persistent operation `this`.
fn is_op<T: PersistentOp>(op: &Rc<dyn PersistentOp>, this: &T) -> bool {
    std::ptr::eq(Rc::as_ptr(op) as *const (), this as *const T as *const ())
}

impl Source {
    /// Whether the persistent operation `this` is first in the read line.
    pub(crate) fn first_in_line<T: PersistentOp>(&self, this: &T) -> bool {
        matches!(self.read.line.first(), Some(Waiter::Persistent(op)) if is_op(op, this))
    }
}

impl Reactor {
    /// Puts the persistent read `op` (named `name` in errors) of `token`'s source, with a buffer of
    /// `total` bytes, at the end of its read line: `Ok(true)` when it is first in line on a direction
    /// that may be ready, so that it should read without waiting for an event (otherwise an event, or
    /// the end of the operations ahead of it, serves it); the error when it cannot go in.
    pub(crate) fn join_line(
        &self,
        token: Token,
        total: usize,
        op: Rc<dyn PersistentOp>,
        name: &str,
    ) -> io::Result<bool> {
        if total == 0 {
            // A zero-length read would report an end of stream that never came.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} needs a buffer with room for at least one byte"),
            ));
        }
        let mut sources = self.sources.borrow_mut();
        let Some(source) = sources.get_mut(token) else {
            drop(sources);
            return Err(self.gone_error());
        };
        let fd = source.raw_fd();
        let dir = source.dir_mut(Interest::Read);
        let read_now = dir.line.is_empty() && dir.ready;
        dir.line.push_back(Waiter::Persistent(op));
        drop(sources);
        self.watch_fd(token, fd, Interest::Read);
        Ok(read_now)
    }

    /// Takes the persistent operation `this` out of `token`'s read line (if it is still there), then
    /// serves the operations queued behind it if the direction is ready.
    pub(crate) fn leave_line<T: PersistentOp>(&self, token: Token, this: &T) {
        let serve_next = {
            let mut sources = self.sources.borrow_mut();
            sources.get_mut(token).is_some_and(|source| {
                let dir = source.dir_mut(Interest::Read);
                dir.line.remove_persistent(|op| is_op(op, this));
                dir.ready && !dir.line.is_empty()
            })
        };
        if serve_next {
            self.serve_direction(token, Interest::Read, false);
        }
    }
}

#[cfg(any(feature = "futures-io", feature = "tokio-io", feature = "hyper"))]
impl Reactor {
    /// A caller's own non-blocking syscall on one direction of `token`'s source, polled by a task
    /// (the `poll_read` / `poll_write` of a foreign I/O trait): `io` is made right here, under the
    /// lookup that found the fd, when the direction may be ready and nothing waits ahead of it; on
    /// `EAGAIN` (or when the direction is known not ready) the task's waker joins the direction's
    /// line and its id and cancel epoch go to `waiting`, which the next poll passes back.
    ///
    /// A waiter still in line means no event came since: the poll only refreshes its waker. A
    /// waiter the loop took out (woken) tries again. A `cancel()` of the object meanwhile fails the
    /// poll with `ECANCELED`, as it fails an operation.
    pub(crate) fn poll_io(
        &self,
        token: Token,
        interest: Interest,
        waiting: &mut Option<(u32, u32)>,
        waker: &Waker,
        requested: usize,
        io: impl FnOnce(BorrowedFd<'_>) -> io::Result<Option<usize>>,
    ) -> Poll<io::Result<usize>> {
        let mut sources = self.sources.borrow_mut();
        let Some(source) = sources.get_mut(token) else {
            *waiting = None;
            drop(sources);
            return Poll::Ready(Err(self.gone_error()));
        };
        let woken = if let Some((id, epoch)) = *waiting {
            let cancelled = source.cancel_epoch != epoch;
            let line = &mut source.dir_mut(interest).line;
            let pos = line.position_of_task(id);
            if cancelled || pos.is_none() {
                *waiting = None;
                if let Some(pos) = pos {
                    line.remove(pos);
                }
                if cancelled {
                    return Poll::Ready(Err(crate::error::cancelled()));
                }
            } else if let Some(Waiter::Task { wake, .. }) = pos.and_then(|pos| line.get_mut(pos)) {
                if !self.still_wakes(wake, waker) {
                    *wake = self.task_wake(waker);
                }
                return Poll::Pending;
            }
            true
        } else {
            false
        };
        let dir = source.dir(interest);
        // Waiters ahead keep their turn (bytes keep their order), except for one just woken from
        // the line: it goes on, as an operation woken there does.
        let must_wait = !dir.ready || dir.inflight().is_some() || (!woken && !dir.line.is_empty());
        if !must_wait {
            let Some(fd) = source.fd() else {
                return Poll::Ready(Err(crate::error::closed()));
            };
            // The table stays borrowed, so the fd stays open; `io` is a syscall, no user code.
            let res = io(fd);
            let attempt = super::block::Attempt {
                would_block: matches!(res, Ok(None)),
                drained: matches!(res, Ok(Some(n)) if n < requested),
                backing_off: false,
            };
            source.after_attempt(interest, attempt);
            match res {
                Ok(Some(n)) => return Poll::Ready(Ok(n)),
                Err(e) => return Poll::Ready(Err(e)),
                Ok(None) => {}
            }
        }
        let id = self.next_waiter_id();
        let fd = source.raw_fd();
        let epoch = source.cancel_epoch;
        source.dir_mut(interest).line.push_back(Waiter::Task {
            id,
            seq: self.seq(),
            wake: self.task_wake(waker),
        });
        drop(sources);
        self.watch_fd(token, fd, interest);
        *waiting = Some((id, epoch));
        Poll::Pending
    }
}
