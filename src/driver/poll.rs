//! The `poll(2)` backend: the portable fallback, as booster offers beside epoll.
//!
//! `poll` is level-triggered and the kernel keeps nothing between calls, so the driver keeps the
//! pollfd array itself, one entry per registered fd (as mio and polling do), and changes an entry
//! only when the reactor says a direction starts or stops being waited on. A wait hands the array to
//! the kernel as it is: no rebuild, no walk over the reactor's sources. An entry nobody waits on has
//! a negative fd, which `poll` skips (so a hung-up socket without a waiter does not end every wait).
//! Watching only what somebody waits for makes the level-triggered call behave like the
//! edge-triggered backend from the reactor's view.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{Driver, Event, Interest, Token, event, waited};

/// What an entry asks of the kernel per direction.
const READ_EVENTS: i16 = libc::POLLIN;
const WRITE_EVENTS: i16 = libc::POLLOUT;

/// The fd of an entry that nobody waits on: `poll` skips negative fds and reports nothing for them.
const SKIPPED: RawFd = -1;

/// What the driver keeps of a registered fd besides its pollfd.
#[derive(Clone, Copy)]
struct Entry {
    token: Token,
    fd: RawFd,
    /// The directions waited on, and those muted by a back-off: the pollfd asks for the first less
    /// the second.
    wanted: i16,
    muted: i16,
}

pub(crate) struct PollDriver {
    /// A duplicate of the loop's wake-up fd, owned so that it outlives the array entry naming it.
    _wake: OwnedFd,
    /// What `poll` is given. Entry 0 is the wake-up fd, always watched for reading.
    fds: Vec<libc::pollfd>,
    /// Per entry, the token and the fd it stands for (its pollfd's fd is [`SKIPPED`] while unwatched).
    entries: Vec<Entry>,
    /// Per fd number, the index of its entry plus one (0: not registered). Fd numbers are small and
    /// dense: the lowest free one is always taken.
    index: Vec<u32>,
}

impl PollDriver {
    pub(crate) fn new(wake_fd: BorrowedFd<'_>) -> io::Result<PollDriver> {
        let wake = wake_fd.try_clone_to_owned()?;
        let raw = wake.as_raw_fd();
        Ok(PollDriver {
            fds: vec![libc::pollfd {
                fd: raw,
                events: READ_EVENTS,
                revents: 0,
            }],
            entries: vec![Entry {
                token: Token::WAKE,
                fd: raw,
                wanted: READ_EVENTS,
                muted: 0,
            }],
            index: Vec::new(),
            _wake: wake,
        })
    }

    /// The entry of the registered `fd`.
    fn entry(&self, fd: BorrowedFd<'_>) -> Option<usize> {
        let slot = *self.index.get(fd.as_raw_fd() as usize)?;
        (slot != 0).then(|| slot as usize - 1)
    }

    /// Changes the entry of `fd` with `change`, then asks the kernel for what it wants and is not
    /// muted.
    fn update(&mut self, fd: BorrowedFd<'_>, change: impl FnOnce(&mut Entry)) {
        let Some(i) = self.entry(fd) else {
            return;
        };
        let entry = &mut self.entries[i];
        change(entry);
        let events = entry.wanted & !entry.muted;
        let pfd = &mut self.fds[i];
        pfd.events = events;
        pfd.fd = if events == 0 { SKIPPED } else { entry.fd };
    }
}

fn bits(interest: Interest) -> i16 {
    match interest {
        Interest::Read => READ_EVENTS,
        Interest::Write => WRITE_EVENTS,
    }
}

impl Driver for PollDriver {
    fn register(&mut self, fd: BorrowedFd<'_>, token: Token) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        let number = raw as usize;
        if self.index.len() <= number {
            self.index.resize(number + 1, 0);
        }
        if self.index[number] != 0 {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.fds.push(libc::pollfd {
            fd: SKIPPED,
            events: 0,
            revents: 0,
        });
        self.entries.push(Entry {
            token,
            fd: raw,
            wanted: 0,
            muted: 0,
        });
        self.index[number] = self.fds.len() as u32;
        Ok(())
    }

    fn watch(&mut self, fd: BorrowedFd<'_>, _token: Token, interest: Interest) {
        self.update(fd, |e| e.wanted |= bits(interest));
    }

    fn unwatch(&mut self, fd: BorrowedFd<'_>, interest: Interest) {
        self.update(fd, |e| e.wanted &= !bits(interest));
    }

    fn mute(&mut self, fd: BorrowedFd<'_>, interest: Interest, muted: bool) {
        self.update(fd, |e| {
            if muted {
                e.muted |= bits(interest);
            } else {
                e.muted &= !bits(interest);
            }
        });
    }

    fn deregister(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let Some(i) = self.entry(fd) else {
            return Ok(());
        };
        self.index[fd.as_raw_fd() as usize] = 0;
        self.fds.swap_remove(i);
        self.entries.swap_remove(i);
        if let Some(moved) = self.entries.get(i) {
            self.index[moved.fd as usize] = i as u32 + 1;
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>, events: &mut Vec<Event>) -> io::Result<()> {
        let ts = super::timespec(timeout).map(|t| libc::timespec {
            tv_sec: t.tv_sec as libc::time_t,
            tv_nsec: t.tv_nsec as _,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs that the kernel may write the
        // `revents` of, and `ts_ptr` is null or points at `ts`, alive for the call; no signal mask.
        let n = unsafe {
            libc::ppoll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                ts_ptr,
                std::ptr::null(),
            )
        };
        let res = if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        };
        let Some(mut left) = waited(res, &[])? else {
            return Ok(());
        };
        for (pfd, entry) in self.fds.iter_mut().zip(&self.entries) {
            if left == 0 {
                break;
            }
            if pfd.revents != 0 {
                left -= 1;
                events.push(event(entry.token, u32::from(pfd.revents as u16)));
                pfd.revents = 0;
            }
        }
        Ok(())
    }
}
