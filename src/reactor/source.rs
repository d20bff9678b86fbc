//! The table of registered I/O sources: per fd, who waits in which direction and whether that
//! direction may be ready.
//!
//! An object (socket, acceptor, device) holds only a [`Token`]; the fd itself lives here, so closing
//! is one removal and no fd can be closed twice. A token carries a generation: an operation or event
//! that names a closed source finds nothing, even when the fd number was reused by a new object.
//!
//! A direction's readiness is one flag, `ready` ("a syscall may succeed: try before waiting"), and
//! it changes in two places only: an event sets it ([`Source::on_event`]), and a syscall that says
//! `EAGAIN` (or proves the direction drained) clears it ([`Source::after_attempt`]). That is what
//! edge triggering requires: the loop waits for an edge only after the kernel said there is nothing.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

use slab::Slab;

use super::Token;
use super::line::Line;
use crate::driver::Interest;

/// The fd of a source: owned (closed when the source goes), attached (the caller keeps it open), or
/// none at all (a timer or completion, made ready by the loop itself).
pub(crate) enum FdSlot {
    Owned(OwnedFd),
    /// Owned, with a hook that runs right before the fd closes (a socket's `on_close`). Boxed: few
    /// sockets have hooks, and every source pays for the largest variant.
    Hooked(Box<HookedFd>),
    Attached(RawFd),
    Virtual,
}

impl FdSlot {
    #[inline]
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            FdSlot::Owned(fd) => Some(fd.as_fd()),
            FdSlot::Hooked(fd) => Some(fd.as_fd()),
            // SAFETY: `IoDevice::attach` is an `unsafe fn` whose caller promised to keep the fd open
            // for as long as it stays attached, i.e. while this slot exists.
            FdSlot::Attached(fd) => Some(unsafe { BorrowedFd::borrow_raw(*fd) }),
            FdSlot::Virtual => None,
        }
    }

    /// The fd, handed back without closing it (and without its close hook): `None` for an attached
    /// fd (never ours) or a virtual source.
    pub(crate) fn into_owned(self) -> Option<OwnedFd> {
        match self {
            FdSlot::Owned(fd) => Some(fd),
            FdSlot::Hooked(fd) => Some((*fd).into_fd()),
            FdSlot::Attached(_) | FdSlot::Virtual => None,
        }
    }
}

/// The hook a [`HookedFd`] runs before its fd closes.
pub(crate) type CloseHook = Box<dyn FnOnce(BorrowedFd<'_>)>;

/// An owned fd with a hook that runs right before it closes, whatever closes it (a socket's
/// `on_close`: see `net::hooks`). Handing the fd out ([`into_fd`](HookedFd::into_fd)) drops the hook
/// unrun: the fd is not closed, so it is not the loop's to announce.
pub(crate) struct HookedFd {
    /// `None` only once handed out.
    fd: Option<OwnedFd>,
    on_close: Option<CloseHook>,
}

impl HookedFd {
    pub(crate) fn new(fd: OwnedFd, on_close: CloseHook) -> HookedFd {
        HookedFd {
            fd: Some(fd),
            on_close: Some(on_close),
        }
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("a live HookedFd has its fd")
            .as_fd()
    }

    pub(crate) fn into_fd(mut self) -> OwnedFd {
        self.on_close = None;
        self.fd.take().expect("a live HookedFd has its fd")
    }
}

impl Drop for HookedFd {
    fn drop(&mut self) {
        if let (Some(fd), Some(hook)) = (self.fd.as_ref(), self.on_close.take()) {
            hook(fd.as_fd());
        }
        // `self.fd` closes after this, when the field drops.
    }
}

/// The `inflight` of a direction with no operation on the ring (slab keys never reach it).
const NO_KEY: u32 = u32::MAX;

/// One direction of a source.
pub(crate) struct Direction {
    /// A syscall may succeed: true after an event (and initially, for an fd), false once a syscall
    /// said `EAGAIN` or proved the direction drained. An operation whose direction is not ready
    /// waits in line without trying.
    pub(crate) ready: bool,
    /// The kernel reported a hang-up, an error or the peer's shutdown (or TCP urgent data): no
    /// further edge will come, so a short read or write no longer proves the direction drained.
    pub(crate) closed: bool,
    /// Who waits, in order.
    pub(crate) line: Line,
    /// On io_uring: the key of the operation this direction has on the ring, or [`NO_KEY`]. One at
    /// a time, so that the steps of a `write_all` are never interleaved with another write's; the
    /// others wait in the line and go to the ring in order. A plain `u32` (not an `Option`) keeps
    /// the direction, and every idle connection's entry, as small as without it.
    inflight: u32,
}

impl Direction {
    /// The key of the operation this direction has on the io_uring ring.
    #[inline]
    pub(crate) fn inflight(&self) -> Option<u32> {
        (self.inflight != NO_KEY).then_some(self.inflight)
    }

    pub(crate) fn set_inflight(&mut self, key: Option<u32>) {
        self.inflight = key.unwrap_or(NO_KEY);
    }

    /// Whether an operation started now must wait without trying: `needs_ready` and the direction
    /// known not ready, or a persistent read holds the line (it goes first).
    #[inline(always)]
    pub(crate) fn must_wait(&self, needs_ready: bool) -> bool {
        needs_ready && (!self.ready || self.line.held_by_persistent())
    }

    fn new(ready: bool) -> Direction {
        Direction {
            ready,
            closed: false,
            line: Line::default(),
            inflight: NO_KEY,
        }
    }
}

/// What an event did to a direction (see [`Source::on_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventOutcome {
    /// The direction is backing off: the event is ignored.
    Ignored,
    /// Marked ready; nobody waits.
    Idle,
    /// Marked ready; its line is to be served.
    Serve,
}

/// What one syscall on a direction said (see [`Source::after_attempt`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Attempt {
    /// The kernel said `EAGAIN`: the operation waits.
    pub(crate) would_block: bool,
    /// A short read or write: the direction is probably drained (a hint, see
    /// [`Source::drain_hint_holds`]).
    pub(crate) drained: bool,
    /// A back-off started (no try before it ends, event or not).
    pub(crate) backing_off: bool,
}

pub(crate) struct Source {
    pub(crate) fd: FdSlot,
    /// `fd`'s number, or -1 for a virtual source: read on every try, where a match on the slot's
    /// kind would cost a jump table each time.
    raw_fd: RawFd,
    generation: u32,
    pub(crate) read: Direction,
    pub(crate) write: Direction,
    /// Incremented by `cancel()`: a future that registered before sees the change and reports
    /// `ECANCELED`.
    pub(crate) cancel_epoch: u32,
    /// A timer source's armed deadline: a heap entry for another instant is stale.
    pub(crate) deadline: Option<Instant>,
    /// Whether a short read proves the read direction empty, so that the next read may wait for an
    /// edge without trying (see [`Source::drain_hint_holds`]). `None` until known.
    pub(crate) short_read_drains: Option<bool>,
    /// Per direction (read, write), set by a back-off (`EMFILE` on accept): readiness events are
    /// ignored, and a level-triggered backend does not watch the direction, until the loop's wake-up
    /// at this instant. Boxed, and only once needed: few sources ever back off, and every source,
    /// idle connections included, would pay for the two instants.
    backoff: Option<Box<[Option<Instant>; 2]>>,
}

impl Source {
    /// The source's fd, if it has one.
    #[inline]
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: `raw_fd` is the number of the fd in `self.fd`, which is set once when the source
        // is made and stays open while the source exists: an owned slot closes it only when the
        // source is dropped, an attached one was promised open while attached (`IoDevice::attach`).
        // The borrow cannot outlive `self`.
        (self.raw_fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(self.raw_fd) })
    }

    /// The fd number, if any (for a try that runs after the table's borrow is released).
    #[inline]
    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        (self.raw_fd >= 0).then_some(self.raw_fd)
    }

    #[inline(always)]
    pub(crate) fn dir(&self, interest: Interest) -> &Direction {
        match interest {
            Interest::Read => &self.read,
            Interest::Write => &self.write,
        }
    }

    #[inline(always)]
    pub(crate) fn dir_mut(&mut self, interest: Interest) -> &mut Direction {
        match interest {
            Interest::Read => &mut self.read,
            Interest::Write => &mut self.write,
        }
    }

    /// Takes in an event for one direction (a kernel event, a timer, the end of a back-off):
    /// remembers `closed`, ignores the event while a back-off lasts (and ends one that has expired),
    /// and marks the direction ready.
    #[inline(always)]
    pub(crate) fn on_event(&mut self, interest: Interest, closed: bool) -> EventOutcome {
        self.dir_mut(interest).closed |= closed;
        if self.backoff.is_some() && self.backing_off(interest) {
            return EventOutcome::Ignored;
        }
        let dir = self.dir_mut(interest);
        dir.ready = true;
        if dir.line.is_empty() {
            EventOutcome::Idle
        } else {
            EventOutcome::Serve
        }
    }

    /// Takes in what one syscall said: the direction is no longer ready after `EAGAIN` or a back-off
    /// (the kernel's word, and a back-off must hold), or after a drained hint that holds for this
    /// source (see [`drain_hint_holds`](Source::drain_hint_holds)).
    #[inline(always)]
    pub(crate) fn after_attempt(&mut self, interest: Interest, attempt: Attempt) {
        if attempt.would_block
            || attempt.backing_off
            || (attempt.drained && self.drain_hint_holds(interest))
        {
            self.dir_mut(interest).ready = false;
        }
    }

    /// Whether events for `interest` are ignored now; ends a back-off whose time has come.
    #[cold]
    fn backing_off(&mut self, interest: Interest) -> bool {
        match self.backoff_until(interest) {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.set_backoff_until(interest, None);
                false
            }
            None => false,
        }
    }

    /// Until when events for `interest` are ignored (see `backoff`).
    #[inline]
    pub(crate) fn backoff_until(&self, interest: Interest) -> Option<Instant> {
        self.backoff.as_ref().and_then(|b| b[interest as usize])
    }

    /// Starts (`Some`) or ends (`None`) a back-off of `interest`.
    pub(crate) fn set_backoff_until(&mut self, interest: Interest, until: Option<Instant>) {
        match (&mut self.backoff, until) {
            (None, None) => {}
            (Some(b), until) => b[interest as usize] = until,
            (None, until) => {
                let mut b = Box::new([None; 2]);
                b[interest as usize] = until;
                self.backoff = Some(b);
            }
        }
    }

    /// Whether an operation's "drained" hint (a short read or write) may be trusted: the direction is
    /// then marked not ready and the next operation waits for an edge instead of paying for `EAGAIN`.
    ///
    /// A short write always means a full send buffer. A short read means an empty receive queue on
    /// TCP, the common case, which keeps that fast path. It does not on a Unix stream socket: the
    /// kernel ends a read at a message that carries fds (`SCM_RIGHTS`) or, with `SO_PASSCRED`, at
    /// another writer's data, with more queued behind it and no new edge to come. There the hint is
    /// ignored (the next read costs one syscall that may say `EAGAIN`, as a `FIONREAD` check would, but
    /// only when a read follows). The domain is told at registration where `aio` knows it (open,
    /// accept, pair) and asked of the kernel once, on the first short read, otherwise (`from_fd`). A
    /// direction that saw a hang-up or TCP urgent data (`closed`) never trusts the hint again.
    #[inline]
    pub(crate) fn drain_hint_holds(&mut self, interest: Interest) -> bool {
        if self.dir(interest).closed {
            return false;
        }
        match interest {
            Interest::Write => true,
            Interest::Read => match self.short_read_drains {
                Some(drains) => drains,
                None => self.learn_short_read_drains(),
            },
        }
    }

    /// Asks the kernel whether short reads prove this source empty (not a Unix socket), once.
    #[cold]
    fn learn_short_read_drains(&mut self) -> bool {
        let drains = self.fd().is_some_and(|fd| {
            socket2::SockRef::from(&fd)
                .domain()
                .is_ok_and(|domain| domain != socket2::Domain::UNIX)
        });
        self.short_read_drains = Some(drains);
        drains
    }
}

#[derive(Default)]
pub(crate) struct SourceTable {
    slab: Slab<Source>,
    next_generation: u32,
}

impl SourceTable {
    pub(crate) fn insert(&mut self, fd: FdSlot) -> Token {
        let generation = self.next_generation;
        // 31 bits: the top bit of a token stays clear (io_uring tags operation requests with it).
        self.next_generation = self.next_generation.wrapping_add(1) & 0x7fff_ffff;
        // An fd may be ready already: try first. A virtual source is ready only when fired.
        let ready = !matches!(fd, FdSlot::Virtual);
        let raw_fd = fd.fd().map_or(-1, |fd| fd.as_raw_fd());
        let index = self.slab.insert(Source {
            fd,
            raw_fd,
            generation,
            read: Direction::new(ready),
            write: Direction::new(ready),
            cancel_epoch: 0,
            deadline: None,
            short_read_drains: None,
            backoff: None,
        });
        Token::new(index, generation)
    }

    #[inline]
    pub(crate) fn get(&self, token: Token) -> Option<&Source> {
        self.slab
            .get(token.index())
            .filter(|s| s.generation == token.generation())
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, token: Token) -> Option<&mut Source> {
        self.slab
            .get_mut(token.index())
            .filter(|s| s.generation == token.generation())
    }

    pub(crate) fn remove(&mut self, token: Token) -> Option<Source> {
        self.get(token)?;
        Some(self.slab.remove(token.index()))
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Empties the table (service shutdown), returning every source.
    pub(crate) fn drain(&mut self) -> Vec<Source> {
        self.slab.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::line::Waiter;
    use crate::reactor::wake::TaskWake;
    use std::os::unix::net::UnixStream;
    use std::task::Waker;

    fn waiter() -> Waiter {
        Waiter::Task {
            id: 0,
            seq: 0,
            wake: TaskWake::Waker(Waker::noop().clone()),
        }
    }

    fn tcp_source(table: &mut SourceTable) -> Token {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let token = table.insert(FdSlot::Owned(socket.into()));
        table.get_mut(token).expect("source").short_read_drains = Some(true);
        token
    }

    #[test]
    fn an_fd_starts_ready_and_a_virtual_source_does_not() {
        let mut table = SourceTable::default();
        let fd = tcp_source(&mut table);
        let virt = table.insert(FdSlot::Virtual);
        assert!(table.get(fd).expect("fd").read.ready);
        assert!(table.get(fd).expect("fd").write.ready);
        assert!(!table.get(virt).expect("virtual").read.ready);
        assert!(table.get(virt).expect("virtual").fd().is_none());
    }

    #[test]
    fn eagain_clears_readiness_and_an_event_sets_it() {
        let mut table = SourceTable::default();
        let token = tcp_source(&mut table);
        let source = table.get_mut(token).expect("source");
        let eagain = Attempt {
            would_block: true,
            ..Attempt::default()
        };
        source.after_attempt(Interest::Read, eagain);
        assert!(!source.read.ready);
        assert!(source.write.ready, "directions are independent");
        assert!(source.read.must_wait(true));
        assert!(
            !source.read.must_wait(false),
            "a first step needs no readiness"
        );
        assert_eq!(source.on_event(Interest::Read, false), EventOutcome::Idle);
        assert!(source.read.ready);
        source.after_attempt(Interest::Read, eagain);
        source.read.line.push_back(waiter());
        assert_eq!(source.on_event(Interest::Read, false), EventOutcome::Serve);
        assert!(source.read.ready);
    }

    #[test]
    fn a_short_read_is_a_hint_that_a_hang_up_or_a_unix_socket_overrules() {
        let mut table = SourceTable::default();
        let token = tcp_source(&mut table);
        let short = Attempt {
            drained: true,
            ..Attempt::default()
        };
        let source = table.get_mut(token).expect("source");
        source.after_attempt(Interest::Read, short);
        assert!(!source.read.ready, "a short TCP read drains");
        // A hang-up: no further edge will come, so a short read proves nothing any more.
        source.on_event(Interest::Read, true);
        source.after_attempt(Interest::Read, short);
        assert!(source.read.ready);

        // A Unix stream socket, never told its domain: the kernel is asked once.
        let (a, _b) = UnixStream::pair().expect("pair");
        let unix = table.insert(FdSlot::Owned(a.into()));
        let source = table.get_mut(unix).expect("unix");
        source.after_attempt(Interest::Read, short);
        assert!(
            source.read.ready,
            "a short Unix read may stop at an fd-carrying message"
        );
        assert_eq!(source.short_read_drains, Some(false));
        // A short write always means a full send buffer.
        source.after_attempt(Interest::Write, short);
        assert!(!source.write.ready);
    }

    #[test]
    fn a_back_off_ignores_events_until_it_ends() {
        let mut table = SourceTable::default();
        let token = tcp_source(&mut table);
        let source = table.get_mut(token).expect("source");
        source.after_attempt(
            Interest::Read,
            Attempt {
                backing_off: true,
                ..Attempt::default()
            },
        );
        assert!(!source.read.ready);
        source.set_backoff_until(
            Interest::Read,
            Some(Instant::now() + std::time::Duration::from_secs(60)),
        );
        assert_eq!(
            source.on_event(Interest::Read, false),
            EventOutcome::Ignored
        );
        assert!(!source.read.ready);
        assert_eq!(source.on_event(Interest::Write, false), EventOutcome::Idle);
        // Expired: the next event ends it.
        source.set_backoff_until(Interest::Read, Some(Instant::now()));
        assert_eq!(source.on_event(Interest::Read, false), EventOutcome::Idle);
        assert_eq!(source.backoff_until(Interest::Read), None);
        assert!(source.read.ready);
    }

    #[test]
    fn a_closed_token_finds_nothing_even_when_its_slot_is_reused() {
        let mut table = SourceTable::default();
        let old = table.insert(FdSlot::Virtual);
        assert!(table.remove(old).is_some());
        let new = table.insert(FdSlot::Virtual);
        assert_eq!(old.index(), new.index());
        assert!(table.get(old).is_none());
        assert!(table.get(new).is_some());
        assert!(table.remove(old).is_none());
    }
}
