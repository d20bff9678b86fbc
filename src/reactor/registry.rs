//! Sources coming and going: registering an fd (or a virtual source), cancelling what waits on it,
//! removing it, and emptying everything when the loop shuts down.

use std::io;
use std::os::fd::BorrowedFd;

use super::block::Attempt;
use super::fd::FdSlot;
use super::source::Source;
use super::source::{Resume, Waiter};
use super::{Reactor, Token};
use crate::driver::{Driver, Interest};

impl Reactor {
    /// Registers a source with the loop; the table owns its fd from now on (or borrows it, when
    /// attached). A virtual source (timer, completion) has no fd and waits for the loop to fire it.
    pub(crate) fn add_source(&self, fd: FdSlot) -> io::Result<Token> {
        if self.is_shut_down() {
            return Err(super::remote::gone());
        }
        let token = self.sources.borrow_mut().insert(fd);
        let registered = {
            let sources = self.sources.borrow();
            let source = sources.get(token).expect("source just inserted");
            match source.fd() {
                Some(fd) => self.driver.borrow_mut().register(fd, token),
                None => Ok(()),
            }
        };
        if let Err(e) = registered {
            // Hand an attached fd back untouched; an owned one closes with the removed source, after
            // the table is released (a socket's close hook may run and use the loop).
            let removed = self.sources.borrow_mut().remove(token);
            drop(removed);
            return Err(e);
        }
        Ok(token)
    }

    /// Records whether short reads on `token` prove it empty: true for TCP, false for Unix stream
    /// sockets (see `Source::drain_hint_holds`); a source never told asks the kernel when it matters.
    pub(crate) fn set_short_read_drains(&self, token: Token, drains: bool) {
        if let Some(source) = self.sources.borrow_mut().get_mut(token) {
            source.short_read_drains = Some(drains);
        }
    }

    /// Closes a source: pending operations complete with `ECANCELED`, the driver forgets the fd, and
    /// the fd is returned (owned or hooked) or forgotten (attached). Returns `None` if already closed.
    pub(crate) fn remove_source(&self, token: Token) -> Option<FdSlot> {
        let keys = if self.ring_mode() && !self.in_forked_child() {
            self.ring_keys(token)
        } else {
            Vec::new()
        };
        let source = self.sources.borrow_mut().remove(token)?;
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
        for waiter in read.line.take_all().chain(write.line.take_all()) {
            self.cancel_waiter(waiter);
        }
        Some(fd)
    }

    fn deregister(&self, source: &Source) {
        // A forked child must not touch the backend it shares with its parent (see `fork`).
        if self.in_forked_child() {
            return;
        }
        if let Some(fd) = source.fd() {
            // An fd that was dup'ed elsewhere stays in the epoll set unless removed explicitly.
            let _ = self.driver.borrow_mut().deregister(fd);
        }
    }

    /// Completes every operation pending on `token` with `ECANCELED`; the source stays open.
    pub(crate) fn cancel_source(&self, token: Token) {
        let waiters: Vec<Waiter> = {
            let mut sources = self.sources.borrow_mut();
            let Some(source) = sources.get_mut(token) else {
                return;
            };
            source.cancel_epoch = source.cancel_epoch.wrapping_add(1);
            let mut all: Vec<Waiter> = source.read.line.take_all().collect();
            all.extend(source.write.line.take_all());
            if self.level_triggered {
                self.sync_watch(source, token, Interest::Read);
                self.sync_watch(source, token, Interest::Write);
            }
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

    /// Completes a waiter taken out of its line with `ECANCELED`.
    pub(crate) fn cancel_waiter(&self, waiter: Waiter) {
        self.cancel_waiter_with(waiter, crate::error::cancelled());
    }

    /// Completes a waiter taken out of its line with `err`: a callback operation's handler is queued,
    /// a future woken (it finds its waiter gone), a persistent read ended.
    pub(crate) fn cancel_waiter_with(&self, waiter: Waiter, err: io::Error) {
        match waiter {
            Waiter::Task { wake, .. } => self.wake_task(wake),
            Waiter::Callback(mut op) => {
                op.cancel(err);
                self.push_job(op.into_job());
            }
            Waiter::Persistent(op) => op.cancel(self, err),
        }
    }

    /// Queues a persistent operation's turn to hand over what it has (see `source::PersistentOp`).
    pub(crate) fn resume_later(&self, op: std::rc::Rc<dyn super::source::PersistentOp>) {
        let job = self.alloc(Resume(op), self.seq(), false);
        self.push_job(job.into_job());
    }

    /// Whether any operation is pending on `token`: waiting in either direction's line (a future,
    /// a callback operation, a persistent read) or in flight on the io_uring ring. A source that is
    /// not registered has none.
    pub(crate) fn has_pending(&self, token: Token) -> bool {
        let sources = self.sources.borrow();
        sources.get(token).is_some_and(|s| {
            [&s.read, &s.write]
                .iter()
                .any(|dir| !dir.line.is_empty() || dir.inflight().is_some())
        })
    }

    /// Whether the source's fd is the loop's to hand out (owned, with or without a close hook)
    /// rather than attached; `None` when nothing with an fd is registered under `token`.
    pub(crate) fn owns_fd(&self, token: Token) -> Option<bool> {
        match &self.sources.borrow().get(token)?.fd {
            FdSlot::Owned(_) | FdSlot::Hooked(_) => Some(true),
            FdSlot::Attached(_) => Some(false),
            FdSlot::Virtual => None,
        }
    }

    /// Runs `f` with the fd of a live source.
    pub(crate) fn with_fd<R>(
        &self,
        token: Token,
        f: impl FnOnce(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        let sources = self.sources.borrow();
        let fd = sources
            .get(token)
            .and_then(|s| s.fd())
            .ok_or_else(crate::error::closed)?;
        f(fd)
    }

    /// A read or write of up to `requested` bytes tried once, now (`try_read`, `try_write`): the
    /// count, or `WouldBlock` when the kernel says `EAGAIN` or an operation already waits on that
    /// direction (it goes first: bytes keep their order). Takes in what the syscall said as an
    /// operation's try does.
    #[inline]
    pub(crate) fn attempt_now(
        &self,
        token: Token,
        interest: Interest,
        requested: usize,
        io: impl FnOnce(BorrowedFd<'_>) -> io::Result<Option<usize>>,
    ) -> io::Result<usize> {
        let mut sources = self.sources.borrow_mut();
        let source = sources.get_mut(token).ok_or_else(crate::error::closed)?;
        let dir = source.dir(interest);
        if !dir.line.is_empty() || dir.inflight().is_some() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // The table stays borrowed, so the fd stays open; `io` is a syscall, no user code.
        let res = io(source.fd().ok_or_else(crate::error::closed)?);
        let (attempt, res) = match res {
            Ok(Some(n)) => (
                Attempt {
                    drained: n < requested,
                    ..Attempt::default()
                },
                Ok(n),
            ),
            Ok(None) => (
                Attempt {
                    would_block: true,
                    ..Attempt::default()
                },
                Err(io::ErrorKind::WouldBlock.into()),
            ),
            Err(e) => (Attempt::default(), Err(e)),
        };
        source.after_attempt(interest, attempt);
        res
    }

    /// Drops everything still queued or registered, without running it, and closes every owned fd
    /// (the service drops its tasks first). Dropping a job may drop objects that close sources, or
    /// queue more: repeated until both are empty.
    pub(crate) fn shut_down(&self) {
        loop {
            let mut jobs = Vec::new();
            while let Some(job) = self.pop_job() {
                jobs.push(job);
            }
            let sources = self.sources.borrow_mut().drain();
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
        self.run_queue.borrow_mut().clear();
        self.timers.borrow_mut().clear();
    }

    /// Marks the loop as shut down: nothing new is registered or queued from now on. Returns whether
    /// it already was.
    pub(crate) fn mark_shut_down(&self) -> bool {
        self.shut_down.replace(true)
    }
}

/// A source that an operation or object owns: removed from its loop (waiters cancelled, fd closed)
/// when dropped. A one-shot timer, a completion and a dial driving a future each own one.
pub(crate) struct OwnedSource {
    reactor: std::rc::Rc<Reactor>,
    token: Token,
}

impl OwnedSource {
    /// A new virtual source (no fd: made ready by the loop itself).
    pub(crate) fn new_virtual(reactor: &std::rc::Rc<Reactor>) -> io::Result<OwnedSource> {
        Ok(OwnedSource {
            token: reactor.add_source(FdSlot::Virtual)?,
            reactor: reactor.clone(),
        })
    }

    pub(crate) fn token(&self) -> Token {
        self.token
    }
}

impl Drop for OwnedSource {
    fn drop(&mut self) {
        drop(self.reactor.remove_source(self.token));
    }
}

impl std::fmt::Debug for OwnedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedSource")
            .field("token", &self.token)
            .finish()
    }
}
