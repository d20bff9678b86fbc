//! The epoll backend: each fd registered once, edge-triggered, for reading and writing together.
//!
//! Booster's epoll reactor is level-triggered and issues two `epoll_ctl` calls per wait; here an fd
//! costs one `epoll_ctl` when it is opened and one when it is closed, and a turn of the loop costs one
//! `epoll_wait` however many operations it starts. The loop keeps per-direction "ready" flags and only
//! waits after a syscall said `EAGAIN`, which is what edge triggering requires.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll;

use super::{Driver, Event, Token, timespec};
use crate::service::source::SourceTable;

/// How many events one `epoll_wait` may return.
const EVENTS_PER_WAIT: usize = 1024;

pub(crate) struct EpollDriver {
    epoll: OwnedFd,
    buffer: Vec<epoll::Event>,
}

impl EpollDriver {
    pub(crate) fn new(wake_fd: BorrowedFd<'_>) -> io::Result<EpollDriver> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let mut driver = EpollDriver {
            epoll,
            buffer: Vec::with_capacity(EVENTS_PER_WAIT),
        };
        driver.register(wake_fd, Token::WAKE)?;
        Ok(driver)
    }
}

impl Driver for EpollDriver {
    fn register(&mut self, fd: BorrowedFd<'_>, token: Token) -> io::Result<()> {
        // PRI: TCP urgent data (and sysfs-style "exceptional" readiness) counts as readable.
        let flags = epoll::EventFlags::IN
            | epoll::EventFlags::OUT
            | epoll::EventFlags::RDHUP
            | epoll::EventFlags::PRI
            | epoll::EventFlags::ET;
        epoll::add(&self.epoll, fd, epoll::EventData::new_u64(token.0), flags).map_err(|e| {
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

    fn deregister(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(epoll::delete(&self.epoll, fd)?)
    }

    fn wait(
        &mut self,
        _sources: &SourceTable,
        timeout: Option<Duration>,
        events: &mut Vec<Event>,
    ) -> io::Result<()> {
        self.buffer.clear();
        let ts = timespec(timeout);
        match epoll::wait(
            self.epoll.as_fd(),
            rustix::buffer::spare_capacity(&mut self.buffer),
            ts.as_ref(),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        events.extend(self.buffer.iter().map(|ev| {
            let flags = ev.flags; // a copy: the kernel's struct is packed
            Event::new(Token(ev.data.u64()), flags.bits())
        }));
        Ok(())
    }
}
