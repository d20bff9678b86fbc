//! The io_uring backend, first stage: readiness through multishot `POLL_ADD`.
//!
//! Each fd gets one multishot poll request when it is registered (the io_uring twin of an
//! edge-triggered epoll registration: a completion per wake-up of the file), removed with
//! `POLL_REMOVE` when it is closed. Every request queued during a turn of the loop goes to the kernel
//! in the same `io_uring_enter` that waits for completions, so a turn costs one syscall however many
//! fds were opened or closed in it. Operations still run their own syscalls after a readiness report,
//! exactly as on epoll; completion-based operations (reads and writes submitted to the ring) are the
//! next stage and will use the same ring.
//!
//! The kernel must allow io_uring (Linux 5.13 or later for multishot poll, not disabled by
//! `kernel.io_uring_disabled` or a seccomp filter): otherwise creating the loop fails with a clear
//! `Unsupported` error, and `AIO_BACKEND=epoll` is the fallback.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, types};

use super::{Driver, Event, Token};
use crate::service::source::SourceTable;

/// Entries in the submission queue (the completion queue is twice as large).
const RING_ENTRIES: u32 = 4096;

/// The user data of requests whose completion carries no event (poll removals).
const NO_EVENT: u64 = u64::MAX - 7;

const POLL_IN: u32 = libc::POLLIN as u32;
const POLL_PRI: u32 = libc::POLLPRI as u32;
const POLL_OUT: u32 = libc::POLLOUT as u32;
const POLL_ERR: u32 = libc::POLLERR as u32;
const POLL_HUP: u32 = libc::POLLHUP as u32;
const POLL_RDHUP: u32 = libc::POLLRDHUP as u32;

pub(crate) struct UringDriver {
    ring: IoUring,
    /// Registered fds and their tokens: to re-arm a multishot poll the kernel ended, and to find the
    /// request to remove when the fd is deregistered.
    registered: HashMap<RawFd, u64>,
    /// Events reaped while waiting for a removal, handed out by the next `wait`.
    stash: Vec<Event>,
}

impl UringDriver {
    pub(crate) fn new(wake_fd: BorrowedFd<'_>) -> io::Result<UringDriver> {
        let ring = IoUring::new(RING_ENTRIES).map_err(|e| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "io_uring is not available here ({e}); use AIO_BACKEND=epoll (or poll) instead"
                ),
            )
        })?;
        let mut driver = UringDriver {
            ring,
            registered: HashMap::new(),
            stash: Vec::new(),
        };
        driver.register(wake_fd, Token::WAKE)?;
        Ok(driver)
    }

    fn arm(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), POLL_IN | POLL_PRI | POLL_OUT | POLL_RDHUP)
            .multi(true)
            .build()
            .user_data(token);
        self.push(&entry)
    }

    fn push(&mut self, entry: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: poll requests reference no memory of ours (only an fd number and flags), so
            // nothing has to outlive the entry.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            // The queue is full: hand what is queued to the kernel to make room.
            self.ring.submit()?;
        }
    }
}

impl Driver for UringDriver {
    fn register(&mut self, fd: BorrowedFd<'_>, token: Token) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        if self.registered.contains_key(&raw) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.arm(raw, token.0)?;
        self.registered.insert(raw, token.0);
        Ok(())
    }

    fn deregister(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let Some(token) = self.registered.remove(&fd.as_raw_fd()) else {
            return Ok(());
        };
        let remove = opcode::PollRemove::new(token).build().user_data(NO_EVENT);
        self.push(&remove)?;
        // A poll request holds a reference to the file: until its last completion is reaped, closing
        // the fd would not close the socket (no FIN would be sent). Wait for it here, keeping the
        // other completions for the next `wait`. It comes at once, the removal cancelling the
        // request; a removal that meets the request while it is posting an event (`EALREADY`) is
        // tried again. Bounded: a request that cannot be found (`ENOENT`) has ended already.
        for _ in 0..1000 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
            let mut stash = std::mem::take(&mut self.stash);
            let (ended, removal) = self.reap(&mut stash, Some(token));
            self.stash = stash;
            match removal {
                _ if ended => return Ok(()),
                Some(res) if res == -libc::ENOENT => return Ok(()),
                Some(res) if res == -libc::EALREADY => self.push(&remove)?,
                _ => {}
            }
        }
        Err(io::Error::other(format!(
            "io_uring: the poll request of token {token:#x} could not be removed"
        )))
    }

    fn wait(
        &mut self,
        _sources: &SourceTable,
        timeout: Option<Duration>,
        events: &mut Vec<Event>,
    ) -> io::Result<()> {
        // Events stashed by a deregistration are ready now: do not block.
        let timeout = if self.stash.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let submitted = match timeout {
            Some(d) if d.is_zero() => self.ring.submit(),
            Some(d) => {
                let ts = types::Timespec::from(d.min(Duration::from_secs(86_400)));
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match submitted {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::ETIME | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        events.append(&mut self.stash);
        self.reap(events, None);
        Ok(())
    }
}

impl UringDriver {
    /// Turns the completions in the queue into events; re-arms multishot polls the kernel ended.
    /// Returns whether the last completion of the request `removed` (being deregistered) was seen,
    /// and the result of a poll removal if one completed.
    fn reap(&mut self, events: &mut Vec<Event>, removed: Option<u64>) -> (bool, Option<i32>) {
        let mut ended = false;
        let mut removal = None;
        let mut rearm = Vec::new();
        for cqe in self.ring.completion() {
            let token = cqe.user_data();
            let res = cqe.result();
            if token == NO_EVENT {
                removal = Some(res);
                continue;
            }
            let last = !cqueue::more(cqe.flags());
            if Some(token) == removed {
                ended |= last;
                continue;
            }
            if last {
                rearm.push(token);
            }
            if res < 0 {
                // -ECANCELED after a removal, or the fd went away: no readiness to report.
                continue;
            }
            let revents = res as u32;
            let hangup = revents & (POLL_ERR | POLL_HUP) != 0;
            events.push(Event {
                token: Token(token),
                readable: hangup || revents & (POLL_IN | POLL_PRI | POLL_RDHUP) != 0,
                writable: hangup || revents & POLL_OUT != 0,
                // As on epoll: after a hang-up, the peer's shutdown or TCP urgent data (a read stops
                // at the urgent mark with bytes queued behind it), no further wake-up is promised.
                closed: hangup || revents & (POLL_RDHUP | POLL_PRI) != 0,
            });
        }
        // A multishot poll the kernel ended (e.g. under memory pressure) is re-armed while its fd is
        // still registered under the same token.
        for token in rearm {
            let fd = self
                .registered
                .iter()
                .find(|(_, t)| **t == token)
                .map(|(fd, _)| *fd);
            if let Some(fd) = fd {
                // A failure to re-arm leaves the fd unwatched; the next registration retries.
                let _ = self.arm(fd, token);
            }
        }
        (ended, removal)
    }
}
