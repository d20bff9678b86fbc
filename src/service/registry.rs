//! The loop's side of its I/O objects: adding, closing and cancelling sources, and shutting down.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::source::{FdSlot, Source, Waiter};
use super::{Job, LocalHandle, shared, task};
use crate::driver::{Driver, Token};
use crate::op::Interest;

impl LocalHandle {
    /// Registers a source with the loop; the table owns its fd from now on (or borrows it, when
    /// attached). A virtual source (timer, completion) has no fd and waits for the loop to fire it.
    pub(crate) fn add_source(&self, fd: FdSlot) -> io::Result<Token> {
        if self.is_shut_down() {
            return Err(shared::gone());
        }
        let token = self.inner.sources.borrow_mut().insert(fd);
        let registered = {
            let sources = self.inner.sources.borrow();
            let source = sources.get(token).expect("source just inserted");
            match source.fd() {
                Some(fd) => self.inner.driver.borrow_mut().register(fd, token),
                None => Ok(()),
            }
        };
        if let Err(e) = registered {
            // Hand an attached fd back untouched; an owned one closes with the removed source, after
            // the table is released (a socket's close hook may run and use the loop).
            let removed = self.inner.sources.borrow_mut().remove(token);
            drop(removed);
            return Err(e);
        }
        Ok(token)
    }

    /// Records whether short reads on `token` prove it empty: true for TCP, false for Unix stream
    /// sockets (see `Source::drain_hint_holds`); a source never told asks the kernel when it matters.
    pub(crate) fn set_short_read_drains(&self, token: Token, drains: bool) {
        if let Some(source) = self.inner.sources.borrow_mut().get_mut(token) {
            source.short_read_drains = Some(drains);
        }
    }

    /// Closes a source: pending operations complete with `ECANCELED`, the driver forgets the fd, and
    /// the fd is returned (owned) or forgotten (attached). Returns `None` if already closed.
    pub(crate) fn remove_source(&self, token: Token) -> Option<FdSlot> {
        let keys = if self.ring_mode() && !super::fork::is_forked_child(self.inner.fork_generation)
        {
            self.ring_keys(token)
        } else {
            Vec::new()
        };
        let source = self.inner.sources.borrow_mut().remove(token)?;
        // The kernel lets go of the operations on the ring (their handlers get ECANCELED, or their
        // result if they finished first) before the fd, and the socket with it, is closed.
        self.ring_cancel_and_wait(&keys);
        self.deregister(&source);
        let Source {
            fd,
            mut read,
            mut write,
            ..
        } = source;
        for waiter in read.waiters.take_all().chain(write.waiters.take_all()) {
            self.cancel_waiter(waiter);
        }
        Some(fd)
    }

    fn deregister(&self, source: &Source) {
        // A forked child must not touch the backend it shares with its parent (see `fork`).
        if super::fork::is_forked_child(self.inner.fork_generation) {
            return;
        }
        if let Some(fd) = source.fd() {
            // An fd that was dup'ed elsewhere stays in the epoll set unless removed explicitly.
            let _ = self.inner.driver.borrow_mut().deregister(fd);
        }
    }

    /// Completes every operation pending on `token` with `ECANCELED`; the source stays open.
    pub(crate) fn cancel_source(&self, token: Token) {
        let waiters: Vec<Waiter> = {
            let mut sources = self.inner.sources.borrow_mut();
            let Some(source) = sources.get_mut(token) else {
                return;
            };
            source.cancel_epoch = source.cancel_epoch.wrapping_add(1);
            let mut all: Vec<Waiter> = source.read.waiters.take_all().collect();
            all.extend(source.write.waiters.take_all());
            all
        };
        // Operations on the ring complete with ECANCELED when the kernel has let go of them.
        for key in self.ring_keys(token) {
            self.ring_cancel(key);
        }
        for waiter in waiters {
            self.cancel_waiter(waiter);
        }
    }

    pub(crate) fn cancel_waiter(&self, waiter: Waiter) {
        match waiter {
            Waiter::Task { wake, .. } => self.wake_task(wake),
            Waiter::Callback(mut op) => {
                op.cancel(crate::error::cancelled());
                self.push_job(Job::Op(op));
            }
            Waiter::Persistent(op) => op.cancel(self, crate::error::cancelled()),
        }
    }

    /// Runs `f` with the fd of a live source.
    pub(crate) fn with_fd<R>(
        &self,
        token: Token,
        f: impl FnOnce(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        let sources = self.inner.sources.borrow();
        let fd = sources
            .get(token)
            .and_then(|s| s.fd())
            .ok_or_else(crate::error::closed)?;
        f(fd)
    }

    /// A read or write of up to `requested` bytes tried once, now (`try_read`, `try_write`): the
    /// count, or `WouldBlock` when the kernel says `EAGAIN` or an operation already waits on that
    /// direction (it goes first: bytes keep their order). Updates the direction's readiness as an
    /// operation's try does.
    #[inline]
    pub(crate) fn try_now(
        &self,
        token: Token,
        interest: Interest,
        requested: usize,
        io: impl FnOnce(BorrowedFd<'_>) -> io::Result<Option<usize>>,
    ) -> io::Result<usize> {
        let mut sources = self.inner.sources.borrow_mut();
        let source = sources.get_mut(token).ok_or_else(crate::error::closed)?;
        let dir = source.dir(interest);
        if !dir.waiters.is_empty() || dir.inflight().is_some() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // The table stays borrowed, so the fd stays open; `io` is a syscall, no user code.
        let res = io(source.fd().ok_or_else(crate::error::closed)?);
        match res {
            Ok(Some(n)) => {
                if n < requested && source.drain_hint_holds(interest) {
                    source.dir_mut(interest).ready = false;
                }
                Ok(n)
            }
            Ok(None) => {
                source.dir_mut(interest).ready = false;
                Err(io::ErrorKind::WouldBlock.into())
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn owned_fd(fd: FdSlot) -> Option<OwnedFd> {
        match fd {
            FdSlot::Owned(fd) => Some(fd),
            FdSlot::Hooked(fd) => Some(fd.into_fd()),
            FdSlot::Attached(_) | FdSlot::Virtual => None,
        }
    }

    /// Drops everything pending without running it and closes every owned fd.
    pub(crate) fn shutdown(&self) {
        let inner = &*self.inner;
        if inner.shut_down.replace(true) {
            return;
        }
        drop(inner.shared.close());
        // The kernel must let go of the operations on the ring before their buffers are dropped.
        if !super::fork::is_forked_child(inner.fork_generation) {
            self.ring_shutdown();
        }
        // Blocking jobs not yet started are dropped; running ones finish on their own.
        drop(inner.blocking.borrow_mut().take());
        // Tasks first: dropping their futures may drop objects that close sources.
        task::shutdown_tasks(self);
        loop {
            let jobs: Vec<Job> = inner.ready.borrow_mut().drain(..).collect();
            let sources = inner.sources.borrow_mut().drain();
            if jobs.is_empty() && sources.is_empty() {
                break;
            }
            for source in &sources {
                self.deregister(source);
            }
            // Dropping handlers may drop sockets, which find their sources already gone.
            drop(jobs);
            drop(sources);
        }
        inner.timers.borrow_mut().clear();
    }
}
