//! The `poll(2)` backend: the portable fallback, as booster offers beside epoll.
//!
//! `poll` is level-triggered and keeps no registrations, so every wait rebuilds the list of fds from
//! the sources that have waiters, each with the directions it is waited on. An fd without waiters is
//! not watched, which makes the level-triggered call behave like the edge-triggered backend: the loop
//! only hears about a direction somebody is waiting for, after a syscall on it said `EAGAIN`.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};

use super::{Driver, Event, Token, event, timespec};
use crate::service::source::SourceTable;

pub(crate) struct PollDriver {
    wake: OwnedFd,
    /// Tokens parallel to the pollfd list of the current wait (index 0 is the wake fd).
    tokens: Vec<Token>,
}

impl PollDriver {
    pub(crate) fn new(wake_fd: BorrowedFd<'_>) -> io::Result<PollDriver> {
        Ok(PollDriver {
            // A duplicate, so that the driver's pollfd list borrows an fd it owns.
            wake: wake_fd.try_clone_to_owned()?,
            tokens: Vec::new(),
        })
    }
}

impl Driver for PollDriver {
    fn register(&mut self, _fd: BorrowedFd<'_>, _token: Token) -> io::Result<()> {
        Ok(())
    }

    fn deregister(&mut self, _fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(())
    }

    fn wait(
        &mut self,
        sources: &SourceTable,
        timeout: Option<Duration>,
        events: &mut Vec<Event>,
    ) -> io::Result<()> {
        self.tokens.clear();
        let mut fds = Vec::with_capacity(sources.len() + 1);
        fds.push(PollFd::new(&self.wake, PollFlags::IN));
        self.tokens.push(Token::WAKE);
        for (fd, token, read, write) in sources.interests() {
            let mut flags = PollFlags::empty();
            if read {
                flags |= PollFlags::IN;
            }
            if write {
                flags |= PollFlags::OUT;
            }
            fds.push(PollFd::from_borrowed_fd(fd, flags));
            self.tokens.push(token);
        }
        let ts = timespec(timeout);
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        for (pfd, &token) in fds.iter().zip(&self.tokens) {
            let r = pfd.revents();
            if r.is_empty() {
                continue;
            }
            events.push(event(token, u32::from(r.bits())));
        }
        Ok(())
    }
}
