//! The epoll backend: each fd registered once, edge-triggered.
//!
//! Booster's epoll reactor is level-triggered and issues two `epoll_ctl` calls per wait; here an fd
//! costs one `epoll_ctl` when it is opened and one when it is closed, and a turn of the loop costs one
//! `epoll_wait` however many operations it starts. The loop keeps per-direction "ready" flags and only
//! waits after a syscall said `EAGAIN`, which is what edge triggering requires.
//!
//! An fd is registered for reading only. Most sockets never wait to write (a reply fits in the send
//! buffer), yet with `EPOLLOUT` every event of theirs would also say "writable" and the dispatch would
//! keep_outcome a write direction nobody waits on. The first time a write has to wait, one more
//! `epoll_ctl` adds `EPOLLOUT` for good; the kernel then reports the fd's current state, so room that
//! appeared in between is not missed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll;

use super::{Driver, Event, Interest, Token, timespec, waited};

/// How many events one `epoll_wait` may return at least.
const EVENTS_PER_WAIT: usize = 1024;

/// What every fd is registered for. PRI: TCP urgent data (and sysfs-style "exceptional" readiness)
/// counts as readable.
const READ_FLAGS: epoll::EventFlags = epoll::EventFlags::IN
    .union(epoll::EventFlags::RDHUP)
    .union(epoll::EventFlags::PRI)
    .union(epoll::EventFlags::ET);

pub(crate) struct EpollDriver {
    epoll: OwnedFd,
    /// Per fd number, one bit: registered for writing too (see the module doc).
    writes_watched: Vec<u64>,
}

impl EpollDriver {
    pub(crate) fn new(wake_fd: BorrowedFd<'_>) -> io::Result<EpollDriver> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let mut driver = EpollDriver {
            epoll,
            writes_watched: Vec::new(),
        };
        driver.register(wake_fd, Token::WAKE)?;
        Ok(driver)
    }

    /// Records whether `fd` is registered for writing; true if it was.
    fn set_writes_watched(&mut self, fd: BorrowedFd<'_>, watched: bool) -> bool {
        // Fd numbers are small and non-negative: the lowest free one is always taken.
        let raw = fd.as_raw_fd() as usize;
        let (word, bit) = (raw / 64, 1u64 << (raw % 64));
        if word >= self.writes_watched.len() {
            if !watched {
                return false;
            }
            self.writes_watched.resize(word + 1, 0);
        }
        let was = self.writes_watched[word] & bit != 0;
        if watched {
            self.writes_watched[word] |= bit;
        } else {
            self.writes_watched[word] &= !bit;
        }
        was
    }
}

impl Driver for EpollDriver {
    fn register(&mut self, fd: BorrowedFd<'_>, token: Token) -> io::Result<()> {
        // A number closed without being deregistered (a forked child's inherited fd) may come back.
        self.set_writes_watched(fd, false);
        epoll::add(&self.epoll, fd, epoll::EventData::new_u64(token.0), READ_FLAGS).map_err(|e| {
            let e = io::Error::from(e);
            if e.raw_os_error() == Some(libc::EPERM) {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this file descriptor cannot be watched for readiness (epoll refuses regular files and directories)",
                )
            } else {
                e
            }
        })
    }

    /// Reads are watched from registration on; writes from the first time one waits (see the
    /// module doc).
    fn watch(&mut self, fd: BorrowedFd<'_>, token: Token, interest: Interest) {
        if interest == Interest::Read || self.set_writes_watched(fd, true) {
            return;
        }
        let flags = READ_FLAGS | epoll::EventFlags::OUT;
        // Modifying a registered fd allocates nothing, so this fails only for an fd that is not
        // registered here, and such an fd has no waiter to wake.
        if epoll::modify(&self.epoll, fd, epoll::EventData::new_u64(token.0), flags).is_err() {
            self.set_writes_watched(fd, false);
        }
    }

    fn deregister(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.set_writes_watched(fd, false);
        Ok(epoll::delete(&self.epoll, fd)?)
    }

    fn wait(&mut self, timeout: Option<Duration>, events: &mut Vec<Event>) -> io::Result<()> {
        // The kernel writes the events right into the loop's list, behind any left over there.
        events.reserve(EVENTS_PER_WAIT);
        let ts = timespec(timeout);
        let res = epoll::wait(
            self.epoll.as_fd(),
            rustix::buffer::spare_capacity(events),
            ts.as_ref(),
        );
        waited(res.map_err(io::Error::from), &[]).map(drop)
    }
}
