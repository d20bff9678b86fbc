//! The driver: what waits for the operating system on behalf of an [`IoService`](crate::IoService).
//!
//! A driver learns which registered file descriptors became readable or writable and reports them
//! as [`Event`]s keyed by a [`Token`]. It knows nothing above it: the reactor owns the sources, their
//! waiters and their readiness, and tells the driver only which fds to watch in which direction.
//! Each backend keeps its own registrations (epoll's kernel set, poll's pollfd array, io_uring's
//! poll requests). Every backend exposes the same small [`Driver`] trait, and the reactor holds one
//! [`AnyDriver`] so that the hot path dispatches by `match`, not through a vtable.
//!
//! Backends:
//! - [`epoll`]: the default on Linux. Each fd is registered once, edge-triggered, for reading, and
//!   for writing too the first time a write has to wait; nothing is re-armed per wait.
//! - [`poll`]: portable `poll(2)`, level-triggered, over a pollfd array it keeps: a direction is in
//!   it while something waits on it, so that it behaves like the edge-triggered backend from the
//!   reactor's view.
//! - [`uring`]: io_uring; readiness through one multishot poll request per watched fd, and the ring
//!   that operations are submitted to.

pub(crate) mod epoll;
pub(crate) mod poll;
pub(crate) mod uring;

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

/// Which backend an [`IoService`](crate::IoService) runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Linux `epoll`, edge-triggered (the default).
    Epoll,
    /// POSIX `poll(2)`: the portable fallback.
    Poll,
    /// Linux io_uring (opt-in): reads, writes, accepts and connects are requests on the ring, and
    /// every request of a turn is submitted, and its completions reaped, in one `io_uring_enter`.
    Uring,
}

impl Backend {
    /// The backend's name: `"epoll"`, `"poll"` or `"uring"`, as accepted by `AIO_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Epoll => "epoll",
            Backend::Poll => "poll",
            Backend::Uring => "uring",
        }
    }

    /// Every backend this build supports, default first.
    pub fn all() -> &'static [Backend] {
        &[Backend::Epoll, Backend::Poll, Backend::Uring]
    }

    /// Reads `AIO_BACKEND` (`epoll`, `poll`, `uring`); unset or empty means the default, epoll.
    ///
    /// # Errors
    /// `InvalidInput` naming the unknown value and the accepted ones.
    pub fn from_env() -> io::Result<Backend> {
        match std::env::var("AIO_BACKEND") {
            Ok(v) if !v.is_empty() => v.parse(),
            _ => Ok(Backend::Epoll),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<Backend> {
        match s {
            "epoll" => Ok(Backend::Epoll),
            "poll" => Ok(Backend::Poll),
            "uring" | "io_uring" => Ok(Backend::Uring),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown backend {s:?}: expected epoll, poll or uring"),
            )),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A direction of readiness: what an operation waits for and a driver watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interest {
    /// Bytes (or a connection, a datagram, an end of stream, an error) to take.
    Read = 0,
    /// Room to write (or a finished connect, an error).
    Write = 1,
}

/// Identifies a registered source: slab index in the low half, generation in the high half, so that a
/// stale event for a closed fd whose number was reused never reaches the new owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Token(pub(crate) u64);

impl Token {
    /// The token of the loop's own wake-up eventfd.
    pub(crate) const WAKE: Token = Token(u64::MAX);
    /// No source: an object that is not open.
    pub(crate) const NONE: Token = Token(u64::MAX - 1);

    pub(crate) fn new(index: usize, generation: u32) -> Token {
        Token(index as u64 & 0xffff_ffff | (generation as u64) << 32)
    }
    pub(crate) fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// One readiness report: the token of the fd and what the kernel said of it, as `poll(2)` flags
/// (epoll's and io_uring's poll requests use the same values). Laid out as the kernel's
/// `epoll_event`, so that the epoll backend's wait writes the loop's list of events in place; the
/// other backends make theirs with [`event`]. Read through [`Readiness`] where the loop dispatches.
pub(crate) type Event = rustix::event::epoll::Event;

/// An [`Event`] for `token` with `poll(2)` flags.
#[inline(always)]
pub(crate) fn event(token: Token, flags: u32) -> Event {
    Event {
        flags: rustix::event::epoll::EventFlags::from_bits_retain(flags),
        data: rustix::event::epoll::EventData::new_u64(token.0),
    }
}

/// What the loop reads of an [`Event`].
pub(crate) trait Readiness: Copy {
    fn token(self) -> Token;
    /// Something to read: data, urgent data, the peer's shutdown, or an error or hang-up to report.
    fn readable(self) -> bool;
    /// Room to write, or an error or hang-up to report.
    fn writable(self) -> bool;
    /// No further edge is promised (sticky for the source): a hang-up, an error, the peer's
    /// shutdown, or TCP urgent data (a read stops at the urgent mark with bytes queued behind it).
    fn no_more_edges(self) -> bool;
}

const IN: u32 = libc::POLLIN as u32;
const PRI: u32 = libc::POLLPRI as u32;
const OUT: u32 = libc::POLLOUT as u32;
const RDHUP: u32 = libc::POLLRDHUP as u32;
/// Error, hang-up, or an fd the kernel does not know (poll): every direction is done.
const HUNG: u32 = (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) as u32;

/// The flags of an event, copied out of the kernel's packed struct.
#[inline(always)]
fn bits(ev: Event) -> u32 {
    let flags = ev.flags;
    flags.bits()
}

impl Readiness for Event {
    #[inline(always)]
    fn token(self) -> Token {
        let data = self.data;
        Token(data.u64())
    }
    #[inline(always)]
    fn readable(self) -> bool {
        bits(self) & (IN | PRI | RDHUP | HUNG) != 0
    }
    #[inline(always)]
    fn writable(self) -> bool {
        bits(self) & (OUT | HUNG) != 0
    }
    #[inline(always)]
    fn no_more_edges(self) -> bool {
        bits(self) & (HUNG | RDHUP | PRI) != 0
    }
}

/// What every backend provides to the reactor.
pub(crate) trait Driver {
    /// Starts watching `fd` under `token`, for as long as it stays registered: for reading where the
    /// backend watches that from the start (epoll), otherwise once [`watch`](Driver::watch)ed.
    fn register(&mut self, fd: BorrowedFd<'_>, token: Token) -> io::Result<()>;
    /// Something waits on `interest` of the registered `fd`: from now on its edges in that direction
    /// are reported (its current state included, so that an edge that came before is not missed).
    /// Watching what is watched already costs nothing.
    fn watch(&mut self, fd: BorrowedFd<'_>, token: Token, interest: Interest);
    /// Nothing waits on `interest` of `fd` any more. A level-triggered backend stops watching it (it
    /// would report the same readiness at every wait); edge-triggered ones ignore this.
    fn unwatch(&mut self, _fd: BorrowedFd<'_>, _interest: Interest) {}
    /// Mutes (or unmutes) `interest` of `fd` during a back-off: a level-triggered backend does not
    /// report it meanwhile, whatever waits on it (edge-triggered ones ignore this: the reactor ignores
    /// their events during a back-off).
    fn mute(&mut self, _fd: BorrowedFd<'_>, _interest: Interest, _muted: bool) {}
    /// Stops watching `fd`. Called before the fd is closed or handed back to its owner.
    fn deregister(&mut self, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// Waits up to `timeout` (`None`: without limit) and appends what became ready to `events`.
    fn wait(&mut self, timeout: Option<Duration>, events: &mut Vec<Event>) -> io::Result<()>;
}

/// The backend chosen at construction; dispatches by `match` so the calls can inline.
pub(crate) enum AnyDriver {
    Epoll(epoll::EpollDriver),
    Poll(poll::PollDriver),
    Uring(Box<uring::UringDriver>),
}

impl AnyDriver {
    /// Creates the backend and registers the loop's wake-up fd with it.
    pub(crate) fn new(backend: Backend, wake_fd: BorrowedFd<'_>) -> io::Result<AnyDriver> {
        Ok(match backend {
            Backend::Epoll => AnyDriver::Epoll(epoll::EpollDriver::new(wake_fd)?),
            Backend::Poll => AnyDriver::Poll(poll::PollDriver::new(wake_fd)?),
            Backend::Uring => AnyDriver::Uring(Box::new(uring::UringDriver::new(wake_fd)?)),
        })
    }

    /// The io_uring backend, when it is this one: operations go to its ring.
    #[inline]
    pub(crate) fn ring(&mut self) -> Option<&mut uring::UringDriver> {
        match self {
            AnyDriver::Uring(d) => Some(d),
            _ => None,
        }
    }
}

impl AnyDriver {
    /// Whether the backend reports a readiness at every wait for as long as it lasts (poll), so that
    /// the reactor unwatches a direction nobody waits on.
    #[inline(always)]
    pub(crate) fn level_triggered(&self) -> bool {
        matches!(self, AnyDriver::Poll(_))
    }
}

impl Driver for AnyDriver {
    #[inline]
    fn register(&mut self, fd: BorrowedFd<'_>, token: Token) -> io::Result<()> {
        match self {
            AnyDriver::Epoll(d) => d.register(fd, token),
            AnyDriver::Poll(d) => d.register(fd, token),
            AnyDriver::Uring(d) => d.register(fd, token),
        }
    }
    #[inline]
    fn watch(&mut self, fd: BorrowedFd<'_>, token: Token, interest: Interest) {
        match self {
            AnyDriver::Epoll(d) => d.watch(fd, token, interest),
            AnyDriver::Poll(d) => d.watch(fd, token, interest),
            AnyDriver::Uring(d) => d.watch(fd, token, interest),
        }
    }
    #[inline]
    fn unwatch(&mut self, fd: BorrowedFd<'_>, interest: Interest) {
        if let AnyDriver::Poll(d) = self {
            d.unwatch(fd, interest);
        }
    }
    #[inline]
    fn mute(&mut self, fd: BorrowedFd<'_>, interest: Interest, muted: bool) {
        if let AnyDriver::Poll(d) = self {
            d.mute(fd, interest, muted);
        }
    }
    #[inline]
    fn deregister(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        match self {
            AnyDriver::Epoll(d) => d.deregister(fd),
            AnyDriver::Poll(d) => d.deregister(fd),
            AnyDriver::Uring(d) => d.deregister(fd),
        }
    }
    #[inline]
    fn wait(&mut self, timeout: Option<Duration>, events: &mut Vec<Event>) -> io::Result<()> {
        match self {
            AnyDriver::Epoll(d) => d.wait(timeout, events),
            AnyDriver::Poll(d) => d.wait(timeout, events),
            AnyDriver::Uring(d) => d.wait(timeout, events),
        }
    }
}

/// A wait's result with "a signal interrupted it" (and any of the `benign` errnos: a timeout that
/// expired, a ring busy with completions to reap) taken as "nothing happened": the loop's next turn
/// waits again. The one place a driver treats `EINTR`.
pub(crate) fn waited<T>(res: io::Result<T>, benign: &[i32]) -> io::Result<Option<T>> {
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e) => match e.raw_os_error() {
            Some(libc::EINTR) => Ok(None),
            Some(errno) if benign.contains(&errno) => Ok(None),
            _ => Err(e),
        },
    }
}

/// Converts a wait timeout for the syscalls, rounding up so that a timer is never woken early.
pub(crate) fn timespec(timeout: Option<Duration>) -> Option<rustix::time::Timespec> {
    // Capped at a day: longer waits gain nothing and would overflow the kernel's millisecond count.
    timeout
        .map(|d| d.min(Duration::from_secs(86_400)))
        .map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        })
}
